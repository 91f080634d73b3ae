//! A bare axum handler with no security layers: the baseline for `benches/http_load.sh`.
//!
//! ```text
//! PORTCULLIS_ADDR=127.0.0.1:8081 cargo run --release --example bare_axum
//! ```

use std::net::SocketAddr;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

async fn me() -> Json<Value> {
    Json(json!({
        "subject": "dev-reader",
        "kind": "user",
        "issuer": "http://127.0.0.1:8080",
        "roles": ["reader"],
        "scopes": ["documents"],
        "auth_method": {"type": "jwt", "kid": "dev-ed25519", "alg": "EdDSA"},
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::var("PORTCULLIS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8081".into())
        .parse()?;
    let app = Router::new().route("/api/me", get(me));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bare axum listening on http://{addr}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
