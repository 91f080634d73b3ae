//! TLS termination with client identities (feature `tls`): rustls with the aws-lc-rs provider.
//!
//! - [`TlsServerConfig`]: a server configuration from PEM files or bytes. TLS 1.2 and 1.3 only
//!   (1.3 preferred, [`tls13_only`](TlsServerConfigBuilder::tls13_only) to refuse 1.2), ECDHE key
//!   exchange with AEAD ciphers only, extended master secret required for TLS 1.2, no 0-RTT,
//!   ALPN `h2` and `http/1.1`. Client certificates [`Required`](ClientAuth::Required) or
//!   [`Optional`](ClientAuth::Optional) against a client CA bundle, with CRLs.
//! - Hot reload: [`TlsServerConfig::spawn_reloader`] checks the certificate, key and CRL files
//!   every few seconds and swaps new material in atomically for the next handshake; open
//!   connections keep theirs. A new file that does not parse, whose key does not match, or
//!   whose certificate is expired keeps the last good material and is reported
//!   (`tls.reload_failed` on the audit target, [`ReloadStatus::last_error`]).
//! - [`serve`]: accepts TLS connections and serves an axum router (any tower service) over
//!   HTTP/1.1 and HTTP/2 with graceful shutdown; each request carries the peer address
//!   (`ConnectInfo<SocketAddr>`), [`TlsConnectInfo`], and the verified [`PeerCertificates`] and
//!   [`ClientIdentity`] (SPIFFE ID, DNS SANs, subject) of the client.
//! - [`TlsIncoming`]: the same acceptor as a stream for tonic's `serve_with_incoming`;
//!   [`ClientIdentity::from_extensions`] reads tonic's TLS connection info.
//! - [`TlsClientConfig`]: the client side of mTLS for outbound calls.
//!
//! The [`MtlsAuthenticator`](crate::authn::mtls::MtlsAuthenticator) turns the identity into a
//! [`Principal`](crate::principal::Principal), so policies treat services like users.
//!
//! ```
//! use portcullis::tls::{ClientAuth, TlsServerConfig};
//!
//! # let ca_key = rcgen::KeyPair::generate().unwrap();
//! # let mut ca = rcgen::CertificateParams::default();
//! # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
//! # let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
//! # let key = rcgen::KeyPair::generate().unwrap();
//! # let cert_pem = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap()
//! #     .signed_by(&key, &rcgen::Issuer::new(ca, ca_key)).unwrap().pem();
//! # let key_pem = key.serialize_pem();
//! let tls = TlsServerConfig::builder()
//!     .certificate_pem(cert_pem, key_pem) // or certificate_files(cert, key), reloaded
//!     .client_ca_pem(ca_pem)              // client certificates required
//!     .build()
//!     .unwrap();
//! assert_eq!(tls.client_auth(), ClientAuth::Required);
//! assert_eq!(tls.rustls_config().alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
//!
//! // A key that does not belong to the certificate is a configuration error, not a panic.
//! # let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
//! # let cert_pem = tls_cert_again();
//! # fn tls_cert_again() -> String {
//! #     let k = rcgen::KeyPair::generate().unwrap();
//! #     rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&k).unwrap().pem()
//! # }
//! assert!(TlsServerConfig::builder().certificate_pem(cert_pem, other).build().is_err());
//! ```
//!
//! Serving an axum router (see `examples/mtls.rs` for a complete service):
//!
//! ```no_run
//! # async fn run(tls: portcullis::tls::TlsServerConfig, app: axum::Router) -> std::io::Result<()> {
//! let _reloader = tls.spawn_reloader();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! portcullis::tls::serve(listener, tls, app)
//!     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```
//!
//! # Deployment caveat
//! The identity is only as good as the client CA bundle: trust a CA that issues client
//! certificates for your workloads only (a private CA or SPIFFE trust bundle), never a public
//! web CA, and keep its CRLs fresh (an expired CRL refuses every client). The client CA bundle
//! is read once at startup; rotating it needs a restart (certificate, key and CRLs reload).
//! Behind a TLS-terminating proxy the peer is the proxy: this module does not read
//! client-certificate headers forwarded by proxies. With client authentication, sessions are
//! not resumed, so each connection pays a full handshake (a revoked client cannot return on an
//! old ticket). [`serve`] shuts down connections with a client certificate gracefully when the
//! CRLs change and every connection after [`DEFAULT_MAX_CONNECTION_AGE`], so a revoked client
//! is cut off at its next request; the mTLS authenticator re-checks the certificate expiry on
//! every request. [`TlsIncoming`] hands connections to tonic, which serves them: set tonic's
//! `Server::max_connection_age` to bound how long a revoked client keeps its connection.

mod client;
mod identity;
mod pem;
mod serve;
mod server;

pub use client::{TlsClientConfig, TlsClientConfigBuilder};
pub use identity::{ClientIdentity, IdentityError, PeerCertificates, SpiffeId};
pub use serve::{DEFAULT_MAX_CONNECTION_AGE, Serve, TlsConnectInfo, TlsIncoming, serve};
pub use server::{
    ClientAuth, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_RELOAD_INTERVAL, ReloadOutcome, ReloadStatus,
    ReloaderHandle, TlsServerConfig, TlsServerConfigBuilder, crypto_provider,
};
