//! TLS with real handshakes: certificates made by rcgen in each test, a real server
//! (`portcullis::tls::serve` with the `mtls` example's app, or tonic with `TlsIncoming`) and real
//! rustls clients over loopback.
//!
//! - the example's contract with its throwaway PKI (HTTP/1.1 and HTTP/2);
//! - refused clients: none, expired, wrong CA, revoked (CRL), not on the allow-list (403),
//!   malformed identity (401);
//! - hot reload: the server certificate rotated on disk is served to new connections while an
//!   open connection keeps working; a bad file keeps the last good certificate; a new CRL
//!   revokes a client for new connections;
//! - tonic: the client certificate from tonic's TLS connection info, mapped to a principal;
//!   the `grpc_service` example's policy matrix with client certificates and with tokens.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::authn::mtls::MtlsAuthenticator;
use portcullis::tls::{ClientIdentity, TlsClientConfig, TlsServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::ServerName;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

#[path = "../../examples/mtls.rs"]
#[expect(dead_code, reason = "the example's main is not called by the tests")]
mod mtls_example;

#[path = "../../examples/grpc_service.rs"]
#[expect(dead_code, reason = "the example's main is not called by the tests")]
mod grpc_example;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// What a leaf certificate says.
#[derive(Default)]
struct Leaf<'a> {
    spiffe: &'a [&'a str],
    dns: &'a [&'a str],
    serial: u64,
    expired: bool,
}

/// A certificate and its key, as PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn issue(&self, leaf: &Leaf<'_>) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        for uri in leaf.spiffe {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        for name in leaf.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*name).try_into().unwrap()));
        }
        params.distinguished_name.push(
            DnType::CommonName,
            leaf.dns.first().copied().unwrap_or("client"),
        );
        params.serial_number = Some(SerialNumber::from(leaf.serial));
        if leaf.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self) -> Issued {
        self.issue(&Leaf {
            dns: &["localhost"],
            serial: rand_serial(),
            ..Leaf::default()
        })
    }

    /// A CRL valid for a day that revokes `serials`.
    fn crl(&self, serials: &[u64], number: u64) -> String {
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }
}

fn rand_serial() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_be_bytes(b) >> 2 | 1 << 40
}

/// A client configuration trusting `ca`, presenting `identity` when given.
fn client(ca: &Ca, identity: Option<&Issued>, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut builder = TlsClientConfig::builder()
        .root_ca_pem(ca.pem.clone())
        .alpn_protocols(alpn.iter().map(|p| p.as_bytes().to_vec()));
    if let Some(id) = identity {
        builder = builder.client_certificate_pem(id.cert.clone(), id.key.clone());
    }
    builder.build().unwrap()
}

/// One open client connection (HTTP/1.1 keep-alive or HTTP/2 by ALPN).
struct Connection {
    sender: Sender,
    /// SHA-256 of the certificate the server presented.
    server_cert_sha256: String,
    alpn: Option<Vec<u8>>,
    /// Ends when the connection is closed.
    driver: tokio::task::JoinHandle<()>,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Connection, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (_, session) = tls.get_ref();
    let server_cert_sha256 = hex(&Sha256::digest(
        session
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no server cert")?,
    ));
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let sender = if alpn.as_deref() == Some(b"h2") {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        (
            Sender::H2(sender),
            tokio::spawn(async move { drop(conn.await) }),
        )
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        (
            Sender::H1(sender),
            tokio::spawn(async move { drop(conn.await) }),
        )
    };
    let (sender, driver) = sender;
    Ok(Connection {
        sender,
        server_cert_sha256,
        alpn,
        driver,
    })
}

impl Connection {
    async fn request(&mut self, method: &str, path: &str) -> Result<(StatusCode, Value), BoxError> {
        let request = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .body(Empty::<Bytes>::new())?;
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
        };
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, json))
    }

    async fn get(&mut self, path: &str) -> Result<(StatusCode, Value), BoxError> {
        self.request("GET", path).await
    }
}

/// Connects and sends one GET; any handshake or transport failure is an `Err`.
async fn get_once(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(StatusCode, Value), BoxError> {
    connect(addr, config).await?.get(path).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running `tls::serve` with the example's app; stopped gracefully on drop of `stop`.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(tls: TlsServerConfig, authenticator: MtlsAuthenticator) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = mtls_example::app(authenticator).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(
            portcullis::tls::serve(listener, tls, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

use std::future::IntoFuture as _;

fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    // Write then rename, as deployment tools do, so a reader never sees half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

#[tokio::test]
async fn example_contract_with_its_throwaway_pki() {
    let dir = tempfile::tempdir().unwrap();
    let files = mtls_example::throwaway_pki(dir.path()).unwrap();
    let tls = mtls_example::tls(&files.server_cert, &files.server_key, &files.ca, None).unwrap();
    let authenticator = mtls_example::authenticator(Some(mtls_example::DEMO_TRUST_DOMAIN)).unwrap();
    let server = Server::start(tls, authenticator).await;

    let with_cert = |alpn: &[&str]| {
        TlsClientConfig::builder()
            .root_ca_file(&files.ca)
            .client_certificate_files(&files.client_cert, &files.client_key)
            .alpn_protocols(alpn.iter().map(|p| p.as_bytes().to_vec()))
            .build()
            .unwrap()
    };
    for alpn in [&["http/1.1"][..], &["h2"][..]] {
        let mut conn = connect(server.addr, with_cert(alpn)).await.unwrap();
        assert_eq!(conn.alpn.as_deref(), Some(alpn[0].as_bytes()));
        let (status, body) = conn.get("/health").await.unwrap();
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("ok"))
        );
        let (status, body) = conn.get("/whoami").await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["spiffe_id"], mtls_example::DEMO_CLIENT_ID);
        assert_eq!(
            body["dns_names"],
            serde_json::json!(["client.portcullis.test"])
        );
        assert_eq!(body["subject"], "CN=demo client");
        assert_eq!(body["principal"]["subject"], mtls_example::DEMO_CLIENT_ID);
        assert_eq!(body["principal"]["kind"], "service");
        assert_eq!(body["principal"]["auth_method"]["type"], "mtls");
        // Deny by default: unknown paths and methods are refused.
        assert_eq!(conn.get("/admin").await.unwrap().0, StatusCode::NOT_FOUND);
        let (status, body) = conn.request("DELETE", "/whoami").await.unwrap();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    }
    // Client certificates are required.
    let ca_only = TlsClientConfig::builder()
        .root_ca_file(&files.ca)
        .build()
        .unwrap();
    assert!(get_once(server.addr, ca_only, "/health").await.is_err());
    server.shutdown().await;
}

/// The example's environment contract: defaults, supplied certificates (any client certificate
/// of that CA admitted), partial configuration refused.
#[tokio::test]
async fn example_environment_contract() {
    let default = mtls_example::configure(|_| None).unwrap();
    assert_eq!(default.addr, "127.0.0.1:8443".parse().unwrap());
    assert!(default.throwaway.is_some());
    assert_eq!(
        default.tls.client_auth(),
        portcullis::tls::ClientAuth::Required
    );

    // Certificates from an outside CA, with an identity the example has never heard of.
    let ca = Ca::new("outside CA");
    let dir = tempfile::tempdir().unwrap();
    let server_id = ca.server();
    let paths = [
        (
            "PORTCULLIS_TLS_CERT",
            write(dir.path(), "s.pem", &server_id.cert),
        ),
        (
            "PORTCULLIS_TLS_KEY",
            write(dir.path(), "s-key.pem", &server_id.key),
        ),
        (
            "PORTCULLIS_TLS_CLIENT_CA",
            write(dir.path(), "ca.pem", &ca.pem),
        ),
    ];
    let env = |name: &str| match name {
        "PORTCULLIS_ADDR" => Some("127.0.0.1:0".to_owned()),
        _ => paths
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.display().to_string()),
    };
    let configured = mtls_example::configure(env).unwrap();
    assert!(configured.throwaway.is_none());
    let server = Server::start(configured.tls, configured.authenticator).await;
    let outsider = ca.issue(&Leaf {
        dns: &["worker-7.batch.example"],
        serial: 41,
        ..Leaf::default()
    });
    let (status, body) = get_once(server.addr, client(&ca, Some(&outsider), &[]), "/whoami")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spiffe_id"], Value::Null);
    assert_eq!(
        body["dns_names"],
        serde_json::json!(["worker-7.batch.example"])
    );
    assert_eq!(body["subject"], "CN=worker-7.batch.example");
    assert_eq!(body["principal"]["subject"], "worker-7.batch.example");
    assert!(
        get_once(server.addr, client(&ca, None, &[]), "/health")
            .await
            .is_err()
    );
    server.shutdown().await;

    let partial = |name: &str| (name == "PORTCULLIS_TLS_CERT").then(|| "/tmp/x.pem".to_owned());
    assert!(mtls_example::configure(partial).is_err());
}

/// What `tls::serve` puts into every request: `ConnectInfo` (what `ClientIpResolver`, rate
/// limits and audit events read), the TLS session facts, and the client identity.
#[tokio::test]
async fn connection_facts_in_request_extensions() {
    use axum::extract::ConnectInfo;
    use axum::{Extension, Json, routing::get};
    use portcullis::client_ip::ClientIpResolver;
    use portcullis::tls::{PeerCertificates, TlsConnectInfo};

    async fn facts(
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        Extension(tls): Extension<TlsConnectInfo>,
        Extension(chain): Extension<PeerCertificates>,
        identity: ClientIdentity,
        headers: http::HeaderMap,
    ) -> Json<Value> {
        let client_ip = ClientIpResolver::default().resolve(peer.ip(), &headers);
        Json(serde_json::json!({
            "client_ip": client_ip.to_string(),
            "peer_is_tls_peer": peer == tls.remote_addr,
            "protocol": tls.protocol,
            "cipher_suite": tls.cipher_suite,
            "alpn": tls.alpn.map(|a| String::from_utf8_lossy(&a).into_owned()),
            "sni": tls.server_name,
            "chain_len": chain.0.len(),
            "leaf_matches_identity":
                chain.leaf().map(|l| hex(&Sha256::digest(l))) == Some(identity.fingerprint_sha256().to_owned()),
            "spiffe_id": identity.spiffe_id().map(|i| i.as_str().to_owned()),
        }))
    }

    let ca = Ca::new("CA");
    let server_id = ca.server();
    let tls = TlsServerConfig::builder()
        .certificate_pem(server_id.cert.clone(), server_id.key.clone())
        .client_ca_pem(ca.pem.clone())
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/facts", get(facts));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        portcullis::tls::serve(listener, tls, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let me = ca.issue(&Leaf {
        spiffe: &["spiffe://prod.example/facts"],
        serial: 51,
        ..Leaf::default()
    });
    let (status, body) = get_once(addr, client(&ca, Some(&me), &["h2"]), "/facts")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["client_ip"], "127.0.0.1");
    assert_eq!(body["peer_is_tls_peer"], true);
    assert_eq!(body["protocol"], "TLSv1_3");
    assert!(
        body["cipher_suite"].as_str().unwrap().starts_with("TLS13_"),
        "{body}"
    );
    assert_eq!(body["alpn"], "h2");
    assert_eq!(body["sni"], "localhost");
    assert_eq!(body["chain_len"], 1);
    assert_eq!(body["leaf_matches_identity"], true);
    assert_eq!(body["spiffe_id"], "spiffe://prod.example/facts");

    // TLS 1.2 clients are served with an ECDHE + AEAD suite.
    let tls12 =
        rustls::ClientConfig::builder_with_provider(Arc::new(portcullis::tls::crypto_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates({
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(
                        rustls::pki_types::pem::PemObject::from_pem_slice(ca.pem.as_bytes())
                            .unwrap(),
                    )
                    .unwrap();
                roots
            })
            .with_client_auth_cert(
                rustls::pki_types::pem::PemObject::pem_slice_iter(me.cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                rustls::pki_types::pem::PemObject::from_pem_slice(me.key.as_bytes()).unwrap(),
            )
            .unwrap();
    let (status, body) = get_once(addr, Arc::new(tls12), "/facts").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["protocol"], "TLSv1_2");
    assert!(
        body["cipher_suite"]
            .as_str()
            .unwrap()
            .starts_with("TLS_ECDHE_"),
        "{body}"
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn refused_client_certificates() {
    let ca = Ca::new("trusted CA");
    let other_ca = Ca::new("other CA");
    let dir = tempfile::tempdir().unwrap();
    let server_id = ca.server();
    let cert = write(dir.path(), "server.pem", &server_id.cert);
    let key = write(dir.path(), "server-key.pem", &server_id.key);
    let client_ca = write(dir.path(), "ca.pem", &ca.pem);
    let crl = write(dir.path(), "crl.pem", &ca.crl(&[666], 1));
    let tls = mtls_example::tls(&cert, &key, &client_ca, Some(&crl)).unwrap();
    let authenticator = MtlsAuthenticator::builder()
        .allow_trust_domain("prod.example")
        .build()
        .unwrap();
    let server = Server::start(tls, authenticator).await;
    let id = |serial, spiffe: &'static [&'static str], expired| {
        ca.issue(&Leaf {
            spiffe,
            serial,
            expired,
            ..Leaf::default()
        })
    };

    let valid = id(1, &["spiffe://prod.example/api"], false);
    let (status, body) = get_once(server.addr, client(&ca, Some(&valid), &[]), "/whoami")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["principal"]["subject"], "spiffe://prod.example/api");

    // Refused at the handshake.
    let expired = id(2, &["spiffe://prod.example/api"], true);
    let revoked = id(666, &["spiffe://prod.example/api"], false);
    let foreign = other_ca.issue(&Leaf {
        spiffe: &["spiffe://prod.example/api"],
        serial: 3,
        ..Leaf::default()
    });
    let refused = [
        ("no certificate", client(&ca, None, &[])),
        ("expired", client(&ca, Some(&expired), &[])),
        ("revoked", client(&ca, Some(&revoked), &[])),
        ("wrong CA", client(&ca, Some(&foreign), &[])),
    ];
    for (name, config) in refused {
        let outcome = get_once(server.addr, config, "/health").await;
        assert!(outcome.is_err(), "{name}: {outcome:?}");
    }

    // Verified, but the identity is refused by the authenticator.
    let outsider = id(4, &["spiffe://staging.example/api"], false);
    let (status, body) = get_once(server.addr, client(&ca, Some(&outsider), &[]), "/whoami")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["status"], 403);
    assert!(!body.to_string().contains("staging"), "{body}");
    let malformed = id(
        5,
        &["spiffe://prod.example/a", "spiffe://prod.example/b"],
        false,
    );
    let mut conn = connect(server.addr, client(&ca, Some(&malformed), &[]))
        .await
        .unwrap();
    assert_eq!(
        conn.get("/whoami").await.unwrap().0,
        StatusCode::UNAUTHORIZED
    );
    // A present but invalid credential is refused everywhere, never downgraded to anonymous.
    assert_eq!(
        conn.get("/health").await.unwrap().0,
        StatusCode::UNAUTHORIZED
    );

    // The server is unharmed by the refusals.
    let (status, _) = get_once(server.addr, client(&ca, Some(&valid), &[]), "/whoami")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn optional_client_authentication() {
    let ca = Ca::new("CA");
    let server_id = ca.server();
    let tls = TlsServerConfig::builder()
        .certificate_pem(server_id.cert.clone(), server_id.key.clone())
        .client_ca_pem(ca.pem.clone())
        .client_auth(portcullis::tls::ClientAuth::Optional)
        .build()
        .unwrap();
    let authenticator = MtlsAuthenticator::builder()
        .allow_dns_name("batch.internal")
        .roles_for_dns_name("batch.internal", ["batch"])
        .build()
        .unwrap();
    let server = Server::start(tls, authenticator).await;

    // Without a certificate: connected, anonymous.
    let mut anonymous = connect(server.addr, client(&ca, None, &[])).await.unwrap();
    assert_eq!(anonymous.get("/health").await.unwrap().0, StatusCode::OK);
    assert_eq!(
        anonymous.get("/whoami").await.unwrap().0,
        StatusCode::UNAUTHORIZED
    );

    let batch = ca.issue(&Leaf {
        dns: &["batch.internal"],
        serial: 9,
        ..Leaf::default()
    });
    let (status, body) = get_once(server.addr, client(&ca, Some(&batch), &[]), "/whoami")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spiffe_id"], Value::Null);
    assert_eq!(body["principal"]["subject"], "batch.internal");
    assert_eq!(body["principal"]["roles"], serde_json::json!(["batch"]));
    server.shutdown().await;
}

/// Waits for the reloader to report a state; the bound only stops a broken test from hanging.
async fn wait_for(
    status: &mut tokio::sync::watch::Receiver<portcullis::tls::ReloadStatus>,
    what: impl FnMut(&portcullis::tls::ReloadStatus) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(60), status.wait_for(what))
        .await
        .expect("the reloader did not report in time")
        .unwrap();
}

#[tokio::test]
async fn server_certificate_hot_reload() {
    let ca = Ca::new("CA");
    let dir = tempfile::tempdir().unwrap();
    let first = ca.server();
    let cert = write(dir.path(), "server.pem", &first.cert);
    let key = write(dir.path(), "server-key.pem", &first.key);
    let client_ca = write(dir.path(), "ca.pem", &ca.pem);
    let tls = TlsServerConfig::builder()
        .certificate_files(&cert, &key)
        .client_ca_file(&client_ca)
        .reload_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let mut status = tls.subscribe();
    let _reloader = tls.spawn_reloader();
    let first_sha = tls.certificate_sha256();
    let authenticator = MtlsAuthenticator::builder()
        .allow_trust_domain("prod.example")
        .build()
        .unwrap();
    let server = Server::start(tls.clone(), authenticator).await;
    let me = ca.issue(&Leaf {
        spiffe: &["spiffe://prod.example/api"],
        serial: 11,
        ..Leaf::default()
    });

    let mut open = connect(server.addr, client(&ca, Some(&me), &[]))
        .await
        .unwrap();
    assert_eq!(open.server_cert_sha256, first_sha);
    assert_eq!(open.get("/whoami").await.unwrap().0, StatusCode::OK);

    // Rotate the files under the running server.
    let second = ca.server();
    write(dir.path(), "server-key.pem", &second.key);
    write(dir.path(), "server.pem", &second.cert);
    let second_der: rustls::pki_types::CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(second.cert.as_bytes()).unwrap();
    let second_sha = hex(&Sha256::digest(&second_der));
    wait_for(&mut status, |s| s.certificate_sha256 == second_sha).await;

    // New connections see the new certificate; the open one keeps working.
    let mut fresh = connect(server.addr, client(&ca, Some(&me), &[]))
        .await
        .unwrap();
    assert_eq!(fresh.server_cert_sha256, second_sha);
    assert_eq!(fresh.get("/whoami").await.unwrap().0, StatusCode::OK);
    assert_eq!(open.get("/whoami").await.unwrap().0, StatusCode::OK);

    // A broken file is reported and the last good certificate stays.
    write(
        dir.path(),
        "server.pem",
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    );
    wait_for(&mut status, |s| s.last_error.is_some()).await;
    let mut after = connect(server.addr, client(&ca, Some(&me), &[]))
        .await
        .unwrap();
    assert_eq!(after.server_cert_sha256, second_sha);
    assert_eq!(after.get("/health").await.unwrap().0, StatusCode::OK);
    assert_eq!(tls.certificate_sha256(), second_sha);
    server.shutdown().await;
}

#[tokio::test]
async fn new_crl_revokes_new_and_open_connections() {
    let ca = Ca::new("CA");
    let dir = tempfile::tempdir().unwrap();
    let server_id = ca.server();
    let cert = write(dir.path(), "server.pem", &server_id.cert);
    let key = write(dir.path(), "server-key.pem", &server_id.key);
    let client_ca = write(dir.path(), "ca.pem", &ca.pem);
    let crl = write(dir.path(), "crl.pem", &ca.crl(&[], 1));
    let tls = mtls_example::tls(&cert, &key, &client_ca, Some(&crl)).unwrap();
    let authenticator = MtlsAuthenticator::builder()
        .allow_trust_domain("prod.example")
        .build()
        .unwrap();
    let server = Server::start(tls.clone(), authenticator).await;
    let me = ca.issue(&Leaf {
        spiffe: &["spiffe://prod.example/api"],
        serial: 77,
        ..Leaf::default()
    });
    let other = ca.issue(&Leaf {
        spiffe: &["spiffe://prod.example/other"],
        serial: 78,
        ..Leaf::default()
    });
    // HTTP/1.1 keep-alive and HTTP/2, each verified before the revocation.
    let mut h1 = connect(server.addr, client(&ca, Some(&me), &[]))
        .await
        .unwrap();
    let mut h2 = connect(server.addr, client(&ca, Some(&me), &["h2"]))
        .await
        .unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    let mut unrevoked = connect(server.addr, client(&ca, Some(&other), &[]))
        .await
        .unwrap();
    for open in [&mut h1, &mut h2, &mut unrevoked] {
        assert_eq!(open.get("/whoami").await.unwrap().0, StatusCode::OK);
    }

    write(dir.path(), "crl.pem", &ca.crl(&[77], 2));
    assert_eq!(tls.reload(), Ok(portcullis::tls::ReloadOutcome::Reloaded));
    assert_eq!(tls.subscribe().borrow().crl_generation, 1);
    // The server closes the open connections (GOAWAY for HTTP/2): waits for that event; the
    // bound only stops a broken server from hanging the test.
    for open in [&mut h1, &mut h2] {
        tokio::time::timeout(Duration::from_secs(30), &mut open.driver)
            .await
            .expect("the connection of a revoked client stays open")
            .unwrap();
        assert!(open.get("/whoami").await.is_err());
    }
    // A new connection is refused at the handshake.
    assert!(
        get_once(server.addr, client(&ca, Some(&me), &[]), "/whoami")
            .await
            .is_err()
    );
    // A client that is not revoked reconnects and is served.
    tokio::time::timeout(Duration::from_secs(30), &mut unrevoked.driver)
        .await
        .unwrap()
        .unwrap();
    let (status, _) = get_once(server.addr, client(&ca, Some(&other), &[]), "/whoami")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    // An unreadable CRL keeps the previous one.
    write(dir.path(), "crl.pem", "garbage");
    assert!(tls.reload().is_err());
    assert!(
        get_once(server.addr, client(&ca, Some(&me), &[]), "/whoami")
            .await
            .is_err()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn connections_are_closed_at_their_maximum_age() {
    let ca = Ca::new("CA");
    let server_id = ca.server();
    let tls = TlsServerConfig::builder()
        .certificate_pem(server_id.cert.clone(), server_id.key.clone())
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let task = tokio::spawn(
        portcullis::tls::serve(listener, tls, app)
            .with_max_connection_age(Some(Duration::from_millis(200)))
            .into_future(),
    );
    let mut open = connect(addr, client(&ca, None, &[])).await.unwrap();
    // Waits for the close, not for a duration: the bound only stops a hang.
    tokio::time::timeout(Duration::from_secs(30), &mut open.driver)
        .await
        .expect("the connection outlived its maximum age")
        .unwrap();
    assert!(open.get("/").await.is_err());
    task.abort();
}

mod grpc {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::health_server::HealthServer;

    use portcullis::Security;
    use portcullis::authz::authenticated;
    use portcullis::routing::MethodPolicies;
    use portcullis::tls::TlsIncoming;

    use super::*;

    const CHECK: &str = "/grpc.health.v1.Health/Check";

    #[tokio::test]
    async fn tonic_reads_the_client_certificate() {
        let ca = Ca::new("CA");
        let server_id = ca.server();
        let tls = TlsServerConfig::builder()
            .certificate_pem(server_id.cert.clone(), server_id.key.clone())
            .client_ca_pem(ca.pem.clone())
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        let (reporter, _) = tonic_health::server::health_reporter();
        let health = tonic_health::server::HealthService::from_health_reporter(reporter);
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let service = HealthServer::with_interceptor(health, move |req: tonic::Request<()>| {
            let identity = ClientIdentity::from_tonic_request(&req);
            let principal = req
                .extensions()
                .get::<portcullis::principal::Principal>()
                .cloned();
            let _ = seen_tx.send((identity, principal));
            Ok(req)
        });
        let security = Security::builder()
            .authenticator(
                MtlsAuthenticator::builder()
                    .allow_spiffe_id("spiffe://prod.example/grpc-client")
                    .roles_for_spiffe_id("spiffe://prod.example/grpc-client", ["reader"])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let policies = MethodPolicies::new()
            .method(CHECK, authenticated())
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            Server::builder()
                .layer(security)
                .layer(policies)
                .add_service(service)
                .serve_with_incoming_shutdown(TlsIncoming::new(listener, tls), async {
                    let _ = stopped.await;
                }),
        );

        let channel = |spiffe: &'static str, serial| {
            let id = ca.issue(&Leaf {
                spiffe: Box::leak(Box::new([spiffe])),
                serial,
                ..Leaf::default()
            });
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca.pem))
                .identity(Identity::from_pem(&id.cert, &id.key))
                .domain_name("localhost");
            Channel::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
        };
        let request = || HealthCheckRequest {
            service: String::new(),
        };

        let allowed = channel("spiffe://prod.example/grpc-client", 21)
            .connect()
            .await
            .unwrap();
        let reply = HealthClient::new(allowed).check(request()).await.unwrap();
        assert_eq!(reply.into_inner().status, 1, "SERVING");
        let (identity, principal) = seen.recv().await.unwrap();
        let identity = identity.unwrap().unwrap();
        assert_eq!(
            identity.spiffe_id().map(|id| id.as_str()),
            Some("spiffe://prod.example/grpc-client")
        );
        let principal = principal.unwrap();
        assert_eq!(principal.subject(), "spiffe://prod.example/grpc-client");
        assert_eq!(principal.roles(), ["reader"]);

        let outsider = channel("spiffe://prod.example/other", 22)
            .connect()
            .await
            .unwrap();
        let status = HealthClient::new(outsider)
            .check(request())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}

mod grpc_service_example {
    use std::str::FromStr;

    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    use tonic::{Code, Status};

    use super::grpc_example::{self, pb};
    use portcullis::testing::TestKey;

    async fn call<Req, Res>(
        channel: &Channel,
        method: &str,
        message: Req,
        bearer: Option<&str>,
    ) -> Result<Res, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Res: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(message);
        if let Some(token) = bearer {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let path =
            http::uri::PathAndQuery::from_str(&format!("/{}/{method}", grpc_example::SERVICE))
                .unwrap();
        grpc.unary(request, path, tonic_prost::ProstCodec::default())
            .await
            .map(tonic::Response::into_inner)
    }

    async fn who(channel: &Channel, bearer: Option<&str>) -> Result<pb::WhoAmIResponse, Status> {
        call(channel, "WhoAmI", pb::WhoAmIRequest {}, bearer).await
    }

    async fn get(channel: &Channel, bearer: Option<&str>) -> Code {
        let r: Result<pb::Document, _> = call(
            channel,
            "GetDocument",
            pb::GetDocumentRequest { id: 1 },
            bearer,
        )
        .await;
        r.map_or_else(|s| s.code(), |_| Code::Ok)
    }

    async fn create(channel: &Channel, bearer: Option<&str>) -> Code {
        let message = pb::CreateDocumentRequest {
            title: "Notes".into(),
            url: "https://example.com/notes".into(),
        };
        let r: Result<pb::Document, _> = call(channel, "CreateDocument", message, bearer).await;
        r.map_or_else(|s| s.code(), |_| Code::Ok)
    }

    async fn delete(channel: &Channel, id: u64, bearer: Option<&str>) -> Code {
        let r: Result<pb::DeleteDocumentResponse, _> = call(
            channel,
            "DeleteDocument",
            pb::DeleteDocumentRequest { id },
            bearer,
        )
        .await;
        r.map_or_else(|s| s.code(), |_| Code::Ok)
    }

    async fn purge(channel: &Channel, bearer: Option<&str>) -> Code {
        let r: Result<pb::PurgeResponse, _> =
            call(channel, "Purge", pb::PurgeRequest {}, bearer).await;
        r.map_or_else(|s| s.code(), |_| Code::Ok)
    }

    async fn start(
        tls: Option<portcullis::tls::TlsServerConfig>,
        key: &TestKey,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let jwt = grpc_example::jwt(key).unwrap();
        let task = tokio::spawn(async move {
            grpc_example::serve(listener, tls, jwt, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        (addr, stop, task)
    }

    #[tokio::test]
    async fn policies_over_mtls_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key_path) = grpc_example::throwaway_pki(dir.path()).unwrap();
        let tls = grpc_example::tls(&cert, &key_path, &ca).unwrap();
        let key = TestKey::ed25519("grpc-test");
        let (addr, stop, task) = start(Some(tls), &key).await;
        let ca_pem = std::fs::read_to_string(&ca).unwrap();
        let channel = |role: Option<&str>| {
            let mut config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca_pem))
                .domain_name("localhost");
            if let Some(role) = role {
                let cert = std::fs::read(dir.path().join(format!("{role}.pem"))).unwrap();
                let key = std::fs::read(dir.path().join(format!("{role}-key.pem"))).unwrap();
                config = config.identity(Identity::from_pem(cert, key));
            }
            Channel::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(config)
                .unwrap()
                .connect_lazy()
        };
        let reader = channel(Some("reader"));
        let admin = channel(Some("admin"));
        let anonymous = channel(None);

        // Client certificates map to service principals with the roles of their SPIFFE ID.
        let me = who(&reader, None).await.unwrap();
        assert_eq!(me.subject, "spiffe://portcullis.test/reader");
        assert_eq!(me.spiffe_id, me.subject);
        assert_eq!(
            (me.kind.as_str(), me.auth_method.as_str()),
            ("service", "mtls")
        );
        assert_eq!(me.roles, ["reader"]);
        assert_eq!(get(&reader, None).await, Code::Ok);
        assert_eq!(create(&reader, None).await, Code::PermissionDenied);
        assert_eq!(delete(&reader, 1, None).await, Code::PermissionDenied);
        assert_eq!(
            create(&admin, None).await,
            Code::Ok,
            "admin inherits editor"
        );
        assert_eq!(delete(&admin, 1, None).await, Code::Ok);
        assert_eq!(
            purge(&admin, None).await,
            Code::PermissionDenied,
            "unlisted method"
        );

        // Without a certificate: tokens, or anonymous.
        let admin_token = grpc_example::token(&key, "dev-admin", &["admin"]);
        assert_eq!(get(&anonymous, None).await, Code::Unauthenticated);
        assert_eq!(
            who(&anonymous, Some(&admin_token)).await.unwrap().subject,
            "dev-admin"
        );
        assert_eq!(
            get(&anonymous, Some("not.a.token")).await,
            Code::Unauthenticated
        );
        // Certificate and token on one request: the token decides.
        let both = who(&reader, Some(&admin_token)).await.unwrap();
        assert_eq!(
            (both.subject.as_str(), both.auth_method.as_str()),
            ("dev-admin", "jwt")
        );

        // The public health check.
        let health = tonic_health::pb::health_client::HealthClient::new(anonymous.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        assert!(health.is_ok(), "{health:?}");

        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn policies_over_h2c_with_tokens() {
        let key = TestKey::ed25519("grpc-test");
        let (addr, stop, task) = start(None, &key).await;
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let token = |roles: &[&str]| grpc_example::token(&key, "dev", roles);
        let (reader, editor, admin) = (token(&["reader"]), token(&["editor"]), token(&["admin"]));
        let cases = [
            ("reader get", get(&channel, Some(&reader)).await, Code::Ok),
            (
                "reader create",
                create(&channel, Some(&reader)).await,
                Code::PermissionDenied,
            ),
            (
                "editor create",
                create(&channel, Some(&editor)).await,
                Code::Ok,
            ),
            (
                "editor delete",
                delete(&channel, 1, Some(&editor)).await,
                Code::PermissionDenied,
            ),
            (
                "admin delete",
                delete(&channel, 1, Some(&admin)).await,
                Code::Ok,
            ),
            (
                "admin purge",
                purge(&channel, Some(&admin)).await,
                Code::PermissionDenied,
            ),
            (
                "anonymous get",
                get(&channel, None).await,
                Code::Unauthenticated,
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
        let _ = stop.send(());
        task.await.unwrap();
    }
}

/// Audit and secrecy over TLS: refused client certificates are recorded with the client
/// address, and private key material never
/// appears in logs, errors or `Debug` output, even when a reload reads a broken key.
#[test]
fn audit_events_and_no_key_material_in_output() {
    const MARKER: &str = "c2VjcmV0LWtleS1ieXRlcy1tdXN0LW5vdC1sZWFr";
    let ((debug, error), text) = crate::audit::captured(async {
        let ca = Ca::new("CA");
        let dir = tempfile::tempdir().unwrap();
        let server_id = ca.server();
        let cert = write(dir.path(), "server.pem", &server_id.cert);
        let key = write(dir.path(), "server-key.pem", &server_id.key);
        let client_ca = write(dir.path(), "ca.pem", &ca.pem);
        let tls = mtls_example::tls(&cert, &key, &client_ca, None).unwrap();
        let authenticator = MtlsAuthenticator::builder()
            .allow_trust_domain("prod.example")
            .build()
            .unwrap();
        let server = Server::start(tls.clone(), authenticator).await;
        let me = ca.issue(&Leaf {
            spiffe: &["spiffe://prod.example/api"],
            serial: 31,
            ..Leaf::default()
        });
        let (status, _) = get_once(server.addr, client(&ca, Some(&me), &[]), "/whoami")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let outsider = ca.issue(&Leaf {
            spiffe: &["spiffe://staging.example/api"],
            serial: 33,
            ..Leaf::default()
        });
        let (status, _) = get_once(server.addr, client(&ca, Some(&outsider), &[]), "/whoami")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        let stranger = Ca::new("stranger").issue(&Leaf {
            serial: 32,
            ..Leaf::default()
        });
        assert!(
            get_once(server.addr, client(&ca, Some(&stranger), &[]), "/health")
                .await
                .is_err()
        );

        // A new key file that is not a key: refused, the old pair stays.
        write(
            dir.path(),
            "server-key.pem",
            &format!("-----BEGIN PRIVATE KEY-----\n{MARKER}\n-----END PRIVATE KEY-----\n"),
        );
        let error = tls.reload().unwrap_err();
        assert_eq!(
            get_once(server.addr, client(&ca, Some(&me), &[]), "/health")
                .await
                .unwrap()
                .0,
            StatusCode::OK
        );
        server.shutdown().await;
        (format!("{tls:?}"), error.to_string())
    });
    // Only the events this thread emits itself (the reload) or that no other test's callsite
    // shares are asserted: request events can be missed by the shared capture while other
    // tests run in parallel without a subscriber.
    let events = crate::audit::all_audit_events(&text);
    assert!(
        events.iter().any(|e| e["event"] == "authn.failure"
            && e["reason_code"] == "tls.client_certificate_rejected"
            && e["client_ip"] == "127.0.0.1"),
        "{text}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["reason_code"] == "tls.reload_failed"
                && e["details"]
                    .as_str()
                    .is_some_and(|d| d.contains(r#""what":"certificate""#))),
        "{text}"
    );
    for output in [&text, &debug, &error] {
        assert!(!output.contains(MARKER), "key material in {output}");
        assert!(
            !output.contains("PRIVATE KEY-----\n"),
            "key material in {output}"
        );
    }
}
