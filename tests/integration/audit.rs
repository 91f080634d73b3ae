//! The audit trail: one event per request on `portcullis::audit`, with the private detail the
//! client never sees, and never the token.
//!
//! Events are captured with a JSON `fmt` layer writing into memory. The layer is installed once,
//! globally, and writes an event only on a thread that is capturing: each test drives the app on
//! a current-thread runtime, so every event of the test is written on the capturing thread. (A
//! subscriber installed per test with `tracing::subscriber::with_default` lost events: tests
//! running in parallel without it recompute the callsites' cached interest and maximum level.)

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::Method;
use portcullis::audit::TARGET;
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{
    self, Refusal, check_refusal, check_success, claims, leaked_piece, request, send, token,
    unix_now, with_peer,
};

thread_local! {
    /// Where this thread's events go while it captures.
    static CAPTURE: std::cell::RefCell<Option<Arc<Mutex<Vec<u8>>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Appends everything written to the current thread's capture buffer, if any.
struct Capture;

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(buffer) = &*capture.borrow() {
                buffer
                    .lock()
                    .expect("capture buffer")
                    .extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs, once, the global subscriber that writes the events of capturing threads.
fn install_capture_subscriber() {
    use tracing_subscriber::Layer as _;
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(|| Capture)
            // Dynamic: the answer depends on the thread, so no callsite may cache it.
            .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|_, _| {
                CAPTURE.with(|capture| capture.borrow().is_some())
            }));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other global subscriber in the integration tests");
    });
}

/// Runs `future` on a current-thread runtime with a JSON subscriber capturing every event (all
/// targets, all levels); returns its output and the captured text.
pub(crate) fn captured<F: Future>(future: F) -> (F::Output, String) {
    install_capture_subscriber();
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    /// Stops capturing on this thread, also when the test panics.
    struct Stop;
    impl Drop for Stop {
        fn drop(&mut self) {
            CAPTURE.with(|capture| *capture.borrow_mut() = None);
        }
    }
    CAPTURE.with(|capture| *capture.borrow_mut() = Some(buffer.clone()));
    let stop = Stop;
    let output = runtime.block_on(future);
    drop(stop);
    let text = String::from_utf8(buffer.lock().expect("capture buffer").clone())
        .expect("JSON lines are UTF-8");
    (output, text)
}

/// The per-request audit events (written once per request at the edge), without the
/// `authz.decision` records that policies write beside them.
pub(crate) fn audit_events(text: &str) -> Vec<Value> {
    all_audit_events(text)
        .into_iter()
        .filter(|event| event.get("status").is_some())
        .collect()
}

/// Every event on the audit target, decision records included.
pub(crate) fn all_audit_events(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("one JSON object per line"))
        .filter(|event| event["target"] == TARGET)
        .collect()
}

/// The event-specific `details` (a JSON object text on the `tracing` target).
pub(crate) fn details(event: &Value) -> Value {
    serde_json::from_str(event["details"].as_str().expect("details")).expect("details JSON")
}

/// The one audit event carrying `request_id`.
fn event_for<'a>(events: &'a [Value], request_id: &str) -> &'a Value {
    let matching: Vec<&Value> = events
        .iter()
        .filter(|e| e["request_id"] == request_id)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "exactly one audit event for request {request_id}: {matching:?}"
    );
    matching[0]
}

fn request_id(parts: &http::response::Parts) -> String {
    parts.headers["x-request-id"]
        .to_str()
        .expect("ASCII request id")
        .to_owned()
}

/// Asserts that no captured line holds the token or any 20-character piece of it.
fn assert_no_token(text: &str, tokens: &[&str]) {
    for token in tokens {
        assert!(
            leaked_piece(text, token).is_none(),
            "the audit output contains credential material: {text}"
        );
    }
}

const PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 40_001);

#[test]
fn invalid_token_is_one_authn_failure_event_with_the_private_reason() {
    let now = unix_now();
    let mut expired = claims("user-admin", &["admin"]);
    expired["iat"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);
    let token = support::KEYS.signing.mint(&expired);

    let ((parts, body), text) = captured(async {
        let app = support::demo_app();
        let req = with_peer(
            request(&Method::GET, "/api/documents/7", &[&token]),
            SocketAddr::from(PEER),
        );
        send(&app, req).await
    });
    check_refusal(&parts, &body, Refusal::InvalidToken, &[&token]).unwrap();

    let events = audit_events(&text);
    assert_eq!(events.len(), 1, "one request, one audit event: {events:?}");
    let event = event_for(&events, &request_id(&parts));
    assert_eq!(event["event"], "authn.failure");
    assert_eq!(event["reason_code"], "invalid_credential");
    assert_eq!(event["level"], "WARN");
    assert_eq!(event["method"], "GET");
    assert_eq!(event["status"], 401);
    assert_eq!(event["client_ip"], "127.0.0.1");
    assert_eq!(event["path"], "/api/documents/7");
    let reason = event["reason"].as_str().expect("reason");
    assert!(reason.contains("expired"), "private reason: {reason}");
    // Refused before routing and before any principal existed.
    assert!(event.get("route").is_none(), "{event}");
    assert!(event.get("subject").is_none(), "{event}");
    assert_no_token(&text, &[&token]);
}

#[test]
fn forbidden_request_names_the_subject_the_route_template_and_the_policy() {
    let token = token("user-reader", &["reader"]);
    let ((parts, body), text) = captured(async {
        let app = support::demo_app();
        let req = with_peer(
            request(&Method::DELETE, "/api/documents/7", &[&token]),
            SocketAddr::from(PEER),
        );
        send(&app, req).await
    });
    check_refusal(&parts, &body, Refusal::Forbidden, &[&token]).unwrap();

    let events = audit_events(&text);
    assert_eq!(events.len(), 1, "one request, one audit event: {events:?}");
    let event = event_for(&events, &request_id(&parts));
    assert_eq!(event["event"], "authz.deny");
    // The policy's decision record is written beside it, linked by the decision id that the
    // client also sees in the problem body.
    let problem: Value = serde_json::from_slice(&body).unwrap();
    let decision_id = problem["decision_id"]
        .as_str()
        .expect("decision id in the body");
    assert_eq!(event["decision_id"], decision_id);
    let records: Vec<Value> = all_audit_events(&text)
        .into_iter()
        .filter(|e| e["event"] == "authz.decision")
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["decision_id"], decision_id);
    assert_eq!(details(&records[0])["allowed"], false);
    assert_eq!(records[0]["reason_code"], "no_rule_permits");
    assert_eq!(records[0]["policy_ids"], "has_role(admin)");
    assert_eq!(records[0]["route"], "/api/documents/{id}");
    assert_eq!(records[0]["request_id"], request_id(&parts).as_str());
    assert_eq!(event["reason_code"], "forbidden");
    assert_eq!(event["method"], "DELETE");
    assert_eq!(event["status"], 403);
    assert_eq!(event["client_ip"], "127.0.0.1");
    assert_eq!(event["subject"], "user-reader");
    assert_eq!(event["auth_method"], "jwt");
    assert_eq!(
        event["route"], "/api/documents/{id}",
        "the template, not the raw path"
    );
    assert_eq!(event["policy_ids"], "has_role(admin)");
    let reason = event["reason"].as_str().expect("reason");
    assert!(
        reason.contains("has_role(admin)"),
        "private reason: {reason}"
    );
    assert_no_token(&text, &[&token]);
}

#[test]
fn every_request_is_audited_exactly_once() {
    let reader = token("user-reader", &["reader"]);
    let admin = token("user-admin", &["admin"]);
    let ((anonymous, two_headers, allowed), text) = captured(async {
        let app = support::demo_app();
        // No ConnectInfo on these: the event then has no client address.
        let anonymous = send(&app, request(&Method::GET, "/api/me", &[])).await;
        let two_headers = send(
            &app,
            request(&Method::GET, "/health", &[reader.as_str(), admin.as_str()]),
        )
        .await;
        let allowed = send(
            &app,
            with_peer(
                request(&Method::GET, "/api/documents/3", &[&reader]),
                SocketAddr::from(PEER),
            ),
        )
        .await;
        (anonymous, two_headers, allowed)
    });
    check_refusal(&anonymous.0, &anonymous.1, Refusal::MissingCredential, &[]).unwrap();
    check_refusal(
        &two_headers.0,
        &two_headers.1,
        Refusal::InvalidRequest,
        &[&reader, &admin],
    )
    .unwrap();
    check_success(&allowed.0, &allowed.1, http::StatusCode::OK).unwrap();

    let events = audit_events(&text);
    assert_eq!(events.len(), 3, "three requests, three events: {events:?}");

    let event = event_for(&events, &request_id(&anonymous.0));
    assert_eq!(event["event"], "authz.deny");
    assert_eq!(event["reason_code"], "missing_credential");
    assert_eq!(event["route"], "/api/me");
    assert_eq!(event["status"], 401);
    assert!(event.get("client_ip").is_none(), "{event}");
    assert!(event.get("subject").is_none(), "{event}");

    let event = event_for(&events, &request_id(&two_headers.0));
    assert_eq!(event["event"], "authn.failure");
    assert_eq!(event["reason_code"], "invalid_credential_request");
    assert_eq!(event["status"], 400);
    assert!(
        event["reason"]
            .as_str()
            .is_some_and(|r| r.contains("more than one")),
        "{event}"
    );

    let event = event_for(&events, &request_id(&allowed.0));
    assert_eq!(event["event"], "authz.allow");
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["status"], 200);
    assert_eq!(event["subject"], "user-reader");
    assert_eq!(event["route"], "/api/documents/{id}");
    assert_eq!(event["client_ip"], "127.0.0.1");
    assert!(event.get("reason_code").is_none(), "{event}");
    assert!(event.get("reason").is_none(), "{event}");

    assert_no_token(&text, &[&reader, &admin]);
}

/// Loading a policy file is audited with the digest of its text; a refused file is not.
#[test]
fn policy_file_loads_are_audited_with_their_digest() {
    use sha2::Digest;
    const TEXT: &str = r#"
[roles.reader]
[[routes]]
method = "GET"
path = "/documents/{id}"
policy = "role:reader"
"#;
    let ((), text) = captured(async {
        portcullis::authz::config::PolicyFile::from_toml(TEXT).expect("valid file");
        assert!(
            portcullis::authz::config::PolicyFile::from_toml("[roles.x]\ninherits = 1").is_err()
        );
    });
    let loaded: Vec<Value> = all_audit_events(&text)
        .into_iter()
        .filter(|e| e["event"] == "config.loaded")
        .collect();
    assert_eq!(loaded.len(), 1, "{text}");
    let digest: String = sha2::Sha256::digest(TEXT.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(details(&loaded[0])["sha256"], digest.as_str());
    assert_eq!(loaded[0]["reason_code"], "policy_file");
}
