//! Response-future sizes of the layers on a request's path (through the public API only).
//!
//! Each layer's `call` returns its future by value, wrapping the inner one, and the server moves
//! the outermost into its in-flight slot: every byte a layer adds is copied once per enclosing
//! layer on every request. These tests keep the per-layer overhead bounded so it does not grow
//! back unnoticed.

use std::convert::Infallible;
use std::future::Future;
use std::mem::size_of_val;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use portcullis::context::RequestContextLayer;
use portcullis::headers::{CorsLayer, SecureHeadersLayer};
use portcullis::ratelimit::lockout::LockoutLayer;
use portcullis::ratelimit::{Quota, RateLimitKey, RateLimitLayer};
use tower::util::option_layer;
use tower::{Layer, Service};

/// A ready future as large as axum's router future (320 bytes on x86-64).
struct Inner {
    response: Option<Response<String>>,
    _pad: [u64; 25],
}

impl Future for Inner {
    type Output = Result<Response<String>, Infallible>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `Inner` is `Unpin`.
        let this = self.get_mut();
        Poll::Ready(Ok(this.response.take().unwrap_or_default()))
    }
}

#[derive(Clone)]
struct Fixed;

impl Service<Request<String>> for Fixed {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Inner;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<String>) -> Inner {
        Inner {
            response: Some(Response::new(String::new())),
            _pad: [0; 25],
        }
    }
}

fn future_size<S, ReqBody>(mut svc: S, req: Request<ReqBody>) -> usize
where
    S: Service<Request<ReqBody>>,
{
    size_of_val(&svc.call(req))
}

fn request() -> Request<String> {
    Request::new(String::new())
}

fn rate_limit(name: &str, key: RateLimitKey) -> RateLimitLayer {
    let n = NonZeroU32::new(1_000_000).unwrap();
    RateLimitLayer::builder(name)
        .quota(Quota::per_second(n))
        .key(key)
        .build()
        .unwrap()
}

fn cors() -> CorsLayer {
    CorsLayer::bearer_api()
        .allow_origin("https://app.example.com")
        .build()
        .unwrap()
}

/// The sizes, innermost first, of the example's stack around [`Fixed`] (authentication left
/// out: it adds only a discriminant).
fn sizes() -> Vec<(&'static str, usize)> {
    let inner = future_size(Fixed, request());
    let subject = rate_limit("per-subject", RateLimitKey::subject()).layer(Fixed);
    let lockout = LockoutLayer::builder()
        .build()
        .unwrap()
        .layer(subject.clone());
    let ip = rate_limit("per-ip", RateLimitKey::client_ip()).layer(lockout.clone());
    let edge = RequestContextLayer::new().layer(ip.clone());
    let no_cors = option_layer(None::<CorsLayer>).layer(edge.clone());
    let with_cors = cors().layer(edge.clone());
    let secure = SecureHeadersLayer::api().layer(no_cors.clone());
    vec![
        ("inner", inner),
        ("rate limit (subject)", future_size(subject, request())),
        ("lockout", future_size(lockout, request())),
        ("rate limit (ip)", future_size(ip, request())),
        ("edge", future_size(edge, request())),
        ("cors (enabled)", future_size(with_cors, request())),
        (
            "option_layer(cors) disabled",
            future_size(no_cors, request()),
        ),
        ("secure headers", future_size(secure, request())),
    ]
}

fn size(sizes: &[(&'static str, usize)], name: &str) -> usize {
    sizes
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, size)| *size)
        .unwrap()
}

#[test]
fn per_layer_overhead_stays_small() {
    let sizes = sizes();
    for (name, size) in &sizes {
        println!("{name:32} {size:5}");
    }
    let overhead = |outer: &str, inner: &str| size(&sizes, outer) - size(&sizes, inner);
    // A rate limit or lockout future adds what it does with the response: success headers as
    // numbers, or the lockout's key hash (was 80 bytes: two header values).
    assert!(overhead("rate limit (subject)", "inner") <= 32, "{sizes:?}");
    assert!(
        overhead("lockout", "rate limit (subject)") <= 32,
        "{sizes:?}"
    );
    assert!(overhead("rate limit (ip)", "lockout") <= 32, "{sizes:?}");
    // The edge keeps what its audit event and rendering need (was 272 bytes: a whole `Uri`,
    // the trace id as text, the resource metadata and the auditor), including the arrival time
    // by the system clock, which stamps the event without a second clock read (+8 bytes).
    assert!(overhead("edge", "rate limit (ip)") <= 176, "{sizes:?}");
    // CORS boxes tower-http's future: on or off, it adds little to the inner future (was 176).
    assert!(overhead("cors (enabled)", "edge") <= 16, "{sizes:?}");
    assert!(
        overhead("option_layer(cors) disabled", "edge") <= 16,
        "{sizes:?}"
    );
    assert!(
        overhead("secure headers", "option_layer(cors) disabled") <= 32,
        "{sizes:?}"
    );
}
