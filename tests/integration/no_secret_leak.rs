//! No secret value ever leaves the crate (issue 6): API keys, HMAC and signing keys, bearer
//! tokens, inbound and outbound client secrets are driven through every rejection path reachable from outside,
//! and the test then searches every response (status line aside: bodies and header values),
//! every `Debug` and `Display` of the crate's types that held them, every error, and every line
//! the crate logged (all targets, all levels) for the secrets and any 20-character piece of them.
//!
//! A hostile loopback server that echoes each request it gets (headers and body) back in its
//! answer stands in for a misbehaving identity provider, so that a crate error which quoted a
//! response body would be caught too.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use base64::Engine;
use http::{Method, Request, StatusCode};
use portcullis::Security;
use portcullis::authn::api_key::{ApiKeyAuthenticator, ApiKeySet, generate_api_key};
use portcullis::authn::introspection::IntrospectionAuthenticator;
use portcullis::authn::jwt::{JwtAlgorithm, JwtAuthenticator};
use portcullis::client::{AccessToken, BearerTokenLayer, ClientCredentials};
use portcullis::secrets::{KeyRing, SecretSource, WatchedSecret};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde_json::json;

use crate::audit::captured;
use crate::support::{self, leaked_piece, send, token};

/// Starts a loopback HTTP server that answers every request with `status` and a body quoting
/// the request's headers and body.
pub(crate) async fn echo_server(status: StatusCode) -> SocketAddr {
    let app = Router::new().fallback(move |req: Request<Body>| async move {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let mut echo = String::new();
        for (name, value) in &parts.headers {
            echo.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        echo.push_str(&String::from_utf8_lossy(&body));
        (status, [("content-type", "application/json")], echo)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Everything the crate showed to the outside world during the test.
#[derive(Default)]
pub(crate) struct Exposed {
    texts: Vec<(String, String)>,
}

impl Exposed {
    pub(crate) fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.texts.push((what.into(), text.into()));
    }

    /// Records the status, header values and body of a response.
    pub(crate) fn response(&mut self, what: &str, parts: &http::response::Parts, body: &[u8]) {
        for (name, value) in &parts.headers {
            self.add(
                format!("{what}: header {name}"),
                String::from_utf8_lossy(value.as_bytes()),
            );
        }
        self.add(format!("{what}: body"), String::from_utf8_lossy(body));
    }

    /// Every (place, secret piece) found.
    pub(crate) fn leaks(&self, secrets: &[String]) -> Vec<String> {
        let mut found = Vec::new();
        for (what, text) in &self.texts {
            for secret in secrets {
                if let Some(piece) = leaked_piece(text, secret) {
                    found.push(format!("{what} contains {piece:?}"));
                }
            }
        }
        found
    }
}

fn request(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder().method(Method::GET).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-it-leak-{}",
        portcullis::testing::random_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn no_secret_reaches_debug_display_logs_errors_or_responses() {
    let (outcome, logs) = captured(drive());
    let (mut exposed, secrets) = outcome;
    exposed.add("logs", logs.clone());
    // The test is only meaningful if the paths were driven and logged.
    assert!(logs.contains("authn.failure"), "no refusal was audited");
    assert!(logs.contains("api_keys.reload_failed"));
    assert!(logs.contains("secret.reload_failed"));
    assert!(logs.contains("key.rotated"));
    assert!(
        logs.contains("API key reader-1: wrong secret"),
        "audit reasons captured"
    );
    // The detector itself finds a planted piece of a secret.
    let mut planted = Exposed::default();
    planted.add("planted", format!("x{}y", &secrets[0][3..25]));
    assert!(!planted.leaks(&secrets).is_empty());
    let leaks = exposed.leaks(&secrets);
    assert!(
        leaks.is_empty(),
        "secret material escaped:\n{}",
        leaks.join("\n")
    );
}

async fn drive() -> (Exposed, Vec<String>) {
    let mut exposed = Exposed::default();
    let mut secrets: Vec<String> = Vec::new();
    let dir = temp_dir();

    // --- API keys -----------------------------------------------------------------------
    let reader = generate_api_key("reader-1").unwrap();
    let other = generate_api_key("other-1").unwrap();
    let key = reader.key().expose_secret().to_owned();
    let key_secret = key["pk_reader-1_".len()..].to_owned();
    let mut near_miss = key.clone();
    near_miss.pop();
    near_miss.push(if key.ends_with('A') { 'B' } else { 'A' });
    let unknown = key.replacen("pk_reader-1_", "pk_nobody-1_", 1);
    secrets.extend([
        key.clone(),
        key_secret.clone(),
        near_miss.clone(),
        other.key().expose_secret().to_owned(),
    ]);
    let key_file = dir.join("api-keys");
    std::fs::write(
        &key_file,
        format!("{}:{}:reader\n", reader.id(), reader.sha256_hex()),
    )
    .unwrap();
    let api_keys = ApiKeyAuthenticator::builder()
        .keys_file(&key_file)
        .manual_reload()
        .header("x-api-key")
        .build()
        .unwrap();

    // --- JWT: asymmetric (the demo keys) and HMAC ----------------------------------------
    let hmac_secret = "hmac-jwt-secret-0123456789-abcdefghijklmnopqrstuvwxyz".to_owned();
    secrets.push(hmac_secret.clone());
    let hmac_jwt = JwtAuthenticator::builder()
        .issuer(support::ISSUER)
        .audience(support::AUDIENCE)
        .hmac_secret(
            Some("hs-1"),
            &SecretSlice::from(hmac_secret.as_bytes().to_vec()),
            JwtAlgorithm::HS256,
        )
        .build()
        .unwrap();
    let valid = token("user-1", &["reader"]);
    let hs_valid = support::hs256_token(
        "hs-1",
        hmac_secret.as_bytes(),
        &support::claims("user-2", &["reader"]),
    );
    let mut tampered = valid.clone();
    tampered.pop();
    tampered.push(if valid.ends_with('A') { 'B' } else { 'A' });
    let mut expired_claims = support::claims("user-3", &["reader"]);
    expired_claims["exp"] = json!(support::unix_now() - 3600);
    expired_claims["iat"] = json!(support::unix_now() - 7200);
    let expired = support::KEYS.signing.mint(&expired_claims);
    let forged_hs = support::hs256_token(
        support::ED_KID,
        b"attacker-chosen-secret-0123456789abcdef",
        &support::claims("user-4", &["admin"]),
    );
    secrets.extend([
        valid.clone(),
        hs_valid.clone(),
        tampered.clone(),
        expired.clone(),
        forged_hs.clone(),
    ]);

    let app = support::demo_routes().into_router().unwrap().layer(
        Security::builder()
            .authenticator(support::jwt())
            .authenticator(api_keys.clone())
            .build()
            .unwrap(),
    );
    let hmac_app = support::demo_routes().into_router().unwrap().layer(
        Security::builder()
            .authenticator(hmac_jwt.clone())
            .build()
            .unwrap(),
    );

    let bearer = |t: &str| format!("Bearer {t}");
    let apikey = |k: &str| format!("ApiKey {k}");
    let doc = "/api/documents/1";
    let cases: Vec<(&str, Request<Body>)> = vec![
        (
            "wrong API key secret",
            request(doc, &[("authorization", &apikey(&near_miss))]),
        ),
        (
            "unknown API key id",
            request(doc, &[("x-api-key", &unknown)]),
        ),
        (
            "API key not in the file",
            request(doc, &[("x-api-key", other.key().expose_secret())]),
        ),
        (
            "API key in the query",
            request(&format!("{doc}?api_key={key}&x={key_secret}"), &[]),
        ),
        (
            "API key twice",
            request(doc, &[("x-api-key", &key), ("x-api-key", &key)]),
        ),
        (
            "API key in two places",
            request(
                doc,
                &[("x-api-key", &key), ("authorization", &apikey(&key))],
            ),
        ),
        (
            "API key and bearer",
            request(
                doc,
                &[("x-api-key", &key), ("authorization", &bearer(&valid))],
            ),
        ),
        (
            "API key as bearer",
            request(doc, &[("authorization", &bearer(&key))]),
        ),
        (
            "API key under Basic",
            request(doc, &[("authorization", &format!("Basic {key}"))]),
        ),
        (
            "API key too long",
            request(
                doc,
                &[("x-api-key", &format!("{key}{}", key_secret.repeat(10)))],
            ),
        ),
        (
            "API key with junk",
            request(doc, &[("x-api-key", &format!("{key}!{key_secret}"))]),
        ),
        (
            "valid API key, forbidden route",
            request("/admin/routes", &[("x-api-key", &key)]),
        ),
        (
            "tampered JWT",
            request(doc, &[("authorization", &bearer(&tampered))]),
        ),
        (
            "expired JWT",
            request(doc, &[("authorization", &bearer(&expired))]),
        ),
        (
            "HS256 forgery with a chosen secret",
            request(doc, &[("authorization", &bearer(&forged_hs))]),
        ),
        (
            "token with a quote",
            request(doc, &[("authorization", &format!("Bearer {valid}\""))]),
        ),
        (
            "two bearer tokens",
            request(
                doc,
                &[
                    ("authorization", &bearer(&valid)),
                    ("authorization", &bearer(&valid)),
                ],
            ),
        ),
        (
            "valid JWT, forbidden route",
            request("/admin/routes", &[("authorization", &bearer(&valid))]),
        ),
    ];
    for (name, req) in cases {
        let (parts, body) = send(&app, req).await;
        assert!(parts.status.is_client_error(), "{name}: {}", parts.status);
        exposed.response(name, &parts, &body);
    }
    for (name, req) in [
        (
            "HMAC JWT with the API key stack's token",
            request(doc, &[("authorization", &bearer(&valid))]),
        ),
        (
            "HMAC JWT tampered",
            request(doc, &[("authorization", &bearer(&format!("{hs_valid}x")))]),
        ),
    ] {
        let (parts, body) = send(&hmac_app, req).await;
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED, "{name}");
        exposed.response(name, &parts, &body);
    }
    // Rejections handed to code directly (their Debug carries the private detail).
    for presented in [&near_miss, &unknown, &key_secret] {
        let rejection = api_keys.verify_key(presented).unwrap_err();
        exposed.add("API key rejection Debug", format!("{rejection:?}"));
        exposed.add("API key rejection Display", rejection.to_string());
    }
    for t in [&tampered, &expired, &forged_hs] {
        let rejection = support::jwt().authenticate_token(t).await.unwrap_err();
        exposed.add("JWT rejection Debug", format!("{rejection:?}"));
    }

    // Key file errors: a line holding a full key instead of its hash, then a broken reload.
    let err = ApiKeySet::parse(&format!("reader-1:{key}:reader")).unwrap_err();
    exposed.add("key file error", err.to_string());
    std::fs::write(&key_file, format!("reader-1:{key}:reader\n{key_secret}\n")).unwrap();
    let outcome = api_keys.reload_now();
    exposed.add("reload outcome", format!("{outcome:?}"));
    assert!(api_keys.verify_key(&key).is_ok(), "last good keys kept");
    exposed.add("ApiKeyAuthenticator Debug", format!("{api_keys:?}"));
    exposed.add("ApiKeySet Debug", format!("{:?}", api_keys.keys()));
    exposed.add("GeneratedApiKey Debug", format!("{reader:?}"));
    exposed.add("JwtAuthenticator (HMAC) Debug", format!("{hmac_jwt:?}"));
    exposed.add(
        "Principal Debug",
        format!("{:?}", api_keys.verify_key(&key).unwrap()),
    );

    // --- Introspection with a client secret, against a hostile endpoint ------------------
    let client_secret = "introspection-client-secret-0123456789".to_owned();
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("portcullis-rs:{client_secret}"));
    secrets.extend([client_secret.clone(), basic]);
    let opaque = format!("opaque-{}", portcullis::testing::random_id());
    secrets.push(opaque.clone());
    for status in [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::OK,
        StatusCode::UNAUTHORIZED,
    ] {
        let echo = echo_server(status).await;
        let introspection =
            IntrospectionAuthenticator::builder(format!("http://{echo}/introspect"))
                .client_credentials("portcullis-rs", SecretString::from(client_secret.clone()))
                .audience(support::AUDIENCE)
                .insecure_allow_http()
                .build()
                .unwrap();
        exposed.add(
            "IntrospectionAuthenticator Debug",
            format!("{introspection:?}"),
        );
        let rejection = introspection.introspect(&opaque).await.unwrap_err();
        exposed.add(
            format!("introspection {status} rejection"),
            format!("{rejection:?}"),
        );
        let app = support::demo_routes().into_router().unwrap().layer(
            Security::builder()
                .authenticator(introspection)
                .build()
                .unwrap(),
        );
        let (parts, body) = send(&app, request(doc, &[("authorization", &bearer(&opaque))])).await;
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
        exposed.response("introspection refusal", &parts, &body);
    }

    // --- Outbound: the client-credentials source against a hostile token endpoint ---------
    let outbound_secret = "outbound-client-secret-0123456789-abcdef".to_owned();
    let outbound_basic =
        base64::engine::general_purpose::STANDARD.encode(format!("service-a:{outbound_secret}"));
    let issued = "issued-access-token-0123456789-abcdefghij".to_owned();
    secrets.extend([outbound_secret.clone(), outbound_basic, issued.clone()]);
    for status in [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::BAD_REQUEST,
        StatusCode::UNAUTHORIZED,
        StatusCode::OK,
    ] {
        let echo = echo_server(status).await;
        let tokens = ClientCredentials::builder(format!("http://{echo}/token"))
            .client_credentials("service-a", SecretString::from(outbound_secret.clone()))
            .retry(2, std::time::Duration::from_millis(1))
            .insecure_allow_http()
            .build()
            .unwrap();
        exposed.add("ClientCredentials Debug", format!("{tokens:?}"));
        let layer = BearerTokenLayer::new(tokens.clone());
        exposed.add("BearerTokenLayer Debug", format!("{layer:?}"));
        let client = tower::ServiceBuilder::new()
            .layer(layer)
            .service(tower::service_fn(|_req: Request<()>| async {
                Ok::<_, std::convert::Infallible>(())
            }));
        let err = tower::ServiceExt::oneshot(client, Request::new(()))
            .await
            .unwrap_err();
        exposed.add(format!("outbound {status} error Display"), err.to_string());
        exposed.add(format!("outbound {status} error Debug"), format!("{err:?}"));
    }
    let token = AccessToken::new(
        SecretString::from(issued.clone()),
        std::time::SystemTime::now(),
    );
    exposed.add("AccessToken Debug", format!("{token:?}"));
    exposed.add(
        "Authorization header Debug",
        format!("{:?}", token.authorization().unwrap()),
    );

    // --- Secrets and the key ring ---------------------------------------------------------
    let file_secret = "file-secret-value-0123456789-abcdefghij".to_owned();
    let ring_key = "key-ring-material-0123456789-abcdefghijklmnop".to_owned();
    let ring_key_2 = "key-ring-material-second-0123456789-abcdefghij".to_owned();
    secrets.extend([file_secret.clone(), ring_key.clone(), ring_key_2.clone()]);
    let secret_path = dir.join("secret");
    std::fs::write(&secret_path, format!("{file_secret}\n")).unwrap();
    let loaded = SecretSource::file(&secret_path).load().unwrap();
    exposed.add("SecretString Debug", format!("{loaded:?}"));
    let watched = WatchedSecret::builder(&secret_path)
        .manual_reload()
        .build()
        .unwrap();
    // Not UTF-8, with the secret inside: refused, reported, never quoted.
    let mut bad = file_secret.as_bytes().to_vec();
    bad.push(0xff);
    std::fs::write(&secret_path, &bad).unwrap();
    exposed.add("watched reload", format!("{:?}", watched.check_now()));
    exposed.add("WatchedSecret Debug", format!("{watched:?}"));
    let err = SecretSource::file(&secret_path).load().unwrap_err();
    exposed.add("SecretError Display", err.to_string());
    exposed.add("SecretError Debug", format!("{err:?}"));
    let ring = KeyRing::builder()
        .name("audit")
        .derived_key(ring_key.as_bytes().to_vec())
        .build()
        .unwrap();
    ring.rotate_to(ring_key_2.as_bytes().to_vec()).unwrap();
    let short = ring.rotate("short", b"short-secret".to_vec()).unwrap_err();
    exposed.add("KeyRing error", short.to_string());
    exposed.add("KeyRing Debug", format!("{ring:?}"));
    exposed.add("SigningKey Debug", format!("{:?}", ring.active()));
    exposed.add("HmacTag Debug", format!("{:?}", ring.sign(b"x")));

    std::fs::remove_dir_all(&dir).unwrap();
    (exposed, secrets)
}
