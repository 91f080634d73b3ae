//! Cedar and the built-in RBAC give the demo the same allow/deny matrix (issue 4).
//!
//! The routes of `examples/secure_api.rs` are built twice behind the same `Security` stack and
//! role hierarchy: once with the built-in policies (`public()`, `authenticated()`,
//! `has_role(..)`), once with every route decided by a `CedarPolicy` loaded from the shipped
//! `examples/secure_api.cedar` and `examples/secure_api.cedarschema`. Every route (plus `HEAD`
//! and unrouted paths and methods) × every kind of caller must get the same status, challenge
//! and problem type from both.

use std::collections::BTreeSet;
use std::path::Path;

use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router};
use http::Method;
use portcullis::authz::cedar::CedarPolicy;
use portcullis::authz::{SharedPolicy, authenticated, has_role, public};
use portcullis::principal::Principal;
use portcullis::routing::{SecureRouter, get, post};
use serde_json::{Value, json};

use crate::support::{self, KEYS, claims, request, send, token, unix_now};

async fn ok() -> Json<Value> {
    Json(json!({"ok": true}))
}

async fn me(principal: Principal) -> Json<Value> {
    Json(json!({"subject": principal.subject()}))
}

async fn read_document(UrlPath(id): UrlPath<u64>) -> Json<Value> {
    Json(json!({"id": id}))
}

async fn create_document(Json(_): Json<Value>) -> impl IntoResponse {
    (StatusCode::CREATED, Json(json!({"id": 2})))
}

async fn no_content() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn revoke(Json(_): Json<Value>) -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The example's route table; `decide` picks the policy of each route from its built-in one.
fn demo_routes(decide: &dyn Fn(SharedPolicy) -> SharedPolicy) -> SecureRouter {
    SecureRouter::with_rbac(support::rbac())
        .route("/health", get(ok, decide(public())))
        .route("/.well-known/jwks.json", get(ok, decide(public())))
        .route("/api/me", get(me, decide(authenticated())))
        .route(
            "/api/documents",
            post(create_document, decide(has_role("editor"))),
        )
        .route(
            "/api/documents/{id}",
            get(read_document, decide(has_role("reader")))
                .delete(no_content, decide(has_role("admin"))),
        )
        .route(
            "/api/tokens/revoke",
            post(revoke, decide(has_role("admin"))),
        )
        .route("/admin/routes", get(ok, decide(has_role("admin"))))
}

fn cedar_policy() -> SharedPolicy {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    CedarPolicy::builder()
        .namespace("Demo")
        .schema_file(examples.join("secure_api.cedarschema"))
        .policies_file(examples.join("secure_api.cedar"))
        .build()
        .expect("the shipped Cedar files build")
        .into_shared()
}

fn app(routes: SecureRouter) -> Router {
    support::secure(routes.into_router().expect("demo routes"), support::jwt())
}

/// Every route of the example, `HEAD` on its `GET` routes, and requests it does not route.
fn requests() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/health"),
        (Method::HEAD, "/health"),
        (Method::GET, "/.well-known/jwks.json"),
        (Method::GET, "/api/me"),
        (Method::HEAD, "/api/me"),
        (Method::POST, "/api/documents"),
        (Method::GET, "/api/documents/1"),
        (Method::HEAD, "/api/documents/1"),
        (Method::DELETE, "/api/documents/1"),
        (Method::POST, "/api/tokens/revoke"),
        (Method::GET, "/admin/routes"),
        (Method::GET, "/nope"),
        (Method::GET, "/api/documents/1/"),
        (Method::PUT, "/api/me"),
        (Method::PATCH, "/api/documents/1"),
        (Method::GET, "/api/documents"),
    ]
}

fn callers() -> Vec<(&'static str, Vec<String>)> {
    let now = unix_now();
    let mut expired = claims("user-admin", &["admin"]);
    expired["iat"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);
    let mut scoped = claims("user-scoped", &["reader"]);
    scoped["scope"] = json!("documents:read documents:write");
    vec![
        ("anonymous", vec![]),
        ("reader", vec![token("user-reader", &["reader"])]),
        ("editor", vec![token("user-editor", &["editor"])]),
        ("admin", vec![token("user-admin", &["admin"])]),
        ("no roles", vec![token("user-plain", &[])]),
        ("unknown role", vec![token("user-guest", &["guest"])]),
        (
            "reader and unknown role",
            vec![token("user-mixed", &["guest", "reader"])],
        ),
        (
            "editor and admin",
            vec![token("user-both", &["editor", "admin"])],
        ),
        ("reader with scopes", vec![KEYS.signing.mint(&scoped)]),
        (
            "RS256 editor",
            vec![KEYS.rsa.mint(&claims("user-rsa", &["editor"]))],
        ),
        ("expired admin", vec![KEYS.signing.mint(&expired)]),
        (
            "two tokens",
            vec![token("user-a", &["admin"]), token("user-b", &["admin"])],
        ),
    ]
}

/// What a client can observe of a decision: status, challenge, problem type.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    status: StatusCode,
    challenge: Option<String>,
    problem_type: Option<String>,
}

async fn observe(app: &Router, method: &Method, path: &str, bearers: &[&str]) -> Observed {
    let (parts, body) = send(app, request(method, path, bearers)).await;
    let problem_type = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|doc| doc["type"].as_str().map(str::to_owned));
    Observed {
        status: parts.status,
        challenge: parts
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            // The challenge's error_description is generic text; compare the error code only.
            .map(|v| v.split(',').next().unwrap_or(v).to_owned()),
        problem_type,
    }
}

#[tokio::test]
async fn cedar_and_rbac_decide_the_demo_identically() {
    let rbac_app = app(demo_routes(&|builtin| builtin));
    let cedar = cedar_policy();
    let cedar_app = app(demo_routes(&|_| cedar.clone()));

    let mut failures = Vec::new();
    let mut statuses = BTreeSet::new();
    let mut cells = 0;
    for (method, path) in requests() {
        for (caller, bearers) in callers() {
            let bearers: Vec<&str> = bearers.iter().map(String::as_str).collect();
            let builtin = observe(&rbac_app, &method, path, &bearers).await;
            let cedar = observe(&cedar_app, &method, path, &bearers).await;
            cells += 1;
            statuses.insert(builtin.status.as_u16());
            if builtin != cedar {
                failures.push(format!(
                    "{method} {path} × {caller}: RBAC {builtin:?}, Cedar {cedar:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The matrix is not trivially equal: it covers allows and every kind of refusal.
    for status in [200, 201, 204, 400, 401, 403, 404, 405] {
        assert!(statuses.contains(&status), "no cell answered {status}");
    }
}

/// Spot checks of the Cedar app alone: the role hierarchy comes from the router's `Rbac`, and
/// refusals are the standard ones.
#[tokio::test]
async fn cedar_app_uses_the_role_hierarchy() {
    let cedar = cedar_policy();
    let app = app(demo_routes(&|_| cedar.clone()));
    let admin = token("user-admin", &["admin"]);
    let editor = token("user-editor", &["editor"]);
    for (method, path, bearer, status) in [
        (
            Method::GET,
            "/api/documents/1",
            Some(&admin),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/documents",
            Some(&admin),
            StatusCode::CREATED,
        ),
        (
            Method::GET,
            "/api/documents/1",
            Some(&editor),
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/api/documents/1",
            Some(&editor),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/api/documents/1",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (Method::GET, "/health", None, StatusCode::OK),
    ] {
        let bearers: Vec<&str> = bearer.map(String::as_str).into_iter().collect();
        let got = observe(&app, &method, path, &bearers).await;
        assert_eq!(got.status, status, "{method} {path}");
    }
    // The route report names the Cedar source for every route.
    let report = demo_routes(&|_| cedar.clone()).report();
    assert!(
        report
            .routes
            .iter()
            .all(|entry| entry.policy == "cedar(secure_api.cedar)")
    );
}
