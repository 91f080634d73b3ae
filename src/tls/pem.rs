//! PEM inputs: certificate chains, private keys, CA bundles and CRLs, from bytes or files.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::ConfigError;

/// Where PEM material comes from: bytes given at build time or a file read at build time and
/// again on every reload.
#[derive(Clone)]
pub(crate) enum PemSource {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Bytes may hold a private key: never print them.
            PemSource::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            PemSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl PemSource {
    pub(crate) fn file(path: impl AsRef<Path>) -> Self {
        PemSource::File(path.as_ref().to_path_buf())
    }

    pub(crate) fn is_file(&self) -> bool {
        matches!(self, PemSource::File(_))
    }

    /// Reads the current contents (the file is read again on every call).
    pub(crate) fn read(&self, what: &str) -> Result<Vec<u8>, ConfigError> {
        match self {
            PemSource::Bytes(b) => Ok(b.clone()),
            PemSource::File(path) => std::fs::read(path).map_err(|e| {
                ConfigError::new(format!("cannot read {what} {}: {e}", path.display()))
            }),
        }
    }

    pub(crate) fn describe(&self, what: &str) -> String {
        match self {
            PemSource::Bytes(_) => format!("{what} (bytes)"),
            PemSource::File(path) => format!("{what} {}", path.display()),
        }
    }
}

/// Every `CERTIFICATE` block, in order; at least one.
pub(crate) fn certificates(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(format!("{what}: invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(format!(
            "{what}: no CERTIFICATE block found"
        )));
    }
    Ok(certs)
}

/// The one private key (PKCS#8, PKCS#1 or SEC1). The error never includes key material.
pub(crate) fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        let reason = match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key block found",
            _ => "not a readable PEM private key",
        };
        ConfigError::new(format!("{what}: {reason}"))
    })
}

/// Every `X509 CRL` block; at least one.
pub(crate) fn crls(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let crls = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(format!("{what}: invalid PEM: {e}")))?;
    if crls.is_empty() {
        return Err(ConfigError::new(format!("{what}: no X509 CRL block found")));
    }
    Ok(crls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_inputs_are_config_errors() {
        assert!(certificates(b"", "cert").is_err());
        assert!(certificates(b"hello", "cert").is_err());
        assert!(crls(b"", "crl").is_err());
        let err = private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n", "key").unwrap_err();
        assert!(!err.message().contains("AAAA"), "{err}");
        assert!(private_key(b"", "key").is_err());
    }

    #[test]
    fn debug_of_bytes_hides_them() {
        let s = PemSource::Bytes(b"-----BEGIN PRIVATE KEY-----secret".to_vec());
        assert!(!format!("{s:?}").contains("secret"));
    }
}
