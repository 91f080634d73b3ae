//! No credential ever leaves the request: tokens, API keys, passwords, cookies and
//! `Authorization` values never appear in audit events (JSON-lines sink and `tracing`), in any
//! other `tracing` output, in metric labels, or in responses, for every rejection kind.
//!
//! One stack like the example's (per-IP rate limit, lockout, authentication, deny-by-default
//! routing) records into a JSON-lines buffer and the `tracing` sink at once, under a capturing
//! `tracing` subscriber and a local Prometheus recorder. Each case sends its secrets in every
//! place a client can put them (headers, cookies, query string, body) from its own address.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use axum::body::Body;
use http::{Method, Request, header};
use portcullis::audit::{Auditor, JsonLinesSink, TracingSink};
use portcullis::authn::AuthnLayer;
use portcullis::context::RequestContextLayer;
use portcullis::ratelimit::lockout::LockoutLayer;
use portcullis::ratelimit::{Quota, RateLimitKey, RateLimitLayer};
use serde_json::json;

use crate::audit::captured;
use crate::audit_log::Buffer;
use crate::support::{self, claims, leaked_piece, send, token, with_peer};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Strict {
    #[expect(dead_code, reason = "only deserialized")]
    title: String,
}

/// A handler whose body must be `{"title": "..."}` (422 otherwise).
async fn strict(axum::Json(_body): axum::Json<Strict>) -> http::StatusCode {
    http::StatusCode::NO_CONTENT
}

/// The secrets of one request and where it sends them.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    authorization: Vec<String>,
    body: Option<(&'static str, String)>,
    /// How many times to send it (rate limit and lockout need repeats).
    repeat: usize,
    /// The status of the last response.
    status: u16,
}

const API_KEY: &str = "pk_live_4f9a7c2e8b1d6035a9e4c7b2f1d8e6a3";
const PASSWORD: &str = "correct-horse-battery-staple-9271";
const COOKIE: &str = "sess_9c1e7a4b2d8f6e0a3c5b7d9f1e2a4c6b";
const QUERY_TOKEN: &str = "qtok_1b3d5f7a9c2e4f6a8b0d2e4f6a8c0e2d";

#[test]
fn no_secret_reaches_audit_events_traces_metrics_or_responses() {
    let reader = token("user-reader", &["reader"]);
    let editor = token("user-editor", &["editor"]);
    let mut expired_claims = claims("user-admin", &["admin"]);
    expired_claims["exp"] = json!(support::unix_now() - 3600);
    expired_claims["iat"] = json!(support::unix_now() - 7200);
    let expired = support::KEYS.signing.mint(&expired_claims);
    let forged = format!("{reader}x");
    let unknown_kid =
        support::hs256_token("no-such-kid", &[7u8; 64], &claims("user-x", &["admin"]));
    let alg_none = support::alg_none_token(&claims("user-admin", &["admin"]));
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"))
    };
    let big = "x".repeat(support::BODY_LIMIT + 10) + PASSWORD;

    let case = |name,
                method: Method,
                path: &str,
                authorization: &[&str],
                body: Option<(&'static str, String)>,
                repeat,
                status| Case {
        name,
        method,
        path: path.to_owned(),
        authorization: authorization.iter().map(|s| (*s).to_owned()).collect(),
        body,
        repeat,
        status,
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let mut cases = vec![
        case(
            "missing_credential",
            Method::GET,
            "/api/me",
            &[],
            None,
            1,
            401,
        ),
        case(
            "invalid_credential (expired)",
            Method::GET,
            "/api/me",
            &[&bearer(&expired)],
            None,
            1,
            401,
        ),
        case(
            "invalid_credential (forged)",
            Method::GET,
            "/api/me",
            &[&bearer(&forged)],
            None,
            1,
            401,
        ),
        case(
            "invalid_credential (unknown kid)",
            Method::GET,
            "/api/me",
            &[&bearer(&unknown_kid)],
            None,
            1,
            401,
        ),
        case(
            "invalid_credential (alg none)",
            Method::GET,
            "/api/me",
            &[&bearer(&alg_none)],
            None,
            1,
            401,
        ),
        case(
            "invalid_credential (basic)",
            Method::GET,
            "/api/me",
            &[&format!("Basic {basic}")],
            None,
            1,
            401,
        ),
        case(
            "invalid_credential (api key scheme)",
            Method::GET,
            "/api/me",
            &[&format!("ApiKey {API_KEY}")],
            None,
            1,
            401,
        ),
        case(
            "invalid_credential_request",
            Method::GET,
            "/api/me",
            &[&bearer(&reader), &bearer(&editor)],
            None,
            1,
            400,
        ),
        case(
            "forbidden",
            Method::DELETE,
            "/api/documents/1",
            &[&bearer(&reader)],
            None,
            1,
            403,
        ),
        case(
            "not_found",
            Method::GET,
            "/api/secret-place",
            &[&bearer(&reader)],
            None,
            1,
            404,
        ),
        case(
            "method_not_allowed",
            Method::PUT,
            "/api/me",
            &[&bearer(&reader)],
            None,
            1,
            405,
        ),
        case(
            "payload_too_large",
            Method::POST,
            "/api/documents",
            &[&bearer(&editor)],
            Some(("application/json", big)),
            1,
            413,
        ),
        case(
            "unsupported_media_type",
            Method::POST,
            "/api/documents",
            &[&bearer(&editor)],
            Some(("text/plain", PASSWORD.to_owned())),
            1,
            415,
        ),
        case(
            "bad_request (malformed JSON)",
            Method::POST,
            "/api/documents",
            &[&bearer(&editor)],
            Some(("application/json", format!("{{\"title\": \"{PASSWORD}"))),
            1,
            400,
        ),
        case(
            "validation_failed (wrong JSON shape)",
            Method::POST,
            "/api/strict",
            &[&bearer(&editor)],
            Some((
                "application/json",
                format!("{{\"title\": {{\"{PASSWORD}\": \"{API_KEY}\"}}}}"),
            )),
            1,
            422,
        ),
        case(
            "rate_limited",
            Method::GET,
            "/api/me",
            &[&bearer(&reader)],
            None,
            8,
            429,
        ),
        case(
            "locked_out",
            Method::GET,
            "/api/me",
            &[&bearer(&forged)],
            None,
            5,
            429,
        ),
        case(
            "success",
            Method::GET,
            "/api/me",
            &[&bearer(&reader)],
            None,
            1,
            200,
        ),
    ];
    let secrets: Vec<String> = [
        reader.clone(),
        editor.clone(),
        expired.clone(),
        forged.clone(),
        unknown_kid.clone(),
        alg_none.clone(),
        basic.clone(),
        API_KEY.to_owned(),
        PASSWORD.to_owned(),
        COOKIE.to_owned(),
        QUERY_TOKEN.to_owned(),
    ]
    .into();

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics_handle = recorder.handle();
    let buffer = Buffer::default();
    let sink = JsonLinesSink::writer(buffer.clone()).build().unwrap();
    let (responses, traces) = metrics::with_local_recorder(&recorder, || {
        captured(async {
            let auditor = Auditor::builder()
                .sink(sink.clone())
                .sink(TracingSink)
                .build()
                .unwrap();
            let per_ip = RateLimitLayer::builder("per-ip")
                .quota(Quota::per_minute(NonZeroU32::new(5).unwrap()))
                .key(RateLimitKey::client_ip())
                .build()
                .unwrap();
            let lockout = LockoutLayer::builder()
                .backoff_after(2)
                .lock_after(3)
                .build()
                .unwrap();
            let app = support::demo_routes()
                .route(
                    "/api/strict",
                    portcullis::routing::post(strict, portcullis::authz::authenticated()),
                )
                .into_router()
                .unwrap()
                .layer(axum::extract::DefaultBodyLimit::max(support::BODY_LIMIT))
                .layer(AuthnLayer::new(support::jwt()))
                .layer(lockout)
                .layer(per_ip)
                .layer(RequestContextLayer::new().with_auditor(auditor));
            let mut responses = Vec::new();
            for (i, case) in cases.iter_mut().enumerate() {
                let peer = SocketAddr::from(([10, 0, 1, u8::try_from(i).unwrap()], 40_000));
                let mut last = None;
                for _ in 0..case.repeat {
                    let mut builder = Request::builder()
                        .method(case.method.clone())
                        .uri(format!(
                            "{}?access_token={QUERY_TOKEN}&api_key={API_KEY}",
                            case.path
                        ))
                        .header(
                            header::COOKIE,
                            format!("session={COOKIE}; api_key={API_KEY}"),
                        )
                        .header("x-api-key", API_KEY);
                    for value in &case.authorization {
                        builder = builder.header(header::AUTHORIZATION, value);
                    }
                    let body = match &case.body {
                        Some((content_type, body)) => {
                            builder = builder.header(header::CONTENT_TYPE, *content_type);
                            Body::from(body.clone())
                        }
                        None => Body::empty(),
                    };
                    let (parts, bytes) =
                        send(&app, with_peer(builder.body(body).unwrap(), peer)).await;
                    last = Some((parts, bytes));
                }
                let (parts, bytes) = last.unwrap();
                assert_eq!(
                    parts.status.as_u16(),
                    case.status,
                    "{}: {}",
                    case.name,
                    support::body_text(&bytes)
                );
                let headers: String = parts
                    .headers
                    .iter()
                    .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())))
                    .collect();
                responses.push((
                    case.name,
                    format!("{headers}\n{}", support::body_text(&bytes)),
                ));
            }
            responses
        })
    });
    sink.shutdown().unwrap();
    let audit = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let metrics_text = metrics_handle.render();

    // The stack really recorded each kind: the places checked below are not empty.
    for kind in [
        "missing_credential",
        "invalid_credential",
        "invalid_credential_request",
        "forbidden",
        "not_found",
        "method_not_allowed",
        "payload_too_large",
        "unsupported_media_type",
        "bad_request",
        "validation_failed",
        "rate_limited",
        "locked_out",
    ] {
        assert!(
            audit.contains(&format!("\"reason_code\":\"{kind}\"")),
            "{kind} not audited: {audit}"
        );
        assert!(traces.contains(kind), "{kind} not traced");
        assert!(
            metrics_text.contains(&format!("kind=\"{kind}\"")),
            "{kind} not counted: {metrics_text}"
        );
    }
    assert!(
        metrics_text.contains("portcullis_authn_total"),
        "{metrics_text}"
    );

    for secret in &secrets {
        let shown = &secret[..secret.len().min(12)];
        if let Some(piece) = leaked_piece(&audit, secret) {
            panic!("audit events contain {piece:?} of secret {shown}…");
        }
        if let Some(piece) = leaked_piece(&traces, secret) {
            panic!("traces contain {piece:?} of secret {shown}…");
        }
        if let Some(piece) = leaked_piece(&metrics_text, secret) {
            panic!("metrics contain {piece:?} of secret {shown}…");
        }
        for (name, response) in &responses {
            if let Some(piece) = leaked_piece(response, secret) {
                panic!("the {name} response contains {piece:?} of secret {shown}…");
            }
        }
    }
    // The query string never reaches the audit trail, not even its parameter names.
    assert!(!audit.contains("access_token"), "{audit}");
    assert!(!traces.contains("access_token"));
}
