//! The portcullis demo service. See ARCHITECTURE.md §5 for its contract.
//!
//! ```text
//! cargo run --example secure_api
//! ```
//!
//! With `PORTCULLIS_ISSUER` it authenticates against that OpenID Provider (discovery, remote
//! JWKS; audience `PORTCULLIS_AUDIENCE`, roles from `PORTCULLIS_ROLES_CLAIM`). Without it, it runs in dev mode: an ephemeral Ed25519 key signs tokens for a
//! reader, an editor and an admin, which are printed with ready-to-run curl lines; the public
//! key is served at `/.well-known/jwks.json`. `PORTCULLIS_DEV_KEY_ALG=RS256` signs them with an
//! RSA-2048 key instead.
//!
//! Audit: one JSON line per request on stdout, or in the hash-chained file
//! `PORTCULLIS_AUDIT_FILE` (HMAC-keyed with the key in `PORTCULLIS_AUDIT_HMAC_KEY_FILE`, if set);
//! check the file with `cargo run --example audit_verify -- FILE`. Ctrl-C or SIGTERM shuts
//! down gracefully: in-flight requests finish, the audit queue is written out, the file is
//! sealed and its last hash printed. Security alerts (spikes of 401/403/429, unknown key ids,
//! JWKS failures, lockouts) are audit events and go to stderr too, and to
//! `PORTCULLIS_ALERT_WEBHOOK` when set. Prometheus metrics at `/metrics` (admin only).
//! With `PORTCULLIS_CORS_ORIGINS=https://app.example.com,http://127.0.0.1:3000` browser apps on
//! those origins may call the API with bearer tokens (CORS `bearer_api` preset); without it,
//! browsers keep the same-origin policy.
//! With `PORTCULLIS_API_KEYS_FILE` it also accepts API keys (`Authorization: ApiKey pk_<id>_<secret>`
//! or `x-api-key: pk_...`) listed in that file, one `id:sha256-hex-of-the-full-key:role,role` per
//! line (see `docs/api-keys.md`); the file is watched and reloaded on change.
//!
//! With `PORTCULLIS_CEDAR_POLICIES=examples/secure_api.cedar` every route is decided by those
//! Cedar policies instead of the built-in ones (same allow/deny matrix), validated against
//! `PORTCULLIS_CEDAR_SCHEMA` (default: the `.cedarschema` file next to the policies).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router, ServiceExt};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use portcullis::audit::{
    Alert, AlertDetector, AuditEvent, Auditor, ChainKey, EventType, JsonLinesSink, WebhookHook,
};
use portcullis::authn::AuthnLayer;
use portcullis::authn::api_key::ApiKeyAuthenticator;
use portcullis::authn::jwt::StartupMode;
use portcullis::authn::jwt::{JwtAlgorithm, JwtAuthenticator};
use portcullis::authn::oidc::OidcProvider;
use portcullis::authn::revocation::{
    MemoryRevocationStore, RedisRevocationStore, Revocation, RevocationErrorKind,
};
use portcullis::authz::cedar::CedarPolicy;
use portcullis::authz::{Rbac, SharedPolicy, authenticated, has_role, public};
use portcullis::context::RequestContextLayer;
use portcullis::headers::{CorsLayer, SecureHeadersLayer};
use portcullis::principal::Principal;
use portcullis::ratelimit::lockout::{LockoutLayer, RedisLockoutStore};
use portcullis::ratelimit::store::{FailureMode, RedisRateLimitStore};
use portcullis::ratelimit::{Quota, RateLimitKey, RateLimitLayer};
use portcullis::rejection::{FieldError, Rejection, RejectionKind};
use portcullis::routing::{RouteReport, SecureRouter, get, post};
use portcullis::testing::{TestKey, jwks_json};
use portcullis::validate::{
    BoundedString, Resolution, SafeUrl, SystemResolver, Valid, ValidationError, parses_as,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const BODY_LIMIT: usize = 64 * 1024;
const DEV_TOKEN_LIFETIME_SECS: u64 = 8 * 3600;
/// From a verified-token cache hit (microseconds) to a remote introspection call (seconds).
const VERIFICATION_SECONDS_BUCKETS: [f64; 14] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.05, 0.25, 1.0,
];

#[derive(Clone, Serialize)]
struct Document {
    id: u64,
    title: String,
    url: String,
    owner: String,
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    documents: Arc<RwLock<BTreeMap<u64, Document>>>,
    report: Arc<RouteReport>,
    jwks: Arc<Value>,
    revocation: Revocation,
}

/// `POST /api/documents`: `{"title": 1..=200 characters, "url": a public https URL}`.
///
/// Both fields are checked by garde rules so that one 422 lists every bad field. The URL rule is
/// `SafeUrl`'s: https only, no user info, no IP literal (in any encoding), no internal name
/// (`localhost`, `*.internal`, single labels...). The service stores the URL and never fetches
/// it, so on top of that the name is resolved leniently: a name that resolves to a private,
/// loopback, link-local (or otherwise non-public) address is refused, a name that does not
/// resolve at all is accepted. Whatever fetches the URL later must check it again in
/// `Resolution::Strict` mode and connect only to the vetted addresses.
#[derive(Deserialize, garde::Validate)]
#[serde(deny_unknown_fields)]
struct NewDocument {
    #[garde(custom(parses_as::<BoundedString<1, 200>>))]
    title: String,
    #[garde(custom(parses_as::<SafeUrl>))]
    url: String,
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn me(principal: Principal) -> Json<Value> {
    Json(json!({
        "subject": principal.subject(),
        "kind": principal.kind(),
        "issuer": principal.issuer(),
        "roles": principal.roles(),
        "scopes": principal.scopes(),
        "auth_method": principal.auth_method(),
    }))
}

async fn read_document(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Document>, Rejection> {
    let documents = state.documents.read().map_err(|_| Rejection::not_found())?;
    documents
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(Rejection::not_found)
}

async fn create_document(
    State(state): State<AppState>,
    principal: Principal,
    Valid(Json(new)): Valid<Json<NewDocument>>,
) -> Result<impl IntoResponse, Rejection> {
    let invalid = |path: &str, code: &'static str| {
        Rejection::new(RejectionKind::ValidationFailed, format!("{path}: {code}"))
            .with_field_errors([FieldError::new(path, code)])
    };
    // Already checked by the garde rule; parsed again for the typed value.
    let url: SafeUrl = new
        .url
        .parse()
        .map_err(|e: ValidationError| invalid("url", e.code()))?;
    let lenient = Resolution::Lenient {
        timeout: Duration::from_secs(1),
    };
    url.check_resolved(&SystemResolver, lenient)
        .await
        .map_err(|e| invalid("url", e.code()))?;
    let mut documents = state
        .documents
        .write()
        .map_err(|_| Rejection::not_found())?;
    let id = documents.keys().next_back().map_or(1, |last| last + 1);
    let document = Document {
        id,
        title: new.title,
        url: url.to_string(),
        owner: principal.subject().to_owned(),
    };
    documents.insert(id, document.clone());
    Ok((StatusCode::CREATED, Json(document)))
}

async fn delete_document(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<StatusCode, Rejection> {
    let mut documents = state
        .documents
        .write()
        .map_err(|_| Rejection::not_found())?;
    documents
        .remove(&id)
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or_else(Rejection::not_found)
}

/// `{"jti": "...", "exp": 1700000000}` (`exp`, the token's expiry in Unix seconds, optional),
/// or `{"subject": "..."}` to revoke every token of a subject issued until now.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeToken {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    subject: Option<String>,
}

/// Revokes one token by its `jti`, or every token of a subject issued until now ("log out
/// everywhere"); from then on they get 401.
///
/// Look-up is by `jti` only, so the token's expiry is not known here: with `exp` in the body the
/// entry is kept until then, without it for the authenticator's maximum token lifetime (24 h),
/// which outlives any token still accepted; either way plus a 5-minute margin for clock skew.
async fn revoke_token(
    State(state): State<AppState>,
    Json(request): Json<RevokeToken>,
) -> Result<axum::response::Response, Rejection> {
    let exp = match request.exp {
        // An expiry the clock cannot represent is a validation failure, never a panic.
        Some(secs) => Some(
            UNIX_EPOCH
                .checked_add(Duration::from_secs(secs))
                .ok_or_else(|| {
                    Rejection::new(RejectionKind::ValidationFailed, "exp out of range")
                        .with_field_errors([FieldError::new("exp", "range")])
                })?,
        ),
        None => None,
    };
    let revoked = match (&request.jti, &request.subject) {
        (Some(jti), None) => state.revocation.revoke_jti(jti, exp).await,
        (None, Some(subject)) if exp.is_none() => {
            state.revocation.revoke_subject_now(subject).await
        }
        _ => {
            return Err(Rejection::new(
                RejectionKind::ValidationFailed,
                "give either jti (with an optional exp) or subject",
            ));
        }
    };
    match revoked {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) if e.kind() == RevocationErrorKind::InvalidInput => Err(Rejection::new(
            RejectionKind::ValidationFailed,
            "jti and subject must be 1..=1024 bytes",
        )),
        Err(e) => {
            tracing::error!(target: "secure_api", error = %e, "revocation not stored");
            Ok((
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "revocation store unavailable"})),
            )
                .into_response())
        }
    }
}

async fn routes_report(State(state): State<AppState>) -> Json<RouteReport> {
    Json((*state.report).clone())
}

/// Prometheus text exposition of the portcullis metrics (docs/metrics.md).
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn jwks(State(state): State<AppState>) -> Json<Value> {
    Json((*state.jwks).clone())
}

/// The route table. With `cedar`, that policy decides every route instead of the built-in one.
fn routes(cedar: Option<&SharedPolicy>) -> SecureRouter<AppState> {
    let policy = |builtin: SharedPolicy| cedar.cloned().unwrap_or(builtin);
    let rbac = Rbac::builder()
        .inherit("admin", "editor")
        .inherit("editor", "reader")
        .build()
        .unwrap_or_default();
    SecureRouter::with_rbac(rbac)
        .route("/health", get(health, policy(public())))
        .route("/.well-known/jwks.json", get(jwks, policy(public())))
        .route("/api/me", get(me, policy(authenticated())))
        .route(
            "/api/documents",
            post(create_document, policy(has_role("editor"))),
        )
        .route(
            "/api/documents/{id}",
            get(read_document, policy(has_role("reader")))
                .delete(delete_document, policy(has_role("admin"))),
        )
        .route(
            "/api/tokens/revoke",
            post(revoke_token, policy(has_role("admin"))),
        )
        .route(
            "/admin/routes",
            get(routes_report, policy(has_role("admin"))),
        )
        // Operational, not part of the authorization model under test: always admin only.
        .route("/metrics", get(metrics, has_role("admin")))
}

/// The Cedar policy of `PORTCULLIS_CEDAR_POLICIES` (namespace `Demo`), with the schema of
/// `PORTCULLIS_CEDAR_SCHEMA` or the `.cedarschema` file next to the policies; `None` when unset.
fn cedar_from_env() -> Result<Option<SharedPolicy>, Box<dyn std::error::Error>> {
    let Some(policies) = std::env::var_os("PORTCULLIS_CEDAR_POLICIES") else {
        return Ok(None);
    };
    let policies = std::path::PathBuf::from(policies);
    let schema = std::env::var_os("PORTCULLIS_CEDAR_SCHEMA")
        .map_or_else(|| policies.with_extension("cedarschema"), Into::into);
    let cedar = CedarPolicy::builder()
        .namespace("Demo")
        .policies_file(&policies)
        .schema_file(&schema)
        .build()?;
    eprintln!(
        "authorization: {} Cedar policies from {} (schema {})",
        cedar.policy_count(),
        policies.display(),
        schema.display()
    );
    Ok(Some(cedar.into_shared()))
}

/// CORS for the comma-separated origins of `PORTCULLIS_CORS_ORIGINS`; `None` when unset.
fn cors_from_env() -> Result<Option<CorsLayer>, Box<dyn std::error::Error>> {
    let Ok(origins) = std::env::var("PORTCULLIS_CORS_ORIGINS") else {
        return Ok(None);
    };
    let origins: Vec<&str> = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    let cors = CorsLayer::bearer_api()
        .allow_origins(origins.iter().copied())
        .build()?;
    eprintln!(
        "CORS: bearer-token calls allowed from {}",
        origins.join(", ")
    );
    Ok(Some(cors))
}

/// API keys from `PORTCULLIS_API_KEYS_FILE` (watched), accepted as `Authorization: ApiKey ...`
/// or `x-api-key`; `None` when unset.
fn api_keys_from_env() -> Result<Option<ApiKeyAuthenticator>, Box<dyn std::error::Error>> {
    let Some(path) = std::env::var_os("PORTCULLIS_API_KEYS_FILE") else {
        return Ok(None);
    };
    let api_keys = ApiKeyAuthenticator::builder()
        .keys_file(&path)
        .header("x-api-key")
        .build()?;
    eprintln!(
        "API keys: {} from {} (reloaded on change)",
        api_keys.keys().len(),
        std::path::Path::new(&path).display()
    );
    Ok(Some(api_keys))
}

/// The dev-mode signing key: Ed25519 by default; `PORTCULLIS_DEV_KEY_ALG=RS256` makes an
/// RSA-2048 key instead (the load benchmark measures a cached RS256 token).
fn dev_key_from_env() -> Result<TestKey, Box<dyn std::error::Error>> {
    match std::env::var("PORTCULLIS_DEV_KEY_ALG").as_deref() {
        Err(_) | Ok("EdDSA") => Ok(TestKey::ed25519("dev-ed25519")),
        Ok("RS256") => Ok(TestKey::rsa("dev-rs256", JwtAlgorithm::RS256)),
        Ok(other) => {
            Err(format!("PORTCULLIS_DEV_KEY_ALG must be EdDSA or RS256, not {other:?}").into())
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Application logs (warnings and errors) on stderr. Audit events do not go through
/// `tracing` here: the JSON-lines sink writes them from its own thread.
fn init_logs() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let other = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(Targets::new().with_default(LevelFilter::WARN));
    tracing_subscriber::registry().with(other).init();
}

/// The audit pipeline: JSON lines on stdout, or the hash-chained `PORTCULLIS_AUDIT_FILE`
/// (keyed with `PORTCULLIS_AUDIT_HMAC_KEY_FILE`); alerts to stderr and to
/// `PORTCULLIS_ALERT_WEBHOOK`.
fn audit_from_env() -> Result<(Auditor, JsonLinesSink), Box<dyn std::error::Error>> {
    let sink = match std::env::var_os("PORTCULLIS_AUDIT_FILE") {
        Some(path) => {
            let mut builder = JsonLinesSink::file(&path);
            let keyed = match std::env::var_os("PORTCULLIS_AUDIT_HMAC_KEY_FILE") {
                Some(key_file) => {
                    let key = ChainKey::from_file(key_file, None)?;
                    let id = key.id().to_owned();
                    builder = builder.hmac_key(key);
                    format!(", HMAC key {id}")
                }
                None => String::new(),
            };
            let sink = builder.build()?;
            eprintln!(
                "audit: hash-chained JSON lines in {}{keyed}",
                std::path::Path::new(&path).display()
            );
            sink
        }
        None => JsonLinesSink::stdout().build()?,
    };
    let mut alerts = AlertDetector::builder().hook(|alert: &Alert| {
        eprintln!("SECURITY ALERT {}", alert.to_json());
    });
    if let Ok(url) = std::env::var("PORTCULLIS_ALERT_WEBHOOK") {
        let mut webhook = WebhookHook::builder(&url);
        if url.starts_with("http://127.") || url.starts_with("http://localhost") {
            webhook = webhook.insecure_allow_http();
        }
        alerts = alerts.hook(webhook.build()?);
        eprintln!("alerts: also POSTed to the webhook");
    }
    let auditor = Auditor::builder()
        .sink(sink.clone())
        .alerts(alerts.build()?)
        .build()?;
    Ok((auditor, sink))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

use tracing_subscriber::Layer as _;

/// The OIDC provider for `PORTCULLIS_ISSUER`. Plain `http` is accepted only for loopback
/// issuers (a provider started by a test); anything else must be `https`.
fn oidc_provider(
    issuer: &str,
    audience: &str,
    roles_claim: &str,
    revocation: &Revocation,
) -> Result<OidcProvider, Box<dyn std::error::Error>> {
    let roles_claim = roles_claim.to_owned();
    let revocation = Arc::new(revocation.clone());
    let mut builder = OidcProvider::builder(issuer)
        .audience(audience)
        .startup(StartupMode::FailFast)
        .jwt(move |jwt| jwt.roles_claim(roles_claim).revocation(revocation));
    let loopback = [
        "http://127.",
        "http://localhost:",
        "http://localhost/",
        "http://[::1]",
    ];
    if loopback.iter().any(|prefix| issuer.starts_with(prefix)) {
        builder = builder.insecure_allow_http();
    }
    Ok(builder.build()?)
}

/// The revocation store: Redis when `REDIS_URL` is set (shared by every replica), otherwise in
/// memory. A Redis that does not answer yet is reported, not fatal: tokens are refused (fail
/// closed) until it does.
async fn revocation_from_env() -> Result<Revocation, Box<dyn std::error::Error>> {
    let revocation = match std::env::var_os("REDIS_URL") {
        Some(_) => {
            let store = RedisRevocationStore::builder_from_env()
                .key_prefix("portcullis-demo:revoked:")
                .build()?;
            match store.ping().await {
                Ok(()) => eprintln!("revocation: Redis at {}", store.endpoint()),
                Err(e) => eprintln!(
                    "revocation: Redis at {} is not answering ({e}); tokens are refused until it does",
                    store.endpoint()
                ),
            }
            Revocation::builder(store).build()?
        }
        None => {
            eprintln!("revocation: in memory (set REDIS_URL to share it between replicas)");
            Revocation::builder(MemoryRevocationStore::new()).build()?
        }
    };
    Ok(revocation)
}

/// Rate limits and brute-force lockout (ARCHITECTURE.md §5): per client IP before
/// authentication, per subject after it. `PORTCULLIS_RATE_PER_SEC` (default 100000) and
/// `PORTCULLIS_RATE_BURST` (default 2 × the rate) set both limits; the defaults are generous so
/// a load test from one address measures the stack rather than the limiter; a real deployment
/// sets them (for instance 50 and 100). With `REDIS_URL` the limits and the lockout counters are
/// shared by every replica and fall back to per-replica state (counted, audited) when Redis does
/// not answer: the lockout wraps every route, `/health` included, so failing closed would turn a
/// Redis outage into an outage of the whole API.
struct AbuseLimits {
    per_ip: RateLimitLayer,
    lockout: LockoutLayer,
    per_subject: RateLimitLayer,
}

impl AbuseLimits {
    fn from_env() -> Result<Self, Box<dyn std::error::Error>> {
        let number = |name: &str,
                      default: u32|
         -> Result<std::num::NonZeroU32, Box<dyn std::error::Error>> {
            match std::env::var(name) {
                Ok(v) => Ok(v
                    .parse()
                    .map_err(|_| format!("{name} must be a positive integer"))?),
                Err(_) => Ok(std::num::NonZeroU32::new(default).ok_or("zero default")?),
            }
        };
        let rate = number("PORTCULLIS_RATE_PER_SEC", 100_000)?;
        let burst = number("PORTCULLIS_RATE_BURST", rate.get().saturating_mul(2))?;
        let quota = Quota::per_second(rate).with_burst(burst);
        let (redis, lockout) = match std::env::var("REDIS_URL") {
            Ok(url) => (
                Some(
                    RedisRateLimitStore::builder(&url)
                        .key_prefix("portcullis-demo:ratelimit:")
                        .failure_mode(FailureMode::FailOpen)
                        .build()?,
                ),
                LockoutLayer::builder().redis(
                    RedisLockoutStore::builder(&url)
                        .key_prefix("portcullis-demo:lockout:")
                        .failure_mode(FailureMode::FailOpen)
                        .build()?,
                ),
            ),
            Err(_) => (None, LockoutLayer::builder()),
        };
        let limit = |name: &str, key: RateLimitKey| {
            let builder = RateLimitLayer::builder(name).quota(quota).key(key);
            match &redis {
                Some(store) => builder.redis(store.clone()).build(),
                None => builder.build(),
            }
        };
        eprintln!(
            "rate limits: {rate}/s, burst {burst}, per client IP and per subject; lockout ({})",
            if redis.is_some() {
                "Redis, fail open"
            } else {
                "in memory"
            }
        );
        Ok(Self {
            per_ip: limit("per-ip", RateLimitKey::client_ip())?,
            lockout: lockout.build()?,
            per_subject: limit("per-subject", RateLimitKey::subject())?,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logs();
    let (auditor, audit_sink) = audit_from_env()?;
    portcullis::audit::install_global(auditor.clone())?;
    // Credential verification time as a bucketed histogram: it aggregates across replicas
    // (a summary's quantiles do not) and is cheaper to maintain per request.
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(portcullis::audit::metrics::AUTHN_DURATION.into()),
            &VERIFICATION_SECONDS_BUCKETS,
        )?
        .build_recorder();
    let metrics = recorder.handle();
    // Global recorder with portcullis' fixed-label series registered once, not per request
    // (no idle timeout above: evicted series would not come back, docs/metrics.md).
    portcullis::audit::metrics::install_recorder(recorder)?;
    {
        // Histogram samples accumulate until upkeep drains them into their buckets.
        let metrics = metrics.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                metrics.run_upkeep();
            }
        });
    }
    let addr: SocketAddr = std::env::var("PORTCULLIS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()?;
    let audience =
        std::env::var("PORTCULLIS_AUDIENCE").unwrap_or_else(|_| "portcullis-demo".into());
    let roles_claim = std::env::var("PORTCULLIS_ROLES_CLAIM").unwrap_or_else(|_| "roles".into());
    let revocation = revocation_from_env().await?;
    let cedar = cedar_from_env()?;

    // With PORTCULLIS_ISSUER: OIDC discovery, keys from the provider's JWKS (followed across
    // rotations). Without it, dev mode: an ephemeral key, tokens printed below.
    let (jwt, dev_key, issuer, _provider) = match std::env::var("PORTCULLIS_ISSUER") {
        Ok(issuer) => {
            let provider = oidc_provider(&issuer, &audience, &roles_claim, &revocation)?;
            provider
                .start()
                .await
                .map_err(|e| format!("OIDC discovery for {issuer} failed: {e}"))?;
            eprintln!("authentication: OIDC provider {issuer}, audience {audience}");
            (provider.authenticator(), None, issuer, Some(provider))
        }
        Err(_) => {
            let issuer = format!("http://{addr}");
            let key = dev_key_from_env()?;
            let jwt = JwtAuthenticator::builder()
                .issuer(issuer.clone())
                .audience(audience.clone())
                .roles_claim(roles_claim.clone())
                .key(key.verification_key())
                .revocation(Arc::new(revocation.clone()))
                .build()?;
            (jwt, Some(key), issuer, None)
        }
    };

    let report = routes(cedar.as_ref()).report();
    let state = AppState {
        metrics,
        documents: Arc::new(RwLock::new(BTreeMap::from([(
            1,
            Document {
                id: 1,
                title: "Welcome".into(),
                url: "https://example.com/welcome".into(),
                owner: "admin".into(),
            },
        )]))),
        report: Arc::new(report),
        jwks: Arc::new(serde_json::from_str(&match &dev_key {
            Some(key) => jwks_json(&[key]),
            None => jwks_json(&[]),
        })?),
        revocation,
    };
    let limits = AbuseLimits::from_env()?;
    let cors = tower::util::option_layer(cors_from_env()?);
    let authn = match api_keys_from_env()? {
        Some(api_keys) => AuthnLayer::new(jwt).with(api_keys),
        None => AuthnLayer::new(jwt),
    };
    // Outermost first: secure headers ─► CORS ─► edge (client IP, rendering, audit) ─► per-IP
    // limit ─► lockout ─► authentication ─► per-subject limit ─► router. `Security` assembles
    // the headers, CORS, edge and authentication alone; the limits go between them, so the
    // stack is spelled out here. Headers and CORS wrap the edge so that rendered refusals carry
    // them too; preflights are answered before authentication.
    //
    // The stack wraps the router as one service, served directly, instead of going through
    // `Router::layer` or `fallback_service`: axum boxes every such layer around every route and
    // clones the boxes for each request (dozens of allocations); around the router, a request
    // clones a handful of `Arc`s (docs/benchmarks.md).
    let router: Router = routes(cedar.as_ref()).into_router()?.with_state(state);
    let app = tower::ServiceBuilder::new()
        // axum::serve wants axum's body type.
        .map_response(|response: axum::http::Response<_>| response.map(axum::body::Body::new))
        .layer(SecureHeadersLayer::api())
        .layer(cors)
        .layer(RequestContextLayer::new().with_auditor(auditor.clone()))
        .layer(limits.per_ip)
        .layer(limits.lockout)
        .layer(authn)
        .layer(limits.per_subject)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .service(router);
    auditor.record(
        AuditEvent::new(EventType::ConfigLoaded)
            .with_reason_code("startup")
            .with_detail("component", "secure_api")
            .with_detail(
                "authorization",
                if cedar.is_some() { "cedar" } else { "builtin" },
            )
            .with_detail(
                "mode",
                if std::env::var_os("PORTCULLIS_ISSUER").is_some() {
                    "oidc"
                } else {
                    "dev"
                },
            ),
    );

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let Some(key) = dev_key else {
        eprintln!("portcullis secure_api listening on http://{addr}");
        axum::serve(
            listener,
            ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<SocketAddr>(
                app,
            ),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await?;
        return finish_audit(&audit_sink);
    };
    let now = unix_now();
    eprintln!("portcullis secure_api (dev mode) listening on http://{addr}");
    eprintln!(
        "issuer {issuer}, audience {audience}; tokens valid for {}h",
        DEV_TOKEN_LIFETIME_SECS / 3600
    );
    for (name, roles) in [
        ("reader", ["reader"]),
        ("editor", ["editor"]),
        ("admin", ["admin"]),
    ] {
        let mut claims = json!({
            "sub": format!("dev-{name}"),
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "exp": now + DEV_TOKEN_LIFETIME_SECS,
            "jti": portcullis::testing::random_id(),
            "scope": "documents",
        });
        claims[&roles_claim] = json!(roles);
        let token = key.mint(&claims);
        println!("{}_TOKEN={token}", name.to_uppercase());
        eprintln!(
            "curl -H \"Authorization: Bearer ${}_TOKEN\" http://{addr}/api/me",
            name.to_uppercase()
        );
        if name == "reader" {
            eprintln!(
                "revoke it: curl -X POST -H \"Authorization: Bearer $ADMIN_TOKEN\" -H 'content-type: application/json' -d '{{\"jti\": \"{}\"}}' http://{addr}/api/tokens/revoke",
                claims["jti"].as_str().unwrap_or_default()
            );
        }
    }
    axum::serve(
        listener,
        ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<SocketAddr>(
            app,
        ),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    finish_audit(&audit_sink)
}

/// After the server stopped: writes out the audit queue, seals the file, prints its last hash
/// (record it elsewhere: it detects a file cut back to an earlier seal).
fn finish_audit(sink: &JsonLinesSink) -> Result<(), Box<dyn std::error::Error>> {
    let report = sink.shutdown()?;
    match (report.lines, report.last_hash) {
        (Some(lines), Some(hash)) => eprintln!(
            "audit: {} events written, {} dropped; file sealed at line {lines}, last hash {hash}",
            report.stats.written, report.stats.dropped
        ),
        _ => eprintln!(
            "audit: {} events written, {} dropped",
            report.stats.written, report.stats.dropped
        ),
    }
    Ok(())
}
