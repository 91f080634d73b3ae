//! The OAuth 2.0 client-credentials token source (RFC 6749 §4.4).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine;
use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::clock::{SharedClock, SystemClock};
use crate::error::ConfigError;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_REFRESH_AHEAD: Duration = Duration::from_secs(60);
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const DEFAULT_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Tokens are not used in their last seconds: the receiver's clock may run ahead of ours.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// The future a [`TokenSource`] returns.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<AccessToken, TokenError>> + Send + 'a>>;

/// Anything that hands out bearer tokens for outgoing calls.
pub trait TokenSource: Send + Sync + fmt::Debug + 'static {
    /// A token valid now (cached or freshly obtained).
    fn token(&self) -> TokenFuture<'_>;
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn token(&self) -> TokenFuture<'_> {
        (**self).token()
    }
}

/// A bearer access token and when it expires. Cheap to clone; `Debug` is redacted.
#[derive(Clone)]
pub struct AccessToken {
    value: Arc<SecretString>,
    expires_at: SystemTime,
}

impl AccessToken {
    /// A token valid until `expires_at`.
    pub fn new(value: SecretString, expires_at: SystemTime) -> Self {
        Self {
            value: Arc::new(value),
            expires_at,
        }
    }
    /// When the token stops being valid (as far as the issuer said).
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
    /// An `Authorization: Bearer` header value, marked sensitive (never indexed by HPACK,
    /// hidden from `Debug`).
    pub fn authorization(&self) -> Result<HeaderValue, TokenError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.value.expose_secret()))
            .map_err(|_| {
                TokenError::new(
                    TokenErrorKind::InvalidResponse,
                    "the token is not a valid header value",
                )
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl ExposeSecret<str> for AccessToken {
    fn expose_secret(&self) -> &str {
        self.value.expose_secret()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why no token could be obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenErrorKind {
    /// The token endpoint could not be reached, timed out, or answered 5xx / 429 on every
    /// attempt.
    Unavailable,
    /// The token endpoint refused the request (400 / 401 / 403): wrong credentials, scope or
    /// grant. Not retried.
    Rejected,
    /// The answer was not a usable token response.
    InvalidResponse,
}

/// No token could be obtained. The message names the endpoint, the status and the RFC 6749
/// `error` code when the endpoint sent a standard one; never the response body, the client
/// secret or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    kind: TokenErrorKind,
    message: Cow<'static, str>,
}

impl TokenError {
    pub(crate) fn new(kind: TokenErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    /// What failed.
    pub fn kind(&self) -> TokenErrorKind {
        self.kind
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no access token: {}", self.message)
    }
}

impl std::error::Error for TokenError {}

#[derive(Clone)]
struct Cached {
    token: AccessToken,
    refresh_at: SystemTime,
}

struct Inner {
    endpoint: reqwest::Url,
    shown_endpoint: String,
    http: reqwest::Client,
    client_id: String,
    secret: SecretString,
    auth: ClientAuth,
    form: Vec<(String, String)>,
    clock: SharedClock,
    refresh_ahead: Duration,
    default_lifetime: Duration,
    max_attempts: u32,
    backoff: Duration,
    cached: Mutex<Option<Cached>>,
    /// Held by the one caller (or background task) that is fetching.
    refresh: Arc<tokio::sync::Mutex<()>>,
    /// Counts finished fetches; with `last_error`, lets callers that waited for a failed fetch
    /// share its error instead of fetching again one after another.
    fetches: AtomicU64,
    last_error: Mutex<Option<(u64, TokenError)>>,
    requests: AtomicU64,
}

/// How the client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the URL-encoded id and secret (the default,
    /// and the method every server must support).
    #[default]
    Basic,
    /// `client_secret_post`: id and secret in the form body.
    Post,
}

/// An OAuth 2.0 client-credentials token source: caches the token, refreshes it ahead of
/// expiry in the background (one refresh at a time), retries transient failures a bounded
/// number of times. Cheap to clone. See the [module docs](super).
#[derive(Clone)]
pub struct ClientCredentials {
    inner: Arc<Inner>,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("ClientCredentials")
            .field("endpoint", &inner.shown_endpoint)
            .field("client_id", &inner.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("auth", &inner.auth)
            .field("refresh_ahead", &inner.refresh_ahead)
            .finish_non_exhaustive()
    }
}

impl TokenSource for ClientCredentials {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self.get())
    }
}

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

/// The RFC 6749 §5.2 error codes, the only endpoint text ever repeated in an error.
const OAUTH_ERRORS: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
];

impl ClientCredentials {
    /// Starts a configuration for the token endpoint at `token_endpoint` (`https`).
    pub fn builder(token_endpoint: impl Into<String>) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder {
            endpoint: token_endpoint.into(),
            client: None,
            auth: ClientAuth::Basic,
            scopes: Vec::new(),
            form: Vec::new(),
            clock: Arc::new(SystemClock),
            refresh_ahead: DEFAULT_REFRESH_AHEAD,
            default_lifetime: DEFAULT_LIFETIME,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: DEFAULT_BACKOFF,
            allow_http: false,
        }
    }

    /// How many token requests were sent (attempts, retries included). For tests and metrics.
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Forgets the cached token (for example after the receiver said it was revoked); the next
    /// call fetches a new one.
    pub fn invalidate(&self) {
        *self.lock_cache() = None;
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.inner
            .cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached token when it is still usable, and whether it is due for a refresh.
    fn cached(&self, now: SystemTime) -> Option<(AccessToken, bool)> {
        let cached = self.lock_cache().clone()?;
        let usable_until = cached
            .token
            .expires_at
            .checked_sub(EXPIRY_MARGIN)
            .unwrap_or(cached.token.expires_at);
        (now < usable_until).then(|| (cached.token, now >= cached.refresh_at))
    }

    /// A usable token: cached, or fetched (single flight) when there is none.
    pub async fn get(&self) -> Result<AccessToken, TokenError> {
        let now = self.inner.clock.now();
        if let Some((token, due)) = self.cached(now) {
            if due && let Ok(guard) = self.inner.refresh.clone().try_lock_owned() {
                // Refresh ahead in the background; this caller keeps the valid token.
                let this = self.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    if let Err(e) = this.fetch().await {
                        tracing::warn!(
                            target: "portcullis::client",
                            endpoint = this.inner.shown_endpoint.as_str(),
                            error = %e,
                            "token refresh ahead of expiry failed; the current token is kept"
                        );
                    }
                });
            }
            return Ok(token);
        }
        let seen = self.inner.fetches.load(Ordering::SeqCst);
        let _guard = self.inner.refresh.lock().await;
        if let Some((token, _)) = self.cached(self.inner.clock.now()) {
            return Ok(token);
        }
        if self.inner.fetches.load(Ordering::SeqCst) != seen
            && let Some((_, error)) = self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        {
            // A fetch finished (and failed) while this caller waited: share its outcome rather
            // than hammering the endpoint once per waiting caller.
            return Err(error);
        }
        self.fetch().await
    }

    /// Fetches a token with bounded retries and stores it. The caller holds the refresh lock.
    async fn fetch(&self) -> Result<AccessToken, TokenError> {
        let inner = &*self.inner;
        let mut backoff = inner.backoff;
        let mut attempt = 1;
        let result = loop {
            match self.request_once().await {
                Ok(token) => break Ok(token),
                Err(e) if e.kind == TokenErrorKind::Unavailable && attempt < inner.max_attempts => {
                    tracing::debug!(
                        target: "portcullis::client",
                        endpoint = inner.shown_endpoint.as_str(),
                        attempt,
                        error = %e,
                        "token request failed; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
                Err(e) => break Err(e),
            }
        };
        let n = inner.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last_error = inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &result {
            Ok(token) => {
                *last_error = None;
                drop(last_error);
                let now = inner.clock.now();
                let lifetime = token
                    .expires_at
                    .duration_since(now)
                    .unwrap_or(Duration::ZERO);
                // Refresh `refresh_ahead` before expiry, but never in the first half of a short
                // token's life.
                let ahead = inner.refresh_ahead.min(lifetime / 2);
                *self.lock_cache() = Some(Cached {
                    token: token.clone(),
                    refresh_at: token.expires_at.checked_sub(ahead).unwrap_or(now),
                });
            }
            Err(e) => *last_error = Some((n, e.clone())),
        }
        result
    }

    async fn request_once(&self) -> Result<AccessToken, TokenError> {
        let inner = &*self.inner;
        inner.requests.fetch_add(1, Ordering::Relaxed);
        let shown = &inner.shown_endpoint;
        let mut body = String::from("grant_type=client_credentials");
        let mut push = |name: &str, value: &str| {
            body.push('&');
            form_urlencode(name, &mut body);
            body.push('=');
            form_urlencode(value, &mut body);
        };
        for (name, value) in &inner.form {
            push(name, value);
        }
        let mut request = inner
            .http
            .post(inner.endpoint.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json");
        match inner.auth {
            ClientAuth::Basic => {
                let mut credentials = String::new();
                form_urlencode(&inner.client_id, &mut credentials);
                credentials.push(':');
                form_urlencode(inner.secret.expose_secret(), &mut credentials);
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes());
                let mut value =
                    HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
                        TokenError::new(
                            TokenErrorKind::Rejected,
                            "client credentials are not a header",
                        )
                    })?;
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
            ClientAuth::Post => {
                push("client_id", &inner.client_id);
                push("client_secret", inner.secret.expose_secret());
            }
        }
        let describe = |e: reqwest::Error| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else if e.is_redirect() {
                "redirect refused"
            } else {
                "request failed"
            };
            TokenError::new(TokenErrorKind::Unavailable, format!("POST {shown}: {what}"))
        };
        let mut response = request.body(body).send().await.map_err(describe)?;
        let status = response.status();
        let mut bytes = Vec::new();
        let too_large = response
            .content_length()
            .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64);
        if !too_large {
            while let Some(chunk) = response.chunk().await.map_err(describe)? {
                if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    break;
                }
                bytes.extend_from_slice(&chunk);
            }
        }
        let json: Option<serde_json::Map<String, Value>> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let code = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(Value::as_str)
                .filter(|code| OAUTH_ERRORS.contains(code));
            let detail = code.map_or_else(String::new, |c| format!(" ({c})"));
            let kind = if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS
            {
                TokenErrorKind::Unavailable
            } else {
                TokenErrorKind::Rejected
            };
            return Err(TokenError::new(
                kind,
                format!("POST {shown}: HTTP {status}{detail}"),
            ));
        }
        let invalid = |what: &'static str| {
            TokenError::new(
                TokenErrorKind::InvalidResponse,
                format!("POST {shown}: {what}"),
            )
        };
        let json = json.ok_or_else(|| invalid("the answer is not a JSON object"))?;
        let token = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES)
            .ok_or_else(|| invalid("no usable access_token"))?;
        if !json
            .get("token_type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
        {
            return Err(invalid("token_type is not Bearer"));
        }
        let lifetime = match json.get("expires_in") {
            None => inner.default_lifetime,
            Some(v) => Duration::from_secs(
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| invalid("expires_in is not a number of seconds"))?
                    .min(365 * 24 * 3600),
            ),
        };
        let token = AccessToken::new(SecretString::from(token), inner.clock.now() + lifetime);
        // Refuse now rather than on every outgoing call.
        token.authorization()?;
        Ok(token)
    }
}

/// Configures a [`ClientCredentials`] token source.
#[must_use]
pub struct ClientCredentialsBuilder {
    endpoint: String,
    client: Option<(String, SecretString)>,
    auth: ClientAuth,
    scopes: Vec<String>,
    form: Vec<(String, String)>,
    clock: SharedClock,
    refresh_ahead: Duration,
    default_lifetime: Duration,
    connect_timeout: Duration,
    timeout: Duration,
    max_attempts: u32,
    backoff: Duration,
    allow_http: bool,
}

impl fmt::Debug for ClientCredentialsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsBuilder")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client.as_ref().map(|(id, _)| id))
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl ClientCredentialsBuilder {
    /// This service's client id and secret at the authorization server (required).
    pub fn client_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        self.client = Some((client_id.into(), client_secret));
        self
    }
    /// How the client authenticates (default [`ClientAuth::Basic`]).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = auth;
        self
    }
    /// Adds a scope to request (`scope`, space-separated on the wire).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }
    /// The RFC 8707 `resource` indicator: the API the token is for.
    pub fn resource(self, resource: impl Into<String>) -> Self {
        self.param("resource", resource)
    }
    /// The `audience` parameter some servers (Auth0, Okta) use instead of `resource`.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        self.param("audience", audience)
    }
    /// Any other form parameter of the token request.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.form.push((name.into(), value.into()));
        self
    }
    /// How long before expiry a token is refreshed in the background (default 60 s; at most
    /// half the token's lifetime).
    pub fn refresh_ahead(mut self, ahead: Duration) -> Self {
        self.refresh_ahead = ahead;
        self
    }
    /// The lifetime assumed when the answer has no `expires_in` (default 5 min).
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }
    /// Connection timeout (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Timeout of one request, body included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Attempts per fetch (default 3, at most 10) and the first backoff between them (default
    /// 200 ms, doubling, at most 5 s). Only connection failures, timeouts, 5xx and 429 are
    /// retried.
    pub fn retry(mut self, max_attempts: u32, backoff: Duration) -> Self {
        self.max_attempts = max_attempts;
        self.backoff = backoff;
        self
    }
    /// The clock for expiry and refresh decisions (default the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
    /// Accepts an `http` token endpoint. Insecure: the client secret and the tokens cross the
    /// network in clear text. For tests on loopback.
    pub fn insecure_allow_http(mut self) -> Self {
        self.allow_http = true;
        self
    }

    /// Checks the configuration and builds the source (no request is sent yet).
    pub fn build(self) -> Result<ClientCredentials, ConfigError> {
        let endpoint = reqwest::Url::parse(&self.endpoint)
            .map_err(|_| ConfigError::new("the token endpoint is not a valid URL"))?;
        match endpoint.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(ConfigError::new(
                    "the token endpoint must use https (insecure_allow_http permits http, for tests on loopback)",
                ));
            }
            _ => return Err(ConfigError::new("the token endpoint must be an https URL")),
        }
        if endpoint.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::new("the token endpoint has no host"));
        }
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(ConfigError::new(
                "the token endpoint URL must not carry credentials (use client_credentials)",
            ));
        }
        let Some((client_id, secret)) = self.client else {
            return Err(ConfigError::new(
                "the token source needs client_credentials",
            ));
        };
        if client_id.is_empty() || secret.expose_secret().is_empty() {
            return Err(ConfigError::new(
                "the client id and secret must not be empty",
            ));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(ConfigError::new("max_attempts must be 1..=10"));
        }
        if self.connect_timeout.is_zero() || self.timeout.is_zero() {
            return Err(ConfigError::new("token endpoint timeouts must be positive"));
        }
        if self.default_lifetime.is_zero() || self.backoff > MAX_BACKOFF {
            return Err(ConfigError::new(
                "default_lifetime must be positive and the backoff at most 5 s",
            ));
        }
        let mut form = Vec::new();
        if !self.scopes.is_empty() {
            form.push(("scope".to_owned(), self.scopes.join(" ")));
        }
        form.extend(self.form);
        if form
            .iter()
            .any(|(name, _)| matches!(name.as_str(), "grant_type" | "client_id" | "client_secret"))
        {
            return Err(ConfigError::new(
                "grant_type and client credentials are set by the token source",
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .https_only(!self.allow_http)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::new(format!("cannot build the HTTP client: {e}")))?;
        let mut shown = endpoint.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        Ok(ClientCredentials {
            inner: Arc::new(Inner {
                shown_endpoint: shown.to_string(),
                endpoint,
                http,
                client_id,
                secret,
                auth: self.auth,
                form,
                clock: self.clock,
                refresh_ahead: self.refresh_ahead,
                default_lifetime: self.default_lifetime,
                max_attempts: self.max_attempts,
                backoff: self.backoff,
                cached: Mutex::new(None),
                refresh: Arc::new(tokio::sync::Mutex::new(())),
                fetches: AtomicU64::new(0),
                last_error: Mutex::new(None),
                requests: AtomicU64::new(0),
            }),
        })
    }
}
