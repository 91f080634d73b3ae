//! The request path with a remote JWKS versus static keys: once the keys are loaded, both go
//! through the same verification, so they should cost the same.
//!
//! `cargo bench --bench remote_jwks --features full`

#![expect(clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use portcullis::authn::jwt::{JwtAuthenticator, RemoteJwks};
use portcullis::testing::{TestIdp, TestKey};

const AUDIENCE: &str = "bench-api";

fn request_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let key = TestKey::es256("bench-key");
    let (idp, jwks) = runtime.block_on(async {
        let idp = TestIdp::start().await.expect("test IdP");
        idp.set_keys(&[&key]);
        let jwks = RemoteJwks::builder(idp.jwks_url())
            .insecure_allow_http()
            .build()
            .expect("JWKS config");
        jwks.start().await.expect("first JWKS fetch");
        (idp, jwks)
    });
    let issuer = idp.issuer();
    let token = key.mint(&key.claims("alice", &issuer, AUDIENCE));

    let authenticator = |remote: bool, cache: usize| {
        let builder = JwtAuthenticator::builder()
            .issuer(issuer.clone())
            .audience(AUDIENCE)
            .cache_capacity(cache);
        let builder = if remote {
            builder.key_source(Arc::new(jwks.clone()))
        } else {
            builder.key(key.verification_key())
        };
        builder.build().expect("authenticator")
    };

    let mut group = c.benchmark_group("jwt_request_path");
    // Cache miss: every call verifies the signature (cache disabled). Cache hit: the verified
    // token is served from the cache. Static and remote run back to back for each, so that
    // load from elsewhere on the machine affects both alike.
    for (mode, cache) in [("miss", 0), ("hit", 10_000)] {
        for (source, remote) in [("static", false), ("remote", true)] {
            let jwt = authenticator(remote, cache);
            group.bench_function(format!("{mode}/{source}"), |b| {
                b.to_async(&runtime).iter(|| async {
                    black_box(jwt.authenticate_token(black_box(&token)).await).expect("valid")
                });
            });
        }
    }
    group.finish();
    // Keys were served once and never refetched: the request path does no I/O.
    assert_eq!(idp.jwks_fetches(), 1);
    drop(idp);
}

// `criterion_group!` would generate an undocumented `pub fn`, which the crate's `missing_docs`
// lint refuses; this is what `criterion_group!` + `criterion_main!` expand to.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    request_path(&mut criterion);
    criterion.final_summary();
}
