//! Verification keys: where the algorithm is pinned.

use std::fmt;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::{ExposeSecret, SecretSlice};

use crate::error::ConfigError;

/// Every asymmetric algorithm portcullis verifies. HMAC algorithms are only ever enabled by
/// configuring a shared secret explicitly.
pub const ASYMMETRIC_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The smallest HMAC secret accepted for each HS algorithm: the hash output size (RFC 7518
/// section 3.2).
fn min_hmac_len(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::HS256 => Some(32),
        Algorithm::HS384 => Some(48),
        Algorithm::HS512 => Some(64),
        _ => None,
    }
}

/// A key that verifies token signatures, with the algorithms it may be used with.
///
/// The algorithm is a property of the key, never of the token: a token whose header names an
/// algorithm the key is not pinned to is refused, which closes the classic
/// RSA-public-key-as-HMAC-secret confusion and `alg: none`.
///
/// ```
/// use portcullis::authn::jwt::VerificationKey;
///
/// let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","alg":"EdDSA",
///     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
/// let keys = VerificationKey::from_jwks_json(jwks).unwrap();
/// assert_eq!(keys[0].kid(), Some("k1"));
///
/// // HMAC keys are never taken from a JWKS.
/// let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}"#;
/// assert!(VerificationKey::from_jwks_json(oct).is_err());
/// ```
#[derive(Clone)]
pub struct VerificationKey {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl fmt::Debug for VerificationKey {
    // The decoding key can hold an HMAC secret: show only its id and algorithms.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    /// A public key in PEM (SPKI `PUBLIC KEY`, `RSA PUBLIC KEY`, or a certificate), pinned to
    /// `algorithm`. HMAC algorithms are refused here: use [`VerificationKey::hmac`].
    pub fn from_pem(pem: &[u8], algorithm: Algorithm) -> Result<Self, ConfigError> {
        let key = match algorithm {
            a if RSA_ALGORITHMS.contains(&a) => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            other => {
                return Err(ConfigError::new(format!(
                    "{other:?} cannot be used with a PEM public key"
                )));
            }
        }
        .map_err(|e| ConfigError::new(format!("unreadable {algorithm:?} PEM key: {e}")))?;
        Ok(Self {
            kid: None,
            algorithms: vec![algorithm],
            key,
        })
    }

    /// A shared HMAC secret pinned to `algorithm` (HS256/384/512). The secret must be at least
    /// as long as the hash output (32, 48 or 64 bytes).
    pub fn hmac(secret: &SecretSlice<u8>, algorithm: Algorithm) -> Result<Self, ConfigError> {
        let Some(min) = min_hmac_len(algorithm) else {
            return Err(ConfigError::new(format!(
                "{algorithm:?} is not an HMAC algorithm"
            )));
        };
        let bytes = secret.expose_secret();
        if bytes.len() < min {
            return Err(ConfigError::new(format!(
                "HMAC secret for {algorithm:?} must be at least {min} bytes (got {})",
                bytes.len()
            )));
        }
        Ok(Self {
            kid: None,
            algorithms: vec![algorithm],
            key: DecodingKey::from_secret(bytes),
        })
    }

    /// A public JWK. Its `alg`, when present, pins the algorithm; otherwise the algorithms of
    /// its key type are allowed (RSA: RS*/PS*; EC: by curve; OKP: EdDSA). Symmetric (`oct`)
    /// keys and encryption keys are refused.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, ConfigError> {
        let kid = jwk.common.key_id.clone();
        let name = kid.as_deref().unwrap_or("<no kid>");
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err(ConfigError::new(format!(
                "JWK {name} is an encryption key (use=enc)"
            )));
        }
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => {
                    return Err(ConfigError::new(format!(
                        "JWK {name} uses an unsupported curve"
                    )));
                }
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                vec![Algorithm::EdDSA]
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err(ConfigError::new(format!(
                    "JWK {name} is a symmetric (oct) key; HMAC keys are never taken from a JWKS"
                )));
            }
            _ => {
                return Err(ConfigError::new(format!(
                    "JWK {name} has an unsupported key type"
                )));
            }
        };
        let algorithms = match jwk.common.key_algorithm {
            Some(declared) => {
                // The JWK's `alg` name and the JWS algorithm name are the same string.
                let alg = serde_json::to_value(declared)
                    .ok()
                    .and_then(|v| v.as_str().and_then(|s| s.parse::<Algorithm>().ok()))
                    .ok_or_else(|| {
                        ConfigError::new(format!("JWK {name} declares an unsupported alg"))
                    })?;
                if !family.contains(&alg) {
                    return Err(ConfigError::new(format!(
                        "JWK {name} declares alg {alg:?}, which does not match its key type"
                    )));
                }
                vec![alg]
            }
            None => family,
        };
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| ConfigError::new(format!("JWK {name} is unusable: {e}")))?;
        Ok(Self {
            kid,
            algorithms,
            key,
        })
    }

    /// Every signing key of a JWKS document. Encryption keys and keys of unknown types are
    /// skipped; an `oct` key, or a set with no usable key, is an error.
    pub fn from_jwks_json(json: &str) -> Result<Vec<Self>, ConfigError> {
        let set: JwkSet = serde_json::from_str(json)
            .map_err(|e| ConfigError::new(format!("JWKS is not valid JSON: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                return Err(ConfigError::new(
                    "JWKS contains a symmetric (oct) key; HMAC keys are never taken from a JWKS",
                ));
            }
            match Self::from_jwk(jwk) {
                Ok(key) => keys.push(key),
                Err(e) => tracing::warn!(target: "portcullis::jwt", error = %e, "skipping JWK"),
            }
        }
        if keys.is_empty() {
            return Err(ConfigError::new("JWKS has no usable signing key"));
        }
        Ok(keys)
    }

    /// Sets the key id tokens must name in their `kid` header to select this key.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithms this key verifies.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// Keeps only algorithms in `allowed`; `None` if nothing is left.
    pub(crate) fn restrict(mut self, allowed: &[Algorithm]) -> Option<Self> {
        self.algorithms.retain(|a| allowed.contains(a));
        (!self.algorithms.is_empty()).then_some(self)
    }
}
