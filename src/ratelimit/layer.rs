//! [`RateLimitLayer`] → [`RateLimit`] → [`ResponseFuture`](super::ResponseFuture).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::header::HeaderValue;
use http::request::Parts;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::client_ip::ClientIpResolver;
use crate::clock::{SharedClock, SystemClock, request_time};
use crate::context::ClientIp;
use crate::error::ConfigError;
use crate::principal::{AuthMethod, Principal};
use crate::ratelimit::future::{Finish, ResponseFuture};
use crate::ratelimit::{MemoryStore, Quota, RateLimitDecision, ceil_secs};
use crate::rejection::{Rejection, RejectionKind};

type Extractor = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

#[derive(Clone)]
enum KeyKind {
    ClientIp(ClientIpResolver),
    Subject,
    ApiKeyId,
    Route,
    Custom(Extractor),
}

/// What a limit counts requests by.
///
/// | key | bucket | requests without it |
/// |---|---|---|
/// | [`client_ip`](Self::client_ip) | the resolved [`ClientIp`]; IPv6 grouped by /56 | share one bucket |
/// | [`subject`](Self::subject) | the [`Principal`]'s subject | not limited by this layer |
/// | [`api_key_id`](Self::api_key_id) | the id of [`AuthMethod::ApiKey`] | not limited by this layer |
/// | [`route`](Self::route) | axum's matched route template | share one bucket |
/// | [`custom`](Self::custom) | the closure's string | not limited by this layer |
///
/// Keys that need a principal only work after the authentication layer; anonymous requests are
/// left to a per-IP limit placed before it.
#[derive(Clone)]
pub struct RateLimitKey(KeyKind);

impl fmt::Debug for RateLimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match &self.0 {
            KeyKind::ClientIp(_) => "RateLimitKey::ClientIp",
            KeyKind::Subject => "RateLimitKey::Subject",
            KeyKind::ApiKeyId => "RateLimitKey::ApiKeyId",
            KeyKind::Route => "RateLimitKey::Route",
            KeyKind::Custom(_) => "RateLimitKey::Custom",
        })
    }
}

impl RateLimitKey {
    /// The client address resolved at the edge ([`ClientIp`]), IPv6 grouped by /56 (one
    /// customer's allocation), so rotating addresses inside a prefix does not buy more budget.
    pub fn client_ip() -> Self {
        Self(KeyKind::ClientIp(ClientIpResolver::builder().build()))
    }

    /// The client address, IPv6 grouped as `resolver` does ([`ClientIpResolver::key`]).
    pub fn client_ip_grouped_by(resolver: &ClientIpResolver) -> Self {
        Self(KeyKind::ClientIp(resolver.clone()))
    }

    /// The authenticated [`Principal`]'s subject.
    pub fn subject() -> Self {
        Self(KeyKind::Subject)
    }

    /// The API key id when the principal authenticated with [`AuthMethod::ApiKey`].
    pub fn api_key_id() -> Self {
        Self(KeyKind::ApiKeyId)
    }

    /// The matched route template (`/documents/{id}`), from axum's `MatchedPath`; apply the
    /// layer with `route_layer` so the route is known. Requests without one share a bucket.
    pub fn route() -> Self {
        Self(KeyKind::Route)
    }

    /// A key computed by `extract` from the request head; `None` leaves the request unlimited
    /// by this layer.
    pub fn custom<F>(extract: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        Self(KeyKind::Custom(Arc::new(extract)))
    }

    /// Whether the key is read from the [`Principal`].
    fn uses_principal(&self) -> bool {
        matches!(self.0, KeyKind::Subject | KeyKind::ApiKeyId)
    }

    /// Hashes the request's key; `principal` is the request's [`Principal`] when
    /// [`uses_principal`](Self::uses_principal) or a role tier needed it (looked up once).
    fn hash_into<H: Hasher>(
        &self,
        extensions: &http::Extensions,
        principal: Option<&Principal>,
        parts: Option<&Parts>,
        h: &mut H,
    ) -> bool {
        match &self.0 {
            KeyKind::ClientIp(resolver) => {
                match extensions.get::<ClientIp>() {
                    Some(ClientIp(ip)) => resolver.key(*ip).hash(h),
                    None => None::<IpAddr>.hash(h),
                }
                true
            }
            KeyKind::Subject => match principal {
                Some(p) => {
                    p.subject().hash(h);
                    true
                }
                None => false,
            },
            KeyKind::ApiKeyId => match principal.map(Principal::auth_method) {
                Some(AuthMethod::ApiKey { key_id }) => {
                    key_id.hash(h);
                    true
                }
                _ => false,
            },
            KeyKind::Route => {
                route_of(extensions).hash(h);
                true
            }
            KeyKind::Custom(extract) => match parts.and_then(|p| extract(p)) {
                Some(key) => {
                    key.hash(h);
                    true
                }
                None => false,
            },
        }
    }
}

#[cfg(feature = "axum")]
fn route_of(extensions: &http::Extensions) -> Option<&str> {
    extensions
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

#[cfg(not(feature = "axum"))]
fn route_of(_extensions: &http::Extensions) -> Option<&str> {
    None
}

struct Tier {
    role: Option<String>,
    quota: Quota,
    policy: HeaderValue,
    label: String,
}

#[derive(Default)]
struct Counters {
    allowed: AtomicU64,
    limited: AtomicU64,
    shadow_limited: AtomicU64,
}

struct Config {
    name: String,
    key: RateLimitKey,
    /// Role tiers in order, then the default tier last.
    tiers: Vec<Tier>,
    store: MemoryStore,
    #[cfg(feature = "redis")]
    redis: Option<crate::ratelimit::store::RedisRateLimitStore>,
    clock: SharedClock,
    success_headers: bool,
    shadow: bool,
    counters: Counters,
}

/// Counters of a [`RateLimitLayer`] (shared by its clones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// Requests allowed.
    pub allowed: u64,
    /// Requests refused with 429.
    pub limited: u64,
    /// Requests that shadow mode would have refused.
    pub shadow_limited: u64,
    /// Keys tracked now.
    pub tracked_keys: usize,
    /// Checks that went to an overflow bucket (store full of keys in debt).
    pub overflowed: u64,
}

/// A rate limit. See the [module docs](super).
#[derive(Clone)]
#[must_use]
pub struct RateLimitLayer {
    config: Arc<Config>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("name", &self.config.name)
            .field("key", &self.config.key)
            .field("shadow", &self.config.shadow)
            .field("store", &self.config.store)
            .finish_non_exhaustive()
    }
}

/// Configuration of a [`RateLimitLayer`].
#[must_use]
pub struct RateLimitLayerBuilder {
    name: String,
    quota: Option<Quota>,
    key: Option<RateLimitKey>,
    tiers: Vec<(String, Quota)>,
    store: Option<MemoryStore>,
    #[cfg(feature = "redis")]
    redis: Option<crate::ratelimit::store::RedisRateLimitStore>,
    clock: SharedClock,
    success_headers: bool,
    shadow: bool,
}

impl fmt::Debug for RateLimitLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("name", &self.name)
            .field("quota", &self.quota)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// Starts a limit named `name` (shown in the `RateLimit` headers and audit events):
    /// 1 to 64 characters among `a-z A-Z 0-9 - _ .`.
    pub fn builder(name: impl Into<String>) -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            name: name.into(),
            quota: None,
            key: None,
            tiers: Vec::new(),
            store: None,
            #[cfg(feature = "redis")]
            redis: None,
            clock: Arc::new(SystemClock),
            success_headers: false,
            shadow: false,
        }
    }

    /// The counters.
    pub fn stats(&self) -> RateLimitStats {
        let c = &self.config.counters;
        RateLimitStats {
            allowed: c.allowed.load(Ordering::Relaxed),
            limited: c.limited.load(Ordering::Relaxed),
            shadow_limited: c.shadow_limited.load(Ordering::Relaxed),
            tracked_keys: self.config.store.tracked_keys(),
            overflowed: self.config.store.overflowed(),
        }
    }

    /// The store holding this limit's state.
    pub fn store(&self) -> &MemoryStore {
        &self.config.store
    }
}

impl RateLimitLayerBuilder {
    /// The default quota (required): applies to every key not matched by a [`tier`](Self::tier).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// What requests are counted by (required).
    pub fn key(mut self, key: RateLimitKey) -> Self {
        self.key = Some(key);
        self
    }

    /// A quota for principals holding `role`. Tiers are tried in the order added; the first
    /// role the principal has wins; others get the default [`quota`](Self::quota). Each tier has
    /// its own buckets and its own policy name `<name>.<role>`.
    pub fn tier(mut self, role: impl Into<String>, quota: Quota) -> Self {
        self.tiers.push((role.into(), quota));
        self
    }

    /// The state store. Default: a [`MemoryStore`] with its default bound (100 000 keys).
    /// Share one store between layers only if their keys cannot collide (different names do
    /// not separate keys).
    pub fn store(mut self, store: MemoryStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The time source. Default: the system clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Keeps the state in Redis (feature `redis`), shared by every replica using the same
    /// Redis and key prefix, instead of in the local [`store`](Self::store). Redis keys are
    /// `sha256(policy name, key)`: layers on different replicas must use the same name.
    /// When Redis fails, the store's [`FailureMode`](crate::ratelimit::store::FailureMode)
    /// applies.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, store: crate::ratelimit::store::RedisRateLimitStore) -> Self {
        self.redis = Some(store);
        self
    }

    /// Also sends `RateLimit-Policy` and `RateLimit` on allowed responses. Default: off, since
    /// the remaining budget helps an attacker pace a flood just under the limit as much as it
    /// helps a well-behaved client.
    pub fn with_success_headers(mut self, on: bool) -> Self {
        self.success_headers = on;
        self
    }

    /// Shadow mode: evaluate and count, audit (`ratelimit.shadow`) what would be refused, but
    /// refuse nothing. Default: off (enforced).
    pub fn shadow(mut self) -> Self {
        self.shadow = true;
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ConfigError::new(
                "rate limit name: 1 to 64 characters among a-z A-Z 0-9 - _ .",
            ));
        }
        let quota = self
            .quota
            .ok_or_else(|| ConfigError::new(format!("rate limit {}: no quota", self.name)))?;
        let key = self
            .key
            .ok_or_else(|| ConfigError::new(format!("rate limit {}: no key", self.name)))?;
        let mut tiers = Vec::with_capacity(self.tiers.len() + 1);
        for (role, quota) in self.tiers {
            if role.is_empty()
                || !role
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
            {
                return Err(ConfigError::new(format!(
                    "rate limit {}: tier role {role:?} must be non-empty, among a-z A-Z 0-9 - _ . :",
                    self.name
                )));
            }
            tiers.push(tier(format!("{}.{role}", self.name), Some(role), quota)?);
        }
        tiers.push(tier(self.name.clone(), None, quota)?);
        let store = match self.store {
            Some(store) => store,
            None => MemoryStore::builder().build()?,
        };
        Ok(RateLimitLayer {
            config: Arc::new(Config {
                name: self.name,
                key,
                tiers,
                store,
                #[cfg(feature = "redis")]
                redis: self.redis,
                clock: self.clock,
                success_headers: self.success_headers,
                shadow: self.shadow,
                counters: Counters::default(),
            }),
        })
    }
}

fn tier(label: String, role: Option<String>, quota: Quota) -> Result<Tier, ConfigError> {
    quota.validate()?;
    let policy = HeaderValue::from_str(&format!(
        "\"{label}\";q={};w={}",
        quota.burst(),
        quota.window_secs()
    ))
    .map_err(|_| ConfigError::new("rate limit name is not a valid header value"))?;
    Ok(Tier {
        role,
        quota,
        policy,
        label,
    })
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service produced by [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Picks the tier and checks the key; `None` when the request has no key for this limit.
    fn check(
        &self,
        extensions: &http::Extensions,
        parts: Option<&Parts>,
    ) -> Option<(usize, RateLimitDecision)> {
        // Only role tiers and principal keys need the principal: a per-IP limit without tiers
        // skips the lookup.
        let principal = if self.tiers.len() > 1 || self.key.uses_principal() {
            extensions.get::<Principal>()
        } else {
            None
        };
        let index = self.tiers.iter().position(|t| match (&t.role, principal) {
            (None, _) => true,
            (Some(role), Some(p)) => p.has_role(role),
            (Some(_), None) => false,
        })?;
        let tier = self.tiers.get(index)?;
        let mut hasher = self.store.hasher();
        index.hash(&mut hasher);
        if !self
            .key
            .hash_into(extensions, principal, parts, &mut hasher)
        {
            return None;
        }
        let decision = self.store.check_hash(
            hasher.finish(),
            &tier.quota,
            request_time(&*self.clock, extensions),
        );
        Some((index, decision))
    }

    /// The tier and the key as stable text (for a shared store).
    #[cfg(feature = "redis")]
    fn key_text(&self, parts: &Parts) -> Option<(usize, String)> {
        let extensions = &parts.extensions;
        let principal = extensions.get::<Principal>();
        let index = self.tiers.iter().position(|t| match (&t.role, principal) {
            (None, _) => true,
            (Some(role), Some(p)) => p.has_role(role),
            (Some(_), None) => false,
        })?;
        let key = match &self.key.0 {
            KeyKind::ClientIp(resolver) => match extensions.get::<ClientIp>() {
                Some(ClientIp(ip)) => format!("ip:{}", resolver.key(*ip)),
                None => "ip:unknown".to_owned(),
            },
            KeyKind::Subject => format!("sub:{}", principal?.subject()),
            KeyKind::ApiKeyId => match principal?.auth_method() {
                AuthMethod::ApiKey { key_id } => format!("key:{key_id}"),
                _ => return None,
            },
            KeyKind::Route => format!("route:{}", route_of(extensions).unwrap_or("")),
            KeyKind::Custom(extract) => format!("custom:{}", extract(parts)?),
        };
        Some((index, key))
    }

    fn state_header(
        &self,
        index: usize,
        decision: &RateLimitDecision,
    ) -> Option<(HeaderValue, HeaderValue)> {
        self.headers_for(index, decision.remaining(), ceil_secs(decision.reset()))
    }

    fn headers_for(
        &self,
        index: usize,
        remaining: u32,
        reset_secs: u64,
    ) -> Option<(HeaderValue, HeaderValue)> {
        let tier = self.tiers.get(index)?;
        let state =
            HeaderValue::from_str(&format!("\"{}\";r={remaining};t={reset_secs}", tier.label,))
                .ok()?;
        Some((tier.policy.clone(), state))
    }
}

/// The `RateLimit-Policy` and `RateLimit` headers of an allowed request, rendered when the
/// response passes: the numbers are fixed at the check, and keeping them instead of the two
/// header values keeps the response future small (it is moved by every enclosing layer).
pub(crate) struct SuccessHeaders {
    config: Arc<Config>,
    index: u32,
    remaining: u32,
    reset_secs: u64,
}

impl SuccessHeaders {
    pub(crate) fn apply(self, headers: &mut http::HeaderMap) {
        let index = usize::try_from(self.index).unwrap_or(usize::MAX);
        if let Some((policy, state)) =
            self.config
                .headers_for(index, self.remaining, self.reset_secs)
        {
            crate::ratelimit::future::append(headers, policy, state);
        }
    }
}

enum Verdict<B> {
    /// Allowed; the tier and the decision when success headers are on.
    Pass(Option<(usize, RateLimitDecision)>),
    Refuse(Response<B>),
}

fn finish(config: &Arc<Config>, pass: Option<(usize, RateLimitDecision)>) -> Finish {
    match pass.and_then(|(index, decision)| Some((u32::try_from(index).ok()?, decision))) {
        Some((index, decision)) => Finish::Headers(SuccessHeaders {
            config: config.clone(),
            index,
            remaining: decision.remaining(),
            reset_secs: ceil_secs(decision.reset()),
        }),
        None => Finish::Nothing,
    }
}

impl Config {
    /// Counts, audits and turns a check's outcome into what to do with the request.
    fn verdict<B: Default>(&self, outcome: Option<(usize, RateLimitDecision)>) -> Verdict<B> {
        let Some((index, decision)) = outcome else {
            return Verdict::Pass(None);
        };
        if decision.is_allowed() {
            self.counters.allowed.fetch_add(1, Ordering::Relaxed);
            return Verdict::Pass(self.success_headers.then_some((index, decision)));
        }
        let label = self.tiers.get(index).map_or("", |t| t.label.as_str());
        if self.shadow {
            self.counters.shadow_limited.fetch_add(1, Ordering::Relaxed);
            crate::audit::global().record(
                crate::audit::AuditEvent::new(crate::audit::EventType::RateLimitShadow)
                    .with_reason_code("rate_limited")
                    .with_detail("limit", label.to_owned())
                    .with_detail(
                        "retry_after_ms",
                        u64::try_from(decision.retry_after().as_millis()).unwrap_or(u64::MAX),
                    ),
            );
            return Verdict::Pass(None);
        }
        self.counters.limited.fetch_add(1, Ordering::Relaxed);
        let mut response = Rejection::new(
            RejectionKind::RateLimited,
            format!("rate limit {label} exceeded"),
        )
        .with_retry_after(decision.retry_after())
        .into_deferred_response::<B>();
        if let Some((policy, state)) = self.state_header(index, &decision) {
            crate::ratelimit::future::append(response.headers_mut(), policy, state);
        }
        Verdict::Refuse(response)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        #[cfg(feature = "redis")]
        if let Some(redis) = self.config.redis.clone() {
            return self.call_redis(redis, req);
        }
        let config = &*self.config;
        let (outcome, req) = if matches!(config.key.0, KeyKind::Custom(_)) {
            let (parts, body) = req.into_parts();
            let outcome = config.check(&parts.extensions, Some(&parts));
            (outcome, Request::from_parts(parts, body))
        } else {
            (config.check(req.extensions(), None), req)
        };
        match config.verdict(outcome) {
            Verdict::Pass(pass) => {
                ResponseFuture::inner(self.inner.call(req), finish(&self.config, pass))
            }
            Verdict::Refuse(response) => ResponseFuture::refused(response),
        }
    }
}

#[cfg(feature = "redis")]
impl<S> RateLimit<S> {
    fn call_redis<ReqBody, ResBody>(
        &mut self,
        redis: crate::ratelimit::store::RedisRateLimitStore,
        req: Request<ReqBody>,
    ) -> ResponseFuture<S::Future, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Default + Send + 'static,
    {
        let mut inner = crate::ratelimit::future::take_ready(&mut self.inner);
        let config = self.config.clone();
        let (parts, body) = req.into_parts();
        let key = config.key_text(&parts);
        let future = async move {
            let outcome = match key {
                Some((index, key)) => match config.tiers.get(index) {
                    Some(tier) => Some((
                        index,
                        redis
                            .check(
                                &tier.label,
                                &key,
                                &tier.quota,
                                request_time(&*config.clock, &parts.extensions),
                            )
                            .await,
                    )),
                    None => None,
                },
                None => None,
            };
            match config.verdict(outcome) {
                Verdict::Pass(pass) => {
                    let mut response = inner.call(Request::from_parts(parts, body)).await?;
                    finish(&config, pass).apply(&mut response);
                    Ok(response)
                }
                Verdict::Refuse(response) => Ok(response),
            }
        };
        ResponseFuture::boxed(Box::pin(future))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::context::RequestContextLayer;
    use http::StatusCode;
    use std::future::Future;
    use std::num::NonZeroU32;
    use std::time::Duration;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn echo() -> impl Service<
        Request<String>,
        Response = Response<String>,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<Response<String>, std::convert::Infallible>>
                 + Send
                 + 'static,
    > + Clone {
        service_fn(|_req: Request<String>| async {
            Ok::<_, std::convert::Infallible>(Response::new("ok".to_owned()))
        })
    }

    fn request(ip: &str, principal: Option<Principal>) -> Request<String> {
        let mut req = Request::new(String::new());
        req.extensions_mut().insert(ClientIp(ip.parse().unwrap()));
        if let Some(p) = principal {
            req.extensions_mut().insert(p);
        }
        req
    }

    fn user(subject: &str, roles: &[&str]) -> Principal {
        Principal::builder(subject, AuthMethod::Other("test".into()))
            .roles(roles.iter().copied())
            .build()
    }

    #[tokio::test]
    async fn stacked_limits_tiers_and_headers() {
        let clock = ManualClock::now_from_system();
        let per_ip = RateLimitLayer::builder("per-ip")
            .quota(Quota::per_second(nz(100)))
            .key(RateLimitKey::client_ip())
            .clock(Arc::new(clock.clone()))
            .with_success_headers(true)
            .build()
            .unwrap();
        let per_subject = RateLimitLayer::builder("per-subject")
            .quota(Quota::per_minute(nz(2)))
            .tier("admin", Quota::per_minute(nz(4)))
            .key(RateLimitKey::subject())
            .clock(Arc::new(clock.clone()))
            .with_success_headers(true)
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .layer(RequestContextLayer::new())
            .layer(per_ip.clone())
            .layer(per_subject.clone())
            .service(echo());
        // (request, expected status) in order; same minute.
        let alice = || Some(user("alice", &["reader"]));
        let root = || Some(user("root", &["admin"]));
        let table: Vec<(Request<String>, StatusCode)> = vec![
            (request("192.0.2.1", alice()), StatusCode::OK),
            (request("192.0.2.2", alice()), StatusCode::OK),
            (request("192.0.2.3", alice()), StatusCode::TOO_MANY_REQUESTS),
            (request("192.0.2.1", root()), StatusCode::OK),
            (request("192.0.2.1", root()), StatusCode::OK),
            (request("192.0.2.1", root()), StatusCode::OK),
            (request("192.0.2.1", root()), StatusCode::OK),
            (request("192.0.2.1", root()), StatusCode::TOO_MANY_REQUESTS),
            // Anonymous: only the per-IP limit applies.
            (request("192.0.2.1", None), StatusCode::OK),
        ];
        for (i, (req, status)) in table.into_iter().enumerate() {
            let response = svc.clone().oneshot(req).await.unwrap();
            assert_eq!(response.status(), status, "row {i}");
        }
        let ok = svc
            .clone()
            .oneshot(request("192.0.2.9", Some(user("bob", &[]))))
            .await
            .unwrap();
        let policies: Vec<_> = ok.headers().get_all("ratelimit-policy").iter().collect();
        assert_eq!(
            policies,
            ["\"per-subject\";q=2;w=60", "\"per-ip\";q=100;w=1"]
        );
        let states: Vec<_> = ok.headers().get_all("ratelimit").iter().collect();
        assert_eq!(states, ["\"per-subject\";r=1;t=30", "\"per-ip\";r=99;t=1"]);

        let refused = svc
            .clone()
            .oneshot(request("192.0.2.9", Some(user("root", &["admin"]))))
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()["retry-after"], "15");
        assert_eq!(
            refused.headers()["content-type"],
            "application/problem+json"
        );
        let states: Vec<_> = refused.headers().get_all("ratelimit").iter().collect();
        assert_eq!(
            states,
            ["\"per-subject.admin\";r=0;t=60", "\"per-ip\";r=98;t=1"],
            "every stacked limit reports its own state"
        );
        assert_eq!(per_subject.stats().limited, 3);
        clock.advance(Duration::from_secs(15));
        let again = svc
            .oneshot(request("192.0.2.9", Some(user("root", &["admin"]))))
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn grpc_requests_get_resource_exhausted() {
        let limit = RateLimitLayer::builder("grpc")
            .quota(Quota::per_hour(nz(1)))
            .key(RateLimitKey::client_ip())
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .layer(RequestContextLayer::new())
            .layer(limit)
            .service(echo());
        let grpc = || {
            let mut req = request("2001:db8:1:ff::1", None);
            req.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            req
        };
        assert_eq!(
            svc.clone().oneshot(grpc()).await.unwrap().status(),
            StatusCode::OK
        );
        // Same /56: same bucket.
        let mut other = grpc();
        other
            .extensions_mut()
            .insert(ClientIp("2001:db8:1:aa::9".parse().unwrap()));
        let refused = svc.oneshot(other).await.unwrap();
        assert_eq!(refused.headers()["grpc-status"], "8");
    }

    #[tokio::test]
    async fn shadow_mode_counts_but_lets_through() {
        let limit = RateLimitLayer::builder("dry-run")
            .quota(Quota::per_hour(nz(1)))
            .key(RateLimitKey::custom(|parts| {
                parts
                    .headers
                    .get("x-tenant")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            }))
            .shadow()
            .build()
            .unwrap();
        let svc = limit.clone().layer(echo());
        for _ in 0..3 {
            let req = Request::builder()
                .header("x-tenant", "acme")
                .body(String::new())
                .unwrap();
            assert_eq!(
                svc.clone().oneshot(req).await.unwrap().status(),
                StatusCode::OK
            );
        }
        // No key: not counted at all.
        let _ = svc.oneshot(Request::new(String::new())).await.unwrap();
        let stats = limit.stats();
        assert_eq!(
            (stats.allowed, stats.shadow_limited, stats.limited),
            (1, 2, 0)
        );
    }

    /// A request as the edge leaves it, arrived at `received`.
    fn arrived_at(ip: &str, received: std::time::SystemTime) -> Request<String> {
        let mut req = request(ip, None);
        req.extensions_mut()
            .insert(crate::context::RequestContext::arrived_at(
                received,
                Some(ip.parse().unwrap()),
            ));
        req
    }

    /// The status `svc` answers `req` with.
    async fn status_of<S, B>(svc: &S, req: Request<String>) -> StatusCode
    where
        S: Service<Request<String>, Response = Response<B>> + Clone,
        S::Error: fmt::Debug,
    {
        svc.clone().oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn system_clock_limits_use_the_arrival_time_from_the_edge() {
        let limit = || {
            RateLimitLayer::builder("hourly")
                .quota(Quota::per_hour(nz(1)))
                .key(RateLimitKey::client_ip())
                .build()
                .unwrap()
        };
        let svc = limit().layer(echo());
        let now = std::time::SystemTime::now();
        let arrived = |at| arrived_at("192.0.2.1", at);
        assert_eq!(status_of(&svc, arrived(now)).await, StatusCode::OK);
        assert_eq!(
            status_of(&svc, arrived(now)).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        // An hour later by the request's arrival time (the system clock has not moved): allowed,
        // so the arrival time was used and the clock was not read.
        let later = now + Duration::from_secs(3_600);
        assert_eq!(status_of(&svc, arrived(later)).await, StatusCode::OK);
        // Without the edge's context, the clock decides: still within the hour.
        let svc = limit().layer(echo());
        let plain = || request("192.0.2.1", None);
        assert_eq!(status_of(&svc, plain()).await, StatusCode::OK);
        assert_eq!(
            status_of(&svc, plain()).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn injected_clocks_are_read_behind_the_edge() {
        let clock = ManualClock::now_from_system();
        let limit = RateLimitLayer::builder("hourly")
            .quota(Quota::per_hour(nz(1)))
            .key(RateLimitKey::client_ip())
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .layer(RequestContextLayer::new())
            .layer(limit)
            .service(echo());
        let plain = || request("192.0.2.1", None);
        assert_eq!(status_of(&svc, plain()).await, StatusCode::OK);
        assert_eq!(
            status_of(&svc, plain()).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        // Only the injected clock moved: the edge's arrival time would still refuse.
        clock.advance(Duration::from_secs(3_600));
        assert_eq!(status_of(&svc, plain()).await, StatusCode::OK);
        // A request carrying an arrival time far ahead does not move an injected clock either.
        let svc = ServiceBuilder::new()
            .layer(
                RateLimitLayer::builder("hourly")
                    .quota(Quota::per_hour(nz(1)))
                    .key(RateLimitKey::client_ip())
                    .clock(Arc::new(clock.clone()))
                    .build()
                    .unwrap(),
            )
            .service(echo());
        let ahead = clock.now() + Duration::from_secs(3_600);
        assert_eq!(
            status_of(&svc, arrived_at("192.0.2.1", ahead)).await,
            StatusCode::OK
        );
        let further = ahead + Duration::from_secs(3_600);
        assert_eq!(
            status_of(&svc, arrived_at("192.0.2.1", further)).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn invalid_configuration_fails_at_build() {
        let q = Quota::per_second(nz(1));
        assert!(
            RateLimitLayer::builder("x")
                .key(RateLimitKey::subject())
                .build()
                .is_err()
        );
        assert!(RateLimitLayer::builder("x").quota(q).build().is_err());
        assert!(
            RateLimitLayer::builder("bad name")
                .quota(q)
                .key(RateLimitKey::subject())
                .build()
                .is_err()
        );
        assert!(
            RateLimitLayer::builder("x")
                .quota(Quota::per_period(nz(10), Duration::from_nanos(5)))
                .key(RateLimitKey::subject())
                .build()
                .is_err()
        );
        assert!(
            RateLimitLayer::builder("x")
                .quota(q)
                .tier("", q)
                .key(RateLimitKey::subject())
                .build()
                .is_err()
        );
    }
}
