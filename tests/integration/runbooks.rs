//! The commands of `docs/runbooks/` against the running `secure_api` example, so the runbooks
//! stay true: revoke a leaked token by `jti` and by subject, watch a brute-force attempt raise
//! an alert and a lockout, read `/metrics`, verify the audit file after the incident.

use serde_json::{Value, json};

use crate::audit_log::{Example, TempDir, audit_verify};

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// docs/runbooks/leaked-token.md and docs/runbooks/audit-verification.md.
#[tokio::test]
async fn leaked_token_revoked_by_jti_and_by_subject_then_the_log_verifies() {
    let dir = TempDir::new("runbook-leaked");
    let file = dir.0.join("audit.jsonl");
    let Some(example) = Example::start(&[("PORTCULLIS_AUDIT_FILE", &file)]).await else {
        return;
    };
    assert_eq!(example.get("/api/me", Some("reader")).await.unwrap().0, 200);
    assert_eq!(example.get("/api/me", Some("editor")).await.unwrap().0, 200);

    // Step 1 of the runbook: revoke the leaked token by its jti.
    let jti = example.jti("reader");
    let status = example
        .post("/api/tokens/revoke", "admin", &json!({"jti": jti}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(example.get("/api/me", Some("reader")).await.unwrap().0, 401);
    // Every token of the subject ("log out everywhere").
    let status = example
        .post(
            "/api/tokens/revoke",
            "admin",
            &json!({"subject": "dev-editor"}),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(example.get("/api/me", Some("editor")).await.unwrap().0, 401);
    // Only admins may revoke.
    let status = example
        .post("/api/tokens/revoke", "reader", &json!({"jti": "x"}))
        .await;
    assert_eq!(status, 401, "the reader's own token is revoked by now");
    example.stop();

    let (code, out) = audit_verify(&file, None).unwrap();
    assert_eq!(code, 0, "{out}");
    let events = events(&file);
    let revoked: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "token.revoked")
        .collect();
    assert_eq!(revoked.len(), 2, "{events:?}");
    assert_eq!(revoked[0]["reason_code"], "revoked_jti");
    assert_eq!(revoked[0]["details"]["jti"], jti.as_str());
    assert_eq!(revoked[1]["reason_code"], "revoked_subject");
    assert_eq!(revoked[1]["details"]["subject"], "dev-editor");
    // The runbook's query for "who used the token after it leaked": the refusals name it.
    let refused_reader = events.iter().any(|e| {
        e["event"] == "authn.failure"
            && e["route"].is_null()
            && e["reason"].as_str().is_some_and(|r| r.contains("revoked"))
    });
    assert!(refused_reader, "{events:?}");
}

/// docs/runbooks/brute-force.md: a flood of bad tokens raises `unauthorized_spike`, visible in
/// the audit file and in `/metrics`.
#[tokio::test]
async fn brute_force_raises_an_alert_in_the_log_and_the_metrics() {
    let dir = TempDir::new("runbook-brute");
    let file = dir.0.join("audit.jsonl");
    let Some(example) = Example::start(&[("PORTCULLIS_AUDIT_FILE", &file)]).await else {
        return;
    };
    let forged = format!("{}x", example.tokens["reader"]);
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..120 {
        let status = example
            .http
            .get(format!("{}/api/me", example.base))
            .bearer_auth(&forged)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        *statuses.entry(status).or_insert(0) += 1;
    }
    // Refused every time: 401 until the lockout locks the client, 429 afterwards.
    assert_eq!(statuses.values().sum::<i32>(), 120);
    assert!(
        statuses.keys().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // The lockout holds the attacking address (127.0.0.1); the operator reads the metrics
    // from another one.
    let operator = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let locked = example
        .http
        .get(format!("{}/metrics", example.base))
        .bearer_auth(&example.tokens["admin"])
        .send()
        .await
        .unwrap();
    assert_eq!(
        locked.status().as_u16(),
        429,
        "the attacking address is locked out"
    );
    let response = operator
        .get(format!("{}/metrics", example.base))
        .bearer_auth(&example.tokens["admin"])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let metrics = response.text().await.unwrap();
    assert!(
        metrics.contains("portcullis_security_alerts_total{alert=\"unauthorized_spike\"}")
            || metrics.contains("portcullis_security_alerts_total{alert=\"lockout_spike\"}"),
        "{metrics}"
    );
    example.stop();

    let (code, out) = audit_verify(&file, None).unwrap();
    assert_eq!(code, 0, "{out}");
    let events = events(&file);
    let alerts: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "security.alert")
        .collect();
    assert!(!alerts.is_empty(), "{events:?}");
    assert!(
        alerts
            .iter()
            .all(|a| a["details"]["count"].as_u64() >= a["details"]["threshold"].as_u64())
    );
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains(&forged[..40])
    );
}
