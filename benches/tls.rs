//! Criterion benchmarks of the TLS paths (feature `tls`):
//!
//! - `tls/identity_from_der`: parsing the client identity (SPIFFE ID, DNS names, subject,
//!   fingerprint) from a leaf certificate, done once per connection by `tls::serve`;
//! - `tls/mtls_authenticate`: `MtlsAuthenticator` turning the identity in the request extensions
//!   into a principal, done once per request;
//! - `tls/handshake_mtls_tls13`: one full TLS 1.3 handshake with a client certificate (ECDSA
//!   P-256), client and server in memory over a tokio duplex pipe; with client authentication
//!   sessions are not resumed, so every connection pays this.
//!
//! Run with `cargo bench --features full --bench tls -- --warm-up-time 1 --measurement-time 3`.

#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use http::Request;
use portcullis::authn::Authenticator;
use portcullis::authn::mtls::MtlsAuthenticator;
use portcullis::tls::{ClientIdentity, TlsClientConfig, TlsServerConfig};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
    client_der: Vec<u8>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::default();
    client.subject_alt_names = vec![
        SanType::URI(
            "spiffe://prod.example/ns/billing/sa/api"
                .try_into()
                .unwrap(),
        ),
        SanType::DnsName("billing.internal".try_into().unwrap()),
    ];
    let client = client.signed_by(&client_key, &issuer).unwrap();
    Pki {
        ca: ca_pem,
        server: (server.pem(), server_key.serialize_pem()),
        client: (client.pem(), client_key.serialize_pem()),
        client_der: client.der().to_vec(),
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let pki = pki();

    c.bench_function("tls/identity_from_der", |b| {
        b.iter(|| ClientIdentity::from_der(black_box(&pki.client_der)).unwrap());
    });

    let authenticator = MtlsAuthenticator::builder()
        .allow_trust_domain("prod.example")
        .roles_for_trust_domain("prod.example", ["service"])
        .build()
        .unwrap();
    let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
    parts
        .extensions
        .insert(ClientIdentity::from_der(&pki.client_der).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    c.bench_function("tls/mtls_authenticate", |b| {
        b.iter(|| {
            runtime
                .block_on(authenticator.authenticate(black_box(&parts)))
                .unwrap()
                .unwrap()
        });
    });

    let server = TlsServerConfig::builder()
        .certificate_pem(pki.server.0.clone(), pki.server.1.clone())
        .client_ca_pem(pki.ca.clone())
        .build()
        .unwrap();
    let client = TlsClientConfig::builder()
        .root_ca_pem(pki.ca.clone())
        .client_certificate_pem(pki.client.0.clone(), pki.client.1.clone())
        .build()
        .unwrap();
    let acceptor = server.acceptor();
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&client));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    c.bench_function("tls/handshake_mtls_tls13", |b| {
        b.to_async(&runtime).iter(|| {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            let acceptor = acceptor.clone();
            let connector = connector.clone();
            let name = name.clone();
            async move {
                let (accepted, connected) = tokio::join!(
                    acceptor.accept(server_io),
                    connector.connect(name, client_io)
                );
                let accepted = accepted.unwrap();
                connected.unwrap();
                assert!(accepted.get_ref().1.peer_certificates().is_some());
            }
        });
    });
    c.final_summary();
}
