//! The request-path cost of one audit event: the JSON-lines sink (queue hand-off; formatting,
//! hashing and I/O happen on the writer thread) against the `tracing` JSON formatter writing
//! to /dev/null (what the example did before), and the writer thread's own cost per line.
//!
//! ```text
//! cargo bench --bench audit --all-features
//! ```

#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use portcullis::audit::{AuditEvent, Auditor, EventType, JsonLinesSink, Overflow, TracingSink};
use portcullis::context::RequestId;
use portcullis::principal::{AuthMethod, Principal};

fn event() -> AuditEvent {
    let principal = Principal::builder(
        "user-1234",
        AuthMethod::Jwt {
            kid: Some("key-2026-01".into()),
            alg: "RS256".into(),
        },
    )
    .issuer("https://idp.example.com")
    .roles(["reader"])
    .build();
    let mut event = AuditEvent::new(EventType::AuthzAllow)
        .with_request_id(RequestId::generate())
        .with_principal(principal)
        .with_client_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)))
        .with_route("/api/documents/{id}");
    event.method = Some(http::Method::GET);
    event.status = Some(200);
    event.duration = Some(Duration::from_micros(84));
    event
}

fn enqueue(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit_enqueue");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    // Drop policy with a large queue: measures the hand-off, never a wait on the writer.
    let sink = JsonLinesSink::writer(std::io::sink())
        .capacity(NonZeroUsize::new(1 << 16).unwrap_or(NonZeroUsize::MIN))
        .overflow(Overflow::Drop)
        .build()
        .unwrap();
    let auditor = Auditor::builder().sink(sink.clone()).build().unwrap();
    let template = event();
    group.bench_function("json_lines_sink", |b| {
        b.iter(|| auditor.record(black_box(template.clone())));
    });
    let report = sink.shutdown().unwrap();
    eprintln!(
        "json_lines_sink: {} written, {} dropped",
        report.stats.written, report.stats.dropped
    );

    {
        use tracing_subscriber::filter::{LevelFilter, Targets};
        use tracing_subscriber::layer::{Layer, SubscriberExt};
        let devnull = Arc::new(std::fs::File::create("/dev/null").unwrap());
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(devnull)
                .with_filter(
                    Targets::new().with_target(portcullis::audit::TARGET, LevelFilter::INFO),
                ),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        let auditor = Auditor::builder().sink(TracingSink).build().unwrap();
        group.bench_function("tracing_json_devnull", |b| {
            b.iter(|| auditor.record(black_box(template.clone())));
        });
    }

    group.bench_function("format_line_on_writer_thread", |b| {
        b.iter(|| black_box(template.to_json()));
    });
    // What `JsonLinesSink` does on the request path: format into a buffer it reuses.
    let mut line = Vec::with_capacity(1024);
    group.bench_function("format_line_into_reused_buffer", |b| {
        b.iter(|| {
            line.clear();
            black_box(&template).write_json(&mut line);
            black_box(line.len())
        });
    });
    group.finish();
}

// `criterion_group!` would generate an undocumented `pub fn`, which the crate's `missing_docs`
// lint refuses; this is what `criterion_group!` + `criterion_main!` expand to.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    enqueue(&mut criterion);
    criterion.final_summary();
}
