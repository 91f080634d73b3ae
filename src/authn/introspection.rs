//! Opaque bearer tokens, checked by RFC 7662 token introspection (feature `oidc`).
//!
//! Some identity providers issue reference tokens that only they can read.
//! [`IntrospectionAuthenticator`] POSTs each such token to the provider's introspection
//! endpoint, authenticating itself with `client_secret_basic`, and turns an `active` answer
//! into a [`Principal`]: subject from `sub` (or `client_id` for client-credentials tokens),
//! roles from a configurable claim, scopes from `scope`, expiry from `exp`. Anything else
//! (`active: false`, an error status, a timeout, a malformed answer) is a 401.
//!
//! | setting | default | effect of changing it |
//! |---|---|---|
//! | client authentication | `client_secret_basic`, required | the secret is a [`SecretString`]: never in `Debug`, logs or errors |
//! | audience ([`audience`](IntrospectionAuthenticatorBuilder::audience)) | required: the answer's `aud` must contain it | `insecure_accept_any_audience` accepts tokens issued for other services (token forwarding) |
//! | issuer ([`issuer`](IntrospectionAuthenticatorBuilder::issuer)) | optional: when set, an answer carrying another `iss` is refused | |
//! | JWT-shaped tokens (two dots) | left to a JWT authenticator: verified by [`jwt`](IntrospectionAuthenticatorBuilder::jwt) when given, otherwise not claimed | [`introspect_jwts`](IntrospectionAuthenticatorBuilder::introspect_jwts) sends them to the endpoint too |
//! | cache | 10,000 entries keyed by SHA-256 of the token; an entry lives until the token's `exp` and at most 60 s | a longer maximum TTL delays noticing a token revoked at the provider |
//! | inactive answers | never cached | |
//! | token kind | bearer access tokens only: a `token_type` other than `Bearer` / `access_token` (refresh, DPoP) or a `cnf` confirmation (sender-constrained) is refused | |
//! | leeway | 60 s on `exp` / `nbf` (at most 5 min) | |
//! | timeouts | connect 2 s, whole request 5 s | every request carrying an opaque token waits at most this long on a slow provider |
//! | answer size | 64 KiB | larger answers are refused |
//! | transport | `https` only, no redirects followed | [`insecure_allow_http`](IntrospectionAuthenticatorBuilder::insecure_allow_http), for tests on loopback |
//!
//! **Combining with JWTs.** Give the JWT authenticator to the introspection authenticator with
//! [`jwt`](IntrospectionAuthenticatorBuilder::jwt) instead of adding both to an
//! [`AuthnLayer`](crate::authn::AuthnLayer): a JWT authenticator on its own claims every
//! bearer token (and refuses opaque ones), so both together would see two credentials.
//! Tokens with exactly two dots (the JWS compact form) go to the JWT authenticator, the rest
//! to the endpoint.
//!
//! ```
//! use axum::{Form, Json, Router, routing::post};
//! use http::{Request, StatusCode};
//! use portcullis::authn::AuthnLayer;
//! use portcullis::authn::introspection::IntrospectionAuthenticator;
//! use portcullis::context::RequestContextLayer;
//! use portcullis::principal::Principal;
//! use secrecy::SecretString;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! // A stand-in introspection endpoint on loopback.
//! let idp = Router::new().route("/introspect", post(|Form(form): Form<Vec<(String, String)>>| async move {
//!     let active = form.iter().any(|(k, v)| k == "token" && v == "opaque-123");
//!     Json(serde_json::json!({"active": active, "sub": "alice", "aud": "orders", "scope": "orders:read"}))
//! }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let url = format!("http://{}/introspect", listener.local_addr().unwrap());
//! tokio::spawn(async move { axum::serve(listener, idp).await });
//!
//! let introspection = IntrospectionAuthenticator::builder(url)
//!     .client_credentials("orders-api", SecretString::from("s3cret"))
//!     .audience("orders")
//!     .insecure_allow_http() // loopback test endpoint only
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(RequestContextLayer::new())
//!     .layer(AuthnLayer::new(introspection))
//!     .service(service_fn(|req: Request<String>| async move {
//!         let who = req.extensions().get::<Principal>().map(|p| p.subject().to_owned());
//!         Ok::<_, std::convert::Infallible>(http::Response::new(who.unwrap_or_default()))
//!     }));
//! let call = |token: &str| {
//!     Request::builder().header("authorization", format!("Bearer {token}")).body(String::new()).unwrap()
//! };
//! assert_eq!(svc.clone().oneshot(call("opaque-123")).await.unwrap().status(), StatusCode::OK);
//! assert_eq!(svc.oneshot(call("opaque-999")).await.unwrap().status(), StatusCode::UNAUTHORIZED);
//! # });
//! ```
//!
//! # Deployment caveat
//! Every opaque token not in the cache costs a round trip to the provider, and a flood of
//! random tokens is a flood of introspection calls: rate-limit by client address before
//! authentication. A token revoked at the provider stays accepted until its cache entry
//! expires (at most the maximum cache TTL).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::claims::{lookup, numeric_date, string_list};
use base64::Engine as _;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::authn::jwt::JwtAuthenticator;
use crate::authn::jwt::remote;
use crate::authn::{AuthFuture, Authenticator, bearer_token};
use crate::clock::{SharedClock, SystemClock};
use crate::error::ConfigError;
use crate::principal::{AuthMethod, Principal, PrincipalKind};
use crate::rejection::Rejection;

/// The [`AuthMethod::Other`] name of principals authenticated by introspection.
pub const AUTH_METHOD: &str = "introspection";

const DEFAULT_CACHE_CAPACITY: usize = 10_000;
const DEFAULT_MAX_CACHE_TTL: Duration = Duration::from_secs(60);
const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Clone)]
struct Cached {
    principal: Principal,
    until: SystemTime,
}

type Cache = quick_cache::sync::Cache<[u8; 32], Cached>;

struct Inner {
    endpoint: reqwest::Url,
    shown_endpoint: String,
    http: reqwest::Client,
    client_id: String,
    /// `Basic base64(urlencode(id):urlencode(secret))`, built once.
    authorization: SecretString,
    issuers: Vec<String>,
    audiences: Option<Vec<String>>,
    roles_claim: String,
    leeway: Duration,
    cache: Option<Cache>,
    max_cache_ttl: Duration,
    clock: SharedClock,
    jwt: Option<JwtAuthenticator>,
    introspect_jwts: bool,
    max_token_bytes: usize,
    max_response_bytes: usize,
}

/// Authenticates opaque bearer tokens by RFC 7662 introspection. Cheap to clone. See the
/// [module docs](self).
#[derive(Clone)]
pub struct IntrospectionAuthenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for IntrospectionAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("IntrospectionAuthenticator")
            .field("endpoint", &inner.shown_endpoint)
            .field("client_id", &inner.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("issuers", &inner.issuers)
            .field("audiences", &inner.audiences)
            .field("jwt", &inner.jwt)
            .finish_non_exhaustive()
    }
}

/// Whether `token` has the JWS compact shape (`header.payload.signature`).
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

impl IntrospectionAuthenticator {
    /// Starts a configuration for the introspection endpoint at `endpoint`.
    pub fn builder(endpoint: impl Into<String>) -> IntrospectionAuthenticatorBuilder {
        IntrospectionAuthenticatorBuilder {
            endpoint: endpoint.into(),
            client: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            any_audience: false,
            roles_claim: "roles".into(),
            leeway: DEFAULT_LEEWAY,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            max_cache_ttl: DEFAULT_MAX_CACHE_TTL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            clock: Arc::new(SystemClock),
            jwt: None,
            introspect_jwts: false,
            allow_http: false,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Authenticates one opaque token (cache first, then the endpoint). The rejection's detail
    /// says what failed, for the audit log; it never contains the token.
    pub async fn introspect(&self, token: &str) -> Result<Principal, Rejection> {
        self.introspect_reason(token)
            .await
            .map_err(Rejection::invalid_credential)
    }

    async fn introspect_reason(&self, token: &str) -> Result<Principal, Cow<'static, str>> {
        let inner = &*self.inner;
        if token.len() > inner.max_token_bytes {
            return Err(format!(
                "token of {} bytes exceeds the {} byte limit",
                token.len(),
                inner.max_token_bytes
            )
            .into());
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cache) = &inner.cache
            && let Some(hit) = cache.get(&key)
        {
            if inner.clock.now() < hit.until {
                return Ok(hit.principal);
            }
            cache.remove(&key);
        }
        let answer = self.call_endpoint(token).await?;
        // The time after the call: a slow answer must not extend the token's life.
        let now = inner.clock.now();
        let (principal, exp) = self.principal_from(answer, now)?;
        if let Some(cache) = &inner.cache {
            let latest = now + inner.max_cache_ttl;
            let until = exp.map_or(latest, |exp| exp.min(latest));
            if until > now {
                cache.insert(
                    key,
                    Cached {
                        principal: principal.clone(),
                        until,
                    },
                );
            }
        }
        Ok(principal)
    }

    async fn call_endpoint(&self, token: &str) -> Result<Map<String, Value>, Cow<'static, str>> {
        let inner = &*self.inner;
        let mut body = String::with_capacity(token.len() + 40);
        body.push_str("token=");
        form_urlencode(token, &mut body);
        body.push_str("&token_type_hint=access_token");
        let mut authorization = HeaderValue::from_str(inner.authorization.expose_secret())
            .map_err(|_| Cow::Borrowed("introspection client credentials are not a header"))?;
        authorization.set_sensitive(true);
        let shown = &inner.shown_endpoint;
        let describe = |e: reqwest::Error| -> Cow<'static, str> {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else if e.is_redirect() {
                "redirect refused"
            } else {
                "request failed"
            };
            format!("introspection endpoint unavailable: POST {shown}: {what}").into()
        };
        let mut response = inner
            .http
            .post(inner.endpoint.clone())
            .header(AUTHORIZATION, authorization)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            return Err(format!(
                "introspection endpoint refused this service's client credentials (HTTP {status})"
            )
            .into());
        }
        if !status.is_success() {
            return Err(format!("introspection endpoint unavailable: HTTP {status}").into());
        }
        let too_large = || -> Cow<'static, str> {
            format!(
                "introspection answer exceeds {} bytes",
                inner.max_response_bytes
            )
            .into()
        };
        if response
            .content_length()
            .is_some_and(|len| len > inner.max_response_bytes as u64)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if bytes.len() + chunk.len() > inner.max_response_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(answer)) => Ok(answer),
            _ => Err("introspection answer is not a JSON object".into()),
        }
    }

    /// Checks an introspection answer and maps it to a principal and its expiry.
    fn principal_from(
        &self,
        answer: Map<String, Value>,
        now: SystemTime,
    ) -> Result<(Principal, Option<SystemTime>), Cow<'static, str>> {
        let inner = &*self.inner;
        if answer.get("active") != Some(&Value::Bool(true)) {
            return Err("token inactive".into());
        }
        // A refresh token, or a sender-constrained (DPoP, mTLS-bound) token, is not a plain
        // bearer access token: accepting it here would skip the proof it is bound to.
        if let Some(token_type) = answer.get("token_type").filter(|v| !v.is_null()) {
            let bearer = token_type.as_str().is_some_and(|t| {
                t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("access_token")
            });
            if !bearer {
                return Err("token_type is not a bearer access token".into());
            }
        }
        if answer.contains_key("cnf") {
            return Err("sender-constrained token (cnf) presented as a bearer token".into());
        }
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let leeway = inner.leeway.as_secs();
        let exp = match answer.get("exp") {
            None | Some(Value::Null) => None,
            Some(v) => Some(numeric_date(v).ok_or("exp is not a NumericDate")?),
        };
        if let Some(exp) = exp
            && now_secs > exp.saturating_add(leeway)
        {
            return Err("token expired (introspection answer)".into());
        }
        if let Some(nbf) = answer.get("nbf").filter(|v| !v.is_null()) {
            let nbf = numeric_date(nbf).ok_or("nbf is not a NumericDate")?;
            if now_secs.saturating_add(leeway) < nbf {
                return Err("token not yet valid (introspection answer)".into());
            }
        }
        let issuer = answer.get("iss").and_then(Value::as_str);
        // Configured issuers are a requirement: an answer that names none is refused too.
        if !inner.issuers.is_empty()
            && !issuer.is_some_and(|iss| inner.issuers.iter().any(|i| i == iss))
        {
            return Err("issuer missing or not accepted".into());
        }
        if let Some(audiences) = &inner.audiences {
            let accepted = |a: &str| audiences.iter().any(|x| x == a);
            let ok = match answer.get("aud") {
                Some(Value::String(a)) => accepted(a),
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(accepted),
                Some(_) => return Err("aud is neither a string nor an array".into()),
                None => return Err("introspection answer has no aud".into()),
            };
            if !ok {
                return Err("audience not accepted".into());
            }
        }
        let non_empty = |name: &str| {
            answer
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let (subject, kind) = match (non_empty("sub"), non_empty("client_id")) {
            (Some(s), Some(c)) if s == c => (s, PrincipalKind::Service),
            (Some(s), _) => (s, PrincipalKind::User),
            (None, Some(c)) => (c, PrincipalKind::Service),
            (None, None) => return Err("introspection answer has neither sub nor client_id".into()),
        };
        let roles = string_list(lookup(&answer, &inner.roles_claim));
        let scopes = string_list(answer.get("scope"));
        let expires_at = exp.map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
        let mut builder = Principal::builder(subject, AuthMethod::Other(AUTH_METHOD.into()))
            .kind(kind)
            .roles(roles)
            .scopes(scopes);
        if let Some(issuer) = issuer {
            builder = builder.issuer(issuer);
        }
        if let Some(at) = expires_at {
            builder = builder.expires_at(at);
        }
        Ok((builder.attributes(answer).build(), expires_at))
    }
}

impl Authenticator for IntrospectionAuthenticator {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(async move {
            let Some(token) = bearer_token(parts)? else {
                return Ok(None);
            };
            if looks_like_jwt(token) {
                if let Some(jwt) = &self.inner.jwt {
                    return jwt.authenticate_token(token).await.map(Some);
                }
                if !self.inner.introspect_jwts {
                    return Ok(None);
                }
            }
            self.introspect(token).await.map(Some)
        })
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_urlencode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
    }
}

/// Configures an [`IntrospectionAuthenticator`]. Every setting documents its default in the
/// [module docs](self).
#[must_use]
pub struct IntrospectionAuthenticatorBuilder {
    endpoint: String,
    client: Option<(String, SecretString)>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    any_audience: bool,
    roles_claim: String,
    leeway: Duration,
    cache_capacity: usize,
    max_cache_ttl: Duration,
    connect_timeout: Duration,
    timeout: Duration,
    clock: SharedClock,
    jwt: Option<JwtAuthenticator>,
    introspect_jwts: bool,
    allow_http: bool,
    max_token_bytes: usize,
    max_response_bytes: usize,
}

impl fmt::Debug for IntrospectionAuthenticatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionAuthenticatorBuilder")
            .field("client_id", &self.client.as_ref().map(|(id, _)| id))
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl IntrospectionAuthenticatorBuilder {
    /// This service's client id and secret at the provider, sent with `client_secret_basic`.
    /// Required.
    pub fn client_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        self.client = Some((client_id.into(), client_secret));
        self
    }
    /// Refuses answers whose `iss` is not `issuer` (repeat for several); once an issuer is
    /// configured, an answer without `iss` is refused as well. Default: no issuer check (the
    /// endpoint itself vouches for its answers).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }
    /// Accepts tokens whose `aud` contains `audience` (repeat for several).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }
    /// Skips the audience check. Insecure: tokens issued for other services are accepted here.
    pub fn insecure_accept_any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }
    /// Where roles are read from in the answer (default `roles`; dotted paths allowed).
    pub fn roles_claim(mut self, path: impl Into<String>) -> Self {
        self.roles_claim = path.into();
        self
    }
    /// Clock skew tolerated on `exp` and `nbf` (default 60 s, at most 5 minutes).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }
    /// Size of the cache of active answers (default 10,000; 0 disables it).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }
    /// Longest time an answer is reused (default 60 s, at most 1 hour); never past `exp`.
    pub fn max_cache_ttl(mut self, ttl: Duration) -> Self {
        self.max_cache_ttl = ttl;
        self
    }
    /// Connection timeout (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Timeout of the whole introspection request (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// The time source (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
    /// Verifies JWT-shaped tokens (two dots) locally with `jwt` instead of introspecting them.
    pub fn jwt(mut self, jwt: JwtAuthenticator) -> Self {
        self.jwt = Some(jwt);
        self
    }
    /// Introspects JWT-shaped tokens too when no [`jwt`](Self::jwt) authenticator is given
    /// (default: they are not claimed, so another authenticator may take them).
    pub fn introspect_jwts(mut self) -> Self {
        self.introspect_jwts = true;
        self
    }
    /// Allows an `http` endpoint. Insecure: tokens and the client secret cross the network in
    /// clear. For tests on loopback.
    pub fn insecure_allow_http(mut self) -> Self {
        self.allow_http = true;
        self
    }
    /// Largest token sent to the endpoint, in bytes (default 8 KiB).
    pub fn max_token_bytes(mut self, max: usize) -> Self {
        self.max_token_bytes = max;
        self
    }
    /// Largest accepted answer, in bytes (default 64 KiB).
    pub fn max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// Checks the configuration and builds the authenticator.
    pub fn build(self) -> Result<IntrospectionAuthenticator, ConfigError> {
        // The same URL rules (https unless insecure_allow_http, a host, no credentials in it)
        // and HTTP client settings as the JWKS and discovery fetchers.
        let endpoint = remote::parse_url(
            "the introspection endpoint",
            &self.endpoint,
            self.allow_http,
        )?;
        let Some((client_id, secret)) = self.client else {
            return Err(ConfigError::new(
                "introspection needs client_credentials (client_secret_basic)",
            ));
        };
        if client_id.is_empty() || secret.expose_secret().is_empty() {
            return Err(ConfigError::new(
                "the introspection client id and secret must not be empty",
            ));
        }
        if self.audiences.is_empty() && !self.any_audience {
            return Err(ConfigError::new(
                "no audience configured (use insecure_accept_any_audience to skip the check)",
            ));
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(ConfigError::new("leeway above 5 minutes"));
        }
        if self.max_cache_ttl > Duration::from_secs(3600) {
            return Err(ConfigError::new("max_cache_ttl above 1 hour"));
        }
        if self.connect_timeout.is_zero() || self.timeout.is_zero() {
            return Err(ConfigError::new("introspection timeouts must be positive"));
        }
        if self.max_token_bytes == 0 || self.max_response_bytes == 0 {
            return Err(ConfigError::new(
                "max_token_bytes and max_response_bytes must be positive",
            ));
        }
        let mut credentials = String::new();
        form_urlencode(&client_id, &mut credentials);
        credentials.push(':');
        form_urlencode(secret.expose_secret(), &mut credentials);
        let authorization = SecretString::from(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes())
        ));
        let http = remote::http_client(self.connect_timeout, self.timeout, self.allow_http)?;
        let mut shown = endpoint.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        Ok(IntrospectionAuthenticator {
            inner: Arc::new(Inner {
                shown_endpoint: shown.to_string(),
                endpoint,
                http,
                client_id,
                authorization,
                issuers: self.issuers,
                audiences: (!self.any_audience).then_some(self.audiences),
                roles_claim: self.roles_claim,
                leeway: self.leeway,
                cache: (self.cache_capacity > 0).then(|| Cache::new(self.cache_capacity)),
                max_cache_ttl: self.max_cache_ttl,
                clock: self.clock,
                jwt: self.jwt,
                introspect_jwts: self.introspect_jwts,
                max_token_bytes: self.max_token_bytes,
                max_response_bytes: self.max_response_bytes,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use axum::extract::State;
    use axum::{Form, Json, Router, routing::post};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const CLIENT_ID: &str = "orders api";
    const SECRET: &str = "s3cret:with/odd&chars";
    const NOW: u64 = 1_800_000_000;

    #[derive(Clone)]
    struct Idp {
        calls: Arc<AtomicUsize>,
        expected_auth: String,
    }

    /// An in-process introspection endpoint: checks client authentication, counts calls, and
    /// answers per token.
    async fn introspect(
        State(idp): State<Idp>,
        headers: http::HeaderMap,
        Form(form): Form<Vec<(String, String)>>,
    ) -> Result<Json<Value>, http::StatusCode> {
        idp.calls.fetch_add(1, Ordering::SeqCst);
        if headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(&idp.expected_auth) {
            return Err(http::StatusCode::UNAUTHORIZED);
        }
        let token = form
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        let hint = form
            .iter()
            .any(|(k, v)| k == "token_type_hint" && v == "access_token");
        assert!(hint);
        let base = serde_json::json!({
            "active": true, "sub": "alice", "client_id": "web", "scope": "orders:read orders:write",
            "iss": "https://idp.test", "aud": ["orders"], "exp": NOW + 600, "iat": NOW,
            "realm_access": {"roles": ["reader", "editor"]},
        });
        let mut answer = base.clone();
        match token {
            "tok-active" => {}
            "tok-short" => answer["exp"] = (NOW + 30).into(),
            "tok-service" => {
                answer.as_object_mut().unwrap().remove("sub");
            }
            "tok-other-aud" => answer["aud"] = "billing".into(),
            "tok-other-iss" => answer["iss"] = "https://evil.test".into(),
            "tok-nbf" => answer["nbf"] = (NOW + 3600).into(),
            "tok-refresh" => answer["token_type"] = "refresh_token".into(),
            "tok-dpop" => answer["cnf"] = serde_json::json!({"jkt": "abc"}),
            "tok-bearer" => answer["token_type"] = "Bearer".into(),
            "a.b.c" => answer["sub"] = "jwt-shaped".into(),
            "tok-500" => return Err(http::StatusCode::INTERNAL_SERVER_ERROR),
            "tok-slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            "tok-huge" => answer["padding"] = "x".repeat(100_000).into(),
            _ => answer = serde_json::json!({"active": false}),
        }
        Ok(Json(answer))
    }

    async fn idp() -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut credentials = String::new();
        form_urlencode(CLIENT_ID, &mut credentials);
        credentials.push(':');
        form_urlencode(SECRET, &mut credentials);
        let state = Idp {
            calls: calls.clone(),
            expected_auth: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
        };
        let app = Router::new()
            .route("/introspect", post(introspect))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/introspect", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, calls)
    }

    fn builder(url: &str, clock: &ManualClock) -> IntrospectionAuthenticatorBuilder {
        IntrospectionAuthenticator::builder(url)
            .client_credentials(CLIENT_ID, SecretString::from(SECRET))
            .issuer("https://idp.test")
            .audience("orders")
            .roles_claim("realm_access.roles")
            .insecure_allow_http()
            .clock(Arc::new(clock.clone()))
    }

    fn clock() -> ManualClock {
        ManualClock::at(UNIX_EPOCH + Duration::from_secs(NOW))
    }

    #[tokio::test]
    async fn active_inactive_and_claim_checks() {
        let (url, _calls) = idp().await;
        let clock = clock();
        let auth = builder(&url, &clock).build().unwrap();
        let p = auth.introspect("tok-active").await.unwrap();
        assert_eq!(p.subject(), "alice");
        assert_eq!(p.kind(), PrincipalKind::User);
        assert_eq!(p.issuer(), Some("https://idp.test"));
        assert!(p.has_role("editor") && p.has_scope("orders:write"));
        assert_eq!(p.auth_method().name(), AUTH_METHOD);
        assert_eq!(
            p.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(NOW + 600))
        );
        assert!(auth.introspect("tok-bearer").await.is_ok());
        let service = auth.introspect("tok-service").await.unwrap();
        assert_eq!(
            (service.subject(), service.kind()),
            ("web", PrincipalKind::Service)
        );

        for (token, detail) in [
            ("tok-unknown", "token inactive"),
            ("tok-other-aud", "audience not accepted"),
            ("tok-other-iss", "issuer missing or not accepted"),
            ("tok-nbf", "not yet valid"),
            ("tok-refresh", "token_type"),
            ("tok-dpop", "sender-constrained"),
            ("tok-500", "HTTP 500"),
            ("tok-huge", "exceeds"),
        ] {
            let err = auth.introspect(token).await.unwrap_err();
            assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED, "{token}");
            assert!(err.detail().contains(detail), "{token}: {}", err.detail());
            assert!(
                !err.detail().contains(token),
                "token echoed: {}",
                err.detail()
            );
        }
        // Any audience, when explicitly asked for.
        let any = builder(&url, &clock)
            .insecure_accept_any_audience()
            .build()
            .unwrap();
        assert!(any.introspect("tok-other-aud").await.is_ok());
    }

    #[tokio::test]
    async fn wrong_client_secret_is_refused_by_the_endpoint() {
        let (url, _calls) = idp().await;
        let clock = clock();
        let auth = IntrospectionAuthenticator::builder(&url)
            .client_credentials(CLIENT_ID, SecretString::from("wrong-secret-value"))
            .audience("orders")
            .insecure_allow_http()
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let err = auth.introspect("tok-active").await.unwrap_err();
        assert!(err.detail().contains("client credentials"), "{err:?}");
        let shown = format!("{auth:?} {err:?} {err}");
        assert!(!shown.contains("wrong-secret-value"), "{shown}");
        let builder_shown = format!("{:?}", builder(&url, &clock));
        assert!(!builder_shown.contains("s3cret"), "{builder_shown}");
    }

    #[tokio::test]
    async fn answers_are_cached_but_never_past_exp() {
        let (url, calls) = idp().await;
        let clock = clock();
        let auth = builder(&url, &clock)
            .leeway(Duration::ZERO)
            .max_cache_ttl(Duration::from_secs(120))
            .build()
            .unwrap();
        // exp = NOW + 30: the entry lives 30 s, not the 120 s maximum.
        for _ in 0..3 {
            auth.introspect("tok-short").await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "served from the cache");
        clock.advance(Duration::from_secs(29));
        auth.introspect("tok-short").await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(2));
        let err = auth.introspect("tok-short").await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "asked again after exp");
        assert!(err.detail().contains("expired"), "{err:?}");

        // exp far away: the maximum cache TTL bounds reuse.
        auth.introspect("tok-active").await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        clock.advance(Duration::from_secs(119));
        auth.introspect("tok-active").await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        clock.advance(Duration::from_secs(2));
        auth.introspect("tok-active").await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        // Inactive answers are not cached.
        for _ in 0..2 {
            assert!(auth.introspect("tok-unknown").await.is_err());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn slow_or_unreachable_endpoints_fail_closed_within_the_timeout() {
        let (url, _calls) = idp().await;
        let clock = clock();
        let auth = builder(&url, &clock)
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let err = auth.introspect("tok-slow").await.unwrap_err();
        assert!(err.detail().contains("timed out"), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));

        let closed = builder("http://127.0.0.1:1/introspect", &clock)
            .build()
            .unwrap();
        let err = closed.introspect("tok-active").await.unwrap_err();
        assert!(err.detail().contains("unavailable"), "{err:?}");
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
    }

    fn parts(authorization: Option<&str>) -> Parts {
        let mut builder = http::Request::builder();
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn jwt_shaped_tokens_are_left_to_the_jwt_authenticator() {
        let (url, calls) = idp().await;
        let clock = clock();
        let auth = builder(&url, &clock).build().unwrap();
        assert!(auth.authenticate(&parts(None)).await.unwrap().is_none());
        assert!(
            auth.authenticate(&parts(Some("Bearer a.b.c")))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let p = auth
            .authenticate(&parts(Some("Bearer tok-active")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.subject(), "alice");

        let introspect_all = builder(&url, &clock).introspect_jwts().build().unwrap();
        let p = introspect_all
            .authenticate(&parts(Some("Bearer a.b.c")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.subject(), "jwt-shaped");
    }

    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn combined_with_a_jwt_authenticator() {
        use crate::authn::AuthnLayer;
        use crate::testing::TestKey;
        use tower::{ServiceExt, service_fn};
        use tower_layer::Layer;

        let (url, calls) = idp().await;
        let key = TestKey::ed25519("k");
        let jwt = JwtAuthenticator::builder()
            .issuer("https://idp.test")
            .audience("orders")
            .key(key.verification_key())
            .build()
            .unwrap();
        let auth = IntrospectionAuthenticator::builder(&url)
            .client_credentials(CLIENT_ID, SecretString::from(SECRET))
            .audience("orders")
            .insecure_allow_http()
            .jwt(jwt)
            .build()
            .unwrap();
        let svc =
            AuthnLayer::new(auth).layer(service_fn(|req: http::Request<String>| async move {
                let who = req
                    .extensions()
                    .get::<Principal>()
                    .map(|p| format!("{}:{}", p.subject(), p.auth_method().name()));
                Ok::<_, std::convert::Infallible>(http::Response::new(who.unwrap_or_default()))
            }));
        let call = |token: String| {
            http::Request::builder()
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .body(String::new())
                .unwrap()
        };
        let jwt_token = key.mint(&key.claims("bob", "https://idp.test", "orders"));
        let ok = svc.clone().oneshot(call(jwt_token)).await.unwrap();
        assert_eq!(ok.body(), "bob:jwt");
        let ok = svc
            .clone()
            .oneshot(call("tok-active".into()))
            .await
            .unwrap();
        assert_eq!(ok.body(), "alice:introspection");
        let bad_jwt = key.mint(&key.claims("bob", "https://idp.test", "billing"));
        let refused = svc.oneshot(call(bad_jwt)).await.unwrap();
        assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "JWTs never reach the endpoint"
        );
    }

    #[test]
    fn configuration_is_checked() {
        let clock = clock();
        let secret = || SecretString::from(SECRET);
        let cases = [
            IntrospectionAuthenticator::builder("http://127.0.0.1/x")
                .client_credentials("a", secret())
                .audience("x"),
            IntrospectionAuthenticator::builder("ftp://idp/x")
                .client_credentials("a", secret())
                .audience("x"),
            IntrospectionAuthenticator::builder("https://user:pw@idp/x")
                .client_credentials("a", secret())
                .audience("x"),
            IntrospectionAuthenticator::builder("https://idp/x").audience("x"),
            IntrospectionAuthenticator::builder("https://idp/x").client_credentials("a", secret()),
            builder("https://idp/x", &clock).leeway(Duration::from_secs(301)),
            builder("https://idp/x", &clock).max_cache_ttl(Duration::from_secs(3601)),
            builder("https://idp/x", &clock).timeout(Duration::ZERO),
        ];
        for builder in cases {
            let err = builder.build().unwrap_err();
            assert!(!err.to_string().contains(SECRET), "{err}");
        }
        assert!(builder("https://idp/x", &clock).build().is_ok());
    }

    #[test]
    fn form_encoding() {
        let mut out = String::new();
        form_urlencode("a b+c/d=é", &mut out);
        assert_eq!(out, "a+b%2Bc%2Fd%3D%C3%A9");
        assert!(looks_like_jwt("a.b.c") && !looks_like_jwt("abc") && !looks_like_jwt("a.b.c.d.e"));
        // The clock is only read through the trait.
        assert_eq!(clock().unix_seconds(), NOW);
    }
}
