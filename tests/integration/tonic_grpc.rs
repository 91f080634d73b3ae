//! A real tonic server behind the portcullis stack, called by a real tonic client over loopback.
//!
//! The service is `grpc.health.v1.Health` from `tonic-health`. `Security` authenticates
//! (authentication alone lets anonymous callers through); [`MethodPolicies`] authorizes:
//! `Check` needs the `reader` role (with the demo's role hierarchy), `Watch` is not listed and
//! therefore refused.
//!
//! Server and client share one current-thread runtime inside the audit capture of
//! [`crate::audit`], so the test also sees the audit event of every call (client address from
//! tonic's connection info, gRPC status). The server is shut down before the test ends.

use portcullis::Security;
use portcullis::authz::has_role;
use portcullis::routing::MethodPolicies;
use serde_json::{Value, json};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::audit::{audit_events, captured};
use crate::support::{self, KEYS, PRIVATE_WORDS, claims, leaked_piece, token, unix_now};

async fn check(
    client: &HealthClient<Channel>,
    bearers: &[&str],
) -> Result<HealthCheckResponse, tonic::Status> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    for token in bearers {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("metadata");
        request.metadata_mut().append("authorization", value);
    }
    client.clone().check(request).await.map(|r| r.into_inner())
}

/// The tokens used by [`run_health_checks`], to look for in the captured output.
struct Used {
    failures: Vec<String>,
    tokens: Vec<String>,
}

#[test]
fn health_check_over_loopback_is_secured() {
    let (used, text) = captured(run_health_checks());
    assert!(used.failures.is_empty(), "{}", used.failures.join("\n"));

    // Nine calls, nine audit events, each with the client address from tonic's connection info.
    let events = audit_events(&text);
    assert_eq!(events.len(), 9, "{events:#?}");
    for event in &events {
        assert_eq!(event["client_ip"], "127.0.0.1", "{event}");
        assert_eq!(event["method"], "POST", "{event}");
    }
    let count = |f: &dyn Fn(&Value) -> bool| events.iter().filter(|e| f(e)).count();
    assert_eq!(count(&|e| e["grpc_status"] == 16), 4, "UNAUTHENTICATED");
    assert_eq!(count(&|e| e["grpc_status"] == 7), 2, "PERMISSION_DENIED");
    assert_eq!(count(&|e| e["grpc_status"] == 3), 1, "INVALID_ARGUMENT");
    assert_eq!(
        count(&|e| e["event"] == "authz.allow"
            && e["route"] == CHECK
            && e.get("grpc_status").is_none()),
        2
    );
    assert_eq!(
        count(&|e| e["reason_code"] == "forbidden"
            && e["route"] == CHECK
            && e["subject"] == "user-plain"),
        1,
        "the role denial names the subject and the method path"
    );
    assert_eq!(
        count(&|e| e["reason_code"] == "forbidden" && e["policy_ids"] == "method_policies:unlisted"),
        1,
        "the unlisted method is denied by the method table"
    );

    // No portcullis output (audit or otherwise) holds a token.
    let ours: String = text
        .lines()
        .filter(|line| line.contains("\"target\":\"portcullis"))
        .collect();
    for token in &used.tokens {
        assert!(leaked_piece(&ours, token).is_none(), "token in {ours}");
    }
}

const CHECK: &str = "/grpc.health.v1.Health/Check";

async fn run_health_checks() -> Used {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let security = Security::builder()
        .authenticator(support::jwt())
        .build()
        .expect("Security stack");
    let policies = MethodPolicies::new()
        .with_rbac(support::rbac())
        .method(CHECK, has_role("reader"))
        .build()
        .expect("method policies");
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
        .expect("endpoint")
        .connect()
        .await
        .expect("connect over loopback");
    let client = HealthClient::new(channel);

    let now = unix_now();
    let mut expired = claims("user-admin", &["admin"]);
    expired["iat"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);
    let expired = KEYS.signing.mint(&expired);
    let reader = token("user-reader", &["reader"]);
    let admin = token("user-admin", &["admin"]);
    let plain = token("user-plain", &[]);
    let forged = KEYS.impostor.mint(&claims("user-admin", &["admin"]));

    let refusals: Vec<(&str, Vec<&str>, Code, &str)> = vec![
        (
            "no token",
            vec![],
            Code::Unauthenticated,
            "Authentication required",
        ),
        (
            "garbage token",
            vec!["not.a.jwt"],
            Code::Unauthenticated,
            "Invalid credential",
        ),
        (
            "expired token",
            vec![&expired],
            Code::Unauthenticated,
            "Invalid credential",
        ),
        (
            "forged token",
            vec![&forged],
            Code::Unauthenticated,
            "Invalid credential",
        ),
        (
            "no roles",
            vec![&plain],
            Code::PermissionDenied,
            "Forbidden",
        ),
        (
            "two credentials",
            vec![&reader, &admin],
            Code::InvalidArgument,
            "Invalid authentication request",
        ),
    ];
    let mut failures = Vec::new();
    for (name, bearers, code, message) in &refusals {
        match check(&client, bearers).await {
            Ok(response) => failures.push(format!("{name}: answered {response:?}")),
            Err(status) => {
                if status.code() != *code || status.message() != *message {
                    failures.push(format!("{name}: {status:?}, expected {code:?} {message:?}"));
                }
                // What the client sees: the message and the response metadata values.
                let mut exposed = vec![status.message().to_owned()];
                exposed.extend(
                    status
                        .metadata()
                        .clone()
                        .into_headers()
                        .values()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                );
                for text in &exposed {
                    for token in bearers {
                        if let Some(piece) = leaked_piece(text, token) {
                            failures.push(format!("{name}: status exposes {piece:?}"));
                        }
                    }
                    let lower = text.to_lowercase();
                    for word in PRIVATE_WORDS {
                        if lower.contains(&word.to_lowercase()) {
                            failures.push(format!("{name}: status exposes {word:?}: {text}"));
                        }
                    }
                }
            }
        }
    }
    for (name, bearers) in [("reader", vec![reader.as_str()]), ("admin", vec![&admin])] {
        match check(&client, &bearers).await {
            Ok(response) if response.status == ServingStatus::Serving as i32 => {}
            other => failures.push(format!("{name}: expected SERVING, got {other:?}")),
        }
    }
    // A method the policies do not list is refused even for an admin.
    let mut watch = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    let value: MetadataValue<_> = format!("Bearer {admin}").parse().expect("metadata");
    watch.metadata_mut().insert("authorization", value);
    match client.clone().watch(watch).await {
        Err(status) if status.code() == Code::PermissionDenied => {}
        Err(status) => failures.push(format!("unlisted Watch: {status:?}")),
        Ok(_) => failures.push("unlisted Watch: answered".to_owned()),
    }

    drop(client);
    stop.send(()).expect("server still running");
    let result = tokio::time::timeout(std::time::Duration::from_secs(30), server)
        .await
        .expect("server shuts down")
        .expect("server task");
    result.expect("server ran without error");
    Used {
        failures,
        tokens: vec![expired, reader, admin, plain, forged],
    }
}
