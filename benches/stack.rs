//! Criterion benchmarks of the portcullis hot paths (issue 2, benchmark acceptance).
//!
//! Groups:
//!
//! - `baseline`: the same axum router and handler without portcullis;
//! - `stack`: the full stack (`Security` with a `JwtAuthenticator`, `SecureRouter` route
//!   `GET /api/me` guarded by `authenticated()`) for HS256, RS256, ES256 and EdDSA tokens, each
//!   with the verified-token cache hit (default cache, same token every time) and missed
//!   (`cache_capacity(0)`, full signature verification every time);
//! - `stack_audit`: the cached RS256 stack with an audit subscriber installed, formatting the
//!   events as JSON lines like the `secure_api` example (into `/dev/null`), to show what audit
//!   logging costs (the other groups run without a subscriber, so their audit events are
//!   disabled callsites);
//! - `overhead`: where the time of the cached stack goes: `SecureRouter` alone (a `public()`
//!   route), plus the edge layer, the whole stack with a static (non-JWT) authenticator, and the
//!   cached RS256 stack applied around the router instead of through `Router::layer`;
//! - `verify`: `JwtAuthenticator::verify` alone for a cached RS256 token, and
//!   `authenticate_now` (bearer header, cache, in-memory revocation check) for a cached EdDSA
//!   token;
//! - `policy`: `has_role` evaluated against a three-level role hierarchy.
//!
//! Every request is driven through `tower::ServiceExt::oneshot` on a current-thread tokio
//! runtime, and the response body is collected. Run with
//! `cargo bench --features full --bench stack`; see `docs/benchmarks.md`.

#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::fmt;
use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use axum::{Json, Router};
use criterion::Criterion;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use portcullis::Security;
use portcullis::authn::jwt::{JwtAlgorithm, JwtAuthenticator};
use portcullis::authn::{AuthFuture, Authenticator, MemoryRevocationStore, Revocation};
use portcullis::authz::{Policy, PolicyContext, Rbac, authenticated, has_role, public};
use portcullis::context::RequestContextLayer;
use portcullis::principal::{AuthMethod, Principal};
use portcullis::routing::{SecureRouter, get};
use portcullis::testing::TestKey;
use secrecy::SecretSlice;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

const ISSUER: &str = "https://issuer.bench";
const AUDIENCE: &str = "bench-api";
const PATH: &str = "/api/me";
const HMAC_SECRET: [u8; 32] = [7u8; 32];

/// The trivial handler shared by the baseline and the secured router.
async fn me() -> Json<Value> {
    Json(json!({"subject": "bench-user", "roles": ["reader"], "ok": true}))
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// `with_state(())` turns the handlers into routes once, as `axum::serve` does per connection;
// without it axum rebuilds the handler's route (and its layers) on every `oneshot` request.
fn baseline_router() -> Router {
    Router::new()
        .route(PATH, axum::routing::get(me))
        .with_state(())
}

fn secure_router(key: &TestKey, cache: bool) -> Router {
    secure_router_with(key, cache, RequestContextLayer::new())
}

fn secure_router_with(key: &TestKey, cache: bool, context: RequestContextLayer) -> Router {
    let builder = JwtAuthenticator::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE);
    // HMAC algorithms are only accepted through the explicit `hmac_secret` opt-in.
    let mut builder = if key.algorithm() == JwtAlgorithm::HS256 {
        builder.hmac_secret(
            Some(key.kid()),
            &SecretSlice::from(HMAC_SECRET.to_vec()),
            JwtAlgorithm::HS256,
        )
    } else {
        builder.key(key.verification_key())
    };
    if !cache {
        builder = builder.cache_capacity(0);
    }
    let jwt = builder.build().unwrap();
    let security = Security::builder()
        .authenticator(jwt)
        .request_context(context)
        .build()
        .unwrap();
    SecureRouter::new()
        .route(PATH, get(me, authenticated()))
        .into_router()
        .unwrap()
        .layer(security)
        .with_state(())
}

fn keys() -> Vec<(&'static str, TestKey)> {
    vec![
        (
            "HS256",
            TestKey::hmac("bench-hs256", JwtAlgorithm::HS256, &HMAC_SECRET),
        ),
        ("RS256", TestKey::rsa("bench-rs256", JwtAlgorithm::RS256)),
        ("ES256", TestKey::es256("bench-es256")),
        ("EdDSA", TestKey::ed25519("bench-eddsa")),
    ]
}

fn bearer(key: &TestKey) -> HeaderValue {
    let token = key.mint(&key.claims("bench-user", ISSUER, AUDIENCE));
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

fn request_parts(authorization: &HeaderValue) -> (http::request::Parts, ()) {
    let mut req = Request::get(PATH).body(()).unwrap();
    req.headers_mut()
        .insert(AUTHORIZATION, authorization.clone());
    req.into_parts()
}

fn request(authorization: &HeaderValue) -> Request<Body> {
    let mut req = Request::get(PATH).body(Body::empty()).unwrap();
    req.headers_mut()
        .insert(AUTHORIZATION, authorization.clone());
    req
}

/// One request through `app`, body collected; returns the status.
async fn drive<S, B>(app: &S, authorization: &HeaderValue) -> StatusCode
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: fmt::Debug,
    B: http_body::Body,
    B::Error: fmt::Debug,
{
    let response = app.clone().oneshot(request(authorization)).await.unwrap();
    let status = response.status();
    black_box(response.into_body().collect().await.unwrap().to_bytes());
    status
}

fn bench_baseline(c: &mut Criterion) {
    let rt = runtime();
    let app = baseline_router();
    // The same header as the secured requests, so only portcullis' work differs.
    let authorization = bearer(&TestKey::ed25519("unused"));
    assert_eq!(rt.block_on(drive(&app, &authorization)), StatusCode::OK);
    let mut group = c.benchmark_group("baseline");
    group.bench_function("axum_no_portcullis", |b| {
        b.to_async(&rt).iter(|| drive(&app, &authorization));
    });
    group.finish();
}

fn bench_stack(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("stack");
    for (name, key) in keys() {
        let authorization = bearer(&key);
        for (label, cache) in [("cache_hit", true), ("cache_miss", false)] {
            let app = secure_router(&key, cache);
            assert_eq!(
                rt.block_on(drive(&app, &authorization)),
                StatusCode::OK,
                "{name} {label}"
            );
            group.bench_function(format!("{name}/{label}"), |b| {
                b.to_async(&rt).iter(|| drive(&app, &authorization));
            });
        }
    }
    group.finish();
}

fn bench_stack_audit(c: &mut Criterion) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;

    let rt = runtime();
    let key = TestKey::rsa("bench-rs256", JwtAlgorithm::RS256);
    let authorization = bearer(&key);
    let app = secure_router(&key, true);
    // The `secure_api` example's audit configuration, writing to /dev/null (one write per
    // event, as a line-buffered stdout redirected to /dev/null does).
    let sink = Arc::new(std::fs::File::create("/dev/null").unwrap());
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(sink)
            .with_filter(Targets::new().with_target(portcullis::audit::TARGET, LevelFilter::INFO)),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    assert_eq!(rt.block_on(drive(&app, &authorization)), StatusCode::OK);
    let mut group = c.benchmark_group("stack_audit");
    group.bench_function("RS256/cache_hit/json_to_devnull", |b| {
        b.to_async(&rt).iter(|| drive(&app, &authorization));
    });
    drop(_guard);

    // The example's audit since the JSON-lines sink: the request only queues the event; a
    // background thread formats and writes it (here to /dev/null).
    let sink =
        portcullis::audit::JsonLinesSink::writer(std::fs::File::create("/dev/null").unwrap())
            .build()
            .unwrap();
    let auditor = portcullis::audit::Auditor::builder()
        .sink(sink.clone())
        .build()
        .unwrap();
    let app = secure_router_with(&key, true, RequestContextLayer::new().with_auditor(auditor));
    assert_eq!(rt.block_on(drive(&app, &authorization)), StatusCode::OK);
    group.bench_function("RS256/cache_hit/json_lines_sink_devnull", |b| {
        b.to_async(&rt).iter(|| drive(&app, &authorization));
    });
    group.finish();
    let report = sink.shutdown().unwrap();
    assert_eq!(report.stats.dropped, 0);
}

/// Accepts any `Authorization` header as one fixed principal: the authentication layer without
/// JWT work.
#[derive(Debug)]
struct StaticAuthenticator(Principal);

impl Authenticator for StaticAuthenticator {
    fn authenticate<'a>(&'a self, parts: &'a http::request::Parts) -> AuthFuture<'a> {
        let outcome = Ok(parts
            .headers
            .contains_key(AUTHORIZATION)
            .then(|| self.0.clone()));
        Box::pin(std::future::ready(outcome))
    }
}

/// Where the time of the cached stack goes: the pieces of the stack added one at a time, and
/// the stack applied around the router instead of through `Router::layer`.
fn bench_overhead(c: &mut Criterion) {
    let rt = runtime();
    let key = TestKey::rsa("bench-rs256", JwtAlgorithm::RS256);
    let authorization = bearer(&key);
    let public_router = || {
        SecureRouter::new()
            .route(PATH, get(me, public()))
            .into_router()
            .unwrap()
            .with_state(())
    };
    let secure_router_only = public_router();
    let edge_only = public_router().layer(RequestContextLayer::new());
    let principal = Principal::builder("bench-user", AuthMethod::Other("static".into()))
        .roles(["reader"])
        .build();
    let static_authn = SecureRouter::new()
        .route(PATH, get(me, authenticated()))
        .into_router()
        .unwrap()
        .layer(
            Security::builder()
                .authenticator(StaticAuthenticator(principal))
                .build()
                .unwrap(),
        )
        .with_state(());
    let jwt = JwtAuthenticator::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .key(key.verification_key())
        .build()
        .unwrap();
    let outer = Security::builder()
        .authenticator(jwt)
        .build()
        .unwrap()
        .layer(
            SecureRouter::new()
                .route(PATH, get(me, authenticated()))
                .into_router()
                .unwrap()
                .with_state(()),
        );

    let mut group = c.benchmark_group("overhead");
    for (name, app) in [
        ("secure_router_public", &secure_router_only),
        ("secure_router_public+edge", &edge_only),
        ("static_authenticator_stack", &static_authn),
    ] {
        assert_eq!(rt.block_on(drive(app, &authorization)), StatusCode::OK);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| drive(app, &authorization));
        });
    }
    assert_eq!(rt.block_on(drive(&outer, &authorization)), StatusCode::OK);
    group.bench_function("RS256/cache_hit/security_around_router", |b| {
        b.to_async(&rt).iter(|| drive(&outer, &authorization));
    });
    group.finish();
}

fn bench_verify(c: &mut Criterion) {
    let key = TestKey::rsa("bench-rs256", JwtAlgorithm::RS256);
    let token = key.mint(&key.claims("bench-user", ISSUER, AUDIENCE));
    let jwt = JwtAuthenticator::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .key(key.verification_key())
        .build()
        .unwrap();
    jwt.verify(&token).unwrap();
    let mut group = c.benchmark_group("verify");
    group.bench_function("RS256/cached", |b| {
        b.iter(|| jwt.verify(black_box(&token)).unwrap());
    });

    // The authenticator's per-request work for a cached token, as `AuthnLayer` runs it: the
    // bearer header, the cache (SHA-256 of the token) and an in-memory revocation check.
    let key = TestKey::ed25519("bench-eddsa");
    let revocation = Revocation::builder(MemoryRevocationStore::new())
        .build()
        .unwrap();
    let jwt = JwtAuthenticator::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .key(key.verification_key())
        .revocation(Arc::new(revocation))
        .build()
        .unwrap();
    let (parts, ()) = request_parts(&bearer(&key));
    assert!(matches!(jwt.authenticate_now(&parts), Some(Ok(Some(_)))));
    group.bench_function("EdDSA/cached/authenticate_now_memory_revocation", |b| {
        b.iter(|| jwt.authenticate_now(black_box(&parts)).unwrap().unwrap());
    });
    group.finish();
}

fn bench_policy(c: &mut Criterion) {
    let rbac = Rbac::builder()
        .inherit("admin", "editor")
        .inherit("editor", "reader")
        .build()
        .unwrap();
    let admin = Principal::builder("bench-admin", AuthMethod::Other("bench".into()))
        .roles(["admin"])
        .build();
    let reader = Principal::builder("bench-reader", AuthMethod::Other("bench".into()))
        .roles(["reader"])
        .build();
    let policy = has_role("reader");
    let admin_only = has_role("admin");
    let method = Method::GET;
    let mut group = c.benchmark_group("policy");
    group.bench_function("has_role/allow_inherited", |b| {
        let ctx = PolicyContext::new(&method, "/documents/{id}")
            .with_principal(Some(&admin))
            .with_rbac(&rbac);
        assert!(policy.evaluate(&ctx).is_allow());
        b.iter(|| policy.evaluate(black_box(&ctx)));
    });
    group.bench_function("has_role/deny", |b| {
        let ctx = PolicyContext::new(&method, "/admin/routes")
            .with_principal(Some(&reader))
            .with_rbac(&rbac);
        assert!(!admin_only.evaluate(&ctx).is_allow());
        b.iter(|| admin_only.evaluate(black_box(&ctx)));
    });
    group.finish();
}

// `criterion_group!` would generate an undocumented `pub fn`, which the crate's `missing_docs`
// lint refuses; this is what `criterion_group!` + `criterion_main!` expand to.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_baseline(&mut criterion);
    bench_stack(&mut criterion);
    bench_stack_audit(&mut criterion);
    bench_overhead(&mut criterion);
    bench_verify(&mut criterion);
    bench_policy(&mut criterion);
    criterion.final_summary();
}
