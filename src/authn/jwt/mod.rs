//! JWT bearer-token authentication from configured keys.
//!
//! [`JwtAuthenticator`] verifies `Authorization: Bearer <jwt>` tokens against a fixed set of
//! [`VerificationKey`]s (PEM, JWK or JWKS), checks the claims with an injectable clock, maps
//! them to a [`Principal`], and caches the result.
//!
//! | setting | default | effect of changing it |
//! |---|---|---|
//! | issuer ([`issuer`](JwtAuthenticatorBuilder::issuer)) | required | `insecure_accept_any_issuer` accepts tokens minted by anyone holding a trusted key for another purpose |
//! | audience ([`audience`](JwtAuthenticatorBuilder::audience)) | required | `insecure_accept_any_audience` accepts tokens meant for other services (token forwarding) |
//! | algorithms | asymmetric only; HS* only with [`hmac_secret`](JwtAuthenticatorBuilder::hmac_secret) | every key is pinned to its algorithms; `none` is impossible |
//! | `kid` | selects the key; a token without one is accepted only when exactly one key fits its `alg` | |
//! | leeway | 60 s | clock skew tolerated on `exp`, `nbf`, `iat` |
//! | maximum lifetime | 24 h (`exp - iat`) | longer-lived tokens widen the window a stolen token is useful |
//! | maximum token size | 8 KiB | larger headers are refused before any parsing |
//! | roles claim | `roles` (array or space-separated string; dotted paths such as `realm_access.roles`) | |
//! | scopes claim | `scope`, then `scp` | |
//! | permissions claim | `permissions` | |
//! | verified-token cache | 10,000 entries, keyed by SHA-256 of the token, never past `exp`, cleared on key change | 0 disables it |
//!
//! ```
//! use std::time::Duration;
//! use portcullis::authn::jwt::JwtAuthenticator;
//! use portcullis::testing::TestKey;
//!
//! let key = TestKey::es256("signing-1");
//! let jwt = JwtAuthenticator::builder()
//!     .issuer("https://login.example.com")
//!     .audience("orders-api")
//!     .key(key.verification_key())
//!     .roles_claim("realm_access.roles")
//!     .leeway(Duration::from_secs(30))
//!     .build()
//!     .unwrap();
//!
//! let mut claims = key.claims("alice", "https://login.example.com", "orders-api");
//! claims["realm_access"] = serde_json::json!({"roles": ["reader"]});
//! let principal = jwt.verify(&key.mint(&claims)).unwrap();
//! assert_eq!(principal.subject(), "alice");
//! assert!(principal.has_role("reader"));
//!
//! let wrong_audience = key.mint(&key.claims("alice", "https://login.example.com", "billing"));
//! assert!(jwt.verify(&wrong_audience).is_err());
//! ```
//!
//! # Deployment caveat
//! Static keys do not follow your identity provider's key rotation: reload them with
//! [`JwtAuthenticator::replace_keys`] or use remote JWKS. A verified token stays valid until its
//! `exp`; revocation needs a deny-list.

mod claims;
mod keys;
mod multi;
#[cfg(feature = "oidc")]
pub mod remote;

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::request::Parts;
use jsonwebtoken::{Algorithm, Validation};
use secrecy::SecretSlice;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use self::claims::{ClaimPath, ClaimRules};
pub use self::keys::{ASYMMETRIC_ALGORITHMS, VerificationKey};
pub use self::multi::{MultiIssuer, MultiIssuerBuilder};
#[cfg(feature = "oidc")]
pub use self::remote::{FetchError, JwksStatus, RemoteJwks, RemoteJwksBuilder, StartupMode};
#[cfg(feature = "oidc")]
pub(crate) use self::remote::{display_url, fetch_bounded, http_client, parse_url};
use crate::authn::{AuthFuture, Authenticator, b64token_str, bearer_token, bearer_token_bytes};
use crate::clock::{SharedClock, SystemClock, request_unix_seconds};
use crate::error::ConfigError;
use crate::principal::Principal;
use crate::rejection::Rejection;

pub use jsonwebtoken::Algorithm as JwtAlgorithm;

const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
const DEFAULT_CACHE_CAPACITY: usize = 10_000;

struct PinnedKey {
    key: VerificationKey,
    /// One prepared validation per algorithm the key allows (claims are checked separately,
    /// against the injected clock).
    validations: Vec<(Algorithm, Validation)>,
}

struct KeySet {
    keys: Vec<PinnedKey>,
    generation: u64,
    /// The source snapshot this set was prepared from.
    snapshot: Arc<KeySnapshot>,
}

/// The keys a [`KeySource`] offers at one moment.
#[derive(Debug, Default)]
pub struct KeySnapshot {
    /// The verification keys.
    pub keys: Vec<VerificationKey>,
}

/// Where a [`JwtAuthenticator`] gets its keys: configured keys ([`StaticKeys`]) or a remote
/// JWKS that refreshes itself.
pub trait KeySource: Send + Sync + fmt::Debug + 'static {
    /// The current keys. Called on every signature verification, so it must be cheap and must
    /// not block; return the same `Arc` until the keys change (the authenticator prepares a
    /// snapshot once and clears its token cache when the pointer changes).
    fn snapshot(&self) -> Arc<KeySnapshot>;

    /// A token named `kid`, which the current snapshot lacks. A source that can fetch keys may
    /// refresh (it must rate-limit and coalesce these calls: attackers choose `kid`s) and
    /// return `true` when a new snapshot is available. The default does nothing.
    fn unknown_kid<'a>(&'a self, kid: &'a str) -> futures_util::future::BoxFuture<'a, bool> {
        let _ = kid;
        Box::pin(std::future::ready(false))
    }
}

/// Keys configured in code, replaceable with [`JwtAuthenticator::replace_keys`].
#[derive(Debug)]
pub struct StaticKeys {
    current: ArcSwap<KeySnapshot>,
}

impl StaticKeys {
    fn new(keys: Vec<VerificationKey>) -> Self {
        Self {
            current: ArcSwap::from_pointee(KeySnapshot { keys }),
        }
    }
}

impl KeySource for StaticKeys {
    fn snapshot(&self) -> Arc<KeySnapshot> {
        self.current.load_full()
    }
}

/// A revocation check run after every successful verification, cached or not.
///
/// Returning `Err(reason)` refuses the token with 401; implementations should fail closed
/// (refuse) when their store cannot answer.
pub trait RevocationCheck: Send + Sync + fmt::Debug + 'static {
    /// Checks `principal` (its claims, including `jti`, `sub` and `iat`, are in
    /// [`Principal::attributes`]).
    fn check<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> futures_util::future::BoxFuture<'a, Result<(), Cow<'static, str>>>;

    /// [`check`](Self::check) without waiting, for checks that can answer at once: `Some` must
    /// be what `check` would return. The default, `None`, sends every check through `check`.
    fn check_now(&self, principal: &Principal) -> Option<Result<(), Cow<'static, str>>> {
        let _ = principal;
        None
    }

    /// [`check_now`](Self::check_now) for a principal whose `jti` (when a string) and `iat`
    /// (whole seconds, when a number) the caller has already read from
    /// [`Principal::attributes`]: the JWT authenticator reads them once per token, when it
    /// verifies and caches it, so a check on a cached token need not look them up again. Must
    /// answer as `check_now(principal)` does; the default ignores them and calls it.
    fn check_token_now(
        &self,
        principal: &Principal,
        jti: Option<&str>,
        issued_at: Option<SystemTime>,
    ) -> Option<Result<(), Cow<'static, str>>> {
        let _ = (jti, issued_at);
        self.check_now(principal)
    }
}

/// Why a verification failed.
enum VerifyError {
    UnknownKid(String),
    Invalid(Cow<'static, str>),
}

impl From<Cow<'static, str>> for VerifyError {
    fn from(reason: Cow<'static, str>) -> Self {
        VerifyError::Invalid(reason)
    }
}

impl From<&'static str> for VerifyError {
    fn from(reason: &'static str) -> Self {
        VerifyError::Invalid(Cow::Borrowed(reason))
    }
}

impl From<String> for VerifyError {
    fn from(reason: String) -> Self {
        VerifyError::Invalid(Cow::Owned(reason))
    }
}

impl VerifyError {
    fn reason(self) -> Cow<'static, str> {
        match self {
            VerifyError::UnknownKid(_) => Cow::Borrowed("unknown kid"),
            VerifyError::Invalid(reason) => reason,
        }
    }
}

impl KeySet {
    fn new(
        keys: Vec<VerificationKey>,
        allowed: &[Algorithm],
        generation: u64,
        snapshot: Arc<KeySnapshot>,
    ) -> Result<Self, ConfigError> {
        if keys.is_empty() {
            return Err(ConfigError::new("JWT authenticator needs at least one key"));
        }
        let mut pinned = Vec::with_capacity(keys.len());
        let mut seen_kids = std::collections::HashSet::new();
        for key in keys {
            let name = key.kid().unwrap_or("<no kid>").to_owned();
            if let Some(kid) = key.kid()
                && !seen_kids.insert(kid.to_owned())
            {
                return Err(ConfigError::new(format!("duplicate key id {kid}")));
            }
            let Some(key) = key.restrict(allowed) else {
                return Err(ConfigError::new(format!(
                    "key {name} allows no algorithm in the configured allow-list"
                )));
            };
            let validations = key
                .algorithms()
                .iter()
                .map(|alg| {
                    let mut v = Validation::new(*alg);
                    v.validate_exp = false;
                    v.validate_nbf = false;
                    v.validate_aud = false;
                    v.required_spec_claims.clear();
                    v.leeway = 0;
                    (*alg, v)
                })
                .collect();
            pinned.push(PinnedKey { key, validations });
        }
        Ok(Self {
            keys: pinned,
            generation,
            snapshot,
        })
    }

    /// Prepares a snapshot from a remote source: unusable keys are skipped (with a warning)
    /// instead of failing, since the source is not under the operator's direct control.
    fn lenient(snapshot: Arc<KeySnapshot>, allowed: &[Algorithm], generation: u64) -> Self {
        let mut seen = std::collections::HashSet::new();
        let usable: Vec<VerificationKey> = snapshot
            .keys
            .iter()
            .filter(|k| k.kid().is_none_or(|kid| seen.insert(kid.to_owned())))
            .filter_map(|k| {
                let restricted = k.clone().restrict(allowed);
                if restricted.is_none() {
                    tracing::warn!(target: "portcullis::jwt", kid = k.kid(), "key allows no permitted algorithm; skipped");
                }
                restricted
            })
            .collect();
        Self::new(usable, allowed, generation, snapshot.clone()).unwrap_or(Self {
            keys: Vec::new(),
            generation,
            snapshot,
        })
    }

    fn select(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<(&PinnedKey, &Validation), VerifyError> {
        let key = match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.key.kid() == Some(kid))
                .ok_or_else(|| VerifyError::UnknownKid(kid.to_owned()))?,
            None => {
                let mut candidates = self
                    .keys
                    .iter()
                    .filter(|k| k.key.algorithms().contains(&alg));
                let first = candidates.next().ok_or("no key for the token's alg")?;
                if candidates.next().is_some() {
                    return Err("token has no kid and several keys match its alg".into());
                }
                first
            }
        };
        let validation = key
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or("alg not allowed for the selected key")?;
        Ok((key, validation))
    }
}

/// A verified token: what the cache keeps, and what a verification returns.
#[derive(Clone)]
struct CachedToken {
    principal: Principal,
    expires_at: u64,
    generation: u64,
    identity: TokenIdentity,
}

/// The `jti` and `iat` the revocation check reads, taken from the principal's attributes once,
/// when the token is verified, instead of by two hashed lookups on every cached request.
#[derive(Clone, Copy)]
struct TokenIdentity {
    /// Position of the `jti` attribute (when it is a string) in the principal's attributes,
    /// which never change: reading it back takes no hashing and no reference count.
    jti_index: Option<usize>,
    issued_at: Option<SystemTime>,
}

impl TokenIdentity {
    fn of(principal: &Principal) -> Self {
        let (_, issued_at) = crate::authn::revocation::token_identity(principal);
        let jti_index = principal
            .attributes()
            .iter()
            .position(|(name, value)| name == "jti" && value.is_string());
        Self {
            jti_index,
            issued_at,
        }
    }

    /// The `jti` of `principal`, the principal this identity was taken from.
    fn jti<'p>(&self, principal: &'p Principal) -> Option<&'p str> {
        let index = self.jti_index?;
        match principal.attributes().iter().nth(index) {
            Some((name, value)) if name == "jti" => value.as_str(),
            // Not reached: the attributes are immutable. Look the claim up by name anyway.
            _ => principal.attribute("jti").and_then(Value::as_str),
        }
    }
}

/// A cache lookup's answer.
enum Probed {
    Hit(CachedToken),
    /// Not cached (or stale): what the full verification reuses.
    Miss(Probe),
}

struct Probe {
    now: u64,
    /// The token's SHA-256 digest, when there is a cache.
    cache_key: Option<[u8; 32]>,
    /// The prepared keys, when they were loaded for the lookup (key sources other than the
    /// builder's own keys).
    keys: Option<Arc<KeySet>>,
}

type TokenCache = quick_cache::sync::Cache<[u8; 32], CachedToken>;

struct Inner {
    source: Arc<dyn KeySource>,
    /// Set when the source is the builder's own static keys (`replace_keys` works then).
    static_keys: Option<Arc<StaticKeys>>,
    prepared: ArcSwap<KeySet>,
    revocation: Option<Arc<dyn RevocationCheck>>,
    allowed: Vec<Algorithm>,
    rules: ClaimRules,
    cache: Option<TokenCache>,
    clock: SharedClock,
    max_token_bytes: usize,
    /// With the builder's own keys: the generation of `prepared`, stored after it, so a cache
    /// hit checks the generation with one atomic load instead of loading `prepared`.
    static_generation: AtomicU64,
    /// Serializes `replace_keys`, so `prepared` and `static_generation` change together.
    replacing: Mutex<()>,
}

/// Verifies JWT bearer tokens. Cheap to clone. See the [module docs](self).
#[derive(Clone)]
pub struct JwtAuthenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.inner.prepared.load();
        let kids: Vec<_> = keys.keys.iter().map(|k| &k.key).collect();
        f.debug_struct("JwtAuthenticator")
            .field("issuers", &self.inner.rules.issuers)
            .field("audiences", &self.inner.rules.audiences)
            .field("keys", &kids)
            .field("leeway", &self.inner.rules.leeway)
            .field("max_lifetime", &self.inner.rules.max_lifetime)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// Starts a configuration. See [`JwtAuthenticatorBuilder`].
    pub fn builder() -> JwtAuthenticatorBuilder {
        JwtAuthenticatorBuilder::default()
    }

    /// Replaces the verification keys (rotation). Cached verifications made with the old keys
    /// are invalidated at once. Only for authenticators built with configured keys; a remote
    /// key source rotates by itself.
    pub fn replace_keys(&self, keys: Vec<VerificationKey>) -> Result<(), ConfigError> {
        let Some(static_keys) = &self.inner.static_keys else {
            return Err(ConfigError::new(
                "replace_keys needs configured keys; this authenticator uses a key source",
            ));
        };
        let _replacing = self
            .inner
            .replacing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let snapshot = Arc::new(KeySnapshot { keys });
        let next = self.inner.prepared.load().generation + 1;
        let set = KeySet::new(
            snapshot.keys.clone(),
            &self.inner.allowed,
            next,
            snapshot.clone(),
        )?;
        static_keys.current.store(snapshot);
        self.inner.prepared.store(Arc::new(set));
        // Release: a cache hit that reads `next` also sees the new `prepared`.
        self.inner.static_generation.store(next, Ordering::Release);
        if let Some(cache) = &self.inner.cache {
            cache.clear();
        }
        Ok(())
    }

    /// Verifies a compact JWS token (signature, claims, key selection) and returns its
    /// principal. Synchronous: it neither refreshes keys for an unknown `kid` nor consults
    /// revocation; [`authenticate_token`](Self::authenticate_token) does both.
    ///
    /// The returned rejection's detail says what failed (for the audit log); it never contains
    /// the token.
    pub fn verify(&self, token: &str) -> Result<Principal, Rejection> {
        self.verify_inner(token, None)
            .map(|verified| verified.principal)
            .map_err(|e| Rejection::invalid_credential(e.reason()))
    }

    /// Everything [`verify`](Self::verify) does, plus one key refresh when the token names an
    /// unknown `kid` (if the key source can refresh), plus the revocation check.
    pub async fn authenticate_token(&self, token: &str) -> Result<Principal, Rejection> {
        self.authenticate_token_for(token, None).await
    }

    /// [`authenticate_token`](Self::authenticate_token) for a request with these extensions:
    /// with the system clock, the claims are checked at the request's arrival time.
    async fn authenticate_token_for(
        &self,
        token: &str,
        request: Option<&http::Extensions>,
    ) -> Result<Principal, Rejection> {
        let principal = match self.verify_inner(token, request) {
            Ok(verified) => verified.principal,
            Err(VerifyError::UnknownKid(kid)) => {
                if self.inner.source.unknown_kid(&kid).await {
                    self.verify_inner(token, request)
                        .map_err(|e| Rejection::invalid_credential(e.reason()))?
                        .principal
                } else {
                    return Err(Rejection::invalid_credential("unknown kid"));
                }
            }
            Err(e) => return Err(Rejection::invalid_credential(e.reason())),
        };
        if let Some(revocation) = &self.inner.revocation {
            revocation
                .check(&principal)
                .await
                .map_err(Rejection::invalid_credential)?;
        }
        Ok(principal)
    }

    /// The prepared keys for the source's current snapshot, re-prepared when it changed.
    fn current_keys(&self) -> Arc<KeySet> {
        let inner = &*self.inner;
        let prepared = inner.prepared.load_full();
        if inner.static_keys.is_some() {
            // The builder's own keys change only through `replace_keys`, which prepares them
            // itself: no snapshot to compare.
            return prepared;
        }
        let snapshot = inner.source.snapshot();
        if Arc::ptr_eq(&prepared.snapshot, &snapshot) {
            return prepared;
        }
        let next = Arc::new(KeySet::lenient(
            snapshot,
            &inner.allowed,
            prepared.generation + 1,
        ));
        inner.prepared.store(next.clone());
        if let Some(cache) = &inner.cache {
            cache.clear();
        }
        next
    }

    /// The time claims are checked against, in Unix seconds: the clock's, or for a request
    /// (its extensions) with the system clock, the time the request arrived at the edge.
    fn now(&self, request: Option<&http::Extensions>) -> u64 {
        match request {
            Some(extensions) => request_unix_seconds(&*self.inner.clock, extensions),
            None => self.inner.clock.unix_seconds(),
        }
    }

    fn verify_inner(
        &self,
        token: &str,
        request: Option<&http::Extensions>,
    ) -> Result<CachedToken, VerifyError> {
        match self.probe(token.as_bytes(), request)? {
            Probed::Hit(hit) => Ok(hit),
            Probed::Miss(probe) => self.verify_uncached(token, probe),
        }
    }

    /// The size limit and the verified-token cache: everything a cached token needs. The time
    /// is read as [`now`](Self::now) reads it.
    fn probe(
        &self,
        token: &[u8],
        request: Option<&http::Extensions>,
    ) -> Result<Probed, VerifyError> {
        let inner = &*self.inner;
        if token.len() > inner.max_token_bytes {
            return Err(format!(
                "token of {} bytes exceeds the {} byte limit",
                token.len(),
                inner.max_token_bytes
            )
            .into());
        }
        let now = self.now(request);
        let Some(cache) = &inner.cache else {
            return Ok(Probed::Miss(Probe {
                now,
                cache_key: None,
                keys: None,
            }));
        };
        // The builder's own keys change only through `replace_keys`: their generation is one
        // atomic load. A key source is asked for its snapshot (which may re-prepare the keys
        // and clear the cache) before the lookup.
        let (generation, keys) = if inner.static_keys.is_some() {
            (inner.static_generation.load(Ordering::Acquire), None)
        } else {
            let keys = self.current_keys();
            (keys.generation, Some(keys))
        };
        let hash: [u8; 32] = Sha256::digest(token).into();
        if let Some(hit) = cache.get(&hash) {
            if hit.generation == generation && now < hit.expires_at {
                return Ok(Probed::Hit(hit));
            }
            cache.remove(&hash);
        }
        Ok(Probed::Miss(Probe {
            now,
            cache_key: Some(hash),
            keys,
        }))
    }

    /// The full verification of a token the cache does not hold; caches the result.
    fn verify_uncached(&self, token: &str, probe: Probe) -> Result<CachedToken, VerifyError> {
        let inner = &*self.inner;
        let Probe {
            now,
            cache_key,
            keys,
        } = probe;
        let keys = keys.unwrap_or_else(|| self.current_keys());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| VerifyError::from("malformed or unsupported token header"))?;
        if header.crit.is_some() {
            return Err(
                "token has critical header parameters this verifier does not understand".into(),
            );
        }
        let (pinned, validation) = keys.select(header.kid.as_deref(), header.alg)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            pinned.key.decoding_key(),
            validation,
        )
        .map_err(|e| -> Cow<'static, str> {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => "signature did not verify".into(),
                ErrorKind::InvalidAlgorithm => "alg not allowed for the selected key".into(),
                _ => "malformed token".into(),
            }
        })?;
        let validated = inner.rules.validate(&data.claims, now)?;
        let principal = inner.rules.principal(
            data.claims,
            &validated,
            header.kid,
            format!("{:?}", header.alg),
        )?;
        let verified = CachedToken {
            identity: TokenIdentity::of(&principal),
            principal,
            expires_at: validated.expires_at,
            generation: keys.generation,
        };
        // A cache hit skips the `b64token` check of the request's bearer token (the digest
        // matches bytes cached here), so only tokens that pass it are cached. A token that
        // verifies always does (base64url segments and dots); this keeps it true by
        // construction for tokens given to `verify` directly.
        if let (Some(cache), Some(hash)) = (&inner.cache, cache_key)
            && crate::authn::is_b64token(token.as_bytes())
        {
            cache.insert(hash, verified.clone());
        }
        Ok(verified)
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(async move {
            match bearer_token(parts)? {
                Some(token) => self
                    .authenticate_token_for(token, Some(&parts.extensions))
                    .await
                    .map(Some),
                None => Ok(None),
            }
        })
    }

    /// Everything but a key refresh for an unknown `kid` and a revocation store that cannot
    /// answer at once.
    fn authenticate_now(&self, parts: &Parts) -> Option<Result<Option<Principal>, Rejection>> {
        // `bearer_token` in two halves, so a cached token skips the character check: the cache
        // holds only tokens that passed it, and a hit means these very bytes (same SHA-256).
        // Refusals keep `bearer_token`'s order: its format errors (400) come first.
        let bytes = match bearer_token_bytes(parts) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Some(Ok(None)),
            Err(rejection) => return Some(Err(rejection)),
        };
        let verified = match self.probe(bytes, Some(&parts.extensions)) {
            Ok(Probed::Hit(hit)) => hit,
            Ok(Probed::Miss(probe)) => {
                let token = match b64token_str(bytes) {
                    Ok(token) => token,
                    Err(rejection) => return Some(Err(rejection)),
                };
                match self.verify_uncached(token, probe) {
                    Ok(verified) => verified,
                    Err(VerifyError::UnknownKid(_)) => return None,
                    Err(e) => return Some(Err(Rejection::invalid_credential(e.reason()))),
                }
            }
            Err(e) => {
                if let Err(rejection) = b64token_str(bytes) {
                    return Some(Err(rejection));
                }
                return Some(Err(Rejection::invalid_credential(e.reason())));
            }
        };
        let CachedToken {
            principal,
            identity,
            ..
        } = verified;
        let Some(revocation) = &self.inner.revocation else {
            return Some(Ok(Some(principal)));
        };
        let outcome =
            revocation.check_token_now(&principal, identity.jti(&principal), identity.issued_at)?;
        Some(
            outcome
                .map(|()| Some(principal))
                .map_err(Rejection::invalid_credential),
        )
    }
}

/// Configures a [`JwtAuthenticator`]. Every setting documents its default in the
/// [module docs](self).
#[must_use]
pub struct JwtAuthenticatorBuilder {
    keys: Vec<VerificationKey>,
    source: Option<Arc<dyn KeySource>>,
    revocation: Option<Arc<dyn RevocationCheck>>,
    errors: Vec<ConfigError>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    any_issuer: bool,
    any_audience: bool,
    allowed: Vec<Algorithm>,
    leeway: Duration,
    max_lifetime: Option<Duration>,
    required: Vec<ClaimPath>,
    roles: ClaimPath,
    scopes: Vec<ClaimPath>,
    permissions: Option<ClaimPath>,
    tenant: Option<ClaimPath>,
    cache_capacity: usize,
    clock: SharedClock,
    max_token_bytes: usize,
}

impl fmt::Debug for JwtAuthenticatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticatorBuilder")
            .field("keys", &self.keys)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl Default for JwtAuthenticatorBuilder {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            source: None,
            revocation: None,
            errors: Vec::new(),
            issuers: Vec::new(),
            audiences: Vec::new(),
            any_issuer: false,
            any_audience: false,
            allowed: ASYMMETRIC_ALGORITHMS.to_vec(),
            leeway: Duration::from_secs(60),
            max_lifetime: Some(Duration::from_secs(24 * 3600)),
            required: Vec::new(),
            roles: ClaimPath::new("roles"),
            scopes: vec![ClaimPath::new("scope"), ClaimPath::new("scp")],
            permissions: Some(ClaimPath::new("permissions")),
            tenant: None,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            clock: Arc::new(SystemClock),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

impl JwtAuthenticatorBuilder {
    /// Adds a verification key.
    pub fn key(mut self, key: VerificationKey) -> Self {
        self.keys.push(key);
        self
    }
    /// Takes keys from `source` (for example a remote JWKS) instead of configured keys. Cannot
    /// be combined with configured keys.
    pub fn key_source(mut self, source: Arc<dyn KeySource>) -> Self {
        self.source = Some(source);
        self
    }
    /// Consults `revocation` after every successful verification (cached ones included).
    pub fn revocation(mut self, revocation: Arc<dyn RevocationCheck>) -> Self {
        self.revocation = Some(revocation);
        self
    }
    /// Adds several verification keys.
    pub fn keys(mut self, keys: impl IntoIterator<Item = VerificationKey>) -> Self {
        self.keys.extend(keys);
        self
    }
    /// Adds every signing key of a JWKS document (see [`VerificationKey::from_jwks_json`]).
    pub fn jwks_json(mut self, json: &str) -> Self {
        match VerificationKey::from_jwks_json(json) {
            Ok(keys) => self.keys.extend(keys),
            Err(e) => self.errors.push(e),
        }
        self
    }
    /// Adds every signing key of the JWKS document in the file at `path`.
    pub fn jwks_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        let path = path.as_ref();
        match std::fs::read_to_string(path) {
            Ok(json) => self.jwks_json(&json),
            Err(e) => {
                self.errors.push(ConfigError::new(format!(
                    "cannot read JWKS file {}: {e}",
                    path.display()
                )));
                self
            }
        }
    }
    /// Adds the PEM public key in the file at `path`, pinned to `algorithm`.
    pub fn pem_file(mut self, path: impl AsRef<std::path::Path>, algorithm: Algorithm) -> Self {
        let path = path.as_ref();
        match std::fs::read(path) {
            Ok(pem) => self.pem(&pem, algorithm),
            Err(e) => {
                self.errors.push(ConfigError::new(format!(
                    "cannot read PEM file {}: {e}",
                    path.display()
                )));
                self
            }
        }
    }
    /// Adds a PEM public key pinned to `algorithm`.
    pub fn pem(mut self, pem: &[u8], algorithm: Algorithm) -> Self {
        match VerificationKey::from_pem(pem, algorithm) {
            Ok(key) => self.keys.push(key),
            Err(e) => self.errors.push(e),
        }
        self
    }
    /// Adds a shared HMAC secret pinned to `algorithm` (HS256/384/512), selected by `kid` when
    /// given. This is the only way HMAC algorithms become acceptable.
    pub fn hmac_secret(
        mut self,
        kid: Option<&str>,
        secret: &SecretSlice<u8>,
        algorithm: Algorithm,
    ) -> Self {
        match VerificationKey::hmac(secret, algorithm) {
            Ok(key) => {
                if !self.allowed.contains(&algorithm) {
                    self.allowed.push(algorithm);
                }
                self.keys.push(match kid {
                    Some(kid) => key.with_kid(kid),
                    None => key,
                });
            }
            Err(e) => self.errors.push(e),
        }
        self
    }
    /// Accepts tokens whose `iss` is `issuer` (repeat for several).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }
    /// Accepts tokens whose `aud` contains `audience` (repeat for several).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }
    /// Skips the issuer check. Insecure: any issuer whose keys you trust can mint tokens here.
    pub fn insecure_accept_any_issuer(mut self) -> Self {
        self.any_issuer = true;
        self
    }
    /// Skips the audience check. Insecure: tokens minted for other services are accepted.
    pub fn insecure_accept_any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }
    /// Restricts the asymmetric algorithms accepted (default: [`ASYMMETRIC_ALGORITHMS`]).
    /// HMAC algorithms cannot be enabled here; use [`hmac_secret`](Self::hmac_secret).
    pub fn allowed_algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        let hmac: Vec<Algorithm> = self
            .allowed
            .iter()
            .copied()
            .filter(|a| !ASYMMETRIC_ALGORITHMS.contains(a))
            .collect();
        self.allowed = algorithms
            .into_iter()
            .filter(|a| ASYMMETRIC_ALGORITHMS.contains(a))
            .chain(hmac)
            .collect();
        self
    }
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default 60 s, at most 5 minutes).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }
    /// Longest accepted token lifetime, `exp - iat` (default 24 h).
    pub fn max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = Some(max);
        self
    }
    /// Accepts tokens of any lifetime. Insecure: a stolen long-lived token stays useful.
    pub fn insecure_unbounded_lifetime(mut self) -> Self {
        self.max_lifetime = None;
        self
    }
    /// Requires a claim (dotted paths allowed) to be present and non-null.
    pub fn require_claim(mut self, path: impl Into<String>) -> Self {
        self.required.push(ClaimPath::new(path));
        self
    }
    /// Where roles are read from (default `roles`).
    pub fn roles_claim(mut self, path: impl Into<String>) -> Self {
        self.roles = ClaimPath::new(path);
        self
    }
    /// Where scopes are read from (default `scope`, then `scp`).
    pub fn scopes_claim(mut self, path: impl Into<String>) -> Self {
        self.scopes = vec![ClaimPath::new(path)];
        self
    }
    /// Where permissions are read from (default `permissions`).
    pub fn permissions_claim(mut self, path: impl Into<String>) -> Self {
        self.permissions = Some(ClaimPath::new(path));
        self
    }
    /// Where the tenant is read from (default: none).
    pub fn tenant_claim(mut self, path: impl Into<String>) -> Self {
        self.tenant = Some(ClaimPath::new(path));
        self
    }
    /// Size of the verified-token cache (default 10,000; 0 disables caching).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }
    /// Largest accepted token in bytes (default 8 KiB).
    pub fn max_token_bytes(mut self, max: usize) -> Self {
        self.max_token_bytes = max;
        self
    }
    /// The time source (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the configuration and builds the authenticator.
    pub fn build(self) -> Result<JwtAuthenticator, ConfigError> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        if self.issuers.is_empty() && !self.any_issuer {
            return Err(ConfigError::new(
                "no issuer configured (use insecure_accept_any_issuer to skip the check)",
            ));
        }
        if self.audiences.is_empty() && !self.any_audience {
            return Err(ConfigError::new(
                "no audience configured (use insecure_accept_any_audience to skip the check)",
            ));
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(ConfigError::new("leeway above 5 minutes"));
        }
        if self.max_token_bytes == 0 {
            return Err(ConfigError::new("max_token_bytes must be positive"));
        }
        let (source, static_keys, prepared): (Arc<dyn KeySource>, _, _) = match self.source {
            Some(source) => {
                if !self.keys.is_empty() {
                    return Err(ConfigError::new(
                        "configure either keys or a key source, not both",
                    ));
                }
                let prepared = KeySet::lenient(source.snapshot(), &self.allowed, 0);
                (source, None, prepared)
            }
            None => {
                let static_keys = Arc::new(StaticKeys::new(self.keys));
                let snapshot = static_keys.snapshot();
                let prepared = KeySet::new(snapshot.keys.clone(), &self.allowed, 0, snapshot)?;
                (static_keys.clone(), Some(static_keys), prepared)
            }
        };
        let cache = (self.cache_capacity > 0).then(|| TokenCache::new(self.cache_capacity));
        Ok(JwtAuthenticator {
            inner: Arc::new(Inner {
                source,
                static_keys,
                prepared: ArcSwap::from_pointee(prepared),
                revocation: self.revocation,
                allowed: self.allowed,
                rules: ClaimRules {
                    issuers: (!self.any_issuer).then_some(self.issuers),
                    audiences: (!self.any_audience).then_some(self.audiences),
                    leeway: self.leeway,
                    max_lifetime: self.max_lifetime,
                    required: self.required,
                    roles: self.roles,
                    scopes: self.scopes,
                    permissions: self.permissions,
                    tenant: self.tenant,
                },
                cache,
                clock: self.clock,
                max_token_bytes: self.max_token_bytes,
                static_generation: AtomicU64::new(0),
                replacing: Mutex::new(()),
            }),
        })
    }
}

#[cfg(test)]
#[cfg(feature = "testing")]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::testing::TestKey;
    use jsonwebtoken::Header;
    use serde_json::json;
    use std::time::{Duration, SystemTime};

    const ISS: &str = "https://issuer.test";
    const AUD: &str = "api";

    fn builder(key: &TestKey) -> JwtAuthenticatorBuilder {
        JwtAuthenticator::builder()
            .issuer(ISS)
            .audience(AUD)
            .key(key.verification_key())
    }

    #[test]
    fn builder_refuses_unsafe_configuration() {
        let key = TestKey::ed25519("k");
        let no_issuer = JwtAuthenticator::builder()
            .audience(AUD)
            .key(key.verification_key());
        assert!(no_issuer.build().unwrap_err().message().contains("issuer"));
        let no_audience = JwtAuthenticator::builder()
            .issuer(ISS)
            .key(key.verification_key());
        assert!(
            no_audience
                .build()
                .unwrap_err()
                .message()
                .contains("audience")
        );
        let no_keys = JwtAuthenticator::builder().issuer(ISS).audience(AUD);
        assert!(no_keys.build().is_err());
        assert!(
            builder(&key)
                .leeway(Duration::from_secs(301))
                .build()
                .is_err()
        );
        let weak = SecretSlice::from(vec![1u8; 31]);
        let err = builder(&key)
            .hmac_secret(Some("h"), &weak, Algorithm::HS256)
            .build()
            .unwrap_err();
        assert!(err.message().contains("at least 32 bytes"));
        let dup = builder(&key)
            .key(key.verification_key())
            .build()
            .unwrap_err();
        assert!(dup.message().contains("duplicate key id"));
        // Restricting the allow-list away from the key's algorithm leaves it unusable.
        let err = builder(&key)
            .allowed_algorithms([Algorithm::RS256])
            .build()
            .unwrap_err();
        assert!(err.message().contains("allows no algorithm"));
        // The opt-outs exist and are explicit.
        assert!(
            JwtAuthenticator::builder()
                .insecure_accept_any_issuer()
                .insecure_accept_any_audience()
                .key(key.verification_key())
                .build()
                .is_ok()
        );
    }

    #[test]
    fn debug_never_shows_hmac_secret() {
        let secret = b"this-is-a-very-secret-hmac-key-0123456789";
        let key = TestKey::hmac("h1", Algorithm::HS256, secret);
        let auth = JwtAuthenticator::builder()
            .issuer(ISS)
            .audience(AUD)
            .hmac_secret(
                Some("h1"),
                &SecretSlice::from(secret.to_vec()),
                Algorithm::HS256,
            )
            .build()
            .unwrap();
        let token = key.mint(&key.claims("u", ISS, AUD));
        assert!(auth.verify(&token).is_ok());
        let shown = format!("{auth:?} {:?} {key:?}", key.verification_key());
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(
            !shown.contains("116, 104, 105, 115"),
            "secret bytes leaked: {shown}"
        );
        let rejection = auth.verify(&format!("{token}x")).unwrap_err();
        assert!(!format!("{rejection:?} {rejection}").contains(&token[..20]));
    }

    #[test]
    fn crit_header_and_kidless_selection() {
        let a = TestKey::es256("a");
        let auth = builder(&a).build().unwrap();
        let claims = a.claims("u", ISS, AUD);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("a".into());
        header.crit = Some(vec!["exp".into()]);
        let err = auth
            .verify(&a.mint_with_header(&header, &claims))
            .unwrap_err();
        assert!(err.detail().contains("critical"));

        // No kid, one key fits: accepted. Two keys fit: refused.
        let no_kid = a.mint_with_header(&Header::new(Algorithm::ES256), &claims);
        assert!(auth.verify(&no_kid).is_ok());
        let b = TestKey::es256("b");
        let two = builder(&a).key(b.verification_key()).build().unwrap();
        let err = two.verify(&no_kid).unwrap_err();
        assert!(err.detail().contains("several keys"));
    }

    #[test]
    fn cache_never_outlives_exp_and_follows_key_rotation() {
        let clock = ManualClock::at(SystemTime::now());
        let key = TestKey::ed25519("k1");
        let auth = builder(&key)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let now = clock.unix_seconds();
        let claims = json!({"sub": "u", "iss": ISS, "aud": AUD, "iat": now, "exp": now + 120});
        let token = key.mint(&claims);
        assert!(auth.verify(&token).is_ok());
        assert!(auth.verify(&token).is_ok(), "served from cache");
        clock.advance(Duration::from_secs(120 + 61));
        let err = auth.verify(&token).unwrap_err();
        assert!(err.detail().contains("expired"), "{err:?}");

        let fresh = key
            .mint(&json!({"sub": "u", "iss": ISS, "aud": AUD, "exp": clock.unix_seconds() + 60}));
        assert!(auth.verify(&fresh).is_ok());
        let rotated = TestKey::ed25519("k2");
        auth.replace_keys(vec![rotated.verification_key()]).unwrap();
        let err = auth.verify(&fresh).unwrap_err();
        assert!(err.detail().contains("unknown kid"), "{err:?}");
    }

    /// A source whose keys change only when asked about an unknown kid, counting the asks.
    #[derive(Debug)]
    struct RotatingSource {
        current: ArcSwap<KeySnapshot>,
        next: std::sync::Mutex<Option<VerificationKey>>,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl KeySource for RotatingSource {
        fn snapshot(&self) -> Arc<KeySnapshot> {
            self.current.load_full()
        }
        fn unknown_kid<'a>(&'a self, _kid: &'a str) -> futures_util::future::BoxFuture<'a, bool> {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = self.next.lock().ok().and_then(|mut next| next.take());
            Box::pin(async move {
                match next {
                    Some(key) => {
                        let mut keys = self.current.load().keys.clone();
                        keys.push(key);
                        self.current.store(Arc::new(KeySnapshot { keys }));
                        true
                    }
                    None => false,
                }
            })
        }
    }

    #[derive(Debug)]
    struct DenySubject(&'static str);

    impl RevocationCheck for DenySubject {
        fn check<'a>(
            &'a self,
            principal: &'a Principal,
        ) -> futures_util::future::BoxFuture<'a, Result<(), Cow<'static, str>>> {
            let revoked = principal.subject() == self.0;
            Box::pin(async move {
                if revoked {
                    Err("revoked".into())
                } else {
                    Ok(())
                }
            })
        }
    }

    #[tokio::test]
    async fn unknown_kid_asks_the_source_once_and_revocation_applies_to_cached_tokens() {
        let old = TestKey::ed25519("old");
        let new = TestKey::ed25519("new");
        let source = Arc::new(RotatingSource {
            current: ArcSwap::from_pointee(KeySnapshot {
                keys: vec![old.verification_key()],
            }),
            next: std::sync::Mutex::new(Some(new.verification_key())),
            asked: std::sync::atomic::AtomicUsize::new(0),
        });
        let auth = JwtAuthenticator::builder()
            .issuer(ISS)
            .audience(AUD)
            .key_source(source.clone())
            .revocation(Arc::new(DenySubject("mallory")))
            .build()
            .unwrap();
        assert!(
            auth.replace_keys(vec![]).is_err(),
            "remote sources rotate themselves"
        );
        let token = new.mint(&new.claims("alice", ISS, AUD));
        assert!(auth.verify(&token).is_err(), "sync verify does not refresh");
        assert!(auth.authenticate_token(&token).await.is_ok());
        assert_eq!(source.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Old keys stay valid after the rotation.
        assert!(
            auth.authenticate_token(&old.mint(&old.claims("bob", ISS, AUD)))
                .await
                .is_ok()
        );

        let mallory = old.mint(&old.claims("mallory", ISS, AUD));
        assert!(
            auth.verify(&mallory).is_ok(),
            "signature and claims are fine"
        );
        let err = auth.authenticate_token(&mallory).await.unwrap_err();
        assert_eq!(err.detail(), "revoked");
        let err = auth.authenticate_token(&mallory).await.unwrap_err();
        assert_eq!(err.detail(), "revoked", "cache hits are checked too");
    }

    #[test]
    fn keys_from_files() {
        let key = TestKey::rsa("r1", Algorithm::PS256);
        let dir =
            std::env::temp_dir().join(format!("portcullis-jwks-{}", crate::testing::random_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let jwks = dir.join("jwks.json");
        std::fs::write(&jwks, crate::testing::jwks_json(&[&key])).unwrap();
        let auth = JwtAuthenticator::builder()
            .issuer(ISS)
            .audience(AUD)
            .jwks_file(&jwks)
            .build()
            .unwrap();
        assert!(auth.verify(&key.mint(&key.claims("u", ISS, AUD))).is_ok());
        let missing = JwtAuthenticator::builder()
            .issuer(ISS)
            .audience(AUD)
            .jwks_file(dir.join("absent.json"))
            .build()
            .unwrap_err();
        assert!(missing.message().contains("cannot read JWKS file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn request(values: &[&str]) -> Parts {
        let mut parts = http::Request::new(()).into_parts().0;
        for value in values {
            parts.headers.append(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        parts
    }

    /// `Ok(subject)`, or `Err((status, detail))`, from an authenticator's answer.
    fn summary(
        outcome: Result<Option<Principal>, Rejection>,
    ) -> Result<Option<String>, (http::StatusCode, String)> {
        outcome
            .map(|p| p.map(|p| p.subject().to_owned()))
            .map_err(|r| (r.status(), r.detail().to_owned()))
    }

    #[tokio::test]
    async fn cached_tokens_skip_no_refusal_and_keep_its_order() {
        let key = TestKey::ed25519("k");
        let auth = builder(&key).max_token_bytes(1024).build().unwrap();
        let good = key.mint(&key.claims("alice", ISS, AUD));
        let ok = |s: &str| Ok(Some(s.to_owned()));
        let bad_request = |detail: &str| Err((http::StatusCode::BAD_REQUEST, detail.to_owned()));
        let outside = "bearer token has characters outside b64token";
        let long_good = "a".repeat(1025);
        let long_bad = format!("{long_good}\"");
        type Expected = Result<Option<String>, (http::StatusCode, String)>;
        let cases: Vec<(String, Expected)> = vec![
            (format!("Bearer {good}"), ok("alice")),
            (format!("bearer   {good}  "), ok("alice")),
            (format!("Bearer {good}\""), bad_request(outside)),
            (format!("Bearer \"{good}"), bad_request(outside)),
            (format!("Bearer {good} x"), bad_request(outside)),
            (
                format!("Bearer {}", good.replace('.', "@")),
                bad_request(outside),
            ),
            // Too long and outside b64token: the format error (400) comes first.
            (format!("Bearer {long_bad}"), bad_request(outside)),
            (
                format!("Bearer {long_good}"),
                Err((
                    http::StatusCode::UNAUTHORIZED,
                    "token of 1025 bytes exceeds the 1024 byte limit".into(),
                )),
            ),
            ("Bearer".into(), bad_request("empty bearer token")),
            ("Bearer    ".into(), bad_request("empty bearer token")),
            (format!("Bearerx {good}"), Ok(None)),
            (format!("Basic {good}"), Ok(None)),
        ];
        // Cold cache, then with the good token cached.
        for round in ["cold", "warm"] {
            for (header, expected) in &cases {
                let parts = request(&[header]);
                let now = auth.authenticate_now(&parts).expect("answers at once");
                assert_eq!(&summary(now), expected, "{round} now: {header:.40}");
                let later = auth.authenticate(&parts).await;
                assert_eq!(&summary(later), expected, "{round} async: {header:.40}");
            }
        }
    }

    #[tokio::test]
    async fn cached_tokens_see_revocations_made_after_caching() {
        use crate::authn::revocation::{
            DETAIL_JTI_REVOKED, DETAIL_SUBJECT_REVOKED, MemoryRevocationStore, Revocation,
        };
        let revocation = Revocation::builder(MemoryRevocationStore::new())
            .build()
            .unwrap();
        let key = TestKey::ed25519("k");
        let auth = builder(&key)
            .revocation(Arc::new(revocation.clone()))
            .build()
            .unwrap();
        let mut numeric_jti = key.claims("nina", ISS, AUD);
        numeric_jti["jti"] = json!(7);
        let mut no_iat = key.claims("ivan", ISS, AUD);
        no_iat.as_object_mut().unwrap().remove("iat");
        let mut no_jti = key.claims("jo", ISS, AUD);
        no_jti.as_object_mut().unwrap().remove("jti");
        let mut jti_first = serde_json::Map::new();
        jti_first.insert("jti".into(), json!("first"));
        jti_first.extend(key.claims("fred", ISS, AUD).as_object().unwrap().clone());
        jti_first.insert("jti".into(), json!("first"));
        let tokens: Vec<String> = [
            key.claims("alice", ISS, AUD),
            numeric_jti,
            no_iat,
            no_jti,
            Value::Object(jti_first),
        ]
        .iter()
        .map(|claims| key.mint(claims))
        .collect();
        let now = |token: &str| {
            summary(
                auth.authenticate_now(&request(&[&format!("Bearer {token}")]))
                    .unwrap(),
            )
        };
        for token in &tokens {
            assert!(now(token).is_ok());
            // The identity read once at caching equals a fresh read of the attributes.
            let cached = auth.verify_inner(token, None).ok().unwrap();
            let (jti, issued_at) = crate::authn::revocation::token_identity(&cached.principal);
            assert_eq!(cached.identity.jti(&cached.principal), jti);
            assert_eq!(cached.identity.issued_at, issued_at);
        }
        let alice = auth.verify(&tokens[0]).unwrap();
        revocation.revoke_principal(&alice).await.unwrap();
        let revoked = |detail: &str| Err((http::StatusCode::UNAUTHORIZED, detail.to_owned()));
        assert_eq!(now(&tokens[0]), revoked(DETAIL_JTI_REVOKED));
        // A numeric jti is no jti to the check (as before): revoking "7" refuses nothing.
        revocation.revoke_jti("7", None).await.unwrap();
        assert!(now(&tokens[1]).is_ok());
        revocation.revoke_jti("first", None).await.unwrap();
        assert_eq!(now(&tokens[4]), revoked(DETAIL_JTI_REVOKED));
        // Without iat, a subject entry refuses the token; without jti, the subject still does.
        revocation.revoke_subject_now("ivan").await.unwrap();
        assert_eq!(now(&tokens[2]), revoked(DETAIL_SUBJECT_REVOKED));
        revocation.revoke_subject_now("jo").await.unwrap();
        assert_eq!(now(&tokens[3]), revoked(DETAIL_SUBJECT_REVOKED));
        assert!(now(&tokens[1]).is_ok());
    }

    /// `parts` as the edge leaves them: a request that arrived at `received`.
    fn arrived_at(mut parts: Parts, received: SystemTime) -> Parts {
        parts
            .extensions
            .insert(crate::context::RequestContext::arrived_at(received, None));
        parts
    }

    #[tokio::test]
    async fn system_clock_checks_claims_at_the_arrival_time_from_the_edge() {
        let key = TestKey::ed25519("k");
        let auth = builder(&key).build().unwrap();
        let now = SystemClock.unix_seconds();
        // Expired an hour ago, far beyond the leeway.
        let token = key.mint(
            &json!({"sub": "u", "iss": ISS, "aud": AUD, "iat": now - 7_200, "exp": now - 3_600}),
        );
        let bearer = format!("Bearer {token}");
        let expired = |outcome| match summary(outcome) {
            Err((status, detail)) => {
                status == http::StatusCode::UNAUTHORIZED && detail.contains("expired")
            }
            Ok(_) => false,
        };
        // Without the edge, the clock decides.
        assert!(expired(
            auth.authenticate_now(&request(&[&bearer])).unwrap()
        ));
        assert!(expired(auth.authenticate(&request(&[&bearer])).await));
        // Behind the edge, the request's arrival time (while the token was valid) decides,
        // both at once and through the asynchronous path, and the clock is not read.
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(now - 5_400);
        let parts = arrived_at(request(&[&bearer]), then);
        assert_eq!(
            summary(auth.authenticate_now(&parts).unwrap()),
            Ok(Some("u".to_owned()))
        );
        let auth = builder(&key).build().unwrap();
        assert_eq!(
            summary(auth.authenticate(&parts).await),
            Ok(Some("u".to_owned()))
        );
        // And arriving now, it is expired.
        let parts = arrived_at(request(&[&bearer]), SystemTime::now());
        assert!(expired(auth.authenticate_now(&parts).unwrap()));
    }

    #[tokio::test]
    async fn injected_clocks_are_read_behind_the_edge() {
        use crate::authn::AuthnLayer;
        use crate::context::RequestContextLayer;
        use tower::{ServiceBuilder, ServiceExt, service_fn};

        let clock = ManualClock::at(SystemTime::now());
        let key = TestKey::ed25519("k");
        let auth = builder(&key)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let now = clock.unix_seconds();
        let token =
            key.mint(&json!({"sub": "u", "iss": ISS, "aud": AUD, "iat": now, "exp": now + 60}));
        let svc = ServiceBuilder::new()
            .layer(RequestContextLayer::new())
            .layer(AuthnLayer::new(auth.clone()))
            .service(service_fn(|_req: http::Request<String>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }));
        let status = || {
            let request = http::Request::builder()
                .header("authorization", format!("Bearer {token}"))
                .body(String::new())
                .unwrap();
            let svc = svc.clone();
            async move { svc.oneshot(request).await.unwrap().status() }
        };
        assert_eq!(status().await, http::StatusCode::OK);
        // Expired by the injected clock only: the edge's arrival time would still accept it.
        clock.advance(Duration::from_secs(60 + 61));
        assert_eq!(status().await, http::StatusCode::UNAUTHORIZED);
        // A request arriving (by its context) while the token was valid: the clock still decides.
        let parts = arrived_at(
            request(&[&format!("Bearer {token}")]),
            SystemTime::UNIX_EPOCH + Duration::from_secs(now),
        );
        let outcome = auth.authenticate_now(&parts).unwrap();
        assert_eq!(
            summary(outcome).unwrap_err().0,
            http::StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn oversized_tokens_are_refused_before_parsing() {
        let key = TestKey::ed25519("k");
        let auth = builder(&key).max_token_bytes(1024).build().unwrap();
        let big = "a".repeat(1025);
        let err = auth.verify(&big).unwrap_err();
        assert!(err.detail().contains("exceeds"));
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
    }
}
