//! `SecureHeadersLayer`: the response headers every browser-reachable response should carry.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::nonce::CspNonce;
use super::transport;
use crate::client_ip::ClientIpResolver;
use crate::error::ConfigError;

/// The placeholder a policy uses where the per-request nonce goes: `'nonce-{nonce}'`.
pub const NONCE_PLACEHOLDER: &str = "{nonce}";

/// The API profile's policy: nothing may be loaded, nothing may frame the response.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// The HTML profile's policy: scripts only with this response's nonce (and what they load,
/// `'strict-dynamic'`), styles from the origin or with the nonce, no plugins, no `<base>`,
/// forms only to the origin, no framing.
pub const HTML_CSP: &str = "default-src 'self'; script-src 'nonce-{nonce}' 'strict-dynamic'; \
style-src 'self' 'nonce-{nonce}'; object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// The HTML profile's `Permissions-Policy`: powerful features off.
pub const HTML_PERMISSIONS_POLICY: &str =
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()";

/// Default HSTS lifetime: two years, as the preload list expects.
pub const DEFAULT_HSTS_MAX_AGE: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

/// Response-header banners removed from every response (ready names: removing by `&str` parses
/// the name on every response).
const BANNERS: [HeaderName; 2] = [header::SERVER, HeaderName::from_static("x-powered-by")];

/// Which set of defaults a [`SecureHeadersLayer`] starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Profile {
    /// JSON APIs: nothing in a response may execute, load or be framed.
    Api,
    /// Server-rendered pages: a nonce-based policy for inline scripts, cross-origin isolation
    /// of the window, powerful browser features off.
    Html,
}

/// Whether the handler's own value of a header wins over the layer's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The layer's value always (the handler's is replaced).
    Replace,
    /// The handler's value when it set one, the layer's otherwise.
    KeepHandler,
}

#[derive(Debug)]
struct Config {
    /// Fixed headers with how a handler's value is treated.
    fixed: Vec<(HeaderName, HeaderValue, Mode)>,
    csp: Csp,
    hsts: Option<HeaderValue>,
    forwarded: Option<ClientIpResolver>,
}

/// The policy, split at its nonce placeholders (one part when there is none).
#[derive(Debug)]
struct Csp {
    parts: Vec<String>,
    fixed: Option<HeaderValue>,
}

/// Blocks every script, style and frame: sent instead of a nonce policy when no nonce could be
/// made, so a failure never loosens the policy.
const FALLBACK_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

impl Csp {
    fn parse(policy: &str) -> Result<Self, ConfigError> {
        let value = HeaderValue::from_str(policy).map_err(|_| {
            ConfigError::new("Content-Security-Policy must be visible ASCII without line breaks")
        })?;
        if policy.trim().is_empty() {
            return Err(ConfigError::new(
                "Content-Security-Policy must not be empty",
            ));
        }
        let parts: Vec<String> = policy.split(NONCE_PLACEHOLDER).map(str::to_owned).collect();
        let fixed = (parts.len() == 1).then_some(value);
        Ok(Self { parts, fixed })
    }

    fn needs_nonce(&self) -> bool {
        self.fixed.is_none()
    }

    fn value(&self, nonce: Option<&CspNonce>) -> HeaderValue {
        if let Some(fixed) = &self.fixed {
            return fixed.clone();
        }
        let Some(nonce) = nonce else {
            return HeaderValue::from_static(FALLBACK_CSP);
        };
        let text = self.parts.join(nonce.as_str());
        // The parts were checked as a header value and the nonce is base64.
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(FALLBACK_CSP))
    }
}

/// Sets the secure response headers on every response that passes through it. See the
/// [module docs](super) for the table of headers, the threat each addresses, and which values
/// a handler may set itself.
///
/// Place it outside (before, in `ServiceBuilder` order) the
/// [`RequestContextLayer`](crate::context::RequestContextLayer), so the refusals that layer
/// renders get the headers too; [`Security`](crate::Security) does this for you.
#[derive(Clone)]
#[must_use]
pub struct SecureHeadersLayer {
    config: Option<Arc<Config>>,
}

impl fmt::Debug for SecureHeadersLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.config {
            Some(config) => f
                .debug_struct("SecureHeadersLayer")
                .field("headers", &config.fixed.len())
                .field("nonce", &config.csp.needs_nonce())
                .field("hsts", &config.hsts)
                .finish_non_exhaustive(),
            None => f.write_str("SecureHeadersLayer(disabled)"),
        }
    }
}

impl SecureHeadersLayer {
    /// The API profile with its defaults (see the [module docs](super)).
    pub fn api() -> Self {
        Self::from_builder(SecureHeadersBuilder::new(Profile::Api))
    }

    /// The HTML profile with its defaults: the policy carries a fresh nonce per response, which
    /// handlers take with the [`CspNonce`] extractor.
    pub fn html() -> Self {
        Self::from_builder(SecureHeadersBuilder::new(Profile::Html))
    }

    /// Starts from `profile`'s defaults.
    pub fn builder(profile: Profile) -> SecureHeadersBuilder {
        SecureHeadersBuilder::new(profile)
    }

    /// A layer that changes nothing: responses keep whatever headers the service set, banners
    /// included. Only for services whose responses never reach a browser and that set their
    /// own headers.
    pub fn insecure_disabled() -> Self {
        Self { config: None }
    }

    /// The defaults are constants that pass `build` (test `profiles_build`); should that ever
    /// change, the strictest fixed set is used rather than none.
    fn from_builder(builder: SecureHeadersBuilder) -> Self {
        builder.build().unwrap_or_else(|_| Self {
            config: Some(Arc::new(Config {
                fixed: base_headers(),
                csp: Csp {
                    parts: vec![FALLBACK_CSP.to_owned()],
                    fixed: Some(HeaderValue::from_static(FALLBACK_CSP)),
                },
                hsts: Some(HeaderValue::from_static(
                    "max-age=63072000; includeSubDomains",
                )),
                forwarded: None,
            })),
        })
    }
}

impl<S> Layer<S> for SecureHeadersLayer {
    type Service = SecureHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SecureHeaders {
            inner,
            config: self.config.clone(),
        }
    }
}

/// Builds a [`SecureHeadersLayer`]; every value is checked by [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct SecureHeadersBuilder {
    profile: Profile,
    csp: String,
    permissions_policy: Option<String>,
    hsts_max_age: Duration,
    hsts_include_subdomains: bool,
    hsts_preload: bool,
    hsts: bool,
    forwarded: Option<ClientIpResolver>,
}

impl SecureHeadersBuilder {
    fn new(profile: Profile) -> Self {
        let (csp, permissions_policy) = match profile {
            Profile::Api => (API_CSP, None),
            Profile::Html => (HTML_CSP, Some(HTML_PERMISSIONS_POLICY.to_owned())),
        };
        Self {
            profile,
            csp: csp.to_owned(),
            permissions_policy,
            hsts_max_age: DEFAULT_HSTS_MAX_AGE,
            hsts_include_subdomains: true,
            hsts_preload: false,
            hsts: true,
            forwarded: None,
        }
    }

    /// Replaces the `Content-Security-Policy`. `{nonce}` (as in `'nonce-{nonce}'`) is replaced
    /// by a fresh nonce in every response.
    ///
    /// Default: [`API_CSP`] or [`HTML_CSP`]. Each source you add is somewhere a script, style or
    /// frame may come from; keep `frame-ancestors` (clickjacking) and avoid `'unsafe-inline'`,
    /// which a nonce makes unnecessary.
    pub fn content_security_policy(mut self, policy: impl Into<String>) -> Self {
        self.csp = policy.into();
        self
    }

    /// Sets `Permissions-Policy`. Default: none for the API profile,
    /// [`HTML_PERMISSIONS_POLICY`] for the HTML profile.
    pub fn permissions_policy(mut self, policy: impl Into<String>) -> Self {
        self.permissions_policy = Some(policy.into());
        self
    }

    /// HSTS lifetime. Default [`DEFAULT_HSTS_MAX_AGE`] (two years). At least one day: a short
    /// lifetime lets the protection lapse between visits.
    pub fn hsts_max_age(mut self, max_age: Duration) -> Self {
        self.hsts_max_age = max_age;
        self
    }

    /// Whether HSTS covers subdomains. Default `true`; turning it off leaves sibling hosts
    /// (which can set cookies for the parent domain) reachable over plain HTTP.
    pub fn hsts_include_subdomains(mut self, include: bool) -> Self {
        self.hsts_include_subdomains = include;
        self
    }

    /// Adds `preload` to HSTS (a request to be listed in browsers' built-in HSTS list; needs
    /// subdomains and a lifetime of at least a year). Default off: listing is hard to undo.
    pub fn hsts_preload(mut self) -> Self {
        self.hsts_preload = true;
        self
    }

    /// Never sends HSTS, not even over TLS. Only when another component (the TLS-terminating
    /// proxy) sets it.
    pub fn insecure_without_hsts(mut self) -> Self {
        self.hsts = false;
        self
    }

    /// Believes the scheme (`X-Forwarded-Proto`, or `proto=` of RFC 7239 `Forwarded`, whichever
    /// header `resolver` is configured for) when the socket peer is one of `resolver`'s trusted
    /// proxies, so HSTS is sent behind a TLS-terminating proxy.
    ///
    /// Default: only the [`SecureTransport`](super::SecureTransport) marker counts; forwarded
    /// schemes are ignored.
    pub fn trust_forwarded_proto(mut self, resolver: ClientIpResolver) -> Self {
        self.forwarded = Some(resolver);
        self
    }

    /// Checks every value and builds the layer.
    pub fn build(self) -> Result<SecureHeadersLayer, ConfigError> {
        use Mode::KeepHandler;
        let csp = Csp::parse(&self.csp)?;
        if self.profile == Profile::Html && !csp.needs_nonce() && !self.csp.contains("script-src") {
            // An HTML policy without a nonce must at least say where scripts come from.
            return Err(ConfigError::new(
                "an HTML Content-Security-Policy needs 'nonce-{nonce}' or an explicit script-src",
            ));
        }
        let mut fixed = base_headers();
        if self.profile == Profile::Html {
            fixed.push((
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
                KeepHandler,
            ));
        }
        if let Some(policy) = &self.permissions_policy {
            let value = HeaderValue::from_str(policy).map_err(|_| {
                ConfigError::new("Permissions-Policy must be visible ASCII without line breaks")
            })?;
            fixed.push((
                HeaderName::from_static("permissions-policy"),
                value,
                KeepHandler,
            ));
        }
        let hsts = if self.hsts {
            let secs = self.hsts_max_age.as_secs();
            if secs < 24 * 3600 {
                return Err(ConfigError::new("HSTS max-age must be at least one day"));
            }
            if self.hsts_preload && (secs < 365 * 24 * 3600 || !self.hsts_include_subdomains) {
                return Err(ConfigError::new(
                    "HSTS preload needs includeSubDomains and a max-age of at least a year",
                ));
            }
            let mut text = format!("max-age={secs}");
            if self.hsts_include_subdomains {
                text.push_str("; includeSubDomains");
            }
            if self.hsts_preload {
                text.push_str("; preload");
            }
            Some(
                HeaderValue::from_str(&text)
                    .map_err(|_| ConfigError::new("HSTS value is not a header value"))?,
            )
        } else {
            None
        };
        Ok(SecureHeadersLayer {
            config: Some(Arc::new(Config {
                fixed,
                csp,
                hsts,
                forwarded: self.forwarded,
            })),
        })
    }
}

/// The headers of both profiles, with how a handler's own value is treated.
fn base_headers() -> Vec<(HeaderName, HeaderValue, Mode)> {
    use Mode::{KeepHandler, Replace};
    vec![
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
            Replace,
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
            KeepHandler,
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
            KeepHandler,
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
            KeepHandler,
        ),
        (
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
            Replace,
        ),
    ]
}

/// The service produced by [`SecureHeadersLayer`].
#[derive(Clone)]
pub struct SecureHeaders<S> {
    inner: S,
    config: Option<Arc<Config>>,
}

impl<S: fmt::Debug> fmt::Debug for SecureHeaders<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureHeaders")
            .field("inner", &self.inner)
            .field("enabled", &self.config.is_some())
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SecureHeaders<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let state = self.config.as_ref().map(|config| {
            let tls = transport::is_secure(&req, config.forwarded.as_ref());
            let nonce = if config.csp.needs_nonce() {
                CspNonce::generate()
            } else {
                None
            };
            if let Some(nonce) = &nonce {
                req.extensions_mut().insert(nonce.clone());
            }
            Applied {
                config: config.clone(),
                nonce,
                tls,
            }
        });
        ResponseFuture {
            inner: self.inner.call(req),
            state,
        }
    }
}

/// What to apply to the response of one request.
struct Applied {
    config: Arc<Config>,
    nonce: Option<CspNonce>,
    tls: bool,
}

impl Applied {
    fn apply(&self, headers: &mut HeaderMap) {
        let config = &self.config;
        // Which of the names this layer touches the handler set: one pass over the response's
        // few headers instead of a lookup per name, so absent names are added without a
        // lookup first and absent banners are not searched for.
        let mut present = Present::default();
        for name in headers.keys() {
            present.note(name, &config.fixed);
        }
        // One allocation instead of several rehashes as the map grows: the fixed headers, the
        // policy and, over TLS, HSTS.
        headers.reserve(config.fixed.len() + 1 + usize::from(self.tls));
        for (i, (name, value, mode)) in config.fixed.iter().enumerate() {
            match (present.fixed(i), mode) {
                (Some(false), _) => {
                    headers.append(name.clone(), value.clone());
                }
                (Some(true) | None, Mode::Replace) => {
                    headers.insert(name.clone(), value.clone());
                }
                // The handler's value is kept.
                (Some(true), Mode::KeepHandler) => {}
                (None, Mode::KeepHandler) => {
                    headers.entry(name).or_insert_with(|| value.clone());
                }
            }
        }
        // A handler's policy is kept and ours is added: browsers enforce every policy, so a
        // handler can narrow what runs but never widen it.
        headers.append(
            header::CONTENT_SECURITY_POLICY,
            config.csp.value(self.nonce.as_ref()),
        );
        match (&config.hsts, self.tls) {
            (Some(hsts), true) => {
                headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
            }
            // HSTS over cleartext is ignored by browsers (RFC 6797 §8.1) and wrong to send.
            _ => {
                if present.hsts {
                    headers.remove(header::STRICT_TRANSPORT_SECURITY);
                }
            }
        }
        if present.banner {
            for banner in &BANNERS {
                headers.remove(banner);
            }
        }
    }
}

/// Which of the names [`Applied::apply`] touches a response already has.
#[derive(Default)]
struct Present {
    /// Bit `i`: the name of `fixed[i]`.
    fixed: u64,
    hsts: bool,
    banner: bool,
}

impl Present {
    fn note(&mut self, name: &HeaderName, fixed: &[(HeaderName, HeaderValue, Mode)]) {
        if let Some(i) = fixed.iter().position(|(fixed, _, _)| fixed == name) {
            // `fixed` has at most seven entries (the base headers and two HTML ones); past 64,
            // `fixed(i)` answers "unsure" and the name is looked up.
            if let Some(bit) = Self::bit(i) {
                self.fixed |= bit;
            }
        } else if name == header::STRICT_TRANSPORT_SECURITY {
            self.hsts = true;
        } else if BANNERS.contains(name) {
            self.banner = true;
        }
    }

    fn bit(i: usize) -> Option<u64> {
        u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i))
    }

    /// Whether the name of `fixed[i]` is present; `None` when this cannot tell.
    fn fixed(&self, i: usize) -> Option<bool> {
        Self::bit(i).map(|bit| self.fixed & bit != 0)
    }
}

pin_project! {
    /// Response future of [`SecureHeaders`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<Applied>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(state) = this.state.take() {
            state.apply(response.headers_mut());
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::SecureTransport;
    use crate::rejection::Rejection;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    async fn respond(
        layer: SecureHeadersLayer,
        request: Request<String>,
        handler_headers: &'static [(&'static str, &'static str)],
    ) -> Response<String> {
        layer
            .layer(service_fn(move |req: Request<String>| async move {
                let mut response = Response::new(
                    req.extensions()
                        .get::<CspNonce>()
                        .map(|n| n.as_str().to_owned())
                        .unwrap_or_default(),
                );
                for (name, value) in handler_headers {
                    response.headers_mut().append(*name, value.parse().unwrap());
                }
                Ok::<_, Infallible>(response)
            }))
            .oneshot(request)
            .await
            .unwrap()
    }

    fn get(response: &Response<String>, name: &str) -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn profiles_build() {
        for profile in [Profile::Api, Profile::Html] {
            assert!(SecureHeadersLayer::builder(profile).build().is_ok());
        }
        assert!(SecureHeadersLayer::api().config.is_some());
        assert!(SecureHeadersLayer::html().config.is_some());
    }

    #[tokio::test]
    async fn api_profile_sets_every_header_and_drops_banners() {
        let response = respond(
            SecureHeadersLayer::api(),
            Request::new(String::new()),
            &[("server", "hyper/1.0"), ("x-powered-by", "portcullis")],
        )
        .await;
        let expected = [
            ("x-content-type-options", "nosniff"),
            ("cache-control", "no-store"),
            ("content-security-policy", API_CSP),
            ("referrer-policy", "no-referrer"),
            ("cross-origin-resource-policy", "same-origin"),
            ("x-frame-options", "DENY"),
        ];
        for (name, value) in expected {
            assert_eq!(get(&response, name), [value], "{name}");
        }
        for absent in [
            "server",
            "x-powered-by",
            "strict-transport-security",
            "cross-origin-opener-policy",
        ] {
            assert!(get(&response, absent).is_empty(), "{absent}");
        }
        assert!(response.body().is_empty(), "no nonce in the API profile");
    }

    #[tokio::test]
    async fn handler_values_kept_only_where_safe() {
        let response = respond(
            SecureHeadersLayer::api(),
            Request::new(String::new()),
            &[
                ("cache-control", "public, max-age=60"),
                ("referrer-policy", "same-origin"),
                ("cross-origin-resource-policy", "cross-origin"),
                ("x-content-type-options", "sniff-please"),
                ("x-frame-options", "ALLOWALL"),
                ("content-security-policy", "img-src https://cdn.example"),
                ("strict-transport-security", "max-age=0"),
            ],
        )
        .await;
        assert_eq!(get(&response, "cache-control"), ["public, max-age=60"]);
        assert_eq!(get(&response, "referrer-policy"), ["same-origin"]);
        assert_eq!(
            get(&response, "cross-origin-resource-policy"),
            ["cross-origin"]
        );
        assert_eq!(get(&response, "x-content-type-options"), ["nosniff"]);
        assert_eq!(get(&response, "x-frame-options"), ["DENY"]);
        assert_eq!(
            get(&response, "content-security-policy"),
            ["img-src https://cdn.example", API_CSP]
        );
        // No TLS: a handler cannot send HSTS (or switch it off) over cleartext either.
        assert!(get(&response, "strict-transport-security").is_empty());
    }

    #[tokio::test]
    async fn hsts_only_over_tls() {
        let mut tls = Request::new(String::new());
        tls.extensions_mut().insert(SecureTransport);
        let response = respond(
            SecureHeadersLayer::api(),
            tls,
            &[("strict-transport-security", "max-age=0")],
        )
        .await;
        assert_eq!(
            get(&response, "strict-transport-security"),
            ["max-age=63072000; includeSubDomains"]
        );
        let layer = SecureHeadersLayer::builder(Profile::Api)
            .hsts_max_age(Duration::from_secs(365 * 24 * 3600))
            .hsts_preload()
            .build()
            .unwrap();
        let mut tls = Request::new(String::new());
        tls.extensions_mut().insert(SecureTransport);
        let response = respond(layer, tls, &[]).await;
        assert_eq!(
            get(&response, "strict-transport-security"),
            ["max-age=31536000; includeSubDomains; preload"]
        );
    }

    #[tokio::test]
    async fn html_profile_nonce_is_fresh_and_in_the_policy() {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let response =
                respond(SecureHeadersLayer::html(), Request::new(String::new()), &[]).await;
            let nonce = response.body().clone();
            assert_eq!(nonce.len(), 24, "16 random bytes in base64");
            let csp = get(&response, "content-security-policy");
            assert_eq!(csp, [HTML_CSP.replace(NONCE_PLACEHOLDER, &nonce)]);
            assert!(csp[0].contains(&format!("'nonce-{nonce}'")));
            assert_eq!(
                get(&response, "cross-origin-opener-policy"),
                ["same-origin"]
            );
            assert_eq!(
                get(&response, "permissions-policy"),
                [HTML_PERMISSIONS_POLICY]
            );
            seen.push(nonce);
        }
        assert_ne!(seen[0], seen[1]);
    }

    #[tokio::test]
    async fn rejections_get_the_headers() {
        use crate::context::RequestContextLayer;
        let svc = tower::ServiceBuilder::new()
            .layer(SecureHeadersLayer::api())
            .layer(RequestContextLayer::new())
            .service(service_fn(|_req: Request<String>| async {
                Ok::<_, Infallible>(
                    Rejection::missing_credential().into_deferred_response::<String>(),
                )
            }));
        let response = svc.oneshot(Request::new(String::new())).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.headers()["content-security-policy"], API_CSP);
        assert_eq!(response.headers()["x-frame-options"], "DENY");
    }

    /// The implementation before the one-pass scan: a lookup per name.
    fn reference_apply(applied: &Applied, headers: &mut HeaderMap) {
        let config = &applied.config;
        headers.reserve(config.fixed.len() + 2);
        for (name, value, mode) in &config.fixed {
            match mode {
                Mode::Replace => {
                    headers.insert(name.clone(), value.clone());
                }
                Mode::KeepHandler => {
                    headers.entry(name).or_insert_with(|| value.clone());
                }
            }
        }
        headers.append(
            header::CONTENT_SECURITY_POLICY,
            config.csp.value(applied.nonce.as_ref()),
        );
        match (&config.hsts, applied.tls) {
            (Some(hsts), true) => {
                headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
            }
            _ => {
                headers.remove(header::STRICT_TRANSPORT_SECURITY);
            }
        }
        for banner in ["server", "x-powered-by"] {
            headers.remove(banner);
        }
    }

    #[test]
    fn apply_matches_the_reference_for_every_handler_header_set() {
        let names = [
            "content-type",
            "x-content-type-options",
            "cache-control",
            "referrer-policy",
            "cross-origin-resource-policy",
            "x-frame-options",
            "cross-origin-opener-policy",
            "permissions-policy",
            "content-security-policy",
            "strict-transport-security",
            "server",
            "x-powered-by",
        ];
        let layers = [
            SecureHeadersLayer::api(),
            SecureHeadersLayer::html(),
            SecureHeadersLayer::builder(Profile::Api)
                .insecure_without_hsts()
                .build()
                .unwrap(),
        ];
        let mut checked = 0;
        for layer in &layers {
            let config = layer.config.clone().unwrap();
            for tls in [false, true] {
                let applied = Applied {
                    config: config.clone(),
                    nonce: CspNonce::generate(),
                    tls,
                };
                // Every subset of the names, some with two values, in a rotating order.
                for set in 0u32..(1 << names.len()) {
                    let mut handler = HeaderMap::new();
                    for k in 0..names.len() {
                        let i = (k + set as usize) % names.len();
                        if set & (1 << i) != 0 {
                            handler.append(names[i], HeaderValue::from_static("handler"));
                            if (set >> 3) & 1 == 1 {
                                handler.append(names[i], HeaderValue::from_static("second"));
                            }
                        }
                    }
                    let mut expected = handler.clone();
                    reference_apply(&applied, &mut expected);
                    let mut actual = handler;
                    applied.apply(&mut actual);
                    let list = |map: &HeaderMap| -> Vec<(String, String)> {
                        map.iter()
                            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                            .collect()
                    };
                    assert_eq!(list(&actual), list(&expected), "set {set:b} tls {tls}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 3 * 2 * (1 << names.len()));
    }

    #[tokio::test]
    async fn disabled_changes_nothing() {
        let response = respond(
            SecureHeadersLayer::insecure_disabled(),
            Request::new(String::new()),
            &[("server", "x")],
        )
        .await;
        assert_eq!(get(&response, "server"), ["x"]);
        assert!(get(&response, "content-security-policy").is_empty());
    }

    #[test]
    fn invalid_configuration_is_refused() {
        let bad = [
            SecureHeadersLayer::builder(Profile::Api).content_security_policy("a\r\nb"),
            SecureHeadersLayer::builder(Profile::Api).content_security_policy("  "),
            SecureHeadersLayer::builder(Profile::Html)
                .content_security_policy("default-src 'self'"),
            SecureHeadersLayer::builder(Profile::Api).hsts_max_age(Duration::from_secs(60)),
            SecureHeadersLayer::builder(Profile::Api)
                .hsts_include_subdomains(false)
                .hsts_preload(),
            SecureHeadersLayer::builder(Profile::Api).permissions_policy("x\n"),
        ];
        for builder in bad {
            assert!(builder.clone().build().is_err(), "{builder:?}");
        }
    }
}
