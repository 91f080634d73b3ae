//! The rustls server configuration: protocol versions, cipher suites, ALPN, client
//! authentication against a CA bundle with CRLs, and the certificate that can be reloaded.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::pem::{self, PemSource};
use crate::error::ConfigError;

/// Default time between two checks of the certificate, key and CRL files.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Default limit on the TLS handshake of one connection.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// No client certificates are requested (server-authenticated TLS only).
    None,
    /// A certificate is requested; a client without one may connect (its requests carry no
    /// [`ClientIdentity`](super::ClientIdentity)), a presented certificate must verify.
    Optional,
    /// Every client must present a certificate that verifies against the client CA bundle.
    Required,
}

/// The crypto provider portcullis uses: aws-lc-rs with only ECDHE key exchange and AEAD cipher
/// suites, TLS 1.3 suites first.
///
/// Every TLS 1.3 suite is AEAD with (EC)DHE; of the TLS 1.2 suites only
/// `TLS_ECDHE_{ECDSA,RSA}_WITH_{AES_128_GCM,AES_256_GCM,CHACHA20_POLY1305}` are kept.
pub fn crypto_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.retain(is_safe_suite);
    provider
        .cipher_suites
        .sort_by_key(|s| u8::from(s.version() != &rustls::version::TLS13));
    provider
}

fn is_safe_suite(suite: &rustls::SupportedCipherSuite) -> bool {
    match suite {
        rustls::SupportedCipherSuite::Tls13(_) => true,
        rustls::SupportedCipherSuite::Tls12(s) => {
            let name = s.common.suite.as_str().unwrap_or("");
            name.starts_with("TLS_ECDHE_")
                && (name.contains("_GCM_") || name.ends_with("CHACHA20_POLY1305_SHA256"))
        }
    }
}

/// Builds a [`TlsServerConfig`]. Start with [`TlsServerConfig::builder`].
#[must_use]
#[derive(Debug)]
pub struct TlsServerConfigBuilder {
    cert: Option<(PemSource, PemSource)>,
    client_ca: Option<PemSource>,
    client_auth: Option<ClientAuth>,
    crls: Vec<PemSource>,
    alpn: Vec<Vec<u8>>,
    tls13_only: bool,
    handshake_timeout: Duration,
    reload_interval: Duration,
}

impl TlsServerConfigBuilder {
    /// The server certificate chain (leaf first) and private key from PEM files; the files are
    /// read again by [`TlsServerConfig::reload`] and the watcher.
    pub fn certificate_files(mut self, chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.cert = Some((PemSource::file(chain), PemSource::file(key)));
        self
    }

    /// The server certificate chain and private key as PEM bytes (never reloaded).
    pub fn certificate_pem(mut self, chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.cert = Some((PemSource::Bytes(chain.into()), PemSource::Bytes(key.into())));
        self
    }

    /// The CA bundle (PEM, one or more certificates) client certificates must chain to. Setting
    /// it makes client certificates [`Required`](ClientAuth::Required) unless
    /// [`client_auth`](Self::client_auth) says otherwise. Read once, at build time.
    pub fn client_ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.client_ca = Some(PemSource::file(path));
        self
    }

    /// The client CA bundle as PEM bytes.
    pub fn client_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.client_ca = Some(PemSource::Bytes(pem.into()));
        self
    }

    /// Whether clients must present a certificate. Default: [`ClientAuth::Required`] with a
    /// client CA bundle, [`ClientAuth::None`] without. `Optional` and `Required` need a CA bundle.
    pub fn client_auth(mut self, mode: ClientAuth) -> Self {
        self.client_auth = Some(mode);
        self
    }

    /// Adds a PEM file of certificate revocation lists from the client CAs. The file is
    /// watched like the certificate. With CRLs, every certificate of a client chain below the
    /// trust anchor needs a CRL from its issuer (unknown status is refused) and an expired CRL
    /// (past its `nextUpdate`) refuses every client: revocation fails closed.
    pub fn crl_file(mut self, path: impl AsRef<Path>) -> Self {
        self.crls.push(PemSource::file(path));
        self
    }

    /// Adds PEM certificate revocation lists as bytes.
    pub fn crl_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.crls.push(PemSource::Bytes(pem.into()));
        self
    }

    /// The ALPN protocols offered, in preference order. Default `h2`, `http/1.1`.
    pub fn alpn_protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<Vec<u8>>,
    {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Refuses TLS 1.2 (default: TLS 1.2 and 1.3, 1.3 preferred).
    pub fn tls13_only(mut self) -> Self {
        self.tls13_only = true;
        self
    }

    /// Time a client has to finish the handshake (default 10 s); a slower one is disconnected.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Time between two checks of the certificate, key and CRL files by
    /// [`TlsServerConfig::spawn_reloader`] (default 10 s).
    pub fn reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// Reads every input, checks it, and builds the configuration.
    pub fn build(self) -> Result<TlsServerConfig, ConfigError> {
        let (cert_src, key_src) = self.cert.ok_or_else(|| {
            ConfigError::new("TLS server: no certificate (certificate_files or certificate_pem)")
        })?;
        if self.handshake_timeout.is_zero() || self.reload_interval.is_zero() {
            return Err(ConfigError::new(
                "TLS server: handshake_timeout and reload_interval must be positive",
            ));
        }
        let mode = match (self.client_auth, &self.client_ca) {
            (Some(ClientAuth::None), Some(_)) => {
                return Err(ConfigError::new(
                    "TLS server: a client CA bundle with ClientAuth::None would be ignored",
                ));
            }
            (Some(ClientAuth::Optional | ClientAuth::Required), None) => {
                return Err(ConfigError::new(
                    "TLS server: client authentication needs a client CA bundle",
                ));
            }
            (Some(mode), _) => mode,
            (None, Some(_)) => ClientAuth::Required,
            (None, None) => ClientAuth::None,
        };
        if !self.crls.is_empty() && self.client_ca.is_none() {
            return Err(ConfigError::new(
                "TLS server: CRLs need a client CA bundle to check against",
            ));
        }
        if self.alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err(ConfigError::new(
                "TLS server: ALPN protocol names are 1..=255 bytes",
            ));
        }
        let provider = Arc::new(crypto_provider());

        let certified = CertSource {
            chain: cert_src,
            key: key_src,
        };
        let (key, cert_digest) = certified.load(&provider, SystemTime::now())?;
        let resolver = Arc::new(ReloadingResolver {
            current: ArcSwap::from(Arc::new(key)),
        });

        let client = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                let what = ca.describe("client CA bundle");
                for cert in pem::certificates(&ca.read("client CA bundle")?, &what)? {
                    roots
                        .add(cert)
                        .map_err(|e| ConfigError::new(format!("{what}: {e}")))?;
                }
                let roots = Arc::new(roots);
                let (crls, crl_digest) = load_crls(&self.crls)?;
                let inner = client_verifier(&roots, crls, &provider, mode)?;
                Some(ClientVerification {
                    hints: roots.subjects(),
                    roots,
                    mode,
                    sources: self.crls,
                    current: ArcSwap::from(Arc::new(inner)),
                    crl_digest: Mutex::new(crl_digest),
                })
            }
            None => None,
        };
        let client = client.map(Arc::new);

        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| ConfigError::new(format!("TLS server: {e}")))?;
        let builder = match &client {
            Some(verifier) => {
                builder.with_client_cert_verifier(Arc::new(ReloadingVerifier(verifier.clone())))
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = if self.alpn.is_empty() {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            self.alpn
        };
        config.ignore_client_order = true;
        // TLS 1.2 without extended master secret is open to the triple-handshake attack.
        config.require_ems = true;
        config.max_early_data_size = 0;
        if client.is_some() {
            // A resumed session skips certificate verification, so a client revoked by a newer
            // CRL could come back on an old ticket: with client authentication every connection
            // makes a full handshake.
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }

        let (status, _) = watch::channel(ReloadStatus {
            generation: 0,
            crl_generation: 0,
            certificate_sha256: cert_digest.leaf_fingerprint.clone(),
            last_error: None,
        });
        Ok(TlsServerConfig {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                provider,
                resolver,
                certified,
                cert_digest: Mutex::new(cert_digest.files),
                client,
                status,
                handshake_timeout: self.handshake_timeout,
                reload_interval: self.reload_interval,
            }),
        })
    }
}

fn client_verifier(
    roots: &Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    provider: &Arc<CryptoProvider>,
    mode: ClientAuth,
) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    if !crls.is_empty() {
        builder = builder.with_crls(crls).enforce_revocation_expiration();
    }
    if mode == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    builder
        .build()
        .map_err(|e| ConfigError::new(format!("TLS client verification: {e}")))
}

fn load_crls(
    sources: &[PemSource],
) -> Result<(Vec<CertificateRevocationListDer<'static>>, [u8; 32]), ConfigError> {
    let mut hash = Sha256::new();
    let mut all = Vec::new();
    for source in sources {
        let bytes = source.read("CRL file")?;
        hash.update(Sha256::digest(&bytes));
        all.extend(pem::crls(&bytes, &source.describe("CRL file"))?);
    }
    Ok((all, hash.finalize().into()))
}

/// The certificate and key inputs and how to turn them into a `CertifiedKey`.
#[derive(Debug)]
struct CertSource {
    chain: PemSource,
    key: PemSource,
}

struct CertDigest {
    files: [u8; 32],
    leaf_fingerprint: String,
}

impl CertSource {
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), ConfigError> {
        Ok((
            self.chain.read("certificate chain")?,
            self.key.read("private key")?,
        ))
    }

    fn digest(chain: &[u8], key: &[u8]) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(Sha256::digest(chain));
        hash.update(Sha256::digest(key));
        hash.finalize().into()
    }

    fn load(
        &self,
        provider: &CryptoProvider,
        now: SystemTime,
    ) -> Result<(CertifiedKey, CertDigest), ConfigError> {
        let (chain, key) = self.read()?;
        let digest = Self::digest(&chain, &key);
        let (ck, fp) = self
            .parse(&chain, &key, provider, now)
            .map_err(|refused| refused.error)?;
        Ok((
            ck,
            CertDigest {
                files: digest,
                leaf_fingerprint: fp,
            },
        ))
    }

    fn parse(
        &self,
        chain: &[u8],
        key: &[u8],
        provider: &CryptoProvider,
        now: SystemTime,
    ) -> Result<(CertifiedKey, String), Refused> {
        let what = self.chain.describe("certificate chain");
        let certs = pem::certificates(chain, &what)?;
        let key = pem::private_key(key, &self.key.describe("private key"))?;
        check_validity(&certs[0], now, &what)?;
        let fingerprint = super::identity::ClientIdentity::from_der(certs[0].as_ref())
            .map(|id| id.fingerprint_sha256().to_owned())
            .map_err(|e| ConfigError::new(format!("{what}: {e}")))?;
        let certified = CertifiedKey::from_der(certs, key, provider).map_err(|e| {
            ConfigError::new(format!(
                "{what}: the private key does not match the certificate or is unsupported ({e})"
            ))
        })?;
        Ok((certified, fingerprint))
    }
}

/// A refused certificate, and whether the same files can pass later.
struct Refused {
    error: ConfigError,
    /// The leaf is not valid yet: only time is missing (a certificate issued a moment ago,
    /// a server clock a few seconds behind the CA's), so the same files are tried again.
    retry: bool,
}

impl From<ConfigError> for Refused {
    fn from(error: ConfigError) -> Self {
        Refused {
            error,
            retry: false,
        }
    }
}

/// Refuses a leaf that is expired or not yet valid, so a reload never installs one.
fn check_validity(leaf: &CertificateDer<'_>, now: SystemTime, what: &str) -> Result<(), Refused> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|_| ConfigError::new(format!("{what}: leaf certificate cannot be parsed")))?;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(Refused {
            error: ConfigError::new(format!("{what}: leaf certificate is not valid yet")),
            retry: true,
        });
    }
    if now > validity.not_after.timestamp() {
        return Err(ConfigError::new(format!("{what}: leaf certificate has expired")).into());
    }
    Ok(())
}

/// Serves the current certificate; a reload swaps it atomically. Handshakes in progress keep
/// the key they started with; established connections are not touched.
struct ReloadingResolver {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The client CA roots (fixed) and the verifier built from them and the current CRLs.
struct ClientVerification {
    roots: Arc<RootCertStore>,
    hints: Vec<DistinguishedName>,
    mode: ClientAuth,
    sources: Vec<PemSource>,
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
    crl_digest: Mutex<[u8; 32]>,
}

impl fmt::Debug for ClientVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerification")
            .field("roots", &self.roots.len())
            .field("mode", &self.mode)
            .field("crls", &self.sources)
            .finish_non_exhaustive()
    }
}

/// Delegates to the current verifier, so new CRLs apply to the next handshake.
#[derive(Debug)]
struct ReloadingVerifier(Arc<ClientVerification>);

impl ReloadingVerifier {
    fn current(&self) -> Arc<Arc<dyn ClientCertVerifier>> {
        self.0.current.load_full()
    }
}

impl ClientCertVerifier for ReloadingVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.mode == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.0.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// What the last reload did; see [`TlsServerConfig::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadStatus {
    /// Incremented on every successful change (certificate or CRLs).
    pub generation: u64,
    /// Incremented on every successful change of the CRLs. [`serve`](fn@super::serve) closes
    /// connections authenticated by a client certificate when it changes, so their clients
    /// reconnect and are verified against the new CRLs.
    pub crl_generation: u64,
    /// SHA-256 (hex) of the leaf certificate now served.
    pub certificate_sha256: String,
    /// The last failed reload, if it happened after the last successful one (the previous
    /// certificate and CRLs stay in use).
    pub last_error: Option<String>,
}

/// The result of one [`TlsServerConfig::reload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// The files did not change.
    Unchanged,
    /// New files were loaded and are used by the next handshake.
    Reloaded,
}

struct Inner {
    config: Arc<rustls::ServerConfig>,
    provider: Arc<CryptoProvider>,
    resolver: Arc<ReloadingResolver>,
    certified: CertSource,
    cert_digest: Mutex<[u8; 32]>,
    client: Option<Arc<ClientVerification>>,
    status: watch::Sender<ReloadStatus>,
    handshake_timeout: Duration,
    reload_interval: Duration,
}

/// A TLS server configuration whose certificate, key and CRLs can be reloaded while it serves.
///
/// Cheap to clone (one `Arc`). See the [module docs](super) for an example.
#[derive(Clone)]
pub struct TlsServerConfig {
    inner: Arc<Inner>,
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("certificate", &self.inner.certified)
            .field("client", &self.inner.client)
            .field("alpn", &self.inner.config.alpn_protocols.len())
            .field("handshake_timeout", &self.inner.handshake_timeout)
            .field("reload_interval", &self.inner.reload_interval)
            .finish_non_exhaustive()
    }
}

impl TlsServerConfig {
    /// Starts a configuration: TLS 1.2 and 1.3 (1.3 preferred), ECDHE + AEAD suites only,
    /// ALPN `h2` and `http/1.1`, no client authentication until a client CA bundle is given.
    pub fn builder() -> TlsServerConfigBuilder {
        TlsServerConfigBuilder {
            cert: None,
            client_ca: None,
            client_auth: None,
            crls: Vec::new(),
            alpn: Vec::new(),
            tls13_only: false,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }

    /// The rustls configuration (shares the reloadable certificate and CRLs).
    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        self.inner.config.clone()
    }

    /// A tokio-rustls acceptor for this configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.inner.config.clone())
    }

    /// Whether clients must, may or may not present a certificate.
    pub fn client_auth(&self) -> ClientAuth {
        self.inner
            .client
            .as_ref()
            .map_or(ClientAuth::None, |c| c.mode)
    }

    /// The handshake time limit.
    pub fn handshake_timeout(&self) -> Duration {
        self.inner.handshake_timeout
    }

    /// SHA-256 (hex) of the leaf certificate served now.
    pub fn certificate_sha256(&self) -> String {
        self.inner.status.borrow().certificate_sha256.clone()
    }

    /// A receiver that sees every successful and failed reload.
    pub fn subscribe(&self) -> watch::Receiver<ReloadStatus> {
        self.inner.status.subscribe()
    }

    /// Reads the certificate, key and CRL files now and installs them if they changed and are
    /// valid: the chain parses, the key matches the leaf, the leaf is inside its validity
    /// period, the CRLs parse. Anything else keeps the previous material, returns the error
    /// and records an event (`tls.reload_failed` on the audit target). The reload itself
    /// leaves established connections alone; [`serve`](fn@super::serve) closes the ones
    /// authenticated by a client certificate after a CRL change (see
    /// [`ReloadStatus::crl_generation`]).
    ///
    /// Files that failed only because the leaf is not valid yet are tried again at every call
    /// until they pass or change; other failures are reported once per file version.
    pub fn reload(&self) -> Result<ReloadOutcome, ConfigError> {
        self.reload_at(SystemTime::now())
    }

    /// [`reload`](Self::reload) with the certificate validity checked at `now`.
    fn reload_at(&self, now: SystemTime) -> Result<ReloadOutcome, ConfigError> {
        let cert = self.reload_certificate(now);
        let crl = self.reload_crls();
        let outcome = match (&cert, &crl) {
            (Ok(ReloadOutcome::Reloaded), _) | (_, Ok(ReloadOutcome::Reloaded)) => {
                ReloadOutcome::Reloaded
            }
            _ => ReloadOutcome::Unchanged,
        };
        if let Err(e) = cert.as_ref().and(crl.as_ref()) {
            self.inner
                .status
                .send_modify(|s| s.last_error = Some(e.message().to_owned()));
            return Err(e.clone());
        }
        Ok(outcome)
    }

    fn reload_certificate(&self, now: SystemTime) -> Result<ReloadOutcome, ConfigError> {
        let inner = &self.inner;
        let source = &inner.certified;
        if !source.chain.is_file() && !source.key.is_file() {
            return Ok(ReloadOutcome::Unchanged);
        }
        let (chain, key) = source
            .read()
            .inspect_err(|e| reload_failed("certificate", e))?;
        let digest = CertSource::digest(&chain, &key);
        // Held until the outcome is recorded: overlapping reloads (the watcher and a manual
        // call) then install in the order they read.
        let mut last = lock(&inner.cert_digest);
        if *last == digest {
            return Ok(ReloadOutcome::Unchanged);
        }
        let (certified, fingerprint) = match source.parse(&chain, &key, &inner.provider, now) {
            Ok(parsed) => parsed,
            Err(refused) => {
                if !refused.retry {
                    // Bad content stays bad: report it once, not at every check; the next
                    // write to either file is tried again.
                    *last = digest;
                }
                reload_failed("certificate", &refused.error);
                return Err(refused.error);
            }
        };
        inner.resolver.current.store(Arc::new(certified));
        *last = digest;
        inner.status.send_modify(|s| {
            s.generation += 1;
            s.certificate_sha256 = fingerprint.clone();
            s.last_error = None;
        });
        crate::audit::global().record(
            crate::audit::AuditEvent::new(crate::audit::EventType::KeyRotated)
                .with_reason_code("tls.certificate_reloaded")
                .with_detail("certificate_sha256", fingerprint.to_string()),
        );
        Ok(ReloadOutcome::Reloaded)
    }

    fn reload_crls(&self) -> Result<ReloadOutcome, ConfigError> {
        let Some(client) = &self.inner.client else {
            return Ok(ReloadOutcome::Unchanged);
        };
        if !client.sources.iter().any(PemSource::is_file) {
            return Ok(ReloadOutcome::Unchanged);
        }
        let result = (|| {
            let mut hash = Sha256::new();
            let mut raw = Vec::with_capacity(client.sources.len());
            for source in &client.sources {
                let bytes = source.read("CRL file")?;
                hash.update(Sha256::digest(&bytes));
                raw.push(bytes);
            }
            let digest: [u8; 32] = hash.finalize().into();
            // Held until the verifier is installed, so overlapping reloads install in the
            // order they read: an older CRL can never replace a newer one.
            let mut last = lock(&client.crl_digest);
            if *last == digest {
                return Ok(ReloadOutcome::Unchanged);
            }
            let verifier = (|| {
                let mut crls = Vec::new();
                for (source, bytes) in client.sources.iter().zip(&raw) {
                    crls.extend(pem::crls(bytes, &source.describe("CRL file"))?);
                }
                client_verifier(&client.roots, crls, &self.inner.provider, client.mode)
            })();
            // Recorded after the attempt: bad content is reported once per file version.
            *last = digest;
            client.current.store(Arc::new(verifier?));
            Ok(ReloadOutcome::Reloaded)
        })();
        match &result {
            Ok(ReloadOutcome::Reloaded) => {
                self.inner.status.send_modify(|s| {
                    s.generation += 1;
                    s.crl_generation += 1;
                    s.last_error = None;
                });
                crate::audit::global().record(
                    crate::audit::AuditEvent::new(crate::audit::EventType::ConfigLoaded)
                        .with_reason_code("tls.crl_reloaded"),
                );
            }
            Ok(ReloadOutcome::Unchanged) => {}
            Err(e) => reload_failed("crl", e),
        }
        result
    }

    /// Starts the library-owned watcher: a tokio task that calls [`reload`](Self::reload)
    /// every `reload_interval` (file reads run on the blocking pool). It stops when the
    /// returned handle is dropped. Must be called inside a tokio runtime.
    ///
    /// Polling the contents (not file-system notifications) also follows the symlink swaps of
    /// Kubernetes secret volumes and files replaced by `mv`.
    #[must_use = "the watcher stops when the handle is dropped"]
    pub fn spawn_reloader(&self) -> ReloaderHandle {
        let config = self.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(config.inner.reload_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let config = config.clone();
                // Errors were reported as events by `reload`; the previous material stays.
                let _ = tokio::task::spawn_blocking(move || config.reload()).await;
            }
        });
        ReloaderHandle { task }
    }
}

fn reload_failed(what: &'static str, error: &ConfigError) {
    crate::audit::global().record(
        crate::audit::AuditEvent::new(crate::audit::EventType::ConfigLoaded)
            .with_severity(crate::audit::Severity::Warn)
            .with_reason_code("tls.reload_failed")
            .with_reason(format!(
                "{}; the previous material stays in use",
                error.message()
            ))
            .with_detail("what", what),
    );
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A digest is plain data: a panic elsewhere cannot leave it inconsistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stops the certificate watcher when dropped.
#[derive(Debug)]
pub struct ReloaderHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReloaderHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(not_after: Option<(i32, u8, u8)>) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        if let Some((y, m, d)) = not_after {
            params.not_before = rcgen::date_time_ymd(y - 1, m, d);
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn only_ecdhe_aead_suites_tls13_first() {
        let provider = crypto_provider();
        let names: Vec<&str> = provider
            .cipher_suites
            .iter()
            .map(|s| s.suite().as_str().unwrap())
            .collect();
        assert!(names[0].starts_with("TLS13_"), "{names:?}");
        let first_tls12 = names.iter().position(|n| !n.starts_with("TLS13_")).unwrap();
        assert!(
            names[first_tls12..]
                .iter()
                .all(|n| n.starts_with("TLS_ECDHE_"))
        );
        for name in &names {
            assert!(
                name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
        }
    }

    #[test]
    fn builder_errors() {
        let (cert, key) = self_signed(None);
        let (expired, expired_key) = self_signed(Some((2020, 1, 1)));
        let (ca, _) = self_signed(None);
        let errors = [
            TlsServerConfig::builder().build(),
            TlsServerConfig::builder()
                .certificate_pem(expired, expired_key)
                .build(),
            TlsServerConfig::builder()
                .certificate_pem(cert.clone(), key.clone())
                .client_auth(ClientAuth::Required)
                .build(),
            TlsServerConfig::builder()
                .certificate_pem(cert.clone(), key.clone())
                .client_ca_pem(ca.clone())
                .client_auth(ClientAuth::None)
                .build(),
            TlsServerConfig::builder()
                .certificate_pem(cert.clone(), key.clone())
                .crl_pem("x")
                .build(),
            TlsServerConfig::builder()
                .certificate_pem(cert.clone(), key.clone())
                .client_ca_pem(ca.clone())
                .crl_pem("not a crl")
                .build(),
            TlsServerConfig::builder()
                .certificate_pem(cert.clone(), key.clone())
                .alpn_protocols([""])
                .build(),
            TlsServerConfig::builder()
                .certificate_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
                .build(),
        ];
        for (i, result) in errors.into_iter().enumerate() {
            let err = result.unwrap_err();
            assert!(!err.message().contains("PRIVATE KEY"), "case {i}: {err}");
        }
        let ok = TlsServerConfig::builder()
            .certificate_pem(cert, key)
            .client_ca_pem(ca)
            .client_auth(ClientAuth::Optional)
            .tls13_only()
            .build()
            .unwrap();
        assert_eq!(ok.client_auth(), ClientAuth::Optional);
        let config = ok.rustls_config();
        assert!(config.require_ems && config.ignore_client_order);
        assert_eq!(config.send_tls13_tickets, 0);
        assert_eq!(ok.certificate_sha256().len(), 64);
        // Bytes are never reloaded.
        assert_eq!(ok.reload(), Ok(ReloadOutcome::Unchanged));
        assert!(!format!("{ok:?}").contains("PRIVATE"));
    }

    #[test]
    fn reload_keeps_last_good_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (cert, key) = self_signed(None);
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let tls = TlsServerConfig::builder()
            .certificate_files(&cert_path, &key_path)
            .build()
            .unwrap();
        let first = tls.certificate_sha256();
        let status = tls.subscribe();
        assert_eq!(tls.reload(), Ok(ReloadOutcome::Unchanged));

        // A certificate with somebody else's key: refused, reported, the old one stays.
        let (other, _) = self_signed(None);
        std::fs::write(&cert_path, &other).unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(tls.certificate_sha256(), first);
        assert!(status.borrow().last_error.is_some());
        // Reported once: the same bad files are not retried until they change.
        assert_eq!(tls.reload(), Ok(ReloadOutcome::Unchanged));

        // Garbage, then an expired pair: refused as well.
        std::fs::write(&cert_path, "garbage").unwrap();
        assert!(tls.reload().is_err());
        let (expired, expired_key) = self_signed(Some((2021, 6, 1)));
        std::fs::write(&cert_path, &expired).unwrap();
        std::fs::write(&key_path, &expired_key).unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(tls.certificate_sha256(), first);

        // A good new pair is installed.
        let (new, new_key) = self_signed(None);
        std::fs::write(&cert_path, &new).unwrap();
        std::fs::write(&key_path, &new_key).unwrap();
        assert_eq!(tls.reload(), Ok(ReloadOutcome::Reloaded));
        assert_ne!(tls.certificate_sha256(), first);
        let now = status.borrow().clone();
        assert_eq!(now.generation, 1);
        assert_eq!(now.last_error, None);
        assert_eq!(now.certificate_sha256, tls.certificate_sha256());
    }

    #[test]
    fn a_certificate_not_valid_yet_is_tried_again_until_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (cert, key) = self_signed(None);
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let tls = TlsServerConfig::builder()
            .certificate_files(&cert_path, &key_path)
            .build()
            .unwrap();
        let first = tls.certificate_sha256();

        // Issued for 2100-01-01 onwards; the server's clock is behind it.
        let next_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2100, 1, 1);
        params.not_after = rcgen::date_time_ymd(2101, 1, 1);
        std::fs::write(&cert_path, params.self_signed(&next_key).unwrap().pem()).unwrap();
        std::fs::write(&key_path, next_key.serialize_pem()).unwrap();
        let before = SystemTime::UNIX_EPOCH + Duration::from_secs(4_102_444_800 - 5);
        let after = SystemTime::UNIX_EPOCH + Duration::from_secs(4_102_444_800 + 5);
        for _ in 0..2 {
            let err = tls.reload_at(before).unwrap_err();
            assert!(err.message().contains("not valid yet"), "{err}");
            assert_eq!(tls.certificate_sha256(), first);
        }
        // The same files, once the clock has caught up.
        assert_eq!(tls.reload_at(after), Ok(ReloadOutcome::Reloaded));
        assert_ne!(tls.certificate_sha256(), first);
        assert_eq!(tls.reload_at(after), Ok(ReloadOutcome::Unchanged));
        assert_eq!(tls.subscribe().borrow().last_error, None);
    }
}
