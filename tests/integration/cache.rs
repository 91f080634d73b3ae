//! The verified-token cache: never serves a token past its `exp`, and forgets everything on key
//! rotation. Time is a [`ManualClock`]; nothing sleeps.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use http::{Method, StatusCode};
use portcullis::authn::jwt::JwtAuthenticator;
use portcullis::clock::ManualClock;
use portcullis::testing::TestKey;
use serde_json::{Value, json};

use crate::support::{
    AUDIENCE, ISSUER, Refusal, check_refusal, check_success, demo_app_with, request, send,
};

const T0: u64 = 1_700_000_000;
const LIFETIME: u64 = 600;

fn claims_at(key: &TestKey, iat: u64) -> Value {
    let mut claims = key.claims("user-reader", ISSUER, AUDIENCE);
    claims["iat"] = json!(iat);
    claims["exp"] = json!(iat + LIFETIME);
    claims["roles"] = json!(["reader"]);
    claims
}

async fn read_document(app: &Router, token: &str) -> (http::response::Parts, axum::body::Bytes) {
    send(app, request(&Method::GET, "/api/documents/1", &[token])).await
}

async fn assert_allowed(app: &Router, token: &str, when: &str) {
    let (parts, body) = read_document(app, token).await;
    check_success(&parts, &body, StatusCode::OK).unwrap_or_else(|e| panic!("{when}: {e}"));
}

async fn assert_refused(app: &Router, token: &str, when: &str) {
    let (parts, body) = read_document(app, token).await;
    check_refusal(&parts, &body, Refusal::InvalidToken, &[token])
        .unwrap_or_else(|e| panic!("{when}: {e}"));
}

#[tokio::test]
async fn cached_token_is_refused_once_the_clock_passes_exp() {
    // Leeway 0 makes the cache the only thing that could still accept the token right after
    // `exp`; the default 60 s checks the boundary the demo runs with.
    for leeway in [0, 60] {
        let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(T0));
        let key = TestKey::ed25519("cache-1");
        let jwt = JwtAuthenticator::builder()
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .key(key.verification_key())
            .leeway(Duration::from_secs(leeway))
            .clock(Arc::new(clock.clone()))
            .build()
            .expect("JWT configuration");
        let app = demo_app_with(jwt.clone());
        let token = key.mint(&claims_at(&key, T0));
        let exp = T0 + LIFETIME;

        assert_allowed(&app, &token, "first use").await;
        assert_allowed(&app, &token, "second use (cached)").await;
        clock.set(UNIX_EPOCH + Duration::from_secs(exp - 1));
        assert_allowed(&app, &token, "one second before exp").await;

        if leeway > 0 {
            clock.set(UNIX_EPOCH + Duration::from_secs(exp + leeway / 2));
            assert_allowed(&app, &token, "after exp, within leeway").await;
        }

        clock.set(UNIX_EPOCH + Duration::from_secs(exp + leeway + 1));
        assert_refused(&app, &token, &format!("past exp + {leeway}s leeway")).await;
        let rejection = jwt.verify(&token).expect_err("expired");
        assert!(
            rejection.detail().contains("expired"),
            "{}",
            rejection.detail()
        );
        // Still refused on a second try: the refusal is not cached as an acceptance either.
        assert_refused(&app, &token, "again past exp").await;
    }
}

#[tokio::test]
async fn key_rotation_drops_cached_verifications() {
    let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(T0));
    // Same kid, different key pair: without invalidation the cache would vouch for the old
    // token although its signature no longer verifies.
    let old = TestKey::ed25519("rotating");
    let new = TestKey::ed25519("rotating");
    let jwt = crate::support::jwt_with_clock(&old, Arc::new(clock.clone()));
    let app = demo_app_with(jwt.clone());
    let old_token = old.mint(&claims_at(&old, T0));
    let new_token = new.mint(&claims_at(&new, T0));

    assert_allowed(&app, &old_token, "old key, before rotation").await;
    assert_allowed(&app, &old_token, "old key, cached").await;
    assert_refused(&app, &new_token, "new key, before rotation").await;

    jwt.replace_keys(vec![new.verification_key()])
        .expect("rotation");
    assert_refused(&app, &old_token, "old key, after rotation").await;
    let rejection = jwt.verify(&old_token).expect_err("old signature");
    assert!(
        rejection.detail().contains("signature"),
        "{}",
        rejection.detail()
    );
    assert_allowed(&app, &new_token, "new key, after rotation").await;

    // A rejected key set leaves the current one in place.
    let duplicate = TestKey::ed25519("rotating");
    assert!(
        jwt.replace_keys(vec![old.verification_key(), duplicate.verification_key()])
            .is_err(),
        "duplicate kids are a configuration error"
    );
    assert_allowed(&app, &new_token, "after a refused rotation").await;
    assert_refused(&app, &old_token, "old key after a refused rotation").await;

    // Rotating back re-verifies from scratch: the old token is accepted again, the new one not.
    jwt.replace_keys(vec![old.verification_key()])
        .expect("rotation back");
    assert_allowed(&app, &old_token, "old key, rotated back").await;
    assert_refused(&app, &new_token, "new key, rotated away").await;
}
