//! Deny-by-default routing: the route-policy report, nesting and merging, authorization on the
//! matched template, and declaration errors.

use http::{Method, StatusCode};
use portcullis::authz::{has_role, policy_fn, public};
use portcullis::context::MatchedRoute;
use portcullis::routing::{SecureRouter, delete, get};
use serde_json::Value;

use crate::support::{
    self, Outcome, Refusal, check_outcome, check_refusal, check_success, demo_routes, jwt, rbac,
    request, secure, send, token,
};

fn triples(router: &SecureRouter) -> Vec<(String, String, String)> {
    router
        .report()
        .routes
        .into_iter()
        .map(|e| (e.method, e.route, e.policy))
        .collect()
}

fn owned(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(m, r, p)| ((*m).to_owned(), (*r).to_owned(), (*p).to_owned()))
        .collect()
}

const DEMO_SURFACE: &[(&str, &str, &str)] = &[
    ("GET", "/admin/routes", "has_role(admin)"),
    ("POST", "/api/documents", "has_role(editor)"),
    ("DELETE", "/api/documents/{id}", "has_role(admin)"),
    ("GET", "/api/documents/{id}", "has_role(reader)"),
    ("GET", "/api/me", "authenticated"),
    ("GET", "/health", "public"),
];

#[tokio::test]
async fn report_lists_exactly_the_demo_surface() {
    let routes = demo_routes();
    assert_eq!(triples(&routes), owned(DEMO_SURFACE));
    let report = routes.report();
    assert_eq!(
        report.policy_of("DELETE", "/api/documents/{id}"),
        Some("has_role(admin)")
    );
    assert_eq!(report.policy_of("PUT", "/api/documents/{id}"), None);

    // The admin endpoint serves the same report.
    let app = support::demo_app();
    let admin = token("user-admin", &["admin"]);
    let (parts, body) = send(&app, request(&Method::GET, "/admin/routes", &[&admin])).await;
    check_success(&parts, &body, StatusCode::OK).unwrap();
    let served: Value = serde_json::from_slice(&body).expect("JSON report");
    assert_eq!(served, serde_json::to_value(&report).expect("report JSON"));
}

fn nested_and_merged() -> SecureRouter {
    let extra = SecureRouter::new().route("/extra", get(|| async { "extra" }, has_role("admin")));
    let v2 = SecureRouter::new().nest(
        "/v2",
        SecureRouter::new().route("/docs/{id}", delete(|| async { "gone" }, has_role("admin"))),
    );
    // A second router nested at the same prefix, with other paths.
    let v2_more = SecureRouter::new().nest(
        "/v2",
        SecureRouter::new().route("/status", get(|| async { "up" }, public())),
    );
    SecureRouter::with_rbac(rbac())
        .nest("/v1", demo_routes())
        .merge(extra)
        .merge(v2)
        .merge(v2_more)
}

#[tokio::test]
async fn nested_and_merged_routers_keep_their_policies() {
    let routes = nested_and_merged();
    let mut want: Vec<(String, String, String)> = DEMO_SURFACE
        .iter()
        .map(|(m, r, p)| ((*m).to_owned(), format!("/v1{r}"), (*p).to_owned()))
        .collect();
    want.push(("GET".into(), "/extra".into(), "has_role(admin)".into()));
    want.push((
        "DELETE".into(),
        "/v2/docs/{id}".into(),
        "has_role(admin)".into(),
    ));
    want.push(("GET".into(), "/v2/status".into(), "public".into()));
    want.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    assert_eq!(triples(&routes), want);

    let app = secure(routes.into_router().expect("valid routes"), jwt());
    let reader = token("user-reader", &["reader"]);
    let editor = token("user-editor", &["editor"]);
    let admin = token("user-admin", &["admin"]);
    let cases: Vec<(Method, &str, Vec<&str>, Outcome)> = vec![
        (Method::GET, "/v1/health", vec![], Ok(StatusCode::OK)),
        (
            Method::GET,
            "/v1/api/documents/1",
            vec![&reader],
            Ok(StatusCode::OK),
        ),
        // The outer router's role hierarchy applies inside the nested router.
        (
            Method::GET,
            "/v1/api/documents/1",
            vec![&editor],
            Ok(StatusCode::OK),
        ),
        (
            Method::GET,
            "/v1/api/documents/1",
            vec![],
            Err(Refusal::MissingCredential),
        ),
        (
            Method::DELETE,
            "/v1/api/documents/1",
            vec![&reader],
            Err(Refusal::Forbidden),
        ),
        (
            Method::DELETE,
            "/v1/api/documents/1",
            vec![&admin],
            Ok(StatusCode::NO_CONTENT),
        ),
        (
            Method::GET,
            "/extra",
            vec![&reader],
            Err(Refusal::Forbidden),
        ),
        (Method::GET, "/extra", vec![&admin], Ok(StatusCode::OK)),
        (
            Method::DELETE,
            "/v2/docs/1",
            vec![&editor],
            Err(Refusal::Forbidden),
        ),
        (
            Method::DELETE,
            "/v2/docs/1",
            vec![&admin],
            Ok(StatusCode::OK),
        ),
        (
            Method::GET,
            "/v2/docs/1",
            vec![&admin],
            Err(Refusal::MethodNotAllowed("DELETE")),
        ),
        (Method::GET, "/v2/status", vec![], Ok(StatusCode::OK)),
        // The unprefixed paths do not exist any more.
        (
            Method::GET,
            "/api/documents/1",
            vec![&admin],
            Err(Refusal::NotFound),
        ),
        (
            Method::GET,
            "/v1/nope",
            vec![&admin],
            Err(Refusal::NotFound),
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, bearers, want) in cases {
        let (parts, body) = send(&app, request(&method, path, &bearers)).await;
        if let Err(problem) = check_outcome(&parts, &body, want, &bearers) {
            failures.push(format!(
                "{method} {path} ({} token(s)): {problem}",
                bearers.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The denial names the prefixed template.
    let (parts, _) = send(
        &app,
        request(&Method::DELETE, "/v1/api/documents/9", &[&reader]),
    )
    .await;
    assert_eq!(
        parts.extensions.get::<MatchedRoute>().map(|r| &*r.0),
        Some("/v1/api/documents/{id}")
    );
}

/// Variants of protected paths that a lenient router might map onto a handler: none of them
/// may reach a handler without that handler's policy.
#[tokio::test]
async fn encodings_and_trailing_slashes_do_not_dodge_the_guard() {
    let app = support::demo_app();
    let reader = token("user-reader", &["reader"]);
    let plain = token("user-plain", &[]);
    // Unambiguous paths that no route declares are 404; ambiguous ones (encoded separators,
    // empty or dot segments) are refused by the request hygiene layer before routing.
    let dodges = [
        (Method::GET, "/api/documents/1/", Refusal::NotFound),
        (Method::GET, "/api/%64ocuments/1", Refusal::NotFound),
        (Method::GET, "/api%2Fdocuments/1", Refusal::BadRequest),
        (Method::GET, "//api/documents/1", Refusal::BadRequest),
        (Method::GET, "/api/documents//1", Refusal::BadRequest),
        (Method::GET, "/api/./documents/1", Refusal::BadRequest),
        (Method::GET, "/api/x/../documents/1", Refusal::BadRequest),
        (
            Method::GET,
            "/api/x/%2e%2E/documents/1",
            Refusal::BadRequest,
        ),
        (
            Method::GET,
            "/api/documents/1;jsessionid=x",
            Refusal::BadRequest,
        ),
        (Method::GET, "/API/documents/1", Refusal::NotFound),
        (Method::DELETE, "/api/documents/1/", Refusal::NotFound),
        (Method::DELETE, "/api/%64ocuments/1", Refusal::NotFound),
        (Method::GET, "/admin/routes/", Refusal::NotFound),
        (Method::GET, "/admin/%72outes", Refusal::NotFound),
        (Method::GET, "/admin//routes", Refusal::BadRequest),
        (Method::GET, "/admin/x/..;/routes", Refusal::BadRequest),
    ];
    let mut failures = Vec::new();
    for (method, path, refusal) in &dodges {
        for (who, bearers) in [("anonymous", vec![]), ("reader", vec![reader.as_str()])] {
            let (parts, body) = send(&app, request(method, path, &bearers)).await;
            if let Err(problem) = check_refusal(&parts, &body, *refusal, &bearers) {
                failures.push(format!("{method} {path} as {who}: {problem}"));
            }
        }
    }

    // An encoded parameter still matches the template, so the template's policy applies.
    let encoded_id = "/api/documents/%31";
    for (who, bearers, want) in [
        ("anonymous", vec![], Err(Refusal::MissingCredential)),
        ("no roles", vec![plain.as_str()], Err(Refusal::Forbidden)),
        ("reader", vec![reader.as_str()], Ok(StatusCode::OK)),
    ] {
        let (parts, body) = send(&app, request(&Method::GET, encoded_id, &bearers)).await;
        if let Err(problem) = check_outcome(&parts, &body, want, &bearers) {
            failures.push(format!("GET {encoded_id} as {who}: {problem}"));
        }
    }
    // A query string does not change the route either.
    let (parts, body) = send(
        &app,
        request(&Method::GET, "/admin/routes?role=admin", &[&reader]),
    )
    .await;
    if let Err(problem) = check_refusal(&parts, &body, Refusal::Forbidden, &[&reader]) {
        failures.push(format!("GET /admin/routes?role=admin as reader: {problem}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Nested routers see their path without the prefix; the hygiene checks still see the whole
/// path the client sent, prefix parameters included.
#[tokio::test]
async fn hygiene_sees_the_full_path_of_nested_routes() {
    let tenant = SecureRouter::new().route("/docs/{id}", get(|| async { "doc" }, public()));
    let router = SecureRouter::new()
        .nest("/t/{tenant}", tenant)
        .into_router()
        .expect("valid routes");
    let app = secure(router, jwt());
    let (parts, body) = send(&app, request(&Method::GET, "/t/acme/docs/1", &[])).await;
    check_success(&parts, &body, StatusCode::OK).unwrap();
    let mut failures = Vec::new();
    for path in [
        "/t/a%2Fb/docs/1",
        "/t/a;x/docs/1",
        "/t/%2e%2e/docs/1",
        "/t/acme/docs/%2e%2e",
    ] {
        let (parts, body) = send(&app, request(&Method::GET, path, &[])).await;
        if let Err(problem) = check_refusal(&parts, &body, Refusal::BadRequest, &[]) {
            failures.push(format!("GET {path}: {problem}"));
        }
    }
    // Unknown methods are refused by hygiene (400), unlisted known ones with 405.
    let (parts, _) = send(&app, request(&Method::DELETE, "/t/acme/docs/1", &[])).await;
    assert_eq!(parts.status, StatusCode::METHOD_NOT_ALLOWED);
    let odd = Method::from_bytes(b"PROPFIND").unwrap();
    let (parts, body) = send(&app, request(&odd, "/t/acme/docs/1", &[])).await;
    if let Err(problem) = check_refusal(&parts, &body, Refusal::BadRequest, &[]) {
        failures.push(format!("PROPFIND: {problem}"));
    }
    let (parts, body) = send(&app, request(&odd, "/nowhere", &[])).await;
    if let Err(problem) = check_refusal(&parts, &body, Refusal::BadRequest, &[]) {
        failures.push(format!("PROPFIND /nowhere: {problem}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A guard inside a handler (`PolicyGuardLayer::new`) reads the router's role tables from the
/// request, as it did when the router put them there with a layer.
#[tokio::test]
async fn inner_guards_see_the_routers_role_hierarchy() {
    use axum::handler::Handler;
    use portcullis::authz::{PolicyGuardLayer, authenticated};

    let handler = (|| async { "inner" }).layer(PolicyGuardLayer::new(has_role("reader")));
    let router = SecureRouter::with_rbac(rbac())
        .route("/inner", get(handler, authenticated()))
        .into_router()
        .expect("valid routes");
    let app = secure(router, jwt());
    // An admin is a reader through the hierarchy only.
    let admin = token("user-admin", &["admin"]);
    let (parts, body) = send(&app, request(&Method::GET, "/inner", &[&admin])).await;
    check_success(&parts, &body, StatusCode::OK).unwrap();
    let plain = token("user-plain", &[]);
    let (parts, body) = send(&app, request(&Method::GET, "/inner", &[&plain])).await;
    check_refusal(&parts, &body, Refusal::Forbidden, &[&plain]).unwrap();
}

/// A layer that rewrites the URI after the router matched does not slip an ambiguous target
/// past the hygiene checks: both the client's and the rewritten target are checked.
#[tokio::test]
async fn hygiene_checks_a_rewritten_target_too() {
    let router = SecureRouter::new()
        .route("/docs/{id}", get(|| async { "doc" }, public()))
        .into_router()
        .expect("valid routes")
        .layer(tower::util::MapRequestLayer::new(
            |mut req: axum::extract::Request| {
                if req.uri().path() == "/docs/rewrite" {
                    *req.uri_mut() = "/docs/%2e%2e".parse().expect("valid URI");
                }
                req
            },
        ));
    let app = secure(router, jwt());
    let (parts, body) = send(&app, request(&Method::GET, "/docs/1", &[])).await;
    check_success(&parts, &body, StatusCode::OK).unwrap();
    let (parts, body) = send(&app, request(&Method::GET, "/docs/rewrite", &[])).await;
    check_refusal(&parts, &body, Refusal::BadRequest, &[]).unwrap();
}

/// Policies see the matched template and decoded parameters, never the raw path.
#[tokio::test]
async fn policies_see_the_template_not_the_raw_path() {
    let seen = policy_fn("template_is_files_name", |ctx| {
        ctx.route == "/files/{name}" && ctx.param("name") == Some("a b")
    });
    let router = SecureRouter::new()
        .route("/files/{name}", get(|| async { "file" }, seen))
        .into_router()
        .expect("valid routes");
    let app = secure(router, jwt());
    let plain = token("user-plain", &[]);

    let (parts, body) = send(&app, request(&Method::GET, "/files/a%20b", &[&plain])).await;
    check_success(&parts, &body, StatusCode::OK).unwrap();
    let (parts, body) = send(&app, request(&Method::GET, "/files/ab", &[&plain])).await;
    check_refusal(&parts, &body, Refusal::Forbidden, &[&plain]).unwrap();
}

#[test]
fn declaration_errors_are_refused_by_into_router() {
    let handler = || async { "x" };
    let cases: Vec<(&str, SecureRouter)> = vec![
        (
            "same method twice in one method router",
            SecureRouter::new().route("/x", get(handler, public()).get(handler, has_role("admin"))),
        ),
        (
            "same method in two route() calls",
            SecureRouter::new()
                .route("/x", get(handler, public()))
                .route("/x", get(handler, has_role("admin"))),
        ),
        (
            "same method in two merged routers",
            SecureRouter::new()
                .route("/x", get(handler, public()))
                .merge(SecureRouter::new().route("/x", get(handler, has_role("admin")))),
        ),
        (
            "duplicate inside a nested router",
            SecureRouter::new().nest(
                "/v1",
                SecureRouter::new()
                    .route("/x", get(handler, public()))
                    .route("/x", get(handler, public())),
            ),
        ),
        (
            "a nested route declared again outside the nest",
            SecureRouter::new()
                .route("/v1/x", get(handler, public()))
                .nest(
                    "/v1",
                    SecureRouter::new().route("/x", get(handler, public())),
                ),
        ),
        (
            "a path declared outside and inside a nest with other methods",
            SecureRouter::new()
                .route("/v1/x", delete(handler, has_role("admin")))
                .nest(
                    "/v1",
                    SecureRouter::new().route("/x", get(handler, public())),
                ),
        ),
        (
            "the same prefix nested twice with the same route",
            SecureRouter::new()
                .nest(
                    "/v1",
                    SecureRouter::new().route("/x", get(handler, public())),
                )
                .nest(
                    "/v1",
                    SecureRouter::new().route("/x", get(handler, public())),
                ),
        ),
        (
            "a route without a leading slash",
            SecureRouter::new().route("x", get(handler, public())),
        ),
        (
            "nesting at the root",
            SecureRouter::new().nest("/", SecureRouter::new().route("/x", get(handler, public()))),
        ),
    ];
    let mut failures = Vec::new();
    for (name, router) in cases {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            router.into_router().map(|_| ())
        }));
        match outcome {
            Ok(Err(_)) => {}
            Ok(Ok(())) => failures.push(format!("{name}: accepted")),
            Err(_) => failures.push(format!("{name}: panicked instead of returning Err")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
