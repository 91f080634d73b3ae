//! Test support: keys generated at run time, tokens minted with them, and an in-process
//! identity provider ([`TestIdp`]: discovery and JWKS on a loopback port, with faults).
//!
//! For tests of services built on portcullis (and for the `secure_api` example's dev mode).
//! Keys are generated fresh with aws-lc-rs; nothing here is meant for production signing.
//!
//! ```
//! use portcullis::testing::{TestKey, jwks_json};
//!
//! let key = TestKey::ed25519("dev-1");
//! let token = key.mint(&key.claims("alice", "https://issuer.test", "api"));
//! assert_eq!(token.split('.').count(), 3);
//! let jwks = jwks_json(&[&key]);
//! assert!(jwks.contains("\"kid\":\"dev-1\""));
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
};
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretSlice;
use serde_json::{Value, json};

use crate::authn::jwt::VerificationKey;

pub use crate::clock::ManualClock;

mod idp;
pub use self::idp::{Fault, TestIdp, jwks_json_copies};

/// A signing key with its matching verification key, for tests.
#[derive(Clone)]
pub struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    verification: VerificationKey,
    public_jwk: Option<Value>,
}

impl fmt::Debug for TestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Unwraps a key-handling result in test support. Key generation and encoding only fail when
/// the operating system's random source or the crypto library is broken: an environment fault
/// worth a loud panic, not an error every test must handle.
#[track_caller]
fn must<T, E: fmt::Debug>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("test key support: {what} failed: {e:?}"),
    }
}

impl TestKey {
    fn from_encoding(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk = must(
            Jwk::from_encoding_key(&encoding, alg),
            "derive the public JWK",
        );
        jwk.common.key_id = Some(kid.to_owned());
        let verification = must(VerificationKey::from_jwk(&jwk), "JWK round-trips");
        let public_jwk = must(serde_json::to_value(&jwk), "JWK serializes");
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            verification,
            public_jwk: Some(public_jwk),
        }
    }

    /// A fresh Ed25519 key (`EdDSA`).
    pub fn ed25519(kid: &str) -> Self {
        let pair = must(Ed25519KeyPair::generate(), "generate Ed25519 key");
        let der = must(pair.to_pkcs8v1(), "encode Ed25519 key");
        Self::from_encoding(
            kid,
            Algorithm::EdDSA,
            EncodingKey::from_ed_der(der.as_ref()),
        )
    }

    /// A fresh P-256 key (`ES256`).
    pub fn es256(kid: &str) -> Self {
        let pair = must(
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING),
            "generate P-256 key",
        );
        let der = must(pair.to_pkcs8v1(), "encode P-256 key");
        Self::from_encoding(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(der.as_ref()),
        )
    }

    /// A fresh P-384 key (`ES384`).
    pub fn es384(kid: &str) -> Self {
        let pair = must(
            EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING),
            "generate P-384 key",
        );
        let der = must(pair.to_pkcs8v1(), "encode P-384 key");
        Self::from_encoding(
            kid,
            Algorithm::ES384,
            EncodingKey::from_ec_der(der.as_ref()),
        )
    }

    /// A fresh 2048-bit RSA key used with `alg` (RS256/384/512 or PS256/384/512).
    pub fn rsa(kid: &str, alg: Algorithm) -> Self {
        let pair = must(
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048),
            "generate RSA key",
        );
        let der: Pkcs8V1Der<'static> = must(pair.as_der(), "encode RSA key");
        let pem = pem_encode("PRIVATE KEY", der.as_ref());
        let encoding = must(EncodingKey::from_rsa_pem(pem.as_bytes()), "load RSA key");
        let mut key = Self::from_encoding(kid, alg, encoding);
        // Pin the verification key to the one algorithm the test signs with.
        key.verification = must(
            key.verification.clone().restrict(&[alg]).ok_or(alg),
            "pin the RSA key to its algorithm",
        );
        if let Some(jwk) = key.public_jwk.as_mut() {
            jwk["alg"] = json!(format!("{alg:?}"));
        }
        key
    }

    /// A shared secret used with `alg` (HS256/384/512). `secret` must be long enough for the
    /// algorithm (32/48/64 bytes).
    pub fn hmac(kid: &str, alg: Algorithm, secret: &[u8]) -> Self {
        let verification = must(
            VerificationKey::hmac(&SecretSlice::from(secret.to_vec()), alg),
            "HMAC secret long enough for its algorithm",
        )
        .with_kid(kid);
        Self {
            kid: kid.to_owned(),
            alg,
            encoding: EncodingKey::from_secret(secret),
            verification,
            public_jwk: None,
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }
    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
    /// The matching verification key (with this key's `kid`).
    pub fn verification_key(&self) -> VerificationKey {
        self.verification.clone()
    }
    /// The public JWK (`None` for HMAC keys, which have no public form).
    pub fn public_jwk(&self) -> Option<&Value> {
        self.public_jwk.as_ref()
    }

    /// Claims for a token valid for ten minutes from now: `sub`, `iss`, `aud`, `iat`, `exp`,
    /// and a random `jti`.
    pub fn claims(&self, sub: &str, iss: &str, aud: &str) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        json!({"sub": sub, "iss": iss, "aud": aud, "iat": now, "exp": now + 600, "jti": random_id()})
    }

    /// Signs `claims` with this key, naming its `kid` and algorithm in the header.
    pub fn mint(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.mint_with_header(&header, claims)
    }

    /// Signs `claims` with this key under a caller-chosen header (to test hostile headers).
    pub fn mint_with_header(&self, header: &Header, claims: &Value) -> String {
        must(
            jsonwebtoken::encode(header, claims, &self.encoding),
            "sign test token",
        )
    }
}

/// A JWKS document (`{"keys": [...]}`) with the public JWKs of `keys` (HMAC keys skipped).
pub fn jwks_json(keys: &[&TestKey]) -> String {
    let keys: Vec<&Value> = keys.iter().filter_map(|k| k.public_jwk()).collect();
    json!({ "keys": keys }).to_string()
}

/// 128 random bits, base64url-encoded, for `jti`s.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // A failing OS random source leaves zeros; ids are then only unique by chance, which is
    // acceptable for test tokens.
    let _ = getrandom::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
