//! Criterion benchmarks of the HTTP-hardening layers (issue 7): the per-request cost each adds
//! to a no-op service.
//!
//! Group `headers`:
//!
//! - `baseline`: the no-op service alone (a request in, a 200 out);
//! - `secure_headers_api`: [`SecureHeadersLayer::api`] (the `Security` default);
//! - `secure_headers_html`: [`SecureHeadersLayer::html`], which draws a nonce from the OS and
//!   formats the policy per response;
//! - `cors_actual_request`: [`CorsLayer`] on a request from an allowed origin;
//! - `cors_preflight`: the same layer answering a preflight;
//! - `csrf_fetch_metadata`: [`CsrfLayer`] passing a `Sec-Fetch-Site: same-origin` POST from a
//!   browser that has no token cookie yet (so a token is minted: OS randomness, HMAC, cookie);
//! - `csrf_double_submit`: the same layer checking a token (no Fetch Metadata): cookie parsing,
//!   constant-time comparison and HMAC-SHA-256 verification.
//!
//! Run with `cargo bench --features full --bench headers`.

#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::convert::Infallible;
use std::hint::black_box;

use criterion::Criterion;
use http::{Method, Request, Response};
use portcullis::headers::{CorsLayer, CsrfLayer, CsrfSecret, SecureHeadersLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

fn noop() -> impl Service<
    Request<String>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>>,
> + Clone {
    service_fn(|_req: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) })
}

fn bench<S>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: S,
    req: impl Fn() -> Request<String>,
) where
    S: Service<Request<String>, Response = Response<String>, Error = Infallible> + Clone,
{
    c.bench_function(name, |b| {
        b.to_async(rt).iter(|| {
            let svc = svc.clone();
            let req = req();
            async move { black_box(svc.oneshot(req).await.unwrap()) }
        })
    });
}

fn headers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let get = || Request::new(String::new());
    bench(c, &rt, "headers/baseline", noop(), get);
    bench(
        c,
        &rt,
        "headers/secure_headers_api",
        SecureHeadersLayer::api().layer(noop()),
        get,
    );
    bench(
        c,
        &rt,
        "headers/secure_headers_html",
        SecureHeadersLayer::html().layer(noop()),
        get,
    );

    let cors = CorsLayer::bearer_api()
        .allow_origin("https://app.example.com")
        .build()
        .unwrap();
    let from_app = || {
        Request::builder()
            .header("origin", "https://app.example.com")
            .body(String::new())
            .unwrap()
    };
    bench(
        c,
        &rt,
        "headers/cors_actual_request",
        cors.layer(noop()),
        from_app,
    );
    let preflight = || {
        Request::builder()
            .method(Method::OPTIONS)
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .body(String::new())
            .unwrap()
    };
    bench(
        c,
        &rt,
        "headers/cors_preflight",
        cors.layer(noop()),
        preflight,
    );

    let csrf = CsrfLayer::builder(CsrfSecret::generate().unwrap())
        .build()
        .unwrap();
    let same_origin = || {
        Request::builder()
            .method(Method::POST)
            .header("sec-fetch-site", "same-origin")
            .header("cookie", "sid=abc")
            .body(String::new())
            .unwrap()
    };
    bench(
        c,
        &rt,
        "headers/csrf_fetch_metadata",
        csrf.layer(noop()),
        same_origin,
    );

    // A token the layer issued, as a browser would send it back.
    let issued = rt
        .block_on(csrf.layer(noop()).oneshot(Request::new(String::new())))
        .unwrap();
    let set_cookie = issued.headers()["set-cookie"].to_str().unwrap().to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    let token = pair.split_once('=').unwrap().1.to_owned();
    let cookie = format!("sid=abc; {pair}");
    let double_submit = move || {
        Request::builder()
            .method(Method::POST)
            .header("cookie", cookie.as_str())
            .header("x-csrf-token", token.as_str())
            .body(String::new())
            .unwrap()
    };
    let checked = rt
        .block_on(csrf.layer(noop()).oneshot(double_submit()))
        .unwrap();
    assert_eq!(checked.status(), 200, "the benchmarked token must pass");
    bench(
        c,
        &rt,
        "headers/csrf_double_submit",
        csrf.layer(noop()),
        double_submit,
    );
}

// `criterion_group!` would generate an undocumented `pub fn`, which the crate's `missing_docs`
// lint refuses; this is what `criterion_group!` + `criterion_main!` expand to.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    headers(&mut criterion);
    criterion.final_summary();
}
