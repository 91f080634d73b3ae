//! Outbound service-to-service calls (feature `outbound`): an OAuth 2.0 client-credentials
//! token source and a tower layer that attaches its token to outgoing requests.
//!
//! - [`ClientCredentials`] gets tokens from the authorization server's token endpoint (RFC 6749
//!   §4.4), with the client secret held in a [`SecretString`](secrecy::SecretString):
//!   - **cached** until shortly before expiry (`expires_in`; 5 min when absent);
//!   - **refreshed ahead**: once inside [`refresh_ahead`](ClientCredentialsBuilder::refresh_ahead)
//!     of expiry (60 s, at most half the lifetime), the next caller starts one background
//!     refresh and keeps using the current token;
//!   - **single flight**: when there is no usable token, one caller fetches and the others wait
//!     for it; when that fetch fails, the waiters get its error instead of each trying again;
//!   - **bounded**: connect timeout 2 s, request timeout 5 s, 3 attempts with 200 ms doubling
//!     backoff, only for connection failures, timeouts, 5xx and 429; 400/401 are not retried;
//!     answers larger than 64 KiB are refused; redirects are not followed; `https` only.
//! - [`BearerTokenLayer`] wraps any `tower::Service<http::Request<B>>` (a hyper-util client, a
//!   tonic `Channel`, an axum router in tests): it sets `Authorization: Bearer <token>` (marked
//!   sensitive, replacing any existing `Authorization`) and fails the call with a
//!   [`TokenError`] (boxed, see [`BoxError`]) when no token can be obtained; the request is then
//!   never sent.
//!
//! ```
//! use std::convert::Infallible;
//! use axum::{Json, Router, routing::post};
//! use http::{Request, Response};
//! use portcullis::client::{BearerTokenLayer, ClientCredentials};
//! use secrecy::SecretString;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // A stand-in token endpoint on loopback.
//! let idp = Router::new().route("/token", post(|| async {
//!     Json(serde_json::json!({"access_token": "t0k3n", "token_type": "Bearer", "expires_in": 300}))
//! }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! tokio::spawn(async move { axum::serve(listener, idp).await });
//!
//! let tokens = ClientCredentials::builder(format!("http://{addr}/token"))
//!     .client_credentials("service-a", SecretString::from("client-secret"))
//!     .scope("documents")
//!     .insecure_allow_http() // loopback test server only
//!     .build()
//!     .unwrap();
//!
//! // Any tower service of http::Request<B>: here one that returns the header it got.
//! let client = ServiceBuilder::new()
//!     .layer(BearerTokenLayer::new(tokens))
//!     .service(service_fn(|req: Request<String>| async move {
//!         let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
//!         Ok::<_, Infallible>(Response::new(auth))
//!     }));
//! let response = client.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.body(), "Bearer t0k3n");
//! # });
//! ```
//!
//! With a hyper-util client: `ServiceBuilder::new().layer(layer).service(hyper_client)`. With
//! tonic: `ServiceBuilder::new().layer(layer).service(channel)`, then
//! `MyServiceClient::new(that)` (the generated client accepts any service whose error converts
//! into a boxed error). reqwest has no request-level tower integration: ask the source directly,
//! `request.header(AUTHORIZATION, tokens.get().await?.authorization()?)`.
//!
//! # Deployment caveat
//! Keep the token endpoint `https`: the client secret is sent with every token request. A token
//! is used until shortly before its `expires_in`; a token revoked early keeps being sent until
//! then unless you call [`ClientCredentials::invalidate`] when the receiver answers 401. The
//! client secret is as powerful as the service itself: load it from a file
//! ([`secrets`](crate::secrets)), not from the command line.

mod layer;
mod token;

pub use layer::{BearerToken, BearerTokenLayer, BoxError, ResponseFuture};
pub use token::{
    AccessToken, ClientAuth, ClientCredentials, ClientCredentialsBuilder, TokenError,
    TokenErrorKind, TokenFuture, TokenSource,
};

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    use axum::Router;
    use axum::extract::State;
    use axum::response::IntoResponse;
    use http::{Request, Response, StatusCode};
    use secrecy::{ExposeSecret, SecretString};
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::clock::ManualClock;

    const SECRET: &str = "client-secret-for-tests-0123456789";

    /// A token endpoint that answers from a script (then 200 with a fresh token), counts its
    /// hits, records the last request, and can be held until released.
    #[derive(Clone, Default)]
    struct Endpoint {
        script: Arc<Mutex<VecDeque<(StatusCode, String)>>>,
        hits: Arc<AtomicU64>,
        last: Arc<Mutex<String>>,
        gate: Arc<Mutex<Option<Arc<tokio::sync::Semaphore>>>>,
    }

    async fn token_endpoint(
        State(e): State<Endpoint>,
        headers: http::HeaderMap,
        body: String,
    ) -> impl IntoResponse {
        let n = e.hits.fetch_add(1, Ordering::SeqCst) + 1;
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        *e.last.lock().unwrap() = format!("{auth}|{body}");
        let gate = e.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            let _ = gate.acquire().await.unwrap();
        }
        let scripted = e.script.lock().unwrap().pop_front();
        let (status, body) = scripted.unwrap_or_else(|| {
            (
                StatusCode::OK,
                format!(r#"{{"access_token":"token-{n}","token_type":"Bearer","expires_in":600}}"#),
            )
        });
        (status, [("content-type", "application/json")], body)
    }

    async fn start(e: &Endpoint) -> SocketAddr {
        let app = Router::new()
            .route("/token", axum::routing::post(token_endpoint))
            .with_state(e.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn source(addr: SocketAddr, clock: &ManualClock) -> ClientCredentials {
        ClientCredentials::builder(format!("http://{addr}/token"))
            .client_credentials("svc a", SecretString::from(SECRET))
            .scope("documents")
            .scope("audit")
            .resource("urn:api")
            .retry(3, Duration::from_millis(10))
            .clock(Arc::new(clock.clone()))
            .insecure_allow_http()
            .build()
            .unwrap()
    }

    fn clock() -> ManualClock {
        ManualClock::at(UNIX_EPOCH + Duration::from_secs(1_000_000))
    }

    #[tokio::test]
    async fn caches_and_sends_a_well_formed_request() {
        let e = Endpoint::default();
        let addr = start(&e).await;
        let tokens = source(addr, &clock());
        let t = tokens.get().await.unwrap();
        assert_eq!(t.expose_secret(), "token-1");
        assert_eq!(tokens.get().await.unwrap().expose_secret(), "token-1");
        assert_eq!(e.hits.load(Ordering::SeqCst), 1);
        let last = e.last.lock().unwrap().clone();
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("svc+a:{SECRET}"));
        assert_eq!(
            last,
            format!(
                "Basic {basic}|grant_type=client_credentials&scope=documents+audit&resource=urn%3Aapi"
            )
        );
        assert!(!format!("{tokens:?}{t:?}").contains(SECRET));
        assert!(!format!("{t:?}").contains("token-1"));
    }

    #[tokio::test]
    async fn client_secret_post_puts_credentials_in_the_body() {
        let e = Endpoint::default();
        let addr = start(&e).await;
        let tokens = ClientCredentials::builder(format!("http://{addr}/token"))
            .client_credentials("svc", SecretString::from(SECRET))
            .client_auth(ClientAuth::Post)
            .insecure_allow_http()
            .build()
            .unwrap();
        tokens.get().await.unwrap();
        let last = e.last.lock().unwrap().clone();
        assert_eq!(
            last,
            format!("|grant_type=client_credentials&client_id=svc&client_secret={SECRET}")
        );
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let e = Endpoint::default();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *e.gate.lock().unwrap() = Some(gate.clone());
        let addr = start(&e).await;
        let tokens = source(addr, &clock());
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let tokens = tokens.clone();
                tokio::spawn(async move { tokens.get().await })
            })
            .collect();
        // The endpoint holds the first request until every caller is queued behind it.
        while e.hits.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(100);
        for caller in callers {
            assert_eq!(caller.await.unwrap().unwrap().expose_secret(), "token-1");
        }
        assert_eq!(e.hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refreshes_ahead_of_expiry_in_the_background() {
        let e = Endpoint::default();
        let addr = start(&e).await;
        let clock = clock();
        let tokens = source(addr, &clock);
        assert_eq!(tokens.get().await.unwrap().expose_secret(), "token-1");
        clock.advance(Duration::from_secs(539)); // refresh at 600 - 60
        assert_eq!(tokens.get().await.unwrap().expose_secret(), "token-1");
        assert_eq!(e.hits.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(2));
        // Due: this caller still gets the current token, a refresh starts behind it.
        assert_eq!(tokens.get().await.unwrap().expose_secret(), "token-1");
        let mut refreshed = None;
        for _ in 0..10_000 {
            let t = tokens.get().await.unwrap();
            if t.expose_secret() != "token-1" {
                refreshed = Some(t);
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(refreshed.unwrap().expose_secret(), "token-2");
        assert_eq!(e.hits.load(Ordering::SeqCst), 2);
        // Past expiry without a refresh: fetched synchronously.
        clock.advance(Duration::from_secs(10_000));
        assert_eq!(tokens.get().await.unwrap().expose_secret(), "token-3");
    }

    #[tokio::test]
    async fn transient_failures_are_retried_a_bounded_number_of_times() {
        let e = Endpoint::default();
        e.script.lock().unwrap().extend([
            (StatusCode::SERVICE_UNAVAILABLE, String::new()),
            (StatusCode::TOO_MANY_REQUESTS, String::new()),
        ]);
        let addr = start(&e).await;
        let tokens = source(addr, &clock());
        assert_eq!(tokens.get().await.unwrap().expose_secret(), "token-3");
        assert_eq!(e.hits.load(Ordering::SeqCst), 3);

        let e = Endpoint::default();
        e.script
            .lock()
            .unwrap()
            .extend((0..5).map(|_| (StatusCode::BAD_GATEWAY, format!("upstream said {SECRET}"))));
        let addr = start(&e).await;
        let tokens = source(addr, &clock());
        let err = tokens.get().await.unwrap_err();
        assert_eq!(err.kind(), TokenErrorKind::Unavailable);
        assert_eq!(e.hits.load(Ordering::SeqCst), 3, "three attempts, no more");
        assert!(err.to_string().contains("HTTP 502"), "{err}");
        assert!(!err.to_string().contains(SECRET));
    }

    #[tokio::test]
    async fn refusals_are_not_retried_and_name_only_standard_codes() {
        let cases = [
            (
                StatusCode::UNAUTHORIZED,
                format!(r#"{{"error":"invalid_client","error_description":"bad {SECRET}"}}"#),
                "HTTP 401 Unauthorized (invalid_client)",
            ),
            (
                StatusCode::BAD_REQUEST,
                format!(r#"{{"error":"{SECRET}"}}"#),
                "HTTP 400 Bad Request",
            ),
        ];
        for (status, body, want) in cases {
            let e = Endpoint::default();
            e.script.lock().unwrap().push_back((status, body));
            let addr = start(&e).await;
            let tokens = source(addr, &clock());
            let err = tokens.get().await.unwrap_err();
            assert_eq!(err.kind(), TokenErrorKind::Rejected);
            assert!(err.to_string().ends_with(want), "{err}");
            assert!(!format!("{err}{err:?}").contains(SECRET));
            assert_eq!(e.hits.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn unusable_answers_are_refused() {
        let bodies = [
            r#"{"access_token":"x","token_type":"DPoP","expires_in":60}"#,
            r#"{"token_type":"Bearer"}"#,
            r#"{"access_token":"x","token_type":"Bearer","expires_in":"soon"}"#,
            r#"{"access_token":"bad\nvalue","token_type":"Bearer"}"#,
            "not json",
        ];
        for body in bodies {
            let e = Endpoint::default();
            e.script
                .lock()
                .unwrap()
                .push_back((StatusCode::OK, body.to_owned()));
            let addr = start(&e).await;
            let err = source(addr, &clock()).get().await.unwrap_err();
            assert_eq!(err.kind(), TokenErrorKind::InvalidResponse, "{body}: {err}");
        }
    }

    #[tokio::test]
    async fn waiters_share_a_failed_fetch() {
        let e = Endpoint::default();
        e.script.lock().unwrap().extend((0..30).map(|_| {
            (
                StatusCode::UNAUTHORIZED,
                r#"{"error":"invalid_client"}"#.to_owned(),
            )
        }));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *e.gate.lock().unwrap() = Some(gate.clone());
        let addr = start(&e).await;
        let tokens = source(addr, &clock());
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let tokens = tokens.clone();
                tokio::spawn(async move { tokens.get().await })
            })
            .collect();
        while e.hits.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(100);
        for caller in callers {
            assert_eq!(
                caller.await.unwrap().unwrap_err().kind(),
                TokenErrorKind::Rejected
            );
        }
        assert_eq!(e.hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_layer_fails_the_call_cleanly_without_a_token() {
        let e = Endpoint::default();
        e.script
            .lock()
            .unwrap()
            .push_back((StatusCode::UNAUTHORIZED, String::new()));
        let addr = start(&e).await;
        let calls = Arc::new(AtomicU64::new(0));
        let seen = calls.clone();
        let client = ServiceBuilder::new()
            .layer(BearerTokenLayer::new(source(addr, &clock())))
            .service(service_fn(move |req: Request<()>| {
                seen.fetch_add(1, Ordering::SeqCst);
                let auth = req.headers()["authorization"].clone();
                async move { Ok::<_, Infallible>(Response::new(auth)) }
            }));
        let err = client.clone().oneshot(Request::new(())).await.unwrap_err();
        let token_error = err.downcast_ref::<TokenError>().unwrap();
        assert_eq!(token_error.kind(), TokenErrorKind::Rejected);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "the request was not sent");

        // The endpoint recovers: the next call carries a token, marked sensitive, replacing
        // whatever the caller had set.
        let mut req = Request::new(());
        req.headers_mut()
            .insert("authorization", "Basic old".parse().unwrap());
        let response = client.oneshot(req).await.unwrap();
        assert_eq!(response.body(), "Bearer token-2");
        assert!(response.body().is_sensitive());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn configuration_errors() {
        let base = || {
            ClientCredentials::builder("https://idp.example/token")
                .client_credentials("a", SecretString::from("s"))
        };
        assert!(base().build().is_ok());
        assert!(
            ClientCredentials::builder("http://idp.example/token")
                .client_credentials("a", SecretString::from("s"))
                .build()
                .is_err()
        );
        assert!(
            ClientCredentials::builder("https://u:p@idp.example/token")
                .client_credentials("a", SecretString::from("s"))
                .build()
                .is_err()
        );
        assert!(
            ClientCredentials::builder("https://idp.example/token")
                .build()
                .is_err()
        );
        assert!(base().retry(0, Duration::ZERO).build().is_err());
        assert!(base().param("grant_type", "password").build().is_err());
        assert!(base().timeout(Duration::ZERO).build().is_err());
    }
}
