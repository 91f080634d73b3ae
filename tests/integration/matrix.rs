//! The allow/deny matrix: every route of the demo contract × every kind of caller.
//!
//! Each cell is one request through the full demo app; a failing cell is reported by route and
//! caller, and every failing cell is listed before the test fails.

use http::{Method, StatusCode};
use portcullis::testing::random_id;
use serde_json::{Value, json};

use crate::support::{
    self, KEYS, Outcome, RSA_KID, Refusal, alg_none_token, check_refusal, check_success, claims,
    hs256_token, request, send, token, unix_now,
};

/// Who may use a route.
#[derive(Debug, Clone, Copy)]
enum Access {
    Public,
    Authenticated,
    Role(&'static str),
    /// Not routed at all: this refusal for any caller whose credential is acceptable.
    Unrouted(Refusal),
}

struct Route {
    method: Method,
    path: &'static str,
    access: Access,
    success: StatusCode,
}

fn route(method: Method, path: &'static str, access: Access, success: StatusCode) -> Route {
    Route {
        method,
        path,
        access,
        success,
    }
}

/// The routes of the demo contract, plus paths and methods it does not route.
fn routes() -> Vec<Route> {
    use Access::*;
    vec![
        route(Method::GET, "/health", Public, StatusCode::OK),
        route(Method::GET, "/api/me", Authenticated, StatusCode::OK),
        route(
            Method::GET,
            "/api/documents/1",
            Role("reader"),
            StatusCode::OK,
        ),
        route(
            Method::POST,
            "/api/documents",
            Role("editor"),
            StatusCode::CREATED,
        ),
        route(
            Method::DELETE,
            "/api/documents/1",
            Role("admin"),
            StatusCode::NO_CONTENT,
        ),
        route(Method::GET, "/admin/routes", Role("admin"), StatusCode::OK),
        // Not routed: refused for everyone, never 200.
        route(
            Method::GET,
            "/nope",
            Unrouted(Refusal::NotFound),
            StatusCode::OK,
        ),
        route(
            Method::GET,
            "/api/documents/1/",
            Unrouted(Refusal::NotFound),
            StatusCode::OK,
        ),
        route(
            Method::GET,
            "/api/%64ocuments/1",
            Unrouted(Refusal::NotFound),
            StatusCode::OK,
        ),
        route(
            Method::PUT,
            "/api/me",
            Unrouted(Refusal::MethodNotAllowed("GET, HEAD")),
            StatusCode::OK,
        ),
        route(
            Method::PATCH,
            "/api/documents/1",
            Unrouted(Refusal::MethodNotAllowed("GET, HEAD, DELETE")),
            StatusCode::OK,
        ),
        route(
            Method::GET,
            "/api/documents",
            Unrouted(Refusal::MethodNotAllowed("POST")),
            StatusCode::OK,
        ),
    ]
}

/// What kind of caller a token variant makes.
#[derive(Debug, Clone, Copy)]
enum Caller {
    Anonymous,
    /// A verified principal with this subject and these roles.
    Valid(&'static str, &'static [&'static str]),
    /// A credential that must be refused with 401 `invalid_token` everywhere; the verifier's
    /// private reason (audit only) contains this text, proving the token fails for the
    /// intended defect and not by accident.
    Invalid(&'static str),
    /// A credential that cannot be read: 400 `invalid_request` everywhere.
    Unreadable,
}

struct Variant {
    name: &'static str,
    bearers: Vec<String>,
    caller: Caller,
}

fn variant(name: &'static str, bearers: Vec<String>, caller: Caller) -> Variant {
    Variant {
        name,
        bearers,
        caller,
    }
}

/// Claims that would grant everything, so only the defect under test can stop the token.
fn admin_claims() -> Value {
    claims("user-admin", &["admin"])
}

fn variants() -> Vec<Variant> {
    let now = unix_now();
    let signing = &KEYS.signing;
    let resigned = |edit: &dyn Fn(&mut Value)| {
        let mut c = admin_claims();
        edit(&mut c);
        signing.mint(&c)
    };
    let admin = token("user-admin", &["admin"]);

    vec![
        variant("no token", vec![], Caller::Anonymous),
        variant(
            "reader",
            vec![token("user-reader", &["reader"])],
            Caller::Valid("user-reader", &["reader"]),
        ),
        variant(
            "editor",
            vec![token("user-editor", &["editor"])],
            Caller::Valid("user-editor", &["editor"]),
        ),
        variant(
            "admin",
            vec![admin.clone()],
            Caller::Valid("user-admin", &["admin"]),
        ),
        variant(
            "no roles",
            vec![token("user-plain", &[])],
            Caller::Valid("user-plain", &[]),
        ),
        variant(
            "unknown role",
            vec![token("user-guest", &["guest"])],
            Caller::Valid("user-guest", &["guest"]),
        ),
        variant(
            "RS256 reader",
            vec![KEYS.rsa.mint(&claims("user-rsa", &["reader"]))],
            Caller::Valid("user-rsa", &["reader"]),
        ),
        variant(
            "expired beyond leeway",
            vec![resigned(&|c| {
                c["iat"] = json!(now - 7200);
                c["exp"] = json!(now - 3600);
            })],
            Caller::Invalid("token expired"),
        ),
        variant(
            "not yet valid beyond leeway",
            vec![resigned(&|c| {
                c["nbf"] = json!(now + 3600);
                c["exp"] = json!(now + 7200);
            })],
            Caller::Invalid("not valid for another"),
        ),
        variant(
            "issued in the future",
            vec![resigned(&|c| {
                c["iat"] = json!(now + 3600);
                c["exp"] = json!(now + 4200);
            })],
            Caller::Invalid("issued in the future"),
        ),
        variant(
            "lifetime above maximum",
            vec![resigned(&|c| c["exp"] = json!(now + 3 * 24 * 3600))],
            Caller::Invalid("lifetime"),
        ),
        variant(
            "no exp",
            vec![resigned(&|c| {
                c.as_object_mut().expect("claims object").remove("exp");
            })],
            Caller::Invalid("has no exp"),
        ),
        variant(
            "wrong issuer",
            vec![resigned(&|c| c["iss"] = json!("https://evil.test"))],
            Caller::Invalid("issuer not accepted"),
        ),
        variant(
            "wrong audience",
            vec![resigned(&|c| c["aud"] = json!("another-api"))],
            Caller::Invalid("audience not accepted"),
        ),
        variant(
            "no subject",
            vec![resigned(&|c| {
                c.as_object_mut().expect("claims object").remove("sub");
            })],
            Caller::Invalid("neither sub"),
        ),
        variant(
            "bad signature (other key, same kid)",
            vec![KEYS.impostor.mint(&admin_claims())],
            Caller::Invalid("signature did not verify"),
        ),
        variant(
            "alg none",
            vec![alg_none_token(&admin_claims())],
            Caller::Invalid("unsupported token header"),
        ),
        variant(
            "RSA public key PEM as HS256 secret",
            vec![hs256_token(
                RSA_KID,
                KEYS.rsa.public_pem.as_bytes(),
                &admin_claims(),
            )],
            Caller::Invalid("alg not allowed for the selected key"),
        ),
        variant(
            "RSA public key DER as HS256 secret",
            vec![hs256_token(RSA_KID, &KEYS.rsa.public_der, &admin_claims())],
            Caller::Invalid("alg not allowed for the selected key"),
        ),
        variant(
            "unknown kid",
            vec![KEYS.stranger.mint(&admin_claims())],
            Caller::Invalid("unknown kid"),
        ),
        variant(
            "truncated",
            vec![admin[..admin.len() - 6].to_owned()],
            Caller::Invalid("signature did not verify"),
        ),
        variant(
            "signature stripped",
            vec![admin[..=admin.rfind('.').expect("three parts")].to_owned()],
            Caller::Invalid("signature did not verify"),
        ),
        variant(
            "garbage not.a.jwt",
            vec!["not.a.jwt".to_owned()],
            Caller::Invalid("unsupported token header"),
        ),
        variant(
            "garbage random",
            vec![format!("{}{}", random_id(), random_id())],
            Caller::Invalid("unsupported token header"),
        ),
        variant(
            "oversized 16 KiB",
            vec![resigned(&|c| c["pad"] = json!("x".repeat(16 * 1024)))],
            Caller::Invalid("exceeds the 8192 byte limit"),
        ),
        variant(
            "two Authorization headers",
            vec![admin.clone(), token("user-reader", &["reader"])],
            Caller::Unreadable,
        ),
        variant(
            "token outside b64token",
            vec!["abc def".to_owned()],
            Caller::Unreadable,
        ),
    ]
}

fn rank(role: &str) -> u8 {
    match role {
        "reader" => 1,
        "editor" => 2,
        "admin" => 3,
        _ => 0,
    }
}

/// What the cell must answer: `Ok(status)` or `Err(refusal)`.
fn expected(route: &Route, caller: Caller) -> Outcome {
    match (caller, route.access) {
        (Caller::Invalid(_), _) => Err(Refusal::InvalidToken),
        (Caller::Unreadable, _) => Err(Refusal::InvalidRequest),
        (_, Access::Unrouted(refusal)) => Err(refusal),
        (_, Access::Public) => Ok(route.success),
        (Caller::Anonymous, _) => Err(Refusal::MissingCredential),
        (Caller::Valid(..), Access::Authenticated) => Ok(route.success),
        (Caller::Valid(_, roles), Access::Role(needed)) => {
            if roles.iter().map(|r| rank(r)).max().unwrap_or(0) >= rank(needed) {
                Ok(route.success)
            } else {
                Err(Refusal::Forbidden)
            }
        }
    }
}

#[tokio::test]
async fn allow_deny_matrix() {
    let app = support::demo_app();
    let routes = routes();
    let variants = variants();
    let mut failures = Vec::new();
    let jwt = support::jwt();
    for variant in &variants {
        if let Caller::Invalid(reason) = variant.caller {
            match jwt.verify(&variant.bearers[0]) {
                Ok(p) => failures.push(format!("{}: verified as {}", variant.name, p.subject())),
                Err(r) if r.detail().contains(reason) => {}
                Err(r) => failures.push(format!(
                    "{}: refused for {:?}, expected {reason:?}",
                    variant.name,
                    r.detail()
                )),
            }
        }
    }
    let mut cells = 0;
    let mut outcomes = std::collections::HashSet::new();
    for route in &routes {
        for variant in &variants {
            cells += 1;
            outcomes.insert(match expected(route, variant.caller) {
                Ok(_) => "2xx".to_owned(),
                Err(refusal) => format!("{refusal:?}"),
            });
            let bearers: Vec<&str> = variant.bearers.iter().map(String::as_str).collect();
            let (parts, body) = send(&app, request(&route.method, route.path, &bearers)).await;
            let outcome = match expected(route, variant.caller) {
                Ok(status) => check_success(&parts, &body, status).and_then(|()| {
                    match (route.path, variant.caller) {
                        ("/api/me", Caller::Valid(subject, _)) => check_me(&body, subject),
                        _ => Ok(()),
                    }
                }),
                Err(refusal) => check_refusal(&parts, &body, refusal, &bearers),
            };
            if let Err(problem) = outcome {
                failures.push(format!(
                    "{} {} × {}: {problem}",
                    route.method, route.path, variant.name
                ));
            }
        }
    }
    // The table exercises every outcome at least once.
    for kind in [
        "2xx",
        "MissingCredential",
        "InvalidToken",
        "InvalidRequest",
        "Forbidden",
        "NotFound",
    ] {
        assert!(outcomes.contains(kind), "no cell expects {kind}");
    }
    assert!(outcomes.iter().any(|o| o.starts_with("MethodNotAllowed")));
    assert!(
        failures.is_empty(),
        "{} of {cells} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check_me(body: &[u8], subject: &str) -> Result<(), String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("/api/me body: {e}"))?;
    if doc["subject"] == subject {
        Ok(())
    } else {
        Err(format!(
            "/api/me answered {doc}, expected subject {subject}"
        ))
    }
}

/// The verifier's leeway (60 s) through the demo app on the system clock, far from the
/// boundary: 10 s of skew passes, 10 minutes does not. The exact boundary is checked on a
/// manual clock in `cache`.
#[tokio::test]
async fn leeway_tolerates_small_skew_only() {
    let app = support::demo_app();
    let now = unix_now();
    let mut failures = Vec::new();
    for (name, exp, nbf, allowed) in [
        ("expired 10 s ago", now - 10, None, true),
        ("expired 10 min ago", now - 600, None, false),
        ("valid in 10 s", now + 600, Some(now + 10), true),
        ("valid in 10 min", now + 1200, Some(now + 600), false),
    ] {
        let mut c = claims("user-reader", &["reader"]);
        c["iat"] = json!(now - 60);
        c["exp"] = json!(exp);
        if let Some(nbf) = nbf {
            c["nbf"] = json!(nbf);
        }
        let token = KEYS.signing.mint(&c);
        let (parts, body) = send(&app, request(&Method::GET, "/api/documents/1", &[&token])).await;
        let outcome = if allowed {
            check_success(&parts, &body, StatusCode::OK)
        } else {
            check_refusal(&parts, &body, Refusal::InvalidToken, &[&token])
        };
        if let Err(problem) = outcome {
            failures.push(format!("{name}: {problem}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The demo's 64 KiB body limit: an editor's oversized body is refused with a problem
/// document, not a framework text.
#[tokio::test]
async fn body_limit_is_a_problem_document() {
    let app = support::demo_app();
    let editor = token("user-editor", &["editor"]);
    let big = json!({"title": "x".repeat(support::BODY_LIMIT), "url": "https://example.com/x"});
    let req = http::Request::post("/api/documents")
        .header("authorization", format!("Bearer {editor}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(big.to_string()))
        .expect("request");
    let (parts, body) = send(&app, req).await;
    check_refusal(&parts, &body, Refusal::PayloadTooLarge, &[&editor]).unwrap();
}

/// The refusal check itself is not vacuous: a response that leaks the token or a private
/// detail, or lacks a required header, fails it.
#[tokio::test]
async fn refusal_check_catches_leaks() {
    let app = support::demo_app();
    let token = KEYS.impostor.mint(&admin_claims());
    let (parts, body) = send(&app, request(&Method::GET, "/api/me", &[&token])).await;
    check_refusal(&parts, &body, Refusal::InvalidToken, &[&token]).unwrap();

    let mut doc: Value = serde_json::from_slice(&body).expect("problem JSON");
    doc["detail"] = json!("signature did not verify");
    let tampered = serde_json::to_vec(&doc).expect("JSON");
    assert!(check_refusal(&parts, &tampered, Refusal::InvalidToken, &[&token]).is_err());

    let mut doc: Value = serde_json::from_slice(&body).expect("problem JSON");
    doc["instance"] = json!(format!("x{}y", &token[30..60]));
    let tampered = serde_json::to_vec(&doc).expect("JSON");
    let err = check_refusal(&parts, &tampered, Refusal::InvalidToken, &[&token]).unwrap_err();
    assert!(err.contains("credential material"), "{err}");

    let mut leaky = parts.clone();
    leaky.headers.insert(
        "www-authenticate",
        format!("Bearer error=\"invalid_token\", token=\"{}\"", &token[..25])
            .parse()
            .expect("header"),
    );
    assert!(check_refusal(&leaky, &body, Refusal::InvalidToken, &[&token]).is_err());

    let mut anonymous = parts.clone();
    anonymous.headers.remove("x-request-id");
    assert!(check_refusal(&anonymous, &body, Refusal::InvalidToken, &[&token]).is_err());
    assert!(check_refusal(&parts, &body, Refusal::MissingCredential, &[&token]).is_err());
}
