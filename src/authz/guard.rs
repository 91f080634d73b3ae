//! The per-route authorization guard.
//!
//! [`PolicyGuardLayer`] evaluates one [`Policy`] for every request that reaches the route it
//! wraps. The route is identified by its matched template (axum's `MatchedPath`, or a
//! [`MatchedRoute`] set by another router, or the gRPC method path), never by the raw path, so
//! percent-encodings and trailing slashes cannot select a different policy. A request with no
//! identifiable route is denied.
//!
//! [`SecureRouter`](crate::routing::SecureRouter) installs one guard per (route, method); use
//! the layer directly only when building your own routing.
//!
//! # Deployment caveat
//! The guard trusts the [`Principal`] in the request extensions: run it behind
//! [`AuthnLayer`](crate::authn::AuthnLayer), never in front of it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::decision::DecisionRecord;
use super::{Decision, DenyCode, Policy, PolicyContext, Rbac, SharedPolicy};
use crate::clock::{SharedClock, SystemClock};
use crate::context::{MatchedRoute, RequestContext, RequestId};
use crate::principal::Principal;
use crate::rejection::{Rejection, RejectionKind, is_grpc};

/// The role tables and clock every guard of a router shares.
#[derive(Debug, Clone)]
pub struct AuthzConfig {
    rbac: Arc<Rbac>,
    clock: SharedClock,
    allow_sample_every: u32,
    allow_counter: Arc<AtomicU64>,
}

impl Default for AuthzConfig {
    fn default() -> Self {
        Self::new(Rbac::default())
    }
}

impl AuthzConfig {
    /// Uses `rbac` and the system clock.
    pub fn new(rbac: Rbac) -> Self {
        Self {
            rbac: Arc::new(rbac),
            clock: Arc::new(SystemClock),
            allow_sample_every: DEFAULT_ALLOW_SAMPLE_EVERY,
            allow_counter: Arc::new(AtomicU64::new(0)),
        }
    }
    /// Records one allow decision in `every` (default 100; 1 records all, 0 none). Denials are
    /// always recorded.
    pub fn with_allow_sampling(mut self, every: u32) -> Self {
        self.allow_sample_every = every;
        self
    }
    fn sample_allow(&self) -> bool {
        match self.allow_sample_every {
            0 => false,
            every => self
                .allow_counter
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(u64::from(every)),
        }
    }
    /// Replaces the clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
    /// The role tables.
    pub fn rbac(&self) -> &Rbac {
        &self.rbac
    }
}

const DEFAULT_ALLOW_SAMPLE_EVERY: u32 = 100;

static DEFAULT_CONFIG: LazyLock<Arc<AuthzConfig>> =
    LazyLock::new(|| Arc::new(AuthzConfig::default()));

/// Applies one policy to every request of the wrapped service.
#[derive(Debug, Clone)]
#[must_use]
pub struct PolicyGuardLayer {
    policy: SharedPolicy,
    config: Option<Arc<AuthzConfig>>,
}

impl PolicyGuardLayer {
    /// Guards with `policy`, reading the [`AuthzConfig`] from the request extensions (where
    /// `SecureRouter` puts it) or using an empty one.
    pub fn new(policy: SharedPolicy) -> Self {
        Self {
            policy,
            config: None,
        }
    }
    /// Guards with `policy` and a fixed configuration.
    pub fn with_config(policy: SharedPolicy, config: Arc<AuthzConfig>) -> Self {
        Self {
            policy,
            config: Some(config),
        }
    }
}

impl<S> Layer<S> for PolicyGuardLayer {
    type Service = PolicyGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyGuard {
            inner,
            policy: self.policy.clone(),
            config: self.config.clone(),
            route: Arc::default(),
        }
    }
}

/// The service produced by [`PolicyGuardLayer`].
#[derive(Clone)]
pub struct PolicyGuard<S> {
    inner: S,
    policy: SharedPolicy,
    config: Option<Arc<AuthzConfig>>,
    /// The template this guard's route matched last time, shared by the per-request clones so
    /// the common case (one template per guard) costs a comparison, not an allocation.
    route: Arc<OnceLock<Arc<str>>>,
}

impl<S: fmt::Debug> fmt::Debug for PolicyGuard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyGuard")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

pub(crate) fn route_of<B>(req: &Request<B>, seen: &OnceLock<Arc<str>>) -> Option<Arc<str>> {
    if let Some(MatchedRoute(route)) = req.extensions().get::<MatchedRoute>() {
        return Some(route.clone());
    }
    let template = template_of(req)?;
    // A guard usually serves one template; a router nested twice can show it several.
    let cached = seen.get_or_init(|| Arc::from(template));
    Some(if **cached == *template {
        cached.clone()
    } else {
        Arc::from(template)
    })
}

fn template_of<B>(req: &Request<B>) -> Option<&str> {
    #[cfg(feature = "axum")]
    if let Some(matched) = req.extensions().get::<axum::extract::MatchedPath>() {
        return Some(matched.as_str());
    }
    // gRPC method paths are exact (`/package.Service/Method`); there is no template to match.
    is_grpc(req.headers()).then(|| req.uri().path())
}

#[cfg(feature = "axum")]
fn path_params<B>(req: Request<B>) -> (Request<B>, Vec<(String, String)>) {
    use axum::extract::{FromRequestParts, RawPathParams};
    use futures_util::FutureExt;
    let (mut parts, body) = req.into_parts();
    // The extractor only reads extensions, so its future is ready on first poll.
    let params = RawPathParams::from_request_parts(&mut parts, &())
        .now_or_never()
        .and_then(Result::ok)
        .map(|raw| {
            raw.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    (Request::from_parts(parts, body), params)
}

#[cfg(not(feature = "axum"))]
fn path_params<B>(req: Request<B>) -> (Request<B>, Vec<(String, String)>) {
    (req, Vec::new())
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for PolicyGuard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(route) = route_of(&req, &self.route) else {
            let rejection = Rejection::forbidden("no matched route to authorize")
                .with_policy_id(self.policy.id().clone());
            return GuardFuture::denied(rejection.into_deferred_response());
        };
        match authorize(&self.policy, self.config.as_ref(), route, req) {
            Ok((req, route)) => GuardFuture::allowed(self.inner.call(req), route),
            Err(response) => GuardFuture::denied(response),
        }
    }
}

/// Evaluates `policy` for `req` on `route`. On allow, hands the request back with the route to
/// record; on deny, returns the deferred rejection response.
pub(crate) fn authorize<B, ResBody: Default>(
    policy: &SharedPolicy,
    fixed_config: Option<&Arc<AuthzConfig>>,
    route: Arc<str>,
    req: Request<B>,
) -> Result<(Request<B>, MatchedRoute), Response<ResBody>> {
    let (req, params) = if policy.uses_path_params() {
        path_params(req)
    } else {
        (req, Vec::new())
    };
    let param_refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let config = fixed_config
        .cloned()
        .or_else(|| req.extensions().get::<Arc<AuthzConfig>>().cloned())
        .unwrap_or_else(|| DEFAULT_CONFIG.clone());
    let context = req.extensions().get::<RequestContext>();
    let ctx = PolicyContext {
        principal: req.extensions().get::<Principal>(),
        method: req.method(),
        route: &route,
        params: &param_refs,
        client_ip: context.and_then(|c| c.client_ip),
        rbac: &config.rbac,
        clock: &*config.clock,
        resource: None,
        // The edge judged it from the same headers.
        grpc: context.map_or_else(|| is_grpc(req.headers()), |c| c.grpc),
    };
    let started = Instant::now();
    let decision = policy.evaluate(&ctx);
    let request_id = context.map(|c| c.request_id);
    match decision {
        Decision::Allow => {
            if config.sample_allow() {
                let evaluation = started.elapsed();
                let mut event = DecisionRecord {
                    decision_id: RequestId::generate().as_str(),
                    allowed: true,
                    policy_id: policy.id(),
                    reason_code: None,
                    reason: None,
                    evaluation,
                    method: ctx.method.as_str(),
                    route: &route,
                    subject: ctx.principal.map(Principal::subject),
                    request_id: request_id.as_ref().map(RequestId::as_str),
                }
                .to_event();
                event.principal = ctx.principal.cloned();
                crate::audit::record_in(req.extensions(), event);
            }
            Ok((req, MatchedRoute(route)))
        }
        Decision::Deny(denial) => {
            let evaluation = started.elapsed();
            let decision_id = RequestId::generate();
            let mut event = DecisionRecord {
                decision_id: decision_id.as_str(),
                allowed: false,
                policy_id: &denial.policy_id,
                reason_code: Some(denial.code),
                reason: Some(&denial.reason),
                evaluation,
                method: ctx.method.as_str(),
                route: &route,
                subject: ctx.principal.map(Principal::subject),
                request_id: request_id.as_ref().map(RequestId::as_str),
            }
            .to_event();
            event.principal = ctx.principal.cloned();
            crate::audit::record_in(req.extensions(), event);
            let detail = format!(
                "policy {} denied {} {}: {} ({})",
                denial.policy_id,
                ctx.method,
                route,
                denial.reason,
                denial.code.as_str()
            );
            let rejection = match denial.code {
                DenyCode::NotAuthenticated => {
                    Rejection::new(RejectionKind::MissingCredential, detail)
                }
                _ => Rejection::forbidden(detail),
            }
            .with_policy_id(denial.policy_id)
            .with_decision_id(decision_id.as_str());
            let mut response: Response<ResBody> = rejection.into_deferred_response();
            response.extensions_mut().insert(MatchedRoute(route));
            Err(response)
        }
    }
}

pin_project! {
    /// Response future of [`PolicyGuard`].
    pub struct GuardFuture<F, B> {
        #[pin]
        state: GuardState<F, B>,
    }
}

pin_project! {
    #[project = GuardStateProj]
    enum GuardState<F, B> {
        Allowed { #[pin] future: F, route: Option<MatchedRoute> },
        Denied { response: Option<Response<B>> },
    }
}

impl<F, B> GuardFuture<F, B> {
    pub(crate) fn allowed(future: F, route: MatchedRoute) -> Self {
        Self {
            state: GuardState::Allowed {
                future,
                route: Some(route),
            },
        }
    }
    pub(crate) fn denied(response: Response<B>) -> Self {
        Self {
            state: GuardState::Denied {
                response: Some(response),
            },
        }
    }
}

impl<F, B> fmt::Debug for GuardFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            GuardState::Allowed { .. } => "allowed",
            GuardState::Denied { .. } => "denied",
        };
        f.debug_struct("GuardFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E> Future for GuardFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            GuardStateProj::Allowed { future, route } => {
                let mut response = std::task::ready!(future.poll(cx))?;
                if let Some(route) = route.take() {
                    response.extensions_mut().insert(route);
                }
                Poll::Ready(Ok(response))
            }
            GuardStateProj::Denied { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after completion; a future must not be polled after Ready,
                // so this is unreachable in correct use. Stay pending rather than panic.
                None => Poll::Pending,
            },
        }
    }
}
