//! The portcullis demo service. See ARCHITECTURE.md §5 for its contract.
//!
//! ```text
//! cargo run --example secure_api
//! ```
//!
//! With `PORTCULLIS_ISSUER` it authenticates against that OpenID Provider (discovery, remote
//! JWKS; audience `PORTCULLIS_AUDIENCE`, roles from `PORTCULLIS_ROLES_CLAIM`). Without it, it runs in dev mode: an ephemeral Ed25519 key signs tokens for a
//! reader, an editor and an admin, which are printed with ready-to-run curl lines; the public
//! key is served at `/.well-known/jwks.json`.
//!
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
use axum::{Json, Router};
use portcullis::authn::AuthnLayer;
use portcullis::authn::api_key::ApiKeyAuthenticator;
use portcullis::authn::jwt::JwtAuthenticator;
use portcullis::authn::jwt::StartupMode;
use portcullis::authn::oidc::OidcProvider;
use portcullis::authn::revocation::{
    MemoryRevocationStore, RedisRevocationStore, Revocation, RevocationErrorKind,
};
use portcullis::authz::cedar::CedarPolicy;
use portcullis::authz::{Rbac, SharedPolicy, authenticated, has_role, public};
use portcullis::context::RequestContextLayer;
use portcullis::principal::Principal;
use portcullis::ratelimit::lockout::LockoutLayer;
use portcullis::ratelimit::store::{FailureMode, RedisRateLimitStore};
use portcullis::ratelimit::{Quota, RateLimitKey, RateLimitLayer};
use portcullis::rejection::{Rejection, RejectionKind};
use portcullis::routing::{RouteReport, SecureRouter, get, post};
use portcullis::testing::{TestKey, jwks_json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const BODY_LIMIT: usize = 64 * 1024;
const DEV_TOKEN_LIFETIME_SECS: u64 = 8 * 3600;

#[derive(Clone, Serialize)]
struct Document {
    id: u64,
    title: String,
    url: String,
    owner: String,
}

#[derive(Clone)]
struct AppState {
    documents: Arc<RwLock<BTreeMap<u64, Document>>>,
    report: Arc<RouteReport>,
    jwks: Arc<Value>,
    revocation: Revocation,
}

#[derive(Deserialize)]
struct NewDocument {
    title: String,
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
    Json(new): Json<NewDocument>,
) -> Result<impl IntoResponse, Rejection> {
    let title_len = new.title.chars().count();
    if !(1..=200).contains(&title_len) {
        return Err(Rejection::new(
            RejectionKind::ValidationFailed,
            "title length out of 1..=200",
        ));
    }
    if !new.url.starts_with("https://") {
        return Err(Rejection::new(
            RejectionKind::ValidationFailed,
            "url is not https",
        ));
    }
    let mut documents = state
        .documents
        .write()
        .map_err(|_| Rejection::not_found())?;
    let id = documents.keys().next_back().map_or(1, |last| last + 1);
    let document = Document {
        id,
        title: new.title,
        url: new.url,
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

/// `{"jti": "...", "exp": 1700000000}`; `exp` (the token's expiry, Unix seconds) is optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeToken {
    jti: String,
    #[serde(default)]
    exp: Option<u64>,
}

/// Revokes one token by its `jti`; from then on it gets 401.
///
/// Look-up is by `jti` only, so the token's expiry is not known here: with `exp` in the body the
/// entry is kept until then, without it for the authenticator's maximum token lifetime (24 h),
/// which outlives any token still accepted; either way plus a 5-minute margin for clock skew.
async fn revoke_token(
    State(state): State<AppState>,
    Json(request): Json<RevokeToken>,
) -> Result<axum::response::Response, Rejection> {
    let exp = request
        .exp
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
    match state.revocation.revoke_jti(&request.jti, exp).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) if e.kind() == RevocationErrorKind::InvalidInput => Err(Rejection::new(
            RejectionKind::ValidationFailed,
            "jti must be 1..=1024 bytes",
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn init_audit_log() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    // Audit events as JSON lines on stdout; everything else (warnings) on stderr.
    let audit = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(std::io::stdout)
        .with_filter(Targets::new().with_target(portcullis::audit::TARGET, LevelFilter::INFO));
    let other = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            Targets::new()
                .with_default(LevelFilter::WARN)
                .with_target(portcullis::audit::TARGET, LevelFilter::OFF),
        );
    tracing_subscriber::registry()
        .with(audit)
        .with(other)
        .init();
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
/// sets them (for instance 50 and 100). With `REDIS_URL` the limits are shared by every replica
/// and fall back to the local limiter (counted, audited) when Redis does not answer.
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
        let redis = match std::env::var("REDIS_URL") {
            Ok(url) => Some(
                RedisRateLimitStore::builder(url)
                    .key_prefix("portcullis-demo:ratelimit:")
                    .failure_mode(FailureMode::FailOpen)
                    .build()?,
            ),
            Err(_) => None,
        };
        let limit = |name: &str, key: RateLimitKey| {
            let builder = RateLimitLayer::builder(name).quota(quota).key(key);
            match &redis {
                Some(store) => builder.redis(store.clone()).build(),
                None => builder.build(),
            }
        };
        eprintln!(
            "rate limits: {rate}/s, burst {burst}, per client IP and per subject ({})",
            if redis.is_some() {
                "Redis, fail open"
            } else {
                "in memory"
            }
        );
        Ok(Self {
            per_ip: limit("per-ip", RateLimitKey::client_ip())?,
            lockout: LockoutLayer::builder().build()?,
            per_subject: limit("per-subject", RateLimitKey::subject())?,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_audit_log();
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
            let key = TestKey::ed25519("dev-ed25519");
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
    let authn = match api_keys_from_env()? {
        Some(api_keys) => AuthnLayer::new(jwt).with(api_keys),
        None => AuthnLayer::new(jwt),
    };
    // Outermost first: edge (client IP, rendering, audit) ─► per-IP limit ─► lockout ─►
    // authentication ─► per-subject limit ─► router. `Security` assembles the edge and
    // authentication alone; the limits go between them, so the stack is spelled out here.
    let app: Router = routes(cedar.as_ref())
        .into_router()?
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
        .layer(limits.per_subject)
        .layer(authn)
        .layer(limits.lockout)
        .layer(limits.per_ip)
        .layer(RequestContextLayer::new());

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let Some(key) = dev_key else {
        eprintln!("portcullis secure_api listening on http://{addr}");
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await?;
        return Ok(());
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
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
