//! Criterion benchmarks of input validation (issue 7).
//!
//! Groups:
//!
//! - `hygiene`: `check_path` on a typical API path and on a long percent-encoded one, and the
//!   whole layer's check of a request with 12 headers;
//! - `safe_url`: parsing and checking a typical https URL, and refusing an encoded loopback
//!   literal;
//! - `extract`: `POST` of the example's document body through a router, with plain axum
//!   `Json<Value>` (baseline) and with `Valid<Json<NewDocument>>` (depth scan, path-tracking
//!   deserialization, garde rules, `SafeUrl`).
//!
//! Run with `cargo bench --features full --bench validate`.

#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::hint::black_box;

use axum::body::Body;
use axum::routing::post;
use axum::{Json, Router};
use criterion::Criterion;
use http::Request;
use portcullis::validate::hygiene::{RequestHygieneLayer, check_path};
use portcullis::validate::{BoundedString, SafeUrl, Valid, parses_as};
use tower::ServiceExt;

fn hygiene(c: &mut Criterion) {
    let mut group = c.benchmark_group("hygiene");
    group.bench_function("check_path/typical", |b| {
        b.iter(|| check_path(black_box("/api/v1/documents/12345/attachments/report.pdf")))
    });
    let long = format!("/files/{}", "%C3%A9t%C3%A9-".repeat(40));
    group.bench_function("check_path/encoded_600B", |b| {
        b.iter(|| check_path(black_box(&long)))
    });
    let layer = RequestHygieneLayer::new();
    let mut req = Request::get("/api/documents/1?include=owner")
        .body(())
        .unwrap();
    for i in 0..12 {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-header-{i}").as_bytes()).unwrap(),
            http::HeaderValue::from_static("some-ordinary-header-value"),
        );
    }
    group.bench_function("layer_check/12_headers", |b| {
        b.iter(|| layer.check(black_box(&req)).is_ok())
    });
    group.finish();
}

fn safe_url(c: &mut Criterion) {
    let mut group = c.benchmark_group("safe_url");
    group.bench_function("accept", |b| {
        b.iter(|| black_box("https://docs.example.com/reports/2024/q3?lang=en").parse::<SafeUrl>())
    });
    group.bench_function("refuse_encoded_loopback", |b| {
        b.iter(|| black_box("https://0x7f.0.0.1/admin").parse::<SafeUrl>())
    });
    group.finish();
}

#[derive(serde::Deserialize, garde::Validate)]
#[serde(deny_unknown_fields)]
struct NewDocument {
    #[garde(custom(parses_as::<BoundedString<1, 200>>))]
    title: String,
    #[garde(custom(parses_as::<SafeUrl>))]
    url: String,
}

fn extract(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let plain = Router::new().route(
        "/documents",
        post(|Json(v): Json<serde_json::Value>| async move {
            v["title"].as_str().unwrap_or("").to_owned()
        }),
    );
    let valid = Router::new().route(
        "/documents",
        post(|Valid(Json(d)): Valid<Json<NewDocument>>| async move { d.title }),
    );
    let body =
        r#"{"title": "Quarterly report", "url": "https://docs.example.com/reports/2024/q3"}"#;
    let request = || {
        Request::post("/documents")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let mut group = c.benchmark_group("extract");
    for (name, app) in [("axum_json", plain), ("valid_json", valid)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let response = rt.block_on(app.clone().oneshot(request())).unwrap();
                assert_eq!(response.status(), 200);
            })
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    hygiene(&mut c);
    safe_url(&mut c);
    extract(&mut c);
    c.final_summary();
}
