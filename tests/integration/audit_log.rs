//! The JSON-lines audit sink and its hash-chained file: schema of the per-request events, no
//! loss under load and on shutdown, counted loss with the drop policy, chain continuation
//! across restarts, detection of altered, removed, reordered and truncated lines (through the
//! library and through `examples/audit_verify.rs`), and the `secure_api` example end to end.

use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use portcullis::Security;
use portcullis::audit::{
    AuditEvent, Auditor, ChainKey, EventType, JsonLinesSink, Overflow, VerifyErrorKind,
    VerifyOptions, verify_file,
};
use portcullis::context::{RequestContextLayer, RequestId};
use secrecy::SecretSlice;
use serde_json::Value;

use crate::support::{self, request, send, token, with_peer};

/// A fresh directory under the target's temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-{name}-{}-{}",
            std::process::id(),
            RequestId::generate()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Collects what the sink writes.
#[derive(Clone, Default)]
pub(crate) struct Buffer(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    pub(crate) fn events(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect()
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.concat()).unwrap();
}

/// The demo app recording into `auditor`.
fn demo_app_audited(auditor: Auditor) -> axum::Router {
    let security = Security::builder()
        .authenticator(support::jwt())
        .request_context(RequestContextLayer::new().with_auditor(auditor))
        .build()
        .unwrap();
    support::demo_routes()
        .into_router()
        .unwrap()
        .layer(axum::extract::DefaultBodyLimit::max(support::BODY_LIMIT))
        .layer(security)
}

#[tokio::test]
async fn per_request_events_follow_the_schema() {
    let buffer = Buffer::default();
    let sink = JsonLinesSink::writer(buffer.clone()).build().unwrap();
    let auditor = Auditor::builder().sink(sink.clone()).build().unwrap();
    let app = demo_app_audited(auditor);
    let reader = token("user-reader", &["reader"]);
    let peer = SocketAddr::from(([198, 51, 100, 7], 5000));

    let mut allowed = with_peer(
        request(&Method::GET, "/api/documents/3?secret=x", &[&reader]),
        peer,
    );
    allowed.headers_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let (ok, _) = send(&app, allowed).await;
    assert_eq!(ok.status, 200);
    let (denied, body) = send(
        &app,
        with_peer(
            request(&Method::DELETE, "/api/documents/3", &[&reader]),
            peer,
        ),
    )
    .await;
    assert_eq!(denied.status, 403);
    sink.shutdown().unwrap();

    let events = buffer.events();
    let edge: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("status").is_some())
        .collect();
    assert_eq!(edge.len(), 2, "{events:?}");
    let ok_event = edge[0];
    assert_eq!(ok_event["v"], 1);
    assert_eq!(ok_event["event"], "authz.allow");
    assert_eq!(ok_event["level"], "INFO");
    assert_eq!(
        ok_event["request_id"],
        ok.headers["x-request-id"].to_str().unwrap()
    );
    assert_eq!(ok_event["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ok_event["subject"], "user-reader");
    assert_eq!(ok_event["principal_kind"], "user");
    assert_eq!(ok_event["issuer"], support::ISSUER);
    assert_eq!(ok_event["auth_method"], "jwt");
    assert_eq!(ok_event["key_id"], support::ED_KID);
    assert_eq!(ok_event["client_ip"], "198.51.100.7");
    assert_eq!(ok_event["method"], "GET");
    assert_eq!(ok_event["route"], "/api/documents/{id}");
    assert_eq!(ok_event["status"], 200);
    assert!(ok_event["duration_us"].is_u64());
    assert!(ok_event["ts"].as_str().unwrap().ends_with('Z'));
    // A routed success carries the template only: no raw path, never the query string.
    assert!(ok_event.get("path").is_none(), "{ok_event}");

    let deny = edge[1];
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(deny["event"], "authz.deny");
    assert_eq!(deny["level"], "WARN");
    assert_eq!(deny["reason_code"], "forbidden");
    assert_eq!(deny["policy_ids"], serde_json::json!(["has_role(admin)"]));
    assert_eq!(deny["decision_id"], problem["decision_id"]);
    assert!(deny.get("trace_id").is_none());
    // The decision record went to the same auditor.
    let decision = events
        .iter()
        .find(|e| e["event"] == "authz.decision" && e["details"]["allowed"] == false)
        .expect("decision record");
    assert_eq!(decision["decision_id"], problem["decision_id"]);
    assert_eq!(decision["details"]["allowed"], false);
    assert_eq!(decision["reason_code"], "no_rule_permits");
    assert_eq!(decision["subject"], "user-reader");
    for event in &events {
        assert!(!event.to_string().contains(&reader[..20]), "{event}");
        assert!(!event.to_string().contains("secret=x"), "{event}");
    }
}

#[test]
fn hundred_thousand_events_under_load_are_all_in_the_file_after_shutdown() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 12_500;
    let dir = TempDir::new("audit-load");
    let path = dir.0.join("audit.jsonl");
    // A small queue with the blocking policy: the writer is constantly behind, producers wait.
    let sink = JsonLinesSink::file(&path)
        .capacity(NonZeroUsize::new(64).unwrap())
        .overflow(Overflow::Block)
        .build()
        .unwrap();
    let auditor = Auditor::builder().sink(sink.clone()).build().unwrap();
    // Each line is formatted on its producer's thread; the writer chains them in queue order.
    // Every event's expected line (without the chain fields), by request id.
    let expected: Vec<(String, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let auditor = auditor.clone();
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let id = RequestId::generate();
                            let mut event = AuditEvent::new(EventType::AuthzAllow)
                                .with_request_id(id)
                                .with_route("/api/documents/{id}")
                                .with_detail("thread", t as u64);
                            if i % 100 == 0 {
                                // Lines of very different lengths, some beyond what the sink
                                // keeps buffers for.
                                event = event.with_reason("r".repeat(i % 7_000));
                            }
                            event.status = Some(200);
                            let line = event.to_json();
                            auditor.record(event);
                            (id.to_string(), line)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let report = sink.shutdown().unwrap();
    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(report.stats.written, total);
    assert_eq!(report.stats.dropped, 0);
    assert_eq!(report.lines, Some(total + 1));

    let verified = verify_file(&path, &VerifyOptions::default()).unwrap();
    assert_eq!(verified.lines, total + 1);
    assert!(verified.sealed);
    assert_eq!(Some(verified.last_hash), report.last_hash);
    let written: std::collections::HashMap<String, String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let id = v["request_id"].as_str()?.to_owned();
            // The event's own fields: everything before the chain fields, closed.
            let fields = &line[..line.rfind(",\"seq\":").unwrap()];
            Some((id, format!("{fields}}}")))
        })
        .collect();
    assert_eq!(written.len(), expected.len());
    for (id, line) in &expected {
        assert_eq!(written.get(id), Some(line), "line of request {id}");
    }
    // Recording after shutdown is a counted loss, not a panic or a hang.
    auditor.record(AuditEvent::new(EventType::AuthzDeny));
    assert_eq!(sink.stats().dropped, 1);
}

/// A writer that blocks its first write until released, to fill the queue deterministically.
struct Gate {
    entered: Option<mpsc::Sender<()>>,
    release: mpsc::Receiver<()>,
    inner: Buffer,
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(entered) = self.entered.take() {
            entered.send(()).unwrap();
            self.release.recv().unwrap();
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn overflow_with_the_drop_policy_is_counted_and_written_into_the_log() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let buffer = Buffer::default();
    let sink = JsonLinesSink::writer(Gate {
        entered: Some(entered_tx),
        release: release_rx,
        inner: buffer.clone(),
    })
    .capacity(NonZeroUsize::new(4).unwrap())
    .overflow(Overflow::Drop)
    .build()
    .unwrap();
    let auditor = Auditor::builder().sink(sink.clone()).build().unwrap();
    let deny = || AuditEvent::new(EventType::AuthzDeny);
    auditor.record(deny());
    // The writer is now stuck in its first write; the queue takes 4 more, then drops.
    entered.recv().unwrap();
    for _ in 0..10 {
        auditor.record(deny());
    }
    let stats = sink.stats();
    assert_eq!(stats.enqueued, 5);
    assert_eq!(stats.dropped, 6);
    release.send(()).unwrap();
    let report = sink.shutdown().unwrap();
    assert_eq!(report.stats.written, 5);
    assert_eq!(report.stats.dropped, 6);
    let events = buffer.events();
    assert_eq!(
        events.iter().filter(|e| e["event"] == "authz.deny").count(),
        5
    );
    let loss: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "audit.loss")
        .collect();
    assert_eq!(loss.len(), 1, "{events:?}");
    assert_eq!(loss[0]["details"]["dropped"], 6);
    assert_eq!(loss[0]["level"], "WARN");
}

fn write_events(path: &Path, key: Option<ChainKey>, n: usize) -> portcullis::audit::ShutdownReport {
    let mut builder = JsonLinesSink::file(path);
    if let Some(key) = key {
        builder = builder.hmac_key(key);
    }
    let sink = builder.build().unwrap();
    let auditor = Auditor::builder().sink(sink.clone()).build().unwrap();
    for i in 0..n {
        auditor.record(
            AuditEvent::new(EventType::AuthnFailure)
                .with_reason("expired")
                .with_detail("n", i as u64),
        );
    }
    sink.shutdown().unwrap()
}

#[test]
fn a_restart_continues_the_chain_of_the_existing_file() {
    let dir = TempDir::new("audit-resume");
    let path = dir.0.join("audit.jsonl");
    write_events(&path, None, 3);
    let second = write_events(&path, None, 2);
    // 3 events + seal, then 2 events + seal, one chain.
    assert_eq!(second.lines, Some(7));
    let report = verify_file(&path, &VerifyOptions::default()).unwrap();
    assert_eq!((report.lines, report.last_seq), (7, 7));
    assert_eq!(Some(report.last_hash), second.last_hash);

    // A writer that stopped without sealing (crash): the next one says so in the log.
    let mut without_seal = lines(&path);
    without_seal.pop();
    write_lines(&path, &without_seal);
    write_events(&path, None, 1);
    let after = lines(&path);
    let first_new: Value = serde_json::from_str(&after[6]).unwrap();
    assert_eq!(first_new["event"], "audit.loss");
    assert_eq!(first_new["reason_code"], "unclean_restart");
    assert_eq!(
        verify_file(&path, &VerifyOptions::default()).unwrap().lines,
        9
    );

    // A file that ends inside a line is not appended to.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(b"{\"v\":1,\"event\":\"authz.al").unwrap();
    drop(file);
    let err = JsonLinesSink::file(&path).build().unwrap_err();
    assert!(err.to_string().contains("incomplete"), "{err}");
}

#[test]
fn verification_names_the_first_altered_removed_reordered_or_truncated_line() {
    let dir = TempDir::new("audit-tamper");
    let path = dir.0.join("audit.jsonl");
    write_events(&path, None, 20);
    let intact = lines(&path);
    assert_eq!(intact.len(), 21);
    let check = |lines: &[String]| {
        let tampered = dir.0.join("tampered.jsonl");
        write_lines(&tampered, lines);
        let err = verify_file(&tampered, &VerifyOptions::default()).unwrap_err();
        (err.kind(), err.line())
    };

    let mut altered = intact.clone();
    altered[6] = altered[6].replace("expired", "expires");
    assert_eq!(check(&altered), (VerifyErrorKind::Altered, 7));

    let mut removed = intact.clone();
    removed.remove(9);
    assert_eq!(check(&removed), (VerifyErrorKind::Removed, 10));

    let mut swapped = intact.clone();
    swapped.swap(11, 12);
    assert_eq!(check(&swapped), (VerifyErrorKind::Reordered, 12));

    assert_eq!(check(&intact[..15]), (VerifyErrorKind::Truncated, 16));
}

#[test]
fn keyed_files_verify_only_with_their_key() {
    let dir = TempDir::new("audit-keyed");
    let path = dir.0.join("audit.jsonl");
    let key_file = dir.0.join("audit.key");
    std::fs::write(&key_file, [0x5a_u8; 32]).unwrap();
    let key = ChainKey::from_file(&key_file, None).unwrap();
    write_events(&path, Some(key.clone()), 4);
    assert_eq!(
        verify_file(&path, &VerifyOptions::default().with_key(key))
            .unwrap()
            .lines,
        5
    );
    assert_eq!(
        verify_file(&path, &VerifyOptions::default())
            .unwrap_err()
            .kind(),
        VerifyErrorKind::Key
    );
    let other = ChainKey::new(
        ChainKey::from_file(&key_file, None).unwrap().id(),
        SecretSlice::from(vec![0x11_u8; 32]),
    )
    .unwrap();
    assert_eq!(
        verify_file(&path, &VerifyOptions::default().with_key(other))
            .unwrap_err()
            .kind(),
        VerifyErrorKind::Altered
    );
}

/// The path of an example binary built by `cargo test` (next to the test binary's `deps`).
pub(crate) fn example(name: &str) -> Option<PathBuf> {
    let path = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples").join(name)))
        .filter(|path| path.exists());
    if path.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the {name} example must be built in CI (`cargo test` builds it)"
        );
        eprintln!("\n!!! SKIPPING: build the {name} example with `cargo test` !!!\n");
    }
    path
}

/// Runs `audit_verify` on `file`: (exit code, stdout).
pub(crate) fn audit_verify(file: &Path, key_file: Option<&Path>) -> Option<(i32, String)> {
    let mut command = Command::new(example("audit_verify")?);
    command
        .arg(file)
        .env_remove("PORTCULLIS_AUDIT_HMAC_KEY_FILE");
    if let Some(key_file) = key_file {
        command.env("PORTCULLIS_AUDIT_HMAC_KEY_FILE", key_file);
    }
    let output = command.output().unwrap();
    Some((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

#[test]
fn audit_verify_example_exit_codes() {
    let dir = TempDir::new("audit-verify-example");
    let path = dir.0.join("audit.jsonl");
    write_events(&path, None, 5);
    let Some((code, out)) = audit_verify(&path, None) else {
        return;
    };
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("6 lines verified"), "{out}");
    let mut tampered = lines(&path);
    tampered.swap(1, 2);
    write_lines(&path, &tampered);
    let (code, out) = audit_verify(&path, None).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("line 2: out of order"), "{out}");
}

/// The `secure_api` example in dev mode with a keyed audit file, stopped with SIGTERM.
pub(crate) struct Example {
    child: std::process::Child,
    pub(crate) base: String,
    pub(crate) tokens: std::collections::HashMap<String, String>,
    pub(crate) http: reqwest::Client,
}

impl Example {
    pub(crate) async fn start(envs: &[(&str, &Path)]) -> Option<Example> {
        use std::io::BufRead;
        let exe = example("secure_api")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = Command::new(exe);
        command
            .env("PORTCULLIS_ADDR", &addr)
            .env_remove("REDIS_URL")
            .env_remove("PORTCULLIS_ISSUER")
            .env_remove("PORTCULLIS_AUDIT_FILE")
            .env_remove("PORTCULLIS_AUDIT_HMAC_KEY_FILE")
            .env_remove("PORTCULLIS_CEDAR_POLICIES")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some((name, token)) = line.split_once("_TOKEN=") {
                    let _ = tx.send((name.to_lowercase(), token.to_owned()));
                }
            }
        });
        let mut tokens = std::collections::HashMap::new();
        while tokens.len() < 3 {
            let (name, token) = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("dev tokens");
            tokens.insert(name, token);
        }
        let example = Example {
            child,
            base: format!("http://{addr}"),
            tokens,
            http: reqwest::Client::new(),
        };
        let mut up = false;
        for _ in 0..200 {
            if example.get("/health", None).await.is_some() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "the example answers on {}", example.base);
        Some(example)
    }

    /// GET `path` as `who` (a dev token name): (status, body).
    pub(crate) async fn get(&self, path: &str, who: Option<&str>) -> Option<(u16, String)> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(who) = who {
            req = req.bearer_auth(&self.tokens[who]);
        }
        let response = req.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    /// POST JSON to `path` as `who`: the status.
    pub(crate) async fn post(&self, path: &str, who: &str, body: &Value) -> u16 {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.tokens[who])
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The `jti` claim of a dev token.
    pub(crate) fn jti(&self, who: &str) -> String {
        use base64::Engine;
        let payload = self.tokens[who].split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["jti"].as_str().unwrap().to_owned()
    }

    /// SIGTERM, then waits for a clean exit.
    pub(crate) fn stop(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "graceful shutdown: {exit:?}");
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `secure_api` with `PORTCULLIS_AUDIT_FILE` and `PORTCULLIS_AUDIT_HMAC_KEY_FILE`: every
/// request is one line of a keyed chain that `audit_verify` accepts, the file is sealed on
/// SIGTERM, and no token reaches it; `/metrics` is for admins only.
#[tokio::test]
async fn the_example_writes_a_keyed_chain_that_audit_verify_accepts() {
    let dir = TempDir::new("audit-example");
    let file = dir.0.join("audit.jsonl");
    let key_file = dir.0.join("audit.key");
    std::fs::write(&key_file, [0x42_u8; 32]).unwrap();
    let Some(example) = Example::start(&[
        ("PORTCULLIS_AUDIT_FILE", &file),
        ("PORTCULLIS_AUDIT_HMAC_KEY_FILE", &key_file),
    ])
    .await
    else {
        return;
    };
    assert_eq!(example.get("/api/me", Some("reader")).await.unwrap().0, 200);
    assert_eq!(example.get("/api/documents/1", None).await.unwrap().0, 401);
    let (status, metrics) = example.get("/metrics", Some("admin")).await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("portcullis_authn_total"), "{metrics}");
    assert!(metrics.contains("method=\"jwt\""), "{metrics}");
    assert_eq!(
        example.get("/metrics", Some("reader")).await.unwrap().0,
        403
    );
    assert_eq!(example.get("/metrics", None).await.unwrap().0, 401);
    let tokens: Vec<String> = example.tokens.values().cloned().collect();
    example.stop();

    let (code, out) = audit_verify(&file, Some(&key_file)).unwrap();
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&file).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        out.contains(&format!("{} lines verified, sealed", events.len())),
        "{out}"
    );
    let requests = events.iter().filter(|e| e.get("status").is_some()).count();
    // Health checks while waiting for the server, plus the six requests above.
    assert!(requests >= 6, "{text}");
    assert_eq!(events[0]["event"], "config.loaded");
    assert_eq!(events.last().unwrap()["event"], "audit.sealed");
    assert!(events.iter().all(|e| e["chain_key"].is_string()));
    for token in &tokens {
        assert!(
            support::leaked_piece(&text, token).is_none(),
            "token in the audit file"
        );
    }
    // Without the key the keyed log is refused.
    let (code, out) = audit_verify(&file, None).unwrap();
    assert_eq!(code, 1, "{out}");
}

/// The webhook hook POSTs each alert as JSON, off the caller's thread; plain http needs the
/// `insecure_allow_http` opt-in; a dead endpoint is a counted failure, not an error.
#[tokio::test]
async fn webhook_hook_posts_alerts() {
    use portcullis::audit::{AlertDetector, Signal, WebhookHook};
    use std::num::NonZeroU32;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, String)>(8);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send((content_type, body)).await;
                http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    assert!(
        WebhookHook::builder(&url).build().is_err(),
        "http needs the opt-in"
    );
    assert!(WebhookHook::builder("ftp://example.com/x").build().is_err());
    let hook = WebhookHook::builder(&url)
        .insecure_allow_http()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let detector = AlertDetector::builder()
        .rule(
            Signal::Forbidden,
            NonZeroU32::new(2).unwrap(),
            Duration::from_secs(60),
        )
        .hook(hook.clone())
        .build()
        .unwrap();
    let auditor = Auditor::builder()
        .sink(|_: &AuditEvent| {})
        .alerts(detector)
        .build()
        .unwrap();
    for _ in 0..2 {
        let mut event = AuditEvent::new(EventType::AuthzDeny);
        event.status = Some(403);
        auditor.record(event);
    }
    let (content_type, body) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the webhook was called")
        .unwrap();
    assert_eq!(content_type, "application/json");
    let alert: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(alert["alert"], "forbidden_spike");
    assert_eq!(alert["count"], 2);
    assert_eq!(alert["threshold"], 2);
    assert_eq!(hook.failures(), 0);

    // An endpoint that is gone: the POST fails and is counted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let dead = WebhookHook::builder(dead_url)
        .insecure_allow_http()
        .build()
        .unwrap();
    let detector = AlertDetector::builder()
        .rule(Signal::Lockout, NonZeroU32::MIN, Duration::from_secs(60))
        .hook(dead.clone())
        .build()
        .unwrap();
    let auditor = Auditor::builder()
        .sink(|_: &AuditEvent| {})
        .alerts(detector)
        .build()
        .unwrap();
    auditor.record(AuditEvent::new(EventType::LockoutLocked));
    for _ in 0..600 {
        if dead.failures() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.failures(), 1);
}

/// The metrics of docs/metrics.md, through the process-wide Prometheus recorder (the writer
/// thread records on the global recorder). The only test that installs one.
#[tokio::test]
async fn metrics_cover_authentication_decisions_jwks_and_the_audit_queue() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();

    // Authentication, decisions and rejections through the demo stack.
    let buffer = Buffer::default();
    let sink = JsonLinesSink::writer(buffer.clone()).build().unwrap();
    let auditor = Auditor::builder().sink(sink.clone()).build().unwrap();
    let app = demo_app_audited(auditor);
    let reader = token("user-reader", &["reader"]);
    assert_eq!(
        send(&app, request(&Method::GET, "/api/me", &[&reader]))
            .await
            .0
            .status,
        200
    );
    let (denied, _) = send(
        &app,
        request(&Method::DELETE, "/api/documents/1", &[&reader]),
    )
    .await;
    assert_eq!(denied.status, 403);
    let forged = format!("{reader}x");
    assert_eq!(
        send(&app, request(&Method::GET, "/api/me", &[&forged]))
            .await
            .0
            .status,
        401
    );
    sink.shutdown().unwrap();

    // A JWKS endpoint that does not answer.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", closed.local_addr().unwrap());
    drop(closed);
    let jwks = portcullis::authn::jwt::RemoteJwks::builder(url)
        .insecure_allow_http()
        .build()
        .unwrap();
    assert!(jwks.refresh().await.is_err());

    let text = handle.render();
    let has = |needle: &str| assert!(text.contains(needle), "{needle} missing:\n{text}");
    has("portcullis_authn_total{method=\"jwt\",result=\"success\"}");
    has("portcullis_authn_total{method=\"none\",result=\"failure\"}");
    has("portcullis_authn_verification_seconds");
    has("portcullis_authz_decisions_total{policy=\"has_role(admin)\",decision=\"deny\"}");
    has("portcullis_rejections_total{kind=\"forbidden\"}");
    has("portcullis_rejections_total{kind=\"invalid_credential\"}");
    has("portcullis_jwks_refresh_total{result=\"failure\"}");
    has("portcullis_audit_events_total{event=\"authz.allow\"}");
    has("portcullis_audit_events_written_total");
    has("portcullis_audit_queue_depth");
    // Labels carry no subject, path or token.
    assert!(!text.contains("user-reader"));
    assert!(!text.contains("/api/"));
    assert!(support::leaked_piece(&text, &reader).is_none());
}
