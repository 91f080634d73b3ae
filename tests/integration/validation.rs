//! The contract of `POST /api/documents` (ARCHITECTURE.md §5): `{"title": 1..=200 chars,
//! "url": https URL that is not private/loopback/link-local}`, 201 on success, 422 with field
//! errors otherwise (paths and codes, never the submitted values), 400 for malformed JSON, 415
//! for another media type, 413 above 64 KiB. Checked in process against the demo app of
//! `support` and over loopback against the example binary itself; plus the request hygiene
//! layer in the full stack.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{self, Refusal, check_refusal, send, token};

/// One request body with what it must get.
struct Case {
    name: &'static str,
    content_type: &'static str,
    body: String,
    status: StatusCode,
    /// For 422: the field paths the problem document must list (sorted).
    fields: &'static [&'static str],
    /// Submitted text that must not come back.
    secret: &'static str,
}

fn case(
    name: &'static str,
    body: Value,
    status: StatusCode,
    fields: &'static [&'static str],
    secret: &'static str,
) -> Case {
    Case {
        name,
        content_type: "application/json",
        body: body.to_string(),
        status,
        fields,
        secret,
    }
}

fn cases() -> Vec<Case> {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let url = "https://example.com/doc";
    let mut cases = vec![
        case(
            "valid",
            json!({"title": "Notes", "url": url}),
            StatusCode::CREATED,
            &[],
            "",
        ),
        case(
            "200 characters",
            json!({"title": "é".repeat(200), "url": url}),
            StatusCode::CREATED,
            &[],
            "",
        ),
        case(
            "empty title",
            json!({"title": "", "url": url}),
            unprocessable,
            &["title"],
            "",
        ),
        case(
            "201 characters",
            json!({"title": "t".repeat(201), "url": url}),
            unprocessable,
            &["title"],
            "tttttttttttttttttttt",
        ),
        case(
            "both bad",
            json!({"title": "", "url": "http://127.0.0.1/admin-console-x1"}),
            unprocessable,
            &["title", "url"],
            "admin-console-x1",
        ),
        case(
            "missing url",
            json!({"title": "Notes"}),
            unprocessable,
            &["url"],
            "",
        ),
        case(
            "title not a string",
            json!({"title": 12345678, "url": url}),
            unprocessable,
            &["title"],
            "12345678",
        ),
        case(
            "unknown field",
            json!({"title": "Notes", "url": url, "owner-override-x9": "admin"}),
            unprocessable,
            &[""],
            "owner-override-x9",
        ),
    ];
    for bad_url in [
        "http://example.com/doc",
        "https://user:hunter2@example.com/doc",
        "https://localhost/doc-q7",
        "https://intranet.localhost./doc-q7",
        "https://2130706433/doc-q7",
        "https://0x7f.1/doc-q7",
        "https://017700000001/doc-q7",
        "https://[::ffff:127.0.0.1]/doc-q7",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/doc-q7",
        "https://[fe80::1]/doc-q7",
        "https://metadata.google.internal/doc-q7",
        "ftp://example.com/doc-q7",
        "not a url doc-q7",
    ] {
        cases.push(Case {
            name: "refused url",
            content_type: "application/json",
            body: json!({"title": "Notes", "url": bad_url}).to_string(),
            status: unprocessable,
            fields: &["url"],
            secret: if bad_url.contains("hunter2") {
                "hunter2"
            } else {
                "doc-q7"
            },
        });
    }
    cases.extend([
        Case {
            name: "malformed JSON",
            content_type: "application/json",
            body: r#"{"title": "Notes", "url": "#.into(),
            status: StatusCode::BAD_REQUEST,
            fields: &[],
            secret: "",
        },
        Case {
            name: "form body",
            content_type: "application/x-www-form-urlencoded",
            body: "title=Notes&url=https%3A%2F%2Fexample.com%2Fdoc".into(),
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            fields: &[],
            secret: "",
        },
        Case {
            name: "deep nesting",
            content_type: "application/json",
            body: format!(r#"{{"title": {}}}"#, "[".repeat(1000)),
            status: StatusCode::BAD_REQUEST,
            fields: &[],
            secret: "",
        },
        Case {
            name: "above 64 KiB",
            content_type: "application/json",
            body: json!({"title": "x".repeat(support::BODY_LIMIT), "url": url}).to_string(),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            fields: &[],
            secret: "",
        },
    ]);
    cases
}

/// Checks one response against its case; `Err` describes every mismatch.
fn check(
    case: &Case,
    status: StatusCode,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    let mut problems = Vec::new();
    if status != case.status {
        problems.push(format!("status {status} (want {})", case.status));
    }
    if !case.secret.is_empty() && text.contains(case.secret) {
        problems.push(format!("response echoes {:?}", case.secret));
    }
    if case.status.is_client_error() {
        if content_type != Some("application/problem+json") {
            problems.push(format!("content-type {content_type:?}"));
        }
        let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if doc["status"] != case.status.as_u16() {
            problems.push(format!("not a problem document: {text}"));
        }
        if case.status == StatusCode::UNPROCESSABLE_ENTITY {
            let mut paths: Vec<&str> = doc["errors"]
                .as_array()
                .map(|errors| errors.iter().filter_map(|e| e["path"].as_str()).collect())
                .unwrap_or_default();
            paths.sort_unstable();
            if paths != case.fields {
                problems.push(format!(
                    "field paths {paths:?} (want {:?}) in {text}",
                    case.fields
                ));
            }
            let codes_ok = doc["errors"].as_array().is_some_and(|errors| {
                errors.iter().all(|e| {
                    e["code"].as_str().is_some_and(|c| {
                        !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
                })
            });
            if !codes_ok {
                problems.push(format!("codes missing or not snake_case: {text}"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", case.name, problems.join("; ")))
    }
}

#[tokio::test]
async fn documents_are_validated_in_process() {
    let app = support::demo_app();
    let editor = token("user-editor", &["editor"]);
    let mut failures = Vec::new();
    for case in cases() {
        let req = http::Request::post("/api/documents")
            .header("authorization", format!("Bearer {editor}"))
            .header("content-type", case.content_type)
            .body(Body::from(case.body.clone()))
            .expect("request");
        let (parts, body) = send(&app, req).await;
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        if let Err(problem) = check(&case, parts.status, content_type, &body) {
            failures.push(problem);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The check is not vacuous: an echo, a missing field path or a wrong status fails it.
#[test]
fn the_check_catches_echoes_and_missing_paths() {
    let all = cases();
    let both = all.iter().find(|c| c.name == "both bad").expect("case");
    let body = json!({"status": 422, "errors": [{"path": "title", "code": "length"}]}).to_string();
    assert!(
        check(
            both,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("application/problem+json"),
            body.as_bytes()
        )
        .is_err()
    );
    let echo = json!({"status": 422, "errors": [{"path": "title", "code": "length"}, {"path": "url", "code": "x"}], "v": "admin-console-x1"}).to_string();
    assert!(
        check(
            both,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("application/problem+json"),
            echo.as_bytes()
        )
        .is_err()
    );
    let good = json!({"status": 422, "errors": [{"path": "title", "code": "length"}, {"path": "url", "code": "url_scheme"}]}).to_string();
    assert!(
        check(
            both,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("application/problem+json"),
            good.as_bytes()
        )
        .is_ok()
    );
    assert!(
        check(
            both,
            StatusCode::BAD_REQUEST,
            Some("application/problem+json"),
            good.as_bytes()
        )
        .is_err()
    );
}

/// The request hygiene layer is on in the demo stack: ambiguous targets, unknown methods and
/// header floods are refused with the generic 400 problem, whoever asks.
#[tokio::test]
async fn hygiene_refuses_ambiguous_requests_in_the_stack() {
    let app = support::demo_app();
    let admin = token("user-admin", &["admin"]);
    let mut failures = Vec::new();
    let targets = [
        (Method::GET, "/admin%2Froutes"),
        (Method::GET, "/admin/%2e%2e/admin/routes"),
        (Method::GET, "/api/documents/1%00"),
        (Method::GET, "/api/documents/%ff"),
        (Method::DELETE, "/api/documents/1;x=y"),
        (Method::TRACE, "/health"),
        (Method::from_bytes(b"PURGE").expect("method"), "/health"),
    ];
    for (method, path) in &targets {
        let (parts, body) = send(&app, support::request(method, path, &[&admin])).await;
        if let Err(problem) = check_refusal(&parts, &body, Refusal::BadRequest, &[&admin]) {
            failures.push(format!("{method} {path}: {problem}"));
        }
    }
    let long = format!("/health?{}", "q".repeat(9000));
    let (parts, body) = send(&app, support::request(&Method::GET, &long, &[])).await;
    if let Err(problem) = check_refusal(&parts, &body, Refusal::BadRequest, &[]) {
        failures.push(format!("long URI: {problem}"));
    }
    let mut flood = support::request(&Method::GET, "/health", &[]);
    for i in 0..101 {
        flood.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-flood-{i}").as_bytes()).expect("name"),
            http::HeaderValue::from_static("1"),
        );
    }
    let (parts, body) = send(&app, flood).await;
    if let Err(problem) = check_refusal(&parts, &body, Refusal::BadRequest, &[]) {
        failures.push(format!("header flood: {problem}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The example binary itself, in dev mode, over loopback: same table as in process.
#[tokio::test]
async fn the_example_validates_documents() {
    // `cargo test` builds the examples next to the test binaries' `deps` folder.
    let example = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples/secure_api")))
        .filter(|path| path.exists());
    let Some(example) = example else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the secure_api example must be built in CI (`cargo test` builds it)"
        );
        eprintln!("\n!!! SKIPPING example test: build it with `cargo test` !!!\n");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        Command::new(example)
            .env("PORTCULLIS_ADDR", &addr)
            .env_remove("PORTCULLIS_ISSUER")
            .env_remove("PORTCULLIS_CEDAR_POLICIES")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the example"),
    );
    // Dev mode prints `EDITOR_TOKEN=...` once it listens.
    let stdout = child.0.stdout.take().expect("piped stdout");
    let editor = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let token = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("EDITOR_TOKEN=").map(str::to_owned));
        // Keep draining the audit lines so the example never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        token
    });
    let editor = tokio::time::timeout(Duration::from_secs(60), editor)
        .await
        .expect("the example starts within 60 s")
        .expect("reader thread")
        .expect("the example prints an editor token");

    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut failures = Vec::new();
    for case in cases() {
        let response = http
            .post(format!("{base}/api/documents"))
            .bearer_auth(&editor)
            .header("content-type", case.content_type)
            .body(case.body.clone())
            .send()
            .await
            .expect("POST /api/documents");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.expect("body");
        if let Err(problem) = check(&case, status, content_type.as_deref(), &body) {
            failures.push(problem);
        }
        if case.status == StatusCode::CREATED {
            let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if doc["url"] != "https://example.com/doc" || doc["owner"] != "dev-editor" {
                failures.push(format!("{}: stored document {doc}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
