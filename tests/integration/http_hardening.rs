//! HTTP hardening on the demo stack: secure headers on every response (successes and every kind
//! of refusal), CORS presets and CSRF protection.

use http::{Method, StatusCode};

use crate::support::{demo_app, request, send, token};

/// The API profile's headers, as the demo contract promises them on every response.
const SECURE_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-resource-policy", "same-origin"),
    ("x-frame-options", "DENY"),
];

fn check_secure_headers(what: &str, headers: &http::HeaderMap) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, want) in SECURE_HEADERS {
        let got: Vec<_> = headers.get_all(*name).iter().collect();
        if got.len() != 1 || got[0] != want {
            problems.push(format!("{what}: {name} = {got:?}, expected {want:?}"));
        }
    }
    for banner in ["server", "x-powered-by", "strict-transport-security"] {
        if headers.contains_key(banner) {
            problems.push(format!("{what}: unexpected {banner}"));
        }
    }
    problems
}

#[tokio::test]
async fn secure_headers_on_every_response_including_refusals() {
    let app = demo_app();
    let reader = token("user-r", &["reader"]);
    let cases: Vec<(&str, Method, &str, Vec<&str>, StatusCode)> = vec![
        ("public", Method::GET, "/health", vec![], StatusCode::OK),
        (
            "authorized",
            Method::GET,
            "/api/me",
            vec![&reader],
            StatusCode::OK,
        ),
        (
            "anonymous",
            Method::GET,
            "/api/me",
            vec![],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "bad token",
            Method::GET,
            "/api/me",
            vec!["x.y.z"],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "two tokens",
            Method::GET,
            "/api/me",
            vec![&reader, &reader],
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong role",
            Method::DELETE,
            "/api/documents/1",
            vec![&reader],
            StatusCode::FORBIDDEN,
        ),
        (
            "unknown path",
            Method::GET,
            "/nope",
            vec![],
            StatusCode::NOT_FOUND,
        ),
        (
            "unknown method",
            Method::PUT,
            "/health",
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    let mut problems = Vec::new();
    for (what, method, path, bearers, status) in cases {
        let (parts, _) = send(&app, request(&method, path, &bearers)).await;
        if parts.status != status {
            problems.push(format!(
                "{what}: status {} (expected {status})",
                parts.status
            ));
        }
        problems.extend(check_secure_headers(what, &parts.headers));
    }
    // Over 64 KiB: refused by the body limit deep inside, headers still on.
    let big = http::Request::post("/api/documents")
        .header("authorization", format!("Bearer {reader}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(vec![b'a'; 70 * 1024]))
        .unwrap();
    let (parts, _) = send(&app, big).await;
    problems.extend(check_secure_headers("too large", &parts.headers));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
