//! Outbound TLS for service-to-service calls: server CA roots and a client certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;

use super::pem::{self, PemSource};
use super::server::crypto_provider;
use crate::error::ConfigError;

/// Builds the rustls client configuration of an outbound mTLS connection. Start with
/// [`TlsClientConfig::builder`].
#[must_use]
#[derive(Debug, Default)]
pub struct TlsClientConfigBuilder {
    roots: Vec<PemSource>,
    identity: Option<(PemSource, PemSource)>,
    alpn: Vec<Vec<u8>>,
    tls13_only: bool,
}

/// The client side of mutual TLS: which servers to trust (only the given CA roots, never the
/// system store) and which certificate to present.
///
/// The result is a plain `rustls::ClientConfig` for tokio-rustls, hyper-rustls, reqwest
/// (`use_preconfigured_tls`) or tonic. The same protocol and cipher policy as the server
/// applies: TLS 1.2+ (1.3 preferred), ECDHE + AEAD only.
///
/// ```
/// # fn pem_pair() -> (String, String, String) {
/// #     let ca_key = rcgen::KeyPair::generate().unwrap();
/// #     let mut ca = rcgen::CertificateParams::default();
/// #     ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
/// #     let ca_cert = ca.self_signed(&ca_key).unwrap();
/// #     let key = rcgen::KeyPair::generate().unwrap();
/// #     let leaf = rcgen::CertificateParams::new(vec!["client.internal".into()]).unwrap();
/// #     let issuer = rcgen::Issuer::new(ca, ca_key);
/// #     let cert = leaf.signed_by(&key, &issuer).unwrap();
/// #     (ca_cert.pem(), cert.pem(), key.serialize_pem())
/// # }
/// use portcullis::tls::TlsClientConfig;
///
/// let (server_ca_pem, client_cert_pem, client_key_pem) = pem_pair();
/// let config = TlsClientConfig::builder()
///     .root_ca_pem(server_ca_pem)
///     .client_certificate_pem(client_cert_pem, client_key_pem)
///     .build()
///     .unwrap();
/// assert!(config.client_auth_cert_resolver.has_certs());
/// let _connector = tokio_rustls::TlsConnector::from(config);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TlsClientConfig;

impl TlsClientConfig {
    /// An empty builder: at least one root CA is required.
    pub fn builder() -> TlsClientConfigBuilder {
        TlsClientConfigBuilder::default()
    }
}

impl TlsClientConfigBuilder {
    /// Adds the CA certificates (PEM bundle file) that server certificates must chain to.
    pub fn root_ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.roots.push(PemSource::file(path));
        self
    }

    /// Adds server CA certificates as PEM bytes.
    pub fn root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots.push(PemSource::Bytes(pem.into()));
        self
    }

    /// The client certificate chain (leaf first) and private key from PEM files.
    pub fn client_certificate_files(
        mut self,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Self {
        self.identity = Some((PemSource::file(chain), PemSource::file(key)));
        self
    }

    /// The client certificate chain and private key as PEM bytes.
    pub fn client_certificate_pem(
        mut self,
        chain: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((PemSource::Bytes(chain.into()), PemSource::Bytes(key.into())));
        self
    }

    /// ALPN protocols to offer (default: none; tonic and hyper-rustls set their own).
    pub fn alpn_protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<Vec<u8>>,
    {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Refuses TLS 1.2.
    pub fn tls13_only(mut self) -> Self {
        self.tls13_only = true;
        self
    }

    /// Reads and checks every input and builds the rustls configuration.
    pub fn build(self) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
        if self.roots.is_empty() {
            return Err(ConfigError::new(
                "TLS client: no root CA (root_ca_file or root_ca_pem)",
            ));
        }
        let mut roots = RootCertStore::empty();
        for source in &self.roots {
            let what = source.describe("server CA bundle");
            for cert in pem::certificates(&source.read("server CA bundle")?, &what)? {
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::new(format!("{what}: {e}")))?;
            }
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
            .with_protocol_versions(versions)
            .map_err(|e| ConfigError::new(format!("TLS client: {e}")))?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((chain, key)) => {
                let what = chain.describe("client certificate");
                let certs = pem::certificates(&chain.read("client certificate")?, &what)?;
                let key = pem::private_key(
                    &key.read("client private key")?,
                    &key.describe("client private key"),
                )?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    ConfigError::new(format!(
                        "{what}: the private key does not match the certificate or is unsupported ({e})"
                    ))
                })?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_required_and_checked() {
        assert!(TlsClientConfig::builder().build().is_err());
        assert!(
            TlsClientConfig::builder()
                .root_ca_pem("not pem")
                .build()
                .is_err()
        );
        let missing = TlsClientConfig::builder()
            .root_ca_file("/nonexistent/ca.pem")
            .build()
            .unwrap_err();
        assert!(
            missing.message().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
    }

    #[test]
    fn mismatched_key_is_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.internal".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let err = TlsClientConfig::builder()
            .root_ca_pem(cert.pem())
            .client_certificate_pem(cert.pem(), other.serialize_pem())
            .build()
            .unwrap_err();
        assert!(err.message().contains("does not match"), "{err}");
        assert!(!err.message().contains("PRIVATE KEY"));
    }
}
