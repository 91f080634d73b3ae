//! Audit events, their sinks, the tamper-evident file, metrics and alerts.
//!
//! Every request that passes through
//! [`RequestContextLayer`](crate::context::RequestContextLayer) produces exactly one
//! [`AuditEvent`] (successes may be sampled, refusals never are); the authorization guard adds
//! an `authz.decision` record per decision, and revocations, key rotations and alerts add
//! their own. The schema (version [`SCHEMA_VERSION`]) is documented field by field in
//! `docs/audit-events.md`.
//!
//! Events go through an [`Auditor`] to its sinks:
//!
//! - [`TracingSink`] (the default): the `tracing` target [`TARGET`] (`portcullis::audit`),
//!   `WARN` for refusals, `INFO` otherwise.
//! - [`JsonLinesSink`]: JSON lines on stdout or in a file, written by a background thread fed
//!   through a bounded queue, so a request never waits on disk I/O nor formats JSON. Overflow
//!   follows an explicit [`Overflow`] policy. A file is hash-chained ([`chain`]) and checked by
//!   [`verify_file`] (and `cargo run --example audit_verify -- FILE`).
//!
//! ```
//! use http::{Request, StatusCode};
//! use portcullis::audit::{Auditor, JsonLinesSink};
//! use portcullis::context::RequestContextLayer;
//! use portcullis::rejection::Rejection;
//! use tower::{ServiceExt, Layer, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
//! # #[derive(Clone)] struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
//! # impl std::io::Write for Buf {
//! #     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.0.lock().unwrap().extend_from_slice(b); Ok(b.len()) }
//! #     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
//! # }
//! let sink = JsonLinesSink::writer(Buf(lines.clone())).build().unwrap();
//! let auditor = Auditor::builder().sink(sink.clone()).build().unwrap();
//! let svc = RequestContextLayer::new()
//!     .with_auditor(auditor)
//!     .layer(service_fn(|_req: Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(Rejection::forbidden("role missing").into_deferred_response::<String>())
//!     }));
//! let response = svc.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::FORBIDDEN);
//! sink.shutdown().unwrap();
//! let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
//! let event: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
//! assert_eq!(event["event"], "authz.deny");
//! assert_eq!(event["reason"], "role missing");
//! # });
//! ```
//!
//! No field can hold a credential: the query string is dropped, headers are never recorded,
//! the principal is recorded by identifiers only, and rejection details are written by
//! portcullis without token material.
//!
//! # Deployment caveat
//! The JSON-lines file is only as trustworthy as its storage: the hash chain shows that lines
//! were altered, removed or reordered, but an attacker who can write the file can also replace
//! it entirely with a new, self-consistent chain unless it is keyed ([`ChainKey`]) and the key
//! is kept away from the host, or the last hash printed at shutdown is recorded elsewhere.
//! Ship the file off the host (a log collector) and keep the key out of the service's reach
//! where possible. With [`Overflow::Block`] a stalled disk stalls requests; with
//! [`Overflow::Drop`] it loses events (counted and logged as `audit.loss`).

pub mod alert;
mod auditor;
pub mod chain;
mod event;
pub mod metrics;
#[cfg(feature = "webhook")]
mod webhook;
mod writer;

pub use alert::{Alert, AlertDetector, AlertDetectorBuilder, AlertHook, Signal};
pub(crate) use auditor::record_in;
pub use auditor::{
    AuditSink, Auditor, AuditorBuilder, Sampling, TracingSink, global, install_global,
};
pub use chain::{
    ChainKey, VerifyError, VerifyErrorKind, VerifyOptions, VerifyReport, verify, verify_file,
};
pub use event::{AuditEvent, DetailValue, EventType, SCHEMA_VERSION, Severity, TraceId};
#[cfg(feature = "webhook")]
pub use webhook::{WebhookHook, WebhookHookBuilder};
pub use writer::{
    DEFAULT_CAPACITY, JsonLinesSink, JsonLinesSinkBuilder, Overflow, ShutdownReport, SinkStats,
};

/// The `tracing` target of audit events.
pub const TARGET: &str = "portcullis::audit";

/// Truncates `path` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(path: &str, max: usize) -> &str {
    if path.len() <= max {
        return path;
    }
    let mut end = max;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}
