//! Service-to-service calls end to end (issue 6): service A gets client-credentials tokens from
//! the real OpenID Provider (`tests/oidc-provider`) and calls service B through
//! `BearerTokenLayer`; B authenticates A with the crate's `JwtAuthenticator` (OIDC discovery,
//! remote JWKS). Once over HTTP with a hyper-util client, once over gRPC with a tonic channel.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis::Security;
use portcullis::authz::has_role;
use portcullis::client::{BearerTokenLayer, ClientCredentials, TokenError, TokenErrorKind};
use portcullis::routing::MethodPolicies;
use secrecy::SecretString;
use serde_json::Value;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::{ServiceBuilder, ServiceExt};

use crate::real_idp::{CLIENT_ID, CLIENT_SECRET, Idp};
use crate::support;

/// Service A's token source against the provider's token endpoint (from discovery).
fn token_source(token_endpoint: &str, secret: &str) -> ClientCredentials {
    ClientCredentials::builder(token_endpoint)
        .client_credentials(CLIENT_ID, SecretString::from(secret))
        .scope("documents")
        .resource("urn:portcullis:demo")
        .insecure_allow_http() // the provider runs on loopback
        .build()
        .unwrap()
}

/// Service B: the demo routes behind `Security` with the provider's JWT authenticator.
async fn serve_b(jwt: portcullis::authn::jwt::JwtAuthenticator) -> SocketAddr {
    let security = Security::builder().authenticator(jwt).build().unwrap();
    let app = support::demo_routes()
        .into_router()
        .unwrap()
        .layer(security);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    addr
}

#[tokio::test]
async fn service_a_calls_service_b_with_a_client_credentials_token() {
    let Some(idp) = Idp::start().await else {
        return;
    };
    let oidc = idp.provider(Duration::from_secs(30));
    oidc.start().await.expect("discovery");
    let token_endpoint = oidc
        .metadata()
        .and_then(|m| m.token_endpoint.clone())
        .expect("the provider advertises a token endpoint");
    let b = serve_b(oidc.authenticator()).await;

    let tokens = token_source(&token_endpoint, CLIENT_SECRET);
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let a = ServiceBuilder::new()
        .layer(BearerTokenLayer::new(tokens.clone()))
        .service(hyper);
    let get = |path: &str| {
        Request::get(format!("http://{b}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    let me = a.clone().oneshot(get("/api/me")).await.expect("A calls B");
    assert_eq!(me.status(), StatusCode::OK);
    let body = me.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["subject"], CLIENT_ID);
    assert_eq!(body["roles"], serde_json::json!(["admin"]));
    // The provider's token carries role admin: B's admin route answers too.
    let routes = a.clone().oneshot(get("/admin/routes")).await.unwrap();
    assert_eq!(routes.status(), StatusCode::OK);
    assert_eq!(
        tokens.requests_sent(),
        1,
        "the token is cached across calls"
    );

    // Without the layer B refuses the same call.
    let bare = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let anonymous = bare.request(get("/api/me")).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // A wrong client secret: the provider refuses, the call fails before reaching B.
    let wrong = token_source(&token_endpoint, "not-the-client-secret-0123456789");
    let a = ServiceBuilder::new()
        .layer(BearerTokenLayer::new(wrong.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let err = a.oneshot(get("/api/me")).await.unwrap_err();
    let err = err.downcast_ref::<TokenError>().expect("a token error");
    assert_eq!(err.kind(), TokenErrorKind::Rejected);
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert!(!err.to_string().contains("not-the-client-secret"));
    assert_eq!(wrong.requests_sent(), 1, "refusals are not retried");
}

#[tokio::test]
async fn a_tonic_channel_carries_the_token_to_a_secured_grpc_service() {
    let Some(idp) = Idp::start().await else {
        return;
    };
    let oidc = idp.provider(Duration::from_secs(30));
    oidc.start().await.expect("discovery");
    let token_endpoint = oidc
        .metadata()
        .and_then(|m| m.token_endpoint.clone())
        .expect("token endpoint");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let security = Security::builder()
        .authenticator(oidc.authenticator())
        .build()
        .unwrap();
    let policies = MethodPolicies::new()
        .with_rbac(support::rbac())
        .method("/grpc.health.v1.Health/Check", has_role("reader"))
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(security)
            .layer(policies)
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let check = || HealthCheckRequest {
        service: String::new(),
    };

    let with_token = ServiceBuilder::new()
        .layer(BearerTokenLayer::new(token_source(
            &token_endpoint,
            CLIENT_SECRET,
        )))
        .service(channel.clone());
    let answer = HealthClient::new(with_token)
        .check(check())
        .await
        .expect("an authenticated call");
    assert_eq!(answer.into_inner().status(), ServingStatus::Serving);

    let refused = HealthClient::new(channel).check(check()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
