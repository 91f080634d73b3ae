//! OpenID Connect discovery: an issuer URL in, a [`JwtAuthenticator`] that follows the
//! provider's keys out (feature `oidc`).
//!
//! [`OidcProvider`] fetches `{issuer}/.well-known/openid-configuration` (OpenID Connect
//! Discovery 1.0 §4: one trailing `/` of the issuer is removed before the suffix is appended),
//! requires the document's `issuer` to equal the configured issuer exactly (§4.3; otherwise
//! the provider is refused), takes its `jwks_uri` into a [`RemoteJwks`], and builds a
//! [`JwtAuthenticator`] that checks `iss` against the issuer and `aud` against your audience.
//! The document's `token_endpoint`, `introspection_endpoint` and the rest are kept in
//! [`ProviderMetadata`].
//!
//! Startup is never blocked for longer than the configured timeout: with
//! [`StartupMode::FailFast`] (the default) [`start`](OidcProvider::start) returns the error;
//! with [`StartupMode::NotReady`] it returns at once, every token is refused, discovery is
//! retried in the background with backoff, and [`is_ready`](OidcProvider::is_ready) /
//! [`readiness_status`](OidcProvider::readiness_status) tell a readiness probe when keys are
//! there.
//!
//! Settings of the HTTP client (timeouts, response size, `https` only, retry backoff,
//! startup mode) are those of the [`RemoteJwksBuilder`], set with
//! [`jwks`](OidcProviderBuilder::jwks); the discovery fetch uses them too.
//!
//! ```
//! use http::StatusCode;
//! use portcullis::authn::jwt::StartupMode;
//! use portcullis::authn::oidc::OidcProvider;
//! use portcullis::testing::{TestIdp, TestKey};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let key = TestKey::es256("k1");
//! let idp = TestIdp::start().await.unwrap(); // discovery + JWKS on 127.0.0.1
//! idp.set_keys(&[&key]);
//!
//! let oidc = OidcProvider::builder(idp.issuer())
//!     .audience("orders-api")
//!     .jwt(|jwt| jwt.roles_claim("realm_access.roles"))
//!     .insecure_allow_http() // loopback test server only
//!     .startup(StartupMode::FailFast)
//!     .build()
//!     .unwrap();
//! oidc.start().await.unwrap();
//! assert_eq!(oidc.readiness_status(), StatusCode::OK);
//! assert!(oidc.metadata().unwrap().introspection_endpoint.is_some());
//!
//! let token = key.mint(&key.claims("alice", &idp.issuer(), "orders-api"));
//! let principal = oidc.authenticator().authenticate_token(&token).await.unwrap();
//! assert_eq!(principal.subject(), "alice");
//! # });
//! ```
//!
//! # Deployment caveat
//! Discovery runs once: a provider that moves its `jwks_uri` needs a restart (key rotation
//! within the same `jwks_uri` is followed). Everything discovery returns is trusted, so the
//! issuer URL must be `https` and must be the one your tokens name.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::StatusCode;
use http::request::Parts;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::authn::jwt::{
    FetchError, JwtAuthenticator, JwtAuthenticatorBuilder, KeySnapshot, KeySource,
    MultiIssuerBuilder, RemoteJwks, RemoteJwksBuilder, StartupMode, display_url, fetch_bounded,
    http_client, parse_url,
};
use crate::authn::{AuthFuture, Authenticator};
use crate::clock::SharedClock;
use crate::error::ConfigError;

const DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The parts of an OpenID Provider's discovery document portcullis uses; everything else is
/// kept in [`other`](Self::other).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[non_exhaustive]
pub struct ProviderMetadata {
    /// The issuer (equal to the configured one; checked).
    pub issuer: String,
    /// Where the signing keys are published.
    pub jwks_uri: String,
    /// OAuth 2.0 token endpoint.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// RFC 7662 token introspection endpoint.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// RFC 7009 token revocation endpoint.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// Every other member of the document.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The discovery URL of `issuer`: one trailing `/` removed, then the well-known suffix.
fn discovery_url(issuer: &str) -> String {
    let base = issuer.strip_suffix('/').unwrap_or(issuer);
    format!("{base}{DISCOVERY_SUFFIX}")
}

/// The key source handed to the authenticator before discovery has found the JWKS.
#[derive(Debug, Default)]
struct DiscoveredKeys {
    jwks: OnceLock<RemoteJwks>,
    empty: Arc<KeySnapshot>,
}

impl KeySource for DiscoveredKeys {
    fn snapshot(&self) -> Arc<KeySnapshot> {
        match self.jwks.get() {
            Some(jwks) => jwks.snapshot(),
            None => self.empty.clone(),
        }
    }

    fn unknown_kid<'a>(&'a self, kid: &'a str) -> BoxFuture<'a, bool> {
        match self.jwks.get() {
            Some(jwks) => jwks.unknown_kid(kid),
            None => Box::pin(std::future::ready(false)),
        }
    }
}

struct Inner {
    issuer: String,
    discovery_url: reqwest::Url,
    client: reqwest::Client,
    max_response_bytes: usize,
    allow_http: bool,
    jwks_template: RemoteJwksBuilder,
    startup: StartupMode,
    retry: (Duration, Duration),
    keys: Arc<DiscoveredKeys>,
    authenticator: JwtAuthenticator,
    metadata: OnceLock<Arc<ProviderMetadata>>,
    discovered: watch::Sender<bool>,
    last_error: Mutex<Option<String>>,
    retry_task: Mutex<Option<tokio::task::AbortHandle>>,
    retrying: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.retry_task).take() {
            task.abort();
        }
    }
}

impl Inner {
    async fn fetch_metadata(&self) -> Result<ProviderMetadata, FetchError> {
        let shown = display_url(&self.discovery_url);
        let (_, body) = fetch_bounded(
            &self.client,
            &self.discovery_url,
            "application/json",
            self.max_response_bytes,
        )
        .await?;
        let metadata: ProviderMetadata = serde_json::from_slice(&body)
            .map_err(|e| FetchError::new(format!("GET {shown}: not a discovery document: {e}")))?;
        if metadata.issuer != self.issuer {
            return Err(FetchError::new(format!(
                "GET {shown}: the document's issuer {:?} differs from the configured issuer {:?}",
                metadata.issuer, self.issuer
            )));
        }
        Ok(metadata)
    }

    /// One discovery attempt; on success the JWKS is installed (not yet started).
    async fn discover(&self) -> Result<(), FetchError> {
        if self.metadata.get().is_some() {
            return Ok(());
        }
        let metadata = self.fetch_metadata().await?;
        parse_url("jwks_uri", &metadata.jwks_uri, self.allow_http)
            .map_err(|e| FetchError::new(format!("discovery: {}", e.message())))?;
        let jwks = self
            .jwks_template
            .clone()
            .with_url(metadata.jwks_uri.clone())
            .build()
            .map_err(|e| FetchError::new(format!("discovery: {}", e.message())))?;
        // A concurrent attempt may have won; its JWKS is the one used.
        let _ = self.keys.jwks.set(jwks);
        let _ = self.metadata.set(Arc::new(metadata));
        *lock(&self.last_error) = None;
        self.discovered.send_replace(true);
        Ok(())
    }

    async fn start_jwks(&self) -> Result<(), FetchError> {
        match self.keys.jwks.get() {
            Some(jwks) => jwks.start().await,
            None => Ok(()),
        }
    }

    fn record_error(&self, error: &FetchError) {
        *lock(&self.last_error) = Some(error.message().to_owned());
    }

    /// Retries discovery in the background until it succeeds (then the JWKS refreshes
    /// itself). Holds only a `Weak` between attempts.
    fn spawn_retry(self: &Arc<Self>) {
        if self.retrying.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.retrying.store(false, Ordering::SeqCst);
            return;
        };
        let weak = Arc::downgrade(self);
        let (initial, max) = self.retry;
        let task = runtime.spawn(retry_discovery(weak, initial, max));
        *lock(&self.retry_task) = Some(task.abort_handle());
    }
}

async fn retry_discovery(weak: Weak<Inner>, initial: Duration, max: Duration) {
    let mut delay = initial;
    loop {
        tokio::time::sleep(delay).await;
        let Some(inner) = weak.upgrade() else { return };
        match inner.discover().await {
            Ok(()) => {
                tracing::info!(target: "portcullis::oidc", issuer = %inner.issuer, "discovery succeeded");
                // NotReady mode: a failing first JWKS fetch is retried by the JWKS itself.
                let _ = inner.start_jwks().await;
                return;
            }
            Err(error) => {
                tracing::warn!(target: "portcullis::oidc", issuer = %inner.issuer, error = %error, "discovery failed; retrying");
                inner.record_error(&error);
            }
        }
        drop(inner);
        delay = delay.saturating_mul(2).min(max);
    }
}

/// An OpenID Provider found by discovery, with the authenticator for its tokens. Cheap to
/// clone. See the [module docs](self).
#[derive(Clone)]
pub struct OidcProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.inner.issuer)
            .field("ready", &self.is_ready())
            .field("jwks", &self.inner.keys.jwks.get())
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// Starts a configuration for the provider whose issuer identifier is `issuer` (exactly as
    /// it appears in the tokens' `iss`).
    pub fn builder(issuer: impl Into<String>) -> OidcProviderBuilder {
        OidcProviderBuilder {
            issuer: issuer.into(),
            jwt: JwtAuthenticator::builder(),
            jwks: RemoteJwks::builder(String::new()),
        }
    }

    /// Runs discovery and the first JWKS fetch, then keeps the keys fresh in the background.
    /// With [`StartupMode::FailFast`] (the default) a failure of either is returned; with
    /// [`StartupMode::NotReady`] it is logged, `start` returns `Ok`, and both are retried in
    /// the background. Bounded by the configured timeouts. Must run within a tokio runtime.
    pub async fn start(&self) -> Result<(), FetchError> {
        let inner = &self.inner;
        if let Err(error) = inner.discover().await {
            inner.record_error(&error);
            return match inner.startup {
                StartupMode::FailFast => Err(error),
                StartupMode::NotReady => {
                    tracing::warn!(target: "portcullis::oidc", issuer = %inner.issuer, error = %error, "discovery failed; starting not ready");
                    inner.spawn_retry();
                    Ok(())
                }
            };
        }
        inner.start_jwks().await
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The authenticator for this provider's tokens (issuer, audience and keys set). Also
    /// available through this type's [`Authenticator`] implementation.
    pub fn authenticator(&self) -> JwtAuthenticator {
        self.inner.authenticator.clone()
    }

    /// The discovery document, once fetched.
    pub fn metadata(&self) -> Option<Arc<ProviderMetadata>> {
        self.inner.metadata.get().cloned()
    }

    /// The JWKS, once discovery has found it.
    pub fn jwks(&self) -> Option<RemoteJwks> {
        self.inner.keys.jwks.get().cloned()
    }

    /// Whether discovery succeeded and the JWKS was fetched at least once.
    pub fn is_ready(&self) -> bool {
        self.inner.keys.jwks.get().is_some_and(RemoteJwks::is_ready)
    }

    /// `200 OK` when [`is_ready`](Self::is_ready), `503 Service Unavailable` otherwise: serve
    /// it from a readiness probe.
    pub fn readiness_status(&self) -> StatusCode {
        if self.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }

    /// Waits until [`is_ready`](Self::is_ready).
    pub async fn ready(&self) {
        let mut discovered = self.inner.discovered.subscribe();
        // The sender lives in `inner`, which `self` keeps alive: the wait cannot fail.
        let _ = discovered.wait_for(|done| *done).await;
        if let Some(jwks) = self.inner.keys.jwks.get() {
            jwks.ready().await;
        }
    }

    /// Waits until [`is_ready`](Self::is_ready), at most `timeout`; returns whether it is.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.ready()).await.is_ok()
    }

    /// Why the last discovery attempt failed (before discovery succeeded), or why the last
    /// JWKS fetch failed (after; cleared by the next successful fetch).
    pub fn last_error(&self) -> Option<String> {
        match self.inner.keys.jwks.get() {
            Some(jwks) => jwks.status().last_error,
            None => lock(&self.inner.last_error).clone(),
        }
    }
}

impl Authenticator for OidcProvider {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        self.inner.authenticator.authenticate(parts)
    }
    fn authenticate_now(
        &self,
        parts: &Parts,
    ) -> Option<Result<Option<crate::principal::Principal>, crate::rejection::Rejection>> {
        self.inner.authenticator.authenticate_now(parts)
    }
}

impl MultiIssuerBuilder {
    /// Adds an OpenID provider: tokens whose `iss` is its issuer go to its authenticator.
    pub fn provider(self, provider: &OidcProvider) -> Self {
        self.issuer(provider.issuer(), provider.authenticator())
    }
}

/// Configures an [`OidcProvider`].
#[must_use]
pub struct OidcProviderBuilder {
    issuer: String,
    jwt: JwtAuthenticatorBuilder,
    jwks: RemoteJwksBuilder,
}

impl fmt::Debug for OidcProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProviderBuilder")
            .field("issuer", &self.issuer)
            .field("jwt", &self.jwt)
            .field("jwks", &self.jwks)
            .finish()
    }
}

impl OidcProviderBuilder {
    /// Accepts tokens whose `aud` contains `audience` (repeat for several). Required, unless
    /// [`jwt`](Self::jwt) configures the audience check otherwise.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.jwt = self.jwt.audience(audience);
        self
    }

    /// Adjusts the token verification (claims, algorithms, leeway, revocation...). The issuer
    /// and the key source are set by the provider.
    pub fn jwt(
        mut self,
        configure: impl FnOnce(JwtAuthenticatorBuilder) -> JwtAuthenticatorBuilder,
    ) -> Self {
        self.jwt = configure(self.jwt);
        self
    }

    /// Adjusts the JWKS fetching (timeouts, limits, refresh, backoff); the timeouts, the
    /// response size limit and the backoff apply to discovery too. The URL comes from
    /// discovery.
    pub fn jwks(mut self, configure: impl FnOnce(RemoteJwksBuilder) -> RemoteJwksBuilder) -> Self {
        self.jwks = configure(self.jwks);
        self
    }

    /// What [`OidcProvider::start`] does when the provider cannot be reached (default
    /// [`StartupMode::FailFast`]).
    pub fn startup(mut self, mode: StartupMode) -> Self {
        self.jwks = self.jwks.startup(mode);
        self
    }

    /// Permits `http` issuer and JWKS URLs. Insecure: anyone on the network path can
    /// substitute the provider's keys. Meant for tests against a loopback server.
    pub fn insecure_allow_http(mut self) -> Self {
        self.jwks = self.jwks.insecure_allow_http();
        self
    }

    /// The time source for token checks and the JWKS rate limits (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.jwt = self.jwt.clock(clock.clone());
        self.jwks = self.jwks.clock(clock);
        self
    }

    /// Checks the configuration and builds the provider. No request is made until
    /// [`OidcProvider::start`].
    pub fn build(self) -> Result<OidcProvider, ConfigError> {
        let allow_http = self.jwks.allows_http();
        let issuer_url = parse_url("issuer", &self.issuer, allow_http)?;
        if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
            return Err(ConfigError::new(
                "issuer must not have a query or fragment (OpenID Connect Discovery §2)",
            ));
        }
        let discovery_url = parse_url("discovery URL", &discovery_url(&self.issuer), allow_http)?;
        // Validates the JWKS settings now rather than after discovery.
        let jwks_template = self.jwks.with_url(self.issuer.clone());
        jwks_template.check()?;
        let (connect_timeout, timeout) = jwks_template.timeouts();
        let client = http_client(connect_timeout, timeout, allow_http)?;
        let keys = Arc::new(DiscoveredKeys::default());
        let authenticator = self
            .jwt
            .issuer(self.issuer.clone())
            .key_source(keys.clone())
            .build()?;
        let (discovered, _) = watch::channel(false);
        Ok(OidcProvider {
            inner: Arc::new(Inner {
                issuer: self.issuer,
                discovery_url,
                client,
                max_response_bytes: jwks_template.response_limit(),
                allow_http,
                startup: jwks_template.startup_mode(),
                retry: jwks_template.retry_bounds(),
                jwks_template,
                keys,
                authenticator,
                metadata: OnceLock::new(),
                discovered,
                last_error: Mutex::new(None),
                retry_task: Mutex::new(None),
                retrying: AtomicBool::new(false),
            }),
        })
    }
}

#[cfg(test)]
#[cfg(feature = "testing")]
mod tests {
    use super::*;
    use crate::authn::jwt::MultiIssuer;
    use crate::testing::{Fault, TestIdp, TestKey};
    use http::Request;

    const AUD: &str = "api";

    fn provider(issuer: impl Into<String>) -> OidcProviderBuilder {
        OidcProvider::builder(issuer)
            .audience(AUD)
            .insecure_allow_http()
            .jwks(|jwks| {
                jwks.connect_timeout(Duration::from_millis(300))
                    .timeout(Duration::from_millis(300))
                    .retry_backoff(Duration::from_millis(20), Duration::from_millis(50))
            })
    }

    async fn idp_with(key: &TestKey) -> TestIdp {
        let idp = TestIdp::start().await.unwrap();
        idp.set_keys(&[key]);
        idp
    }

    fn parts(token: &str) -> Parts {
        Request::builder()
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[tokio::test]
    async fn discovery_builds_an_authenticator_for_the_issuer() {
        let key = TestKey::es256("k1");
        let idp = idp_with(&key).await;
        let oidc = provider(idp.issuer()).build().unwrap();
        assert!(!oidc.is_ready());
        assert_eq!(oidc.readiness_status(), StatusCode::SERVICE_UNAVAILABLE);
        oidc.start().await.unwrap();
        assert!(oidc.is_ready());
        assert!(oidc.wait_ready(Duration::from_millis(10)).await);
        assert_eq!(oidc.readiness_status(), StatusCode::OK);
        assert_eq!(idp.discovery_paths(), ["/.well-known/openid-configuration"]);

        let metadata = oidc.metadata().unwrap();
        assert_eq!(metadata.issuer, idp.issuer());
        assert_eq!(metadata.jwks_uri, idp.jwks_url());
        assert_eq!(
            metadata.token_endpoint.as_deref(),
            Some(&*format!("{}/token", idp.url()))
        );
        assert_eq!(
            metadata.introspection_endpoint.as_deref(),
            Some(&*format!("{}/introspect", idp.url()))
        );
        assert!(metadata.other.contains_key("response_types_supported"));
        assert_eq!(oidc.jwks().unwrap().url(), idp.jwks_url());

        let token = key.mint(&key.claims("alice", &idp.issuer(), AUD));
        let principal = oidc.authenticate(&parts(&token)).await.unwrap().unwrap();
        assert_eq!(principal.subject(), "alice");
        for (iss, aud) in [
            (idp.issuer(), "other-api"),
            ("https://elsewhere.test".to_owned(), AUD),
        ] {
            let token = key.mint(&key.claims("alice", &iss, aud));
            let err = oidc.authenticate(&parts(&token)).await.unwrap_err();
            assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        }
        // Rotation through discovery's JWKS.
        let next = TestKey::ed25519("k2");
        idp.set_keys(&[&key, &next]);
        oidc.jwks().unwrap().refresh().await.unwrap();
        let token = next.mint(&next.claims("bob", &idp.issuer(), AUD));
        assert!(
            oidc.authenticator()
                .authenticate_token(&token)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_document_for_another_issuer_is_refused() {
        let key = TestKey::es256("k1");
        let idp = idp_with(&key).await;
        idp.set_issuer("https://impostor.test");
        let oidc = provider(idp.url()).build().unwrap();
        let err = oidc.start().await.unwrap_err();
        assert!(
            err.message().contains("differs from the configured issuer"),
            "{err}"
        );
        assert!(!oidc.is_ready());
        assert!(oidc.metadata().is_none());
        assert_eq!(
            idp.jwks_fetches(),
            0,
            "the impostor's keys are never fetched"
        );
        assert!(oidc.last_error().unwrap().contains("differs"));
    }

    #[tokio::test]
    async fn issuer_suffix_rules() {
        assert_eq!(
            discovery_url("https://idp.test"),
            "https://idp.test/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://idp.test/"),
            "https://idp.test/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://idp.test/realms/demo/"),
            "https://idp.test/realms/demo/.well-known/openid-configuration"
        );

        let key = TestKey::es256("k1");
        let idp = idp_with(&key).await;
        // An issuer with a path and a trailing slash: the slash is removed before the suffix,
        // and the document must name the issuer with its slash.
        let issuer = format!("{}/realms/demo/", idp.url());
        idp.set_issuer(issuer.clone());
        let oidc = provider(issuer.clone()).build().unwrap();
        oidc.start().await.unwrap();
        assert_eq!(
            idp.discovery_paths(),
            ["/realms/demo/.well-known/openid-configuration"]
        );
        let token = key.mint(&key.claims("alice", &issuer, AUD));
        assert!(
            oidc.authenticator()
                .authenticate_token(&token)
                .await
                .is_ok()
        );
        // Without the slash the issuer is a different string: refused, never normalized.
        let token = key.mint(&key.claims("alice", issuer.trim_end_matches('/'), AUD));
        assert!(
            oidc.authenticator()
                .authenticate_token(&token)
                .await
                .is_err()
        );

        let without_slash = provider(issuer.trim_end_matches('/')).build().unwrap();
        let err = without_slash.start().await.unwrap_err();
        assert!(err.message().contains("differs"), "{err}");
        assert_eq!(
            idp.discovery_paths()[1],
            "/realms/demo/.well-known/openid-configuration"
        );
    }

    #[tokio::test]
    async fn a_down_idp_fails_fast_or_starts_not_ready_and_recovers() {
        let key = TestKey::es256("k1");
        let idp = idp_with(&key).await;
        idp.set_fault(Fault::Down);

        let strict = provider(idp.issuer()).build().unwrap();
        let started = std::time::Instant::now();
        assert!(strict.start().await.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));

        let lenient = provider(idp.issuer())
            .startup(StartupMode::NotReady)
            .build()
            .unwrap();
        lenient.start().await.unwrap();
        assert!(!lenient.is_ready());
        assert_eq!(lenient.readiness_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(lenient.last_error().is_some());
        let token = key.mint(&key.claims("alice", &idp.issuer(), AUD));
        let err = lenient.authenticate(&parts(&token)).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);

        idp.set_fault(Fault::None);
        assert!(lenient.wait_ready(Duration::from_secs(3)).await);
        assert_eq!(lenient.readiness_status(), StatusCode::OK);
        assert!(lenient.last_error().is_none());
        assert!(lenient.authenticate(&parts(&token)).await.is_ok());
    }

    #[tokio::test]
    async fn discovery_faults_are_bounded() {
        let key = TestKey::es256("k1");
        let idp = idp_with(&key).await;
        for (fault, expected) in [
            (Fault::Delay(Duration::from_secs(2)), "timed out"),
            (Fault::Status(500), "HTTP 500"),
            (Fault::MalformedJson, "not a discovery document"),
        ] {
            idp.set_fault(fault);
            let oidc = provider(idp.issuer()).build().unwrap();
            let started = std::time::Instant::now();
            let err = oidc.start().await.unwrap_err();
            assert!(err.message().contains(expected), "{err}");
            assert!(started.elapsed() < Duration::from_secs(1));
        }
    }

    #[tokio::test]
    async fn several_providers_selected_by_issuer() {
        let (a, b) = (TestKey::es256("a"), TestKey::ed25519("b"));
        let (idp_a, idp_b) = (idp_with(&a).await, idp_with(&b).await);
        let (oidc_a, oidc_b) = (
            provider(idp_a.issuer()).build().unwrap(),
            provider(idp_b.issuer()).build().unwrap(),
        );
        oidc_a.start().await.unwrap();
        oidc_b.start().await.unwrap();
        let multi = MultiIssuer::builder()
            .provider(&oidc_a)
            .provider(&oidc_b)
            .build()
            .unwrap();

        let from_a = a.mint(&a.claims("alice", &idp_a.issuer(), AUD));
        let from_b = b.mint(&b.claims("bob", &idp_b.issuer(), AUD));
        assert_eq!(
            multi
                .authenticate(&parts(&from_a))
                .await
                .unwrap()
                .unwrap()
                .subject(),
            "alice"
        );
        assert_eq!(
            multi
                .authenticate(&parts(&from_b))
                .await
                .unwrap()
                .unwrap()
                .subject(),
            "bob"
        );
        // a's key claiming b's issuer: b's keys do not know it.
        let crossed = a.mint(&a.claims("eve", &idp_b.issuer(), AUD));
        let unknown = a.mint(&a.claims("eve", "https://unknown.test", AUD));
        for token in [crossed, unknown] {
            let err = multi.authenticate(&parts(&token)).await.unwrap_err();
            assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn builder_refuses_bad_configuration() {
        let cases = [
            (
                OidcProvider::builder("http://idp.test").audience(AUD),
                "https",
            ),
            (
                OidcProvider::builder("https://idp.test?tenant=1").audience(AUD),
                "query",
            ),
            (
                OidcProvider::builder("https://idp.test#x").audience(AUD),
                "fragment",
            ),
            (OidcProvider::builder("https://idp.test"), "audience"),
            (
                OidcProvider::builder("https://idp.test")
                    .audience(AUD)
                    .jwks(|j| j.max_keys(0)),
                "positive",
            ),
        ];
        for (builder, expected) in cases {
            let err = builder.build().unwrap_err();
            assert!(err.message().contains(expected), "{err}");
        }
        let oidc = OidcProvider::builder("https://idp.test/")
            .audience(AUD)
            .build()
            .unwrap();
        assert_eq!(oidc.issuer(), "https://idp.test/");
        assert!(format!("{oidc:?}").contains("https://idp.test/"));
    }
}
