//! HTTP hardening on the demo stack: secure headers on every response (successes and every kind
//! of refusal), CORS presets and CSRF protection.

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use http::{Method, Request, StatusCode};
use portcullis::Security;
use portcullis::authn::{AuthFuture, Authenticator};
use portcullis::headers::{CorsLayer, CsrfLayer, CsrfSecret};
use portcullis::principal::{AuthMethod, Principal};

use crate::support::{
    BODY_LIMIT, Refusal, check_refusal, demo_app, demo_routes, jwt, request, send, token,
};

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

const APP_ORIGIN: &str = "https://app.example.com";
const EVIL_ORIGIN: &str = "https://evil.example";

/// The demo app with CORS for `APP_ORIGIN`, through the `Security` builder.
fn cors_app() -> axum::Router {
    let cors = CorsLayer::bearer_api()
        .allow_origin(APP_ORIGIN)
        .build()
        .unwrap();
    let security = Security::builder()
        .authenticator(jwt())
        .cors(cors)
        .build()
        .unwrap();
    demo_routes()
        .into_router()
        .unwrap()
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(security)
}

fn cors_request(
    method: Method,
    path: &str,
    origin: &str,
    preflight_for: Option<&str>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("origin", origin);
    if let Some(requested) = preflight_for {
        builder = builder
            .header("access-control-request-method", requested)
            .header("access-control-request-headers", "authorization");
    }
    builder.body(Body::empty()).unwrap()
}

/// The response head without the CORS and `Vary` headers, whose values (header names such as
/// `ratelimit-policy`) would trip the private-word check of `check_refusal`.
fn without_cors(parts: &http::response::Parts) -> http::response::Parts {
    let mut response = http::Response::new(());
    *response.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if !name.as_str().starts_with("access-control-") && name != "vary" {
            response.headers_mut().append(name, value.clone());
        }
    }
    response.into_parts().0
}

fn cors_headers(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .map(|n| n.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn preflight_skips_authentication_but_the_request_does_not() {
    let app = cors_app();
    // The preflight carries no token (browsers never send one) and is answered.
    let (parts, _) = send(
        &app,
        cors_request(Method::OPTIONS, "/api/me", APP_ORIGIN, Some("GET")),
    )
    .await;
    assert!(parts.status.is_success(), "{}", parts.status);
    assert_eq!(parts.headers["access-control-allow-origin"], APP_ORIGIN);
    assert!(
        parts.headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(check_secure_headers("preflight", &parts.headers).is_empty());

    // The real request without a token is refused, and the refusal is readable by the app.
    let (parts, body) = send(&app, cors_request(Method::GET, "/api/me", APP_ORIGIN, None)).await;
    check_refusal(
        &without_cors(&parts),
        &body,
        Refusal::MissingCredential,
        &[],
    )
    .unwrap();
    assert_eq!(parts.headers["access-control-allow-origin"], APP_ORIGIN);
    assert!(check_secure_headers("401", &parts.headers).is_empty());

    // With a token it passes.
    let mut req = cors_request(Method::GET, "/api/me", APP_ORIGIN, None);
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("user-c", &["reader"]))
            .parse()
            .unwrap(),
    );
    let (parts, _) = send(&app, req).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["access-control-allow-origin"], APP_ORIGIN);
}

#[tokio::test]
async fn disallowed_origins_get_no_cors_headers() {
    let app = cors_app();
    let (parts, body) = send(
        &app,
        cors_request(Method::OPTIONS, "/api/me", EVIL_ORIGIN, Some("GET")),
    )
    .await;
    assert!(
        cors_headers(&parts.headers).is_empty(),
        "{:?}",
        parts.headers
    );
    // Handed to deny-by-default routing: OPTIONS is not a method of /api/me.
    check_refusal(
        &without_cors(&parts),
        &body,
        Refusal::MethodNotAllowed("GET, HEAD"),
        &[],
    )
    .unwrap();

    let mut req = cors_request(Method::GET, "/api/me", EVIL_ORIGIN, None);
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("user-c", &["reader"]))
            .parse()
            .unwrap(),
    );
    let (parts, _) = send(&app, req).await;
    // The server answers (CORS is enforced by the browser), but without CORS headers the
    // evil page's script cannot read it.
    assert!(
        cors_headers(&parts.headers).is_empty(),
        "{:?}",
        parts.headers
    );
}

#[tokio::test]
async fn deny_by_default_routing_still_refuses_unknown_paths() {
    let app = cors_app();
    let (parts, body) = send(&app, cors_request(Method::GET, "/nope", APP_ORIGIN, None)).await;
    check_refusal(&without_cors(&parts), &body, Refusal::NotFound, &[]).unwrap();
    // OPTIONS without preflight headers is routed like any method.
    let (parts, body) = send(
        &app,
        cors_request(Method::OPTIONS, "/nope", APP_ORIGIN, None),
    )
    .await;
    check_refusal(&without_cors(&parts), &body, Refusal::NotFound, &[]).unwrap();
    let plain = Request::builder()
        .method(Method::OPTIONS)
        .uri("/health")
        .body(Body::empty())
        .unwrap();
    let (parts, body) = send(&app, plain).await;
    check_refusal(
        &without_cors(&parts),
        &body,
        Refusal::MethodNotAllowed("GET, HEAD"),
        &[],
    )
    .unwrap();
}

/// A session-cookie authenticator (`sid=<user>`, every user an editor), standing in for a
/// browser session beside the bearer tokens of the demo.
#[derive(Debug)]
struct SessionCookie;

impl Authenticator for SessionCookie {
    fn authenticate<'a>(&'a self, parts: &'a http::request::Parts) -> AuthFuture<'a> {
        let user = parts
            .headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("sid="))
            .map(str::to_owned);
        Box::pin(std::future::ready(Ok(user.map(|user| {
            Principal::builder(user, AuthMethod::Other("session".into()))
                .roles(["editor"])
                .build()
        }))))
    }
}

/// The demo routes behind CSRF protection, authenticated by session cookie or bearer token.
fn csrf_app() -> axum::Router {
    let csrf = CsrfLayer::builder(CsrfSecret::generate().unwrap())
        .trusted_origin(APP_ORIGIN)
        .bind_to_session_cookie("sid")
        .build()
        .unwrap();
    let security = Security::builder()
        .authenticator(jwt())
        .authenticator(SessionCookie)
        .build()
        .unwrap();
    demo_routes()
        .into_router()
        .unwrap()
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(csrf)
        .layer(security)
}

fn post_document(headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::post("/api/documents")
        .header("host", "api.example.com")
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Body::from(
            r#"{"title": "Notes", "url": "https://example.com/n"}"#,
        ))
        .unwrap()
}

fn check_csrf_refusal(what: &str, parts: &http::response::Parts, body: &[u8]) {
    assert_eq!(parts.status, StatusCode::FORBIDDEN, "{what}");
    assert_eq!(parts.headers["content-type"], "application/problem+json");
    assert!(
        parts.headers.get("www-authenticate").is_none(),
        "{what}: a CSRF refusal is not a token problem"
    );
    let doc: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        doc["type"], "urn:portcullis:problem:cross-site-request",
        "{what}"
    );
    assert_eq!(doc["status"], 403);
    let text = String::from_utf8_lossy(body).to_lowercase();
    for private in ["sec-fetch", "cookie", "csrf", "token", "session"] {
        assert!(!text.contains(private), "{what}: {private} in {text}");
    }
    assert!(check_secure_headers(what, &parts.headers).is_empty());
}

#[tokio::test]
async fn csrf_refuses_cross_site_cookie_requests_but_not_bearer_ones() {
    let app = csrf_app();
    let editor = format!("Bearer {}", token("user-e", &["editor"]));
    let cross_site = ("sec-fetch-site", "cross-site");

    let (parts, body) = send(&app, post_document(&[("cookie", "sid=alice"), cross_site])).await;
    check_csrf_refusal("cross-site cookie POST", &parts, &body);

    let (parts, _) = send(
        &app,
        post_document(&[("cookie", "sid=alice"), ("sec-fetch-site", "same-origin")]),
    )
    .await;
    assert_eq!(parts.status, StatusCode::CREATED, "same-origin cookie POST");

    let (parts, _) = send(
        &app,
        post_document(&[("cookie", "sid=alice"), cross_site, ("origin", APP_ORIGIN)]),
    )
    .await;
    assert_eq!(parts.status, StatusCode::CREATED, "trusted origin");

    // Authenticated by the Authorization header: not CSRF-able, passes cross-site.
    let (parts, _) = send(
        &app,
        post_document(&[("authorization", editor.as_str()), cross_site]),
    )
    .await;
    assert_eq!(parts.status, StatusCode::CREATED, "bearer POST");

    // An Authorization header added beside the cookie does not smuggle the cookie through:
    // authentication refuses two credentials (400) as it refuses a bad one (401).
    let (parts, _) = send(
        &app,
        post_document(&[
            ("cookie", "sid=alice"),
            ("authorization", "Bearer forged"),
            cross_site,
        ]),
    )
    .await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn csrf_token_for_browsers_without_fetch_metadata() {
    let app = csrf_app();
    let (parts, body) = send(&app, post_document(&[("cookie", "sid=alice")])).await;
    check_csrf_refusal("no metadata, no token", &parts, &body);

    // A GET hands out the token cookie (the page would embed the same token).
    let get = Request::get("/health")
        .header("cookie", "sid=alice")
        .body(Body::empty())
        .unwrap();
    let (parts, _) = send(&app, get).await;
    let set_cookie = parts.headers["set-cookie"].to_str().unwrap();
    let pair = set_cookie.split(';').next().unwrap();
    let token = pair.split_once('=').unwrap().1;
    let cookies = format!("sid=alice; {pair}");

    let (parts, _) = send(
        &app,
        post_document(&[("cookie", &cookies), ("x-csrf-token", token)]),
    )
    .await;
    assert_eq!(parts.status, StatusCode::CREATED, "valid double submit");

    // The same token in another session is refused.
    let (parts, body) = send(
        &app,
        post_document(&[
            ("cookie", &format!("sid=mallory; {pair}")),
            ("x-csrf-token", token),
        ]),
    )
    .await;
    check_csrf_refusal("token of another session", &parts, &body);
}
