//! HTTPS with client certificates: the mTLS identity of the caller becomes a service principal.
//!
//! ```text
//! cargo run --example mtls
//! ```
//!
//! - Listens on `PORTCULLIS_ADDR` (default `127.0.0.1:8443`).
//! - With `PORTCULLIS_TLS_CERT`, `PORTCULLIS_TLS_KEY` (PEM) and `PORTCULLIS_TLS_CLIENT_CA` (PEM
//!   bundle) it serves that certificate and requires client certificates from that CA; the
//!   certificate, key and CRLs are reloaded when the files change. Every verified client
//!   certificate is admitted, unless `PORTCULLIS_MTLS_ALLOW` (comma-separated SPIFFE IDs and
//!   trust domains) narrows it down. `PORTCULLIS_TLS_CRL` (optional) adds a CRL file.
//! - Without them it makes a throwaway CA, server and client certificates in a temporary
//!   folder and prints their paths and a curl line; only the trust domain `portcullis.test` is
//!   admitted.
//! - `GET /health` is public; `GET /whoami` returns the client identity (`spiffe_id`,
//!   `dns_names`, `subject`) and the principal it mapped to. Everything else is refused (deny by
//!   default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::{Json, Router};
use portcullis::Security;
use portcullis::authn::mtls::MtlsAuthenticator;
use portcullis::authz::{authenticated, public};
use portcullis::principal::Principal;
use portcullis::routing::{SecureRouter, get};
use portcullis::tls::{ClientIdentity, TlsServerConfig};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The trust domain of the throwaway certificates.
pub(crate) const DEMO_TRUST_DOMAIN: &str = "portcullis.test";
/// The SPIFFE ID of the throwaway client certificate.
pub(crate) const DEMO_CLIENT_ID: &str = "spiffe://portcullis.test/demo/client";

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn whoami(identity: ClientIdentity, principal: Principal) -> Json<Value> {
    Json(json!({
        "spiffe_id": identity.spiffe_id().map(|id| id.as_str()),
        "dns_names": identity.dns_names(),
        "subject": identity.subject(),
        "common_name": identity.common_name(),
        "certificate_sha256": identity.fingerprint_sha256(),
        "principal": {
            "subject": principal.subject(),
            "kind": principal.kind(),
            "issuer": principal.issuer(),
            "roles": principal.roles(),
            "auth_method": principal.auth_method(),
        },
    }))
}

/// The routes and the stack: request context and mTLS authentication around a deny-by-default
/// router.
pub(crate) fn app(authenticator: MtlsAuthenticator) -> Result<Router, BoxError> {
    let security = Security::builder().authenticator(authenticator).build()?;
    let router = SecureRouter::new()
        .route("/health", get(health, public()))
        .route("/whoami", get(whoami, authenticated()))
        .into_router()?
        .layer(security);
    Ok(router)
}

/// Which client identities are admitted: listed SPIFFE IDs and trust domains, or every
/// certificate the client CA verified.
pub(crate) fn authenticator(allow: Option<&str>) -> Result<MtlsAuthenticator, BoxError> {
    let mut builder = MtlsAuthenticator::builder();
    match allow {
        Some(list) => {
            for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                builder = if entry.starts_with("spiffe://") {
                    builder.allow_spiffe_id(entry)
                } else {
                    builder.allow_trust_domain(entry)
                };
            }
        }
        None => builder = builder.allow_any_verified_certificate(),
    }
    Ok(builder.build()?)
}

/// Paths of a PKI on disk.
#[derive(Debug, Clone)]
pub(crate) struct PkiFiles {
    /// CA certificate (client CA bundle for the server, root for the client).
    pub(crate) ca: PathBuf,
    /// Server certificate chain.
    pub(crate) server_cert: PathBuf,
    /// Server private key.
    pub(crate) server_key: PathBuf,
    /// Client certificate.
    pub(crate) client_cert: PathBuf,
    /// Client private key.
    pub(crate) client_key: PathBuf,
}

/// A throwaway CA, a server certificate for `localhost`/`127.0.0.1`/`::1` and a client
/// certificate with the SPIFFE ID [`DEMO_CLIENT_ID`], written to `dir` (keys with mode 0600).
pub(crate) fn throwaway_pki(dir: &Path) -> Result<PkiFiles, BoxError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "portcullis throwaway CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned()])?;
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut client = CertificateParams::default();
    client
        .subject_alt_names
        .push(SanType::URI(DEMO_CLIENT_ID.try_into()?));
    client
        .subject_alt_names
        .push(SanType::DnsName("client.portcullis.test".try_into()?));
    client
        .distinguished_name
        .push(DnType::CommonName, "demo client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer)?;

    let files = PkiFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
    };
    std::fs::write(&files.ca, ca_cert.pem())?;
    std::fs::write(&files.server_cert, server_cert.pem())?;
    std::fs::write(&files.client_cert, client_cert.pem())?;
    write_private(&files.server_key, &server_key.serialize_pem())?;
    write_private(&files.client_key, &client_key.serialize_pem())?;
    Ok(files)
}

fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, pem.as_bytes())
}

/// The TLS configuration: the server certificate (watched), client certificates required from
/// `client_ca`, optional CRLs.
pub(crate) fn tls(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    crl: Option<&Path>,
) -> Result<TlsServerConfig, BoxError> {
    let mut builder = TlsServerConfig::builder()
        .certificate_files(cert, key)
        .client_ca_file(client_ca);
    if let Some(crl) = crl {
        builder = builder.crl_file(crl);
    }
    Ok(builder.build()?)
}

/// The configuration the environment asks for.
pub(crate) struct Configured {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: TlsServerConfig,
    pub(crate) authenticator: MtlsAuthenticator,
    /// The throwaway PKI's folder, deleted when dropped.
    pub(crate) throwaway: Option<tempfile::TempDir>,
}

/// Reads the contract's variables through `var` (the process environment in `main`).
pub(crate) fn configure(var: impl Fn(&str) -> Option<String>) -> Result<Configured, BoxError> {
    let addr: SocketAddr = var("PORTCULLIS_ADDR")
        .unwrap_or_else(|| "127.0.0.1:8443".into())
        .parse()?;
    let path = |name| var(name).map(PathBuf::from);
    let given = (
        path("PORTCULLIS_TLS_CERT"),
        path("PORTCULLIS_TLS_KEY"),
        path("PORTCULLIS_TLS_CLIENT_CA"),
    );
    match given {
        (Some(cert), Some(key), Some(ca)) => {
            let allow = var("PORTCULLIS_MTLS_ALLOW");
            eprintln!(
                "mTLS: admitting {}",
                allow
                    .as_deref()
                    .unwrap_or("every client certificate the client CA verifies")
            );
            let crl = path("PORTCULLIS_TLS_CRL");
            Ok(Configured {
                addr,
                tls: tls(&cert, &key, &ca, crl.as_deref())?,
                authenticator: authenticator(allow.as_deref())?,
                throwaway: None,
            })
        }
        (None, None, None) => {
            let dir = tempfile::Builder::new()
                .prefix("portcullis-mtls-")
                .tempdir()?;
            let files = throwaway_pki(dir.path())?;
            eprintln!("throwaway PKI in {}", dir.path().display());
            eprintln!("  CA certificate:     {}", files.ca.display());
            eprintln!("  server certificate: {}", files.server_cert.display());
            eprintln!("  server key:         {}", files.server_key.display());
            eprintln!("  client certificate: {}", files.client_cert.display());
            eprintln!("  client key:         {}", files.client_key.display());
            eprintln!(
                "curl --cacert {} --cert {} --key {} https://{addr}/whoami",
                files.ca.display(),
                files.client_cert.display(),
                files.client_key.display()
            );
            Ok(Configured {
                addr,
                tls: tls(&files.server_cert, &files.server_key, &files.ca, None)?,
                authenticator: authenticator(Some(DEMO_TRUST_DOMAIN))?,
                throwaway: Some(dir),
            })
        }
        _ => Err(
            "set all of PORTCULLIS_TLS_CERT, PORTCULLIS_TLS_KEY and PORTCULLIS_TLS_CLIENT_CA, or none"
                .into(),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // `_throwaway` lives until the end of `main`: the throwaway folder is deleted on exit.
    let Configured {
        addr,
        tls,
        authenticator,
        throwaway: _throwaway,
    } = configure(|name| std::env::var(name).ok())?;
    let _reloader = tls.spawn_reloader();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("portcullis mtls listening on https://{addr} (client certificate required)");
    portcullis::tls::serve(listener, tls, app(authenticator)?)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
