//! API keys through the demo stack (issue 6): JWT and API key authenticators side by side, the
//! key file reloaded while the app serves, and the `secure_api` example with
//! `PORTCULLIS_API_KEYS_FILE`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use axum::Router;
use http::{Method, StatusCode, header};
use portcullis::Security;
use portcullis::authn::api_key::{ApiKeyAuthenticator, GeneratedApiKey, generate_api_key};
use portcullis::secrets::ReloadOutcome;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::support::{
    self, BODY_LIMIT, Outcome, Refusal, check_outcome, check_refusal, request, send, token,
};

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-it-apikeys-{}",
        portcullis::testing::random_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn line(key: &GeneratedApiKey, rest: &str) -> String {
    format!("{}:{}:{rest}\n", key.id(), key.sha256_hex())
}

/// The demo routes behind the demo stack with both authenticators.
fn app(api_keys: ApiKeyAuthenticator) -> Router {
    let security = Security::builder()
        .authenticator(support::jwt())
        .authenticator(api_keys)
        .build()
        .unwrap();
    support::demo_routes()
        .into_router()
        .unwrap()
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(security)
}

/// A request carrying `headers` (API key headers) in addition to what [`request`] sets.
fn with_headers(
    method: &Method,
    path: &str,
    bearers: &[&str],
    headers: &[(&str, &str)],
) -> http::Request<axum::body::Body> {
    let mut req = request(method, path, bearers);
    for (name, value) in headers {
        req.headers_mut().append(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    req
}

struct Keys {
    reader: GeneratedApiKey,
    editor: GeneratedApiKey,
    admin: GeneratedApiKey,
    expired: GeneratedApiKey,
}

fn keys() -> (Keys, String) {
    let keys = Keys {
        reader: generate_api_key("reader-1").unwrap(),
        editor: generate_api_key("editor-1").unwrap(),
        admin: generate_api_key("admin-1").unwrap(),
        expired: generate_api_key("old-1").unwrap(),
    };
    let file = format!(
        "# demo keys\n{}{}{}{}",
        line(&keys.reader, "reader client=reporting"),
        line(&keys.editor, "editor client=publisher"),
        line(&keys.admin, "admin client=ops"),
        line(
            &keys.expired,
            "admin client=ops expires=2001-01-01T00:00:00Z"
        ),
    );
    (keys, file)
}

/// (name, route, bearer tokens, other headers, expected outcome)
type Case<'a> = (
    &'a str,
    (Method, &'a str),
    Vec<&'a str>,
    Vec<(&'a str, String)>,
    Outcome,
);

#[tokio::test]
async fn api_key_matrix_through_the_demo_stack() {
    let (keys, file) = keys();
    let api_keys = ApiKeyAuthenticator::builder()
        .keys_text(&file)
        .header("x-api-key")
        .build()
        .unwrap();
    let app = app(api_keys);
    let auth = |key: &GeneratedApiKey| format!("ApiKey {}", key.key().expose_secret());
    let reader = auth(&keys.reader);
    let editor = auth(&keys.editor);
    let admin = auth(&keys.admin);
    let reader_key = keys.reader.key().expose_secret();
    let wrong_secret = {
        let mut k = reader_key.to_owned();
        let last = k.pop().unwrap();
        k.push(if last == 'A' { 'B' } else { 'A' });
        k
    };
    let unknown_id = reader_key.replacen("pk_reader-1_", "pk_reader-9_", 1);
    let jwt = token("user-1", &["reader"]);
    let secrets: Vec<&str> = vec![
        reader_key,
        keys.editor.key().expose_secret(),
        keys.admin.key().expose_secret(),
        keys.expired.key().expose_secret(),
        &wrong_secret,
        &unknown_id,
        &jwt,
    ];

    let get_doc = (Method::GET, "/api/documents/1");
    let post_doc = (Method::POST, "/api/documents");
    let delete_doc = (Method::DELETE, "/api/documents/1");
    let admin_routes = (Method::GET, "/admin/routes");
    let cases: Vec<Case> = vec![
        (
            "reader reads",
            get_doc.clone(),
            vec![],
            vec![("authorization", reader.clone())],
            Ok(StatusCode::OK),
        ),
        (
            "reader via x-api-key",
            get_doc.clone(),
            vec![],
            vec![("x-api-key", reader_key.to_owned())],
            Ok(StatusCode::OK),
        ),
        (
            "reader cannot post",
            post_doc.clone(),
            vec![],
            vec![("authorization", reader.clone())],
            Err(Refusal::Forbidden),
        ),
        (
            "editor posts",
            post_doc.clone(),
            vec![],
            vec![("authorization", editor.clone())],
            Ok(StatusCode::CREATED),
        ),
        (
            "editor inherits reader",
            get_doc.clone(),
            vec![],
            vec![("authorization", editor.clone())],
            Ok(StatusCode::OK),
        ),
        (
            "editor cannot delete",
            delete_doc.clone(),
            vec![],
            vec![("authorization", editor)],
            Err(Refusal::Forbidden),
        ),
        (
            "admin deletes",
            delete_doc.clone(),
            vec![],
            vec![("authorization", admin.clone())],
            Ok(StatusCode::NO_CONTENT),
        ),
        (
            "admin routes",
            admin_routes.clone(),
            vec![],
            vec![("authorization", admin.clone())],
            Ok(StatusCode::OK),
        ),
        (
            "wrong secret",
            get_doc.clone(),
            vec![],
            vec![("authorization", format!("ApiKey {wrong_secret}"))],
            Err(Refusal::InvalidToken),
        ),
        (
            "unknown id",
            get_doc.clone(),
            vec![],
            vec![("authorization", format!("ApiKey {unknown_id}"))],
            Err(Refusal::InvalidToken),
        ),
        (
            "expired key",
            get_doc.clone(),
            vec![],
            vec![("authorization", auth(&keys.expired))],
            Err(Refusal::InvalidToken),
        ),
        (
            "malformed key",
            get_doc.clone(),
            vec![],
            vec![("authorization", "ApiKey pk_x".into())],
            Err(Refusal::InvalidToken),
        ),
        (
            "invalid key on a public route",
            (Method::GET, "/health"),
            vec![],
            vec![("authorization", format!("ApiKey {wrong_secret}"))],
            Err(Refusal::InvalidToken),
        ),
        (
            "empty key",
            get_doc.clone(),
            vec![],
            vec![("authorization", "ApiKey ".into())],
            Err(Refusal::InvalidRequest),
        ),
        (
            "key and bearer token",
            get_doc.clone(),
            vec![&jwt],
            vec![("x-api-key", reader_key.to_owned())],
            Err(Refusal::InvalidRequest),
        ),
        (
            "two key headers",
            get_doc.clone(),
            vec![],
            vec![
                ("x-api-key", reader_key.to_owned()),
                ("x-api-key", reader_key.to_owned()),
            ],
            Err(Refusal::InvalidRequest),
        ),
        (
            "key in two places",
            get_doc.clone(),
            vec![],
            vec![
                ("x-api-key", reader_key.to_owned()),
                ("authorization", reader.clone()),
            ],
            Err(Refusal::InvalidRequest),
        ),
        (
            "key as a bearer token",
            get_doc.clone(),
            vec![reader_key],
            vec![],
            Err(Refusal::InvalidToken),
        ),
        (
            "JWT still works",
            get_doc.clone(),
            vec![&jwt],
            vec![],
            Ok(StatusCode::OK),
        ),
    ];
    let mut failures = Vec::new();
    for (name, (method, path), bearers, headers, outcome) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (parts, body) = send(&app, with_headers(&method, path, &bearers, &headers)).await;
        if let Err(problem) = check_outcome(&parts, &body, outcome, &secrets) {
            failures.push(format!("{name}: {problem}"));
        }
    }
    // A key in the query string is not read: the request is anonymous.
    let (parts, body) = send(
        &app,
        request(
            &Method::GET,
            &format!("/api/documents/1?api_key={reader_key}"),
            &[],
        ),
    )
    .await;
    if let Err(problem) = check_refusal(&parts, &body, Refusal::MissingCredential, &secrets) {
        failures.push(format!("query string: {problem}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Wrong secret and unknown id look the same on the wire (request ids aside).
    let strip = |body: &[u8]| {
        let mut v: Value = serde_json::from_slice(body).unwrap();
        v.as_object_mut().unwrap().remove("request_id");
        v
    };
    let (wp, wb) = send(
        &app,
        with_headers(
            &Method::GET,
            "/api/me",
            &[],
            &[("x-api-key", &wrong_secret)],
        ),
    )
    .await;
    let (up, ub) = send(
        &app,
        with_headers(&Method::GET, "/api/me", &[], &[("x-api-key", &unknown_id)]),
    )
    .await;
    assert_eq!(wp.status, up.status);
    assert_eq!(strip(&wb), strip(&ub));
    let mut wh = wp.headers.clone();
    let mut uh = up.headers.clone();
    wh.remove("x-request-id");
    uh.remove("x-request-id");
    assert_eq!(wh, uh);

    // API-key principals are services authenticated by api_key.
    let (parts, body) = send(
        &app,
        with_headers(&Method::GET, "/api/me", &[], &[("authorization", &reader)]),
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["subject"], "reporting");
    assert_eq!(body["roles"], serde_json::json!(["reader"]));
}

#[tokio::test]
async fn the_key_file_reloads_while_serving() {
    let dir = temp_dir();
    let path = dir.join("api-keys");
    let first = generate_api_key("first").unwrap();
    let second = generate_api_key("second").unwrap();
    std::fs::write(&path, line(&first, "reader")).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let api_keys = ApiKeyAuthenticator::builder()
        .keys_file(&path)
        .poll_interval(Duration::from_millis(10))
        .on_reload(move |outcome| {
            let _ = tx.lock().unwrap().send(outcome.clone());
        })
        .build()
        .unwrap();
    let app = app(api_keys);
    let get = |key: &GeneratedApiKey| {
        with_headers(
            &Method::GET,
            "/api/documents/1",
            &[],
            &[(
                "authorization",
                &format!("ApiKey {}", key.key().expose_secret()),
            )],
        )
    };
    // The watcher reports each new version of the file; wait for the report, not for time.
    let next_event = || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a reload event")
    };

    assert_eq!(send(&app, get(&first)).await.0.status, StatusCode::OK);
    assert_eq!(
        send(&app, get(&second)).await.0.status,
        StatusCode::UNAUTHORIZED
    );

    // Rotation: the client gets a second key; both work.
    std::fs::write(
        &path,
        format!("{}{}", line(&first, "reader"), line(&second, "reader")),
    )
    .unwrap();
    assert_eq!(next_event(), ReloadOutcome::Reloaded);
    assert_eq!(send(&app, get(&first)).await.0.status, StatusCode::OK);
    assert_eq!(send(&app, get(&second)).await.0.status, StatusCode::OK);

    // A broken file is refused as a whole; the last good keys stay in force.
    std::fs::write(
        &path,
        format!("{}this is not a key line\n", line(&second, "reader")),
    )
    .unwrap();
    match next_event() {
        ReloadOutcome::Rejected(reason) => assert!(reason.contains("line 2"), "{reason}"),
        other => panic!("invalid file not refused: {other:?}"),
    }
    assert_eq!(send(&app, get(&first)).await.0.status, StatusCode::OK);

    // The old key is retired.
    std::fs::write(&path, line(&second, "reader")).unwrap();
    assert_eq!(next_event(), ReloadOutcome::Reloaded);
    assert_eq!(
        send(&app, get(&first)).await.0.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&app, get(&second)).await.0.status, StatusCode::OK);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `secure_api` example with `PORTCULLIS_API_KEYS_FILE`: keys work next to the dev tokens,
/// and a key added to the file while it runs is accepted.
#[tokio::test]
async fn the_example_reads_and_reloads_its_key_file() {
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
    let dir = temp_dir();
    let path = dir.join("api-keys");
    let admin = generate_api_key("ops-1").unwrap();
    let later = generate_api_key("later-1").unwrap();
    std::fs::write(
        &path,
        format!("# keys\n{}", line(&admin, "admin client=ops")),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(
        Command::new(example)
            .env("PORTCULLIS_ADDR", &addr)
            .env("PORTCULLIS_API_KEYS_FILE", &path)
            .env_remove("PORTCULLIS_ISSUER")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut up = false;
    for _ in 0..400 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the example answers on {base}");
    let call = |key: &GeneratedApiKey, path: &str| {
        http.get(format!("{base}{path}"))
            .header("x-api-key", key.key().expose_secret())
            .send()
    };
    let me = call(&admin, "/api/me").await.unwrap();
    assert_eq!(me.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&me.text().await.unwrap()).unwrap();
    assert_eq!(body["subject"], "ops");
    assert_eq!(body["kind"], "service");
    assert_eq!(body["auth_method"]["type"], "api_key");
    assert_eq!(body["auth_method"]["key_id"], "ops-1");
    assert_eq!(
        call(&admin, "/admin/routes")
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let refused = call(&later, "/api/me").await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let text = refused.text().await.unwrap();
    assert!(!text.contains(&later.key().expose_secret()[12..]));

    std::fs::write(
        &path,
        format!(
            "{}{}",
            line(&admin, "admin client=ops"),
            line(&later, "reader")
        ),
    )
    .unwrap();
    // The example polls every 5 s; wait (bounded) until the new key is in force.
    let mut accepted = false;
    for _ in 0..300 {
        if call(&later, "/api/documents/1")
            .await
            .unwrap()
            .status()
            .as_u16()
            == 200
        {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "the example reloads its key file");
    assert_eq!(
        call(&later, "/admin/routes")
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    // docs/runbooks/compromised-key.md, step 2: the old key's line is removed; once the file is
    // reloaded the old key is refused and the new one keeps working, without a restart.
    std::fs::write(&path, line(&later, "reader")).unwrap();
    let mut retired = false;
    for _ in 0..300 {
        if call(&admin, "/api/me").await.unwrap().status().as_u16() == 401 {
            retired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (The failed attempts of this loop and the one above count towards the example's lockout
    // of this client address, so later calls from here may get 429: the lockout working.)
    assert!(retired, "a removed key is refused after the reload");
    std::fs::remove_dir_all(&dir).unwrap();
}
