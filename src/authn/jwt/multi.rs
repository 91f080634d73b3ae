//! Several issuers behind one authenticator.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use http::request::Parts;

use super::JwtAuthenticator;
use crate::authn::{AuthFuture, Authenticator, bearer_token};
use crate::error::ConfigError;
use crate::principal::Principal;
use crate::rejection::Rejection;

const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Routes each bearer token to the [`JwtAuthenticator`] of the issuer its `iss` claim names
/// (multi-tenant services that trust several identity providers).
///
/// The `iss` claim is read before the signature is checked, from a size-bounded decode of the
/// payload; it only selects which authenticator verifies the token, and that authenticator
/// then checks everything (signature, issuer, audience, expiry) as if it were alone. Tokens
/// naming an issuer that is not configured, and tokens whose payload cannot be read, are
/// refused with 401.
///
/// ```
/// use portcullis::authn::jwt::{JwtAuthenticator, MultiIssuer};
/// use portcullis::testing::TestKey;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (a, b) = (TestKey::es256("a"), TestKey::ed25519("b"));
/// let tenant = |iss: &str, key: &TestKey| {
///     JwtAuthenticator::builder().issuer(iss).audience("api")
///         .key(key.verification_key()).build().unwrap()
/// };
/// let multi = MultiIssuer::builder()
///     .issuer("https://a.example", tenant("https://a.example", &a))
///     .issuer("https://b.example", tenant("https://b.example", &b))
///     .build()
///     .unwrap();
///
/// let token = b.mint(&b.claims("bob", "https://b.example", "api"));
/// assert_eq!(multi.authenticate_token(&token).await.unwrap().subject(), "bob");
///
/// // Signed by a's key but claiming b's issuer: b's authenticator refuses it.
/// let forged = a.mint(&a.claims("eve", "https://b.example", "api"));
/// assert!(multi.authenticate_token(&forged).await.is_err());
/// let unknown = a.mint(&a.claims("eve", "https://c.example", "api"));
/// assert_eq!(multi.authenticate_token(&unknown).await.unwrap_err().status(), 401);
/// # });
/// ```
#[derive(Clone)]
pub struct MultiIssuer {
    by_issuer: HashMap<String, JwtAuthenticator>,
    max_token_bytes: usize,
}

impl fmt::Debug for MultiIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut issuers: Vec<&String> = self.by_issuer.keys().collect();
        issuers.sort();
        f.debug_struct("MultiIssuer")
            .field("issuers", &issuers)
            .field("max_token_bytes", &self.max_token_bytes)
            .finish()
    }
}

impl MultiIssuer {
    /// Starts a configuration. See [`MultiIssuerBuilder`].
    pub fn builder() -> MultiIssuerBuilder {
        MultiIssuerBuilder {
            by_issuer: HashMap::new(),
            errors: Vec::new(),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }

    /// The configured issuers, sorted.
    pub fn issuers(&self) -> Vec<&str> {
        let mut issuers: Vec<&str> = self.by_issuer.keys().map(String::as_str).collect();
        issuers.sort_unstable();
        issuers
    }

    /// Selects the authenticator by the token's `iss` and runs its
    /// [`authenticate_token`](JwtAuthenticator::authenticate_token).
    pub async fn authenticate_token(&self, token: &str) -> Result<Principal, Rejection> {
        let issuer = unverified_issuer(token, self.max_token_bytes)
            .map_err(Rejection::invalid_credential)?;
        let Some(authenticator) = self.by_issuer.get(&issuer) else {
            return Err(Rejection::invalid_credential("token issuer is not trusted"));
        };
        authenticator.authenticate_token(token).await
    }
}

impl Authenticator for MultiIssuer {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(async move {
            match bearer_token(parts)? {
                Some(token) => self.authenticate_token(token).await.map(Some),
                None => Ok(None),
            }
        })
    }
}

/// Reads the `iss` claim of a compact JWS without verifying it. Bounded: the token must fit
/// in `max_bytes`, so the decode and the JSON parse are too.
fn unverified_issuer(token: &str, max_bytes: usize) -> Result<String, &'static str> {
    if token.len() > max_bytes {
        return Err("token exceeds the size limit");
    }
    let mut segments = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err("malformed token");
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "malformed token payload")?;
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    let claims: Issuer = serde_json::from_slice(&bytes).map_err(|_| "malformed token payload")?;
    claims.iss.ok_or("token has no iss claim")
}

/// Configures a [`MultiIssuer`].
#[must_use]
pub struct MultiIssuerBuilder {
    by_issuer: HashMap<String, JwtAuthenticator>,
    errors: Vec<ConfigError>,
    max_token_bytes: usize,
}

impl fmt::Debug for MultiIssuerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiIssuerBuilder")
            .field("issuers", &self.by_issuer.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl MultiIssuerBuilder {
    /// Tokens whose `iss` is exactly `issuer` are verified by `authenticator` (which should be
    /// configured with that issuer too). Each issuer may be added once.
    pub fn issuer(mut self, issuer: impl Into<String>, authenticator: JwtAuthenticator) -> Self {
        let issuer = issuer.into();
        match self.by_issuer.entry(issuer) {
            std::collections::hash_map::Entry::Occupied(taken) => {
                let message = format!("issuer {} configured twice", taken.key());
                self.errors.push(ConfigError::new(message));
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(authenticator);
            }
        }
        self
    }

    /// Largest token read for its issuer, in bytes (default 8 KiB, like
    /// [`JwtAuthenticator`]'s limit).
    pub fn max_token_bytes(mut self, max: usize) -> Self {
        self.max_token_bytes = max;
        self
    }

    /// Checks the configuration (at least one issuer, none twice) and builds.
    pub fn build(self) -> Result<MultiIssuer, ConfigError> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        if self.by_issuer.is_empty() {
            return Err(ConfigError::new("MultiIssuer needs at least one issuer"));
        }
        if self.by_issuer.keys().any(String::is_empty) {
            return Err(ConfigError::new("issuer must not be empty"));
        }
        if self.max_token_bytes == 0 {
            return Err(ConfigError::new("max_token_bytes must be positive"));
        }
        Ok(MultiIssuer {
            by_issuer: self.by_issuer,
            max_token_bytes: self.max_token_bytes,
        })
    }
}

#[cfg(test)]
#[cfg(feature = "testing")]
mod tests {
    use super::*;
    use crate::rejection::RejectionKind;
    use crate::testing::TestKey;
    use http::{Request, StatusCode};

    fn tenant(iss: &str, key: &TestKey) -> JwtAuthenticator {
        JwtAuthenticator::builder()
            .issuer(iss)
            .audience("api")
            .key(key.verification_key())
            .build()
            .unwrap()
    }

    fn multi(a: &TestKey, b: &TestKey) -> MultiIssuer {
        MultiIssuer::builder()
            .issuer("https://a.test", tenant("https://a.test", a))
            .issuer("https://b.test/", tenant("https://b.test/", b))
            .build()
            .unwrap()
    }

    fn parts(token: &str) -> Parts {
        Request::builder()
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[tokio::test]
    async fn selects_by_issuer_and_refuses_unknown_or_malformed() {
        let (a, b) = (TestKey::es256("a"), TestKey::ed25519("b"));
        let multi = multi(&a, &b);
        assert_eq!(multi.issuers(), ["https://a.test", "https://b.test/"]);

        for (key, iss, sub) in [
            (&a, "https://a.test", "alice"),
            (&b, "https://b.test/", "bob"),
        ] {
            let token = key.mint(&key.claims(sub, iss, "api"));
            let principal = multi.authenticate(&parts(&token)).await.unwrap().unwrap();
            assert_eq!(principal.subject(), sub);
            assert_eq!(principal.issuer(), Some(iss));
        }

        let cases = [
            // Exact match: no trailing-slash normalization.
            (
                a.mint(&a.claims("u", "https://a.test/", "api")),
                "not trusted",
            ),
            (
                a.mint(&a.claims("u", "https://c.test", "api")),
                "not trusted",
            ),
            // Right issuer, wrong key: the selected authenticator refuses the signature.
            (a.mint(&a.claims("u", "https://b.test/", "api")), "kid"),
            (a.mint(&serde_json::json!({"sub": "u"})), "no iss"),
            (a.mint(&serde_json::json!({"iss": 7})), "malformed"),
            ("a.b".to_owned(), "malformed"),
            ("a.b.c.d.e".to_owned(), "malformed"),
            ("e30.!!!.c".to_owned(), "malformed"),
            ("e30.bm90IGpzb24.c".to_owned(), "malformed"),
            ("x".repeat(9 * 1024), "size"),
        ];
        for (token, expected) in cases {
            let err = multi.authenticate_token(&token).await.unwrap_err();
            assert_eq!(err.status(), StatusCode::UNAUTHORIZED, "{expected}");
            assert_eq!(err.kind(), RejectionKind::InvalidCredential);
            assert!(
                err.detail().contains(expected),
                "{}: {expected}",
                err.detail()
            );
        }
        let unknown = a.mint(&a.claims("u", "https://c.test", "api"));
        let err = multi.authenticate(&parts(&unknown)).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        let anonymous = Request::builder().body(()).unwrap().into_parts().0;
        assert!(multi.authenticate(&anonymous).await.unwrap().is_none());
    }

    #[test]
    fn builder_checks() {
        let a = TestKey::es256("a");
        assert!(MultiIssuer::builder().build().is_err());
        let twice = MultiIssuer::builder()
            .issuer("https://a.test", tenant("https://a.test", &a))
            .issuer("https://a.test", tenant("https://a.test", &a))
            .build()
            .unwrap_err();
        assert!(twice.message().contains("twice"));
        assert!(
            MultiIssuer::builder()
                .issuer("https://a.test", tenant("https://a.test", &a))
                .max_token_bytes(0)
                .build()
                .is_err()
        );
        let debug = format!("{:?}", multi(&a, &TestKey::es256("b")));
        assert!(debug.contains("https://a.test"));
    }
}
