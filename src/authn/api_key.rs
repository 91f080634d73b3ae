//! API keys: `pk_<id>_<secret>`, stored as SHA-256 hashes, looked up by id.
//!
//! An API key has a public part, the id, and a secret part:
//!
//! ```text
//! pk_<id>_<secret>        id: 1..=64 of A-Z a-z 0-9 -      secret: 16..=256 of A-Z a-z 0-9 - _
//! pk_ci-deploy_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA
//! ```
//!
//! The server keeps only the SHA-256 of the **whole presented key** (`pk_<id>_<secret>`, as
//! ASCII, no trailing newline), hex-encoded. A request's key is split, its id selects one record
//! (a hash map: the cost does not grow with the number of keys), and the SHA-256 of the
//! presented key is compared with the stored hash in constant time. An unknown id costs the same
//! hash and comparison (against a dummy) and gets the same refusal as a wrong secret, so the
//! client cannot tell them apart; the audit event says which it was.
//!
//! SHA-256 rather than a slow password hash because keys are generated with at least 128 bits
//! of randomness ([`generate_api_key`] makes 256): brute force is hopeless whatever the hash,
//! and a slow hash would let anyone spend the server's CPU with invalid keys.
//!
//! ## Where the key is read
//!
//! | source | default | |
//! |---|---|---|
//! | `Authorization: ApiKey pk_...` | on | scheme name set by [`authorization_scheme`](ApiKeyAuthenticatorBuilder::authorization_scheme) |
//! | a header such as `x-api-key: pk_...` | off | [`header`](ApiKeyAuthenticatorBuilder::header) |
//! | a query parameter | off | [`insecure_query_parameter`](ApiKeyAuthenticatorBuilder::insecure_query_parameter): URLs end up in proxy and access logs, browser history and `Referer` headers |
//!
//! Not `Authorization: Bearer`: bearer tokens belong to the JWT authenticator, and the
//! [`AuthnLayer`](super::AuthnLayer) refuses a request where two authenticators claim a
//! credential. A key in more than one place (or in two headers) is refused with 400; a key that
//! is present but wrong, unknown, malformed or expired is refused with 401, never treated as
//! anonymous.
//!
//! ## The key file
//!
//! One key per line, `#` comments and blank lines allowed:
//!
//! ```text
//! # id:sha256-hex-of-the-full-key:roles [attributes]
//! ci-deploy:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8:editor
//! reporting:0b14d501a594442a01c6859541bcb3e8164d183d32937b851835442f69d5c94e:reader,auditor client=reporting-svc scopes=documents:read expires=2027-01-31T00:00:00Z
//! ```
//!
//! - `id`: the key's public id; `sha256`: 64 hex digits (`printf '%s' "$KEY" | sha256sum`);
//!   `roles`: comma-separated, may be empty (`ci:<hash>:`).
//! - Optional attributes after a space: `client=<name>` (the principal's subject; default the
//!   id), `scopes=<scope>,<scope>`, `expires=<RFC 3339 UTC time, or Unix seconds>`.
//! - **Rotation**: give the client a second key (another id, same `client=`), let it switch,
//!   then delete the old line. Both keys work meanwhile; `expires=` retires a key on its own.
//!
//! The file is read at startup (an invalid file is a [`ConfigError`]) and then watched by a
//! library-owned thread (every 5 s by default): a valid new version replaces the keys at once;
//! an invalid one is refused as a whole, the last good keys stay in force, and the failure is
//! reported (audit event `api_keys.reload_failed`, the [`on_reload`](ApiKeyAuthenticatorBuilder::on_reload)
//! hook). A successful reload writes `api_keys.reloaded`.
//!
//! Principals from API keys have kind [`PrincipalKind::Service`], auth method
//! [`AuthMethod::ApiKey`] (the key id), the roles and scopes of the key, and the key's expiry,
//! so RBAC and scope policies apply to them as to any caller.
//!
//! ```
//! use http::{Request, StatusCode};
//! use portcullis::authn::AuthnLayer;
//! use portcullis::authn::api_key::{ApiKeyAuthenticator, generate_api_key};
//! use portcullis::context::RequestContextLayer;
//! use portcullis::principal::Principal;
//! use secrecy::ExposeSecret;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let key = generate_api_key("ci-deploy").unwrap(); // show `key.key()` to the client once
//! let file = format!("{}:{}:editor\n", key.id(), key.sha256_hex());
//!
//! let api_keys = ApiKeyAuthenticator::builder().keys_text(&file).build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(RequestContextLayer::new())
//!     .layer(AuthnLayer::new(api_keys))
//!     .service(service_fn(|req: Request<String>| async move {
//!         let p = req.extensions().get::<Principal>().cloned().unwrap();
//!         assert!(p.has_role("editor"));
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     }));
//!
//! let ok = Request::builder()
//!     .header("authorization", format!("ApiKey {}", key.key().expose_secret()))
//!     .body(String::new()).unwrap();
//! let response = svc.clone().oneshot(ok).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let wrong = Request::builder()
//!     .header("authorization", "ApiKey pk_ci-deploy_not-the-right-secret-at-all")
//!     .body(String::new()).unwrap();
//! assert_eq!(svc.oneshot(wrong).await.unwrap().status(), StatusCode::UNAUTHORIZED);
//! # });
//! ```
//!
//! # Deployment caveat
//! API keys are bearer credentials: anyone who sees one can use it until it is removed, so
//! serve them over TLS only, and keep the key file's hashes as carefully as the service's
//! configuration (a hash does not let anyone call the service, but it confirms a guessed or
//! leaked key). Removing a line takes effect within one polling interval on every replica that
//! reads the file; a replica whose file cannot be read keeps its last good keys, including
//! removed ones, until it can: alert on `api_keys.reload_failed`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderName;
use http::header::AUTHORIZATION;
use http::request::Parts;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthFuture, Authenticator};
use crate::clock::{SharedClock, SystemClock, request_time};
use crate::error::ConfigError;
use crate::principal::{AuthMethod, Principal, PrincipalKind};
use crate::rejection::Rejection;
use crate::secrets::watch;
use crate::secrets::{DEFAULT_POLL_INTERVAL, ReloadHook, ReloadOutcome, SeenContent};

/// The prefix of every key.
pub const API_KEY_PREFIX: &str = "pk_";
/// The default `Authorization` scheme for API keys.
pub const DEFAULT_SCHEME: &str = "ApiKey";
/// Largest key file read.
pub const MAX_KEY_FILE_BYTES: usize = 4 * 1024 * 1024;
const MAX_ID_LEN: usize = 64;
const MIN_SECRET_LEN: usize = 16;
const MAX_SECRET_LEN: usize = 256;
const MAX_KEY_LEN: usize = API_KEY_PREFIX.len() + MAX_ID_LEN + 1 + MAX_SECRET_LEN;
const MAX_NAME_LEN: usize = 256;

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn is_secret_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len()) && id.bytes().all(is_id_byte)
}

/// A newly generated key: give [`key`](Self::key) to the client once, store
/// [`sha256_hex`](Self::sha256_hex) in the key file.
pub struct GeneratedApiKey {
    id: String,
    key: SecretString,
    sha256_hex: String,
}

impl fmt::Debug for GeneratedApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedApiKey")
            .field("id", &self.id)
            .field("key", &"[REDACTED]")
            .field("sha256_hex", &self.sha256_hex)
            .finish()
    }
}

impl GeneratedApiKey {
    /// The public id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The full key, `pk_<id>_<secret>`: the client's credential.
    pub fn key(&self) -> &SecretString {
        &self.key
    }
    /// The SHA-256 of the full key, hex: what the key file stores.
    pub fn sha256_hex(&self) -> &str {
        &self.sha256_hex
    }
}

/// Makes a key `pk_<id>_<secret>` with 256 random bits in the secret (43 base64url characters).
pub fn generate_api_key(id: &str) -> Result<GeneratedApiKey, ConfigError> {
    if !valid_id(id) {
        return Err(ConfigError::new(format!(
            "API key id {id:?} must be 1..={MAX_ID_LEN} characters of A-Z a-z 0-9 -"
        )));
    }
    let secret = crate::secrets::random_token(32)?;
    let key = SecretString::from(format!("{API_KEY_PREFIX}{id}_{}", secret.expose_secret()));
    let sha256_hex = crate::hex::encode(&Sha256::digest(key.expose_secret().as_bytes()));
    Ok(GeneratedApiKey {
        id: id.to_owned(),
        key,
        sha256_hex,
    })
}

/// One key as the server knows it: id, hash, and what the key grants. `Debug` shows no hash.
#[derive(Clone)]
pub struct ApiKeyRecord {
    id: String,
    hash: [u8; 32],
    client: String,
    roles: Vec<String>,
    scopes: Vec<String>,
    expires_at: Option<SystemTime>,
}

impl fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("client", &self.client)
            .field("roles", &self.roles)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl ApiKeyRecord {
    /// A record for key `id` whose full key hashes (SHA-256) to `sha256_hex`. The client
    /// (principal subject) defaults to the id.
    pub fn new(id: impl Into<String>, sha256_hex: &str) -> Result<Self, ConfigError> {
        let id = id.into();
        if !valid_id(&id) {
            return Err(ConfigError::new(format!(
                "API key id {id:?} must be 1..={MAX_ID_LEN} characters of A-Z a-z 0-9 -"
            )));
        }
        let hash =
            crate::hex::decode_32(sha256_hex, crate::hex::Letters::AnyCase).ok_or_else(|| {
                ConfigError::new(format!("API key {id}: the hash must be 64 hex digits"))
            })?;
        Ok(Self {
            client: id.clone(),
            id,
            hash,
            roles: Vec::new(),
            scopes: Vec::new(),
            expires_at: None,
        })
    }
    /// Sets the client the key belongs to (the principal's subject).
    pub fn client(mut self, client: impl Into<String>) -> Self {
        self.client = client.into();
        self
    }
    /// Adds roles.
    pub fn roles<I: IntoIterator<Item = R>, R: Into<String>>(mut self, roles: I) -> Self {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }
    /// Adds scopes.
    pub fn scopes<I: IntoIterator<Item = R>, R: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }
    /// The key stops working at `at`.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }
    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The client.
    pub fn client_name(&self) -> &str {
        &self.client
    }
    /// The roles.
    pub fn role_names(&self) -> &[String] {
        &self.roles
    }
    /// When the key expires, if it does.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

/// A set of API key records indexed by id.
#[derive(Debug, Clone, Default)]
pub struct ApiKeySet {
    by_id: HashMap<String, ApiKeyRecord>,
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'=')
}

impl ApiKeySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record; a second record with the same id is refused.
    pub fn insert(&mut self, record: ApiKeyRecord) -> Result<(), ConfigError> {
        match self.by_id.entry(record.id.clone()) {
            Entry::Occupied(_) => Err(ConfigError::new(format!(
                "API key id {} appears twice",
                record.id
            ))),
            Entry::Vacant(slot) => {
                slot.insert(record);
                Ok(())
            }
        }
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
    /// The record of key `id`.
    pub fn get(&self, id: &str) -> Option<&ApiKeyRecord> {
        self.by_id.get(id)
    }

    /// Parses the key file format (see the [module docs](self)). The error names the line and
    /// the field, never a hash or a value.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut set = Self::new();
        for (index, raw) in text.lines().enumerate() {
            let n = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |what: &str| ConfigError::new(format!("API key file line {n}: {what}"));
            let mut fields = line.splitn(3, ':');
            let (Some(id), Some(hash), Some(rest)) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(err("expected id:sha256-hex:roles"));
            };
            let (roles, attributes) = match rest.split_once([' ', '\t']) {
                Some((roles, attributes)) => (roles, attributes),
                None => (rest, ""),
            };
            if !valid_id(id) {
                return Err(err(&format!(
                    "the id must be 1..={MAX_ID_LEN} characters of A-Z a-z 0-9 -"
                )));
            }
            let hash = crate::hex::decode_32(hash, crate::hex::Letters::AnyCase)
                .ok_or_else(|| err("the hash must be 64 hex digits"))?;
            let mut record = ApiKeyRecord {
                id: id.to_owned(),
                hash,
                client: id.to_owned(),
                roles: Vec::new(),
                scopes: Vec::new(),
                expires_at: None,
            };
            for role in roles.split(',').filter(|r| !r.is_empty()) {
                if !name_ok(role) {
                    return Err(err("a role name is empty or has a forbidden character"));
                }
                record.roles.push(role.to_owned());
            }
            for attribute in attributes.split_whitespace() {
                let Some((name, value)) = attribute.split_once('=') else {
                    return Err(err("attributes are name=value"));
                };
                match name {
                    "client" if name_ok(value) => record.client = value.to_owned(),
                    "scopes" => {
                        for scope in value.split(',').filter(|s| !s.is_empty()) {
                            if !name_ok(scope) {
                                return Err(err("a scope has a forbidden character"));
                            }
                            record.scopes.push(scope.to_owned());
                        }
                    }
                    "expires" => {
                        record.expires_at = Some(parse_time(value).ok_or_else(|| {
                            err("expires must be an RFC 3339 UTC time (…Z) or Unix seconds")
                        })?);
                    }
                    "client" => return Err(err("the client name has a forbidden character")),
                    _ => return Err(err(&format!("unknown attribute {name:?}"))),
                }
            }
            set.insert(record)
                .map_err(|e| err(e.message().trim_start_matches("API key ")))?;
        }
        Ok(set)
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` or Unix seconds.
fn parse_time(value: &str) -> Option<SystemTime> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return UNIX_EPOCH.checked_add(Duration::from_secs(value.parse().ok()?));
    }
    let value = value
        .strip_suffix('Z')
        .or_else(|| value.strip_suffix('z'))?;
    let (date, time) = value.split_once(['T', 't'])?;
    let time = time.split_once('.').map_or(time, |(whole, fraction)| {
        if fraction.bytes().all(|b| b.is_ascii_digit()) {
            whole
        } else {
            ""
        }
    });
    let number = |s: &str, len: usize| -> Option<u64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let mut d = date.split('-');
    let (year, month, day) = (
        number(d.next()?, 4)?,
        number(d.next()?, 2)?,
        number(d.next()?, 2)?,
    );
    let mut t = time.split(':');
    let (hour, minute, second) = (
        number(t.next()?, 2)?,
        number(t.next()?, 2)?,
        number(t.next()?, 2)?,
    );
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > month_days[usize::try_from(month - 1).ok()?]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    // Days since the epoch (Howard Hinnant's days_from_civil, for years >= 1970).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// A presented key split into id and the whole key (for hashing).
fn split_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (valid_id(id)
        && (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len())
        && secret.bytes().all(is_secret_byte))
    .then_some(id)
}

struct FileSource {
    path: PathBuf,
    seen: SeenContent,
}

struct Inner {
    keys: RwLock<Arc<ApiKeySet>>,
    generation: AtomicU64,
    file: Option<FileSource>,
    hook: Option<ReloadHook>,
    clock: SharedClock,
    scheme: Option<String>,
    header: Option<HeaderName>,
    query: Option<String>,
    /// Compared against when the id is unknown, so that case costs what a wrong secret costs.
    dummy: [u8; 32],
}

/// Authenticates API keys. Cheap to clone. See the [module docs](self).
#[derive(Clone)]
pub struct ApiKeyAuthenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for ApiKeyAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("ApiKeyAuthenticator")
            .field("keys", &self.keys().len())
            .field("file", &inner.file.as_ref().map(|f| &f.path))
            .field("scheme", &inner.scheme)
            .field("header", &inner.header)
            .field("query", &inner.query)
            .finish_non_exhaustive()
    }
}

/// Where a key was found, for the several-credentials check.
fn header_value<'a>(parts: &'a Parts, name: &HeaderName) -> Result<Option<&'a str>, Rejection> {
    let mut values = parts.headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Rejection::invalid_credential_request(
            "more than one API key header",
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| Rejection::invalid_credential_request("API key header is not ASCII"))?
        .trim_matches(' ');
    if text.is_empty() {
        return Err(Rejection::invalid_credential_request(
            "empty API key header",
        ));
    }
    Ok(Some(text))
}

impl ApiKeyAuthenticator {
    /// The one-credential answer for this request: no key, a valid key, or a refusal.
    fn outcome(&self, parts: &Parts) -> Result<Option<Principal>, Rejection> {
        match self.find_key(parts) {
            Ok(Some(key)) => self.inner.verify(key, Some(&parts.extensions)).map(Some),
            Ok(None) => Ok(None),
            Err(rejection) => Err(rejection),
        }
    }

    /// Starts a configuration.
    pub fn builder() -> ApiKeyAuthenticatorBuilder {
        ApiKeyAuthenticatorBuilder {
            records: Vec::new(),
            text: None,
            file: None,
            interval: Some(DEFAULT_POLL_INTERVAL),
            hook: None,
            clock: Arc::new(SystemClock),
            scheme: Some(DEFAULT_SCHEME.to_owned()),
            header: None,
            query: None,
            errors: Vec::new(),
        }
    }

    /// The keys in force.
    pub fn keys(&self) -> Arc<ApiKeySet> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times the keys were replaced by a reload.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// Reads the key file now (the watcher thread does the same every interval). Without a
    /// key file, always [`ReloadOutcome::Unchanged`].
    pub fn reload_now(&self) -> ReloadOutcome {
        self.inner.reload()
    }

    /// Checks one presented key (`pk_<id>_<secret>`). The rejection detail names the key id
    /// at most, never the secret.
    pub fn verify_key(&self, key: &str) -> Result<Principal, Rejection> {
        self.inner.verify(key, None)
    }

    /// The key from wherever this authenticator reads keys; `Ok(None)` when there is none.
    fn find_key<'a>(&self, parts: &'a Parts) -> Result<Option<&'a str>, Rejection> {
        let inner = &*self.inner;
        let mut found: Option<&'a str> = None;
        let mut take = |key: &'a str| {
            if found.replace(key).is_some() {
                return Err(Rejection::invalid_credential_request(
                    "API key presented in more than one place",
                ));
            }
            Ok(())
        };
        if let Some(scheme) = &inner.scheme
            && let Some(value) = header_value(parts, &AUTHORIZATION).ok().flatten()
        {
            // Several Authorization headers are refused by the layer itself; only the scheme
            // matters here.
            let (name, rest) = value.split_once(' ').unwrap_or((value, ""));
            if name.eq_ignore_ascii_case(scheme) {
                let key = rest.trim_matches(' ');
                if key.is_empty() {
                    return Err(Rejection::invalid_credential_request("empty API key"));
                }
                take(key)?;
            }
        }
        if let Some(header) = &inner.header
            && let Some(key) = header_value(parts, header)?
        {
            take(key)?;
        }
        if let Some(name) = &inner.query
            && let Some(query) = parts.uri.query()
        {
            for pair in query.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if k == name {
                    if v.is_empty() {
                        return Err(Rejection::invalid_credential_request("empty API key"));
                    }
                    take(v)?;
                }
            }
        }
        Ok(found)
    }
}

impl Inner {
    /// Checks `key`; an expiry is checked at the clock's time, or for a request (its
    /// extensions) with the system clock, at the time the request arrived at the edge.
    fn verify(
        &self,
        key: &str,
        request: Option<&http::Extensions>,
    ) -> Result<Principal, Rejection> {
        if key.len() > MAX_KEY_LEN {
            return Err(Rejection::invalid_credential("malformed API key: too long"));
        }
        let Some(id) = split_key(key) else {
            return Err(Rejection::invalid_credential("malformed API key"));
        };
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let keys = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let record = keys.get(id);
        let expected = record.map_or(&self.dummy, |r| &r.hash);
        let matches: bool = presented.ct_eq(expected).into();
        let Some(record) = record.filter(|_| matches) else {
            let detail = if record.is_some() {
                format!("API key {id}: wrong secret")
            } else {
                format!("API key id {id} is unknown")
            };
            return Err(Rejection::invalid_credential(detail));
        };
        if let Some(expires) = record.expires_at
            && request.map_or_else(|| self.clock.now(), |e| request_time(&*self.clock, e))
                >= expires
        {
            return Err(Rejection::invalid_credential(format!(
                "API key {id} has expired"
            )));
        }
        let mut principal = Principal::builder(
            record.client.clone(),
            AuthMethod::ApiKey {
                key_id: record.id.clone(),
            },
        )
        .kind(PrincipalKind::Service)
        .roles(record.roles.iter().cloned())
        .scopes(record.scopes.iter().cloned());
        if let Some(expires) = record.expires_at {
            principal = principal.expires_at(expires);
        }
        Ok(principal.build())
    }

    fn reload(&self) -> ReloadOutcome {
        let Some(file) = &self.file else {
            return ReloadOutcome::Unchanged;
        };
        // Held until the new set is installed: overlapping reloads (the watcher thread and
        // `reload_now`) then install in the order they read, so an older set can never
        // replace a newer one.
        let mut seen = file.seen.lock();
        let read = seen.check(&file.path, MAX_KEY_FILE_BYTES);
        #[cfg(test)]
        file.seen.run_after_read();
        let outcome = match read {
            Ok(None) | Err(None) => return ReloadOutcome::Unchanged,
            Err(Some(reason)) => ReloadOutcome::Rejected(reason),
            Ok(Some(bytes)) => match std::str::from_utf8(&bytes)
                .map_err(|_| ConfigError::new("the API key file is not UTF-8"))
                .and_then(ApiKeySet::parse)
            {
                Ok(set) => {
                    *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
                    self.generation.fetch_add(1, Ordering::SeqCst);
                    ReloadOutcome::Reloaded
                }
                Err(e) => {
                    ReloadOutcome::Rejected(format!("{}: {}", file.path.display(), e.message()))
                }
            },
        };
        drop(seen);
        let path = file.path.display().to_string();
        let keys = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        match &outcome {
            ReloadOutcome::Reloaded => crate::audit::global().record(
                crate::audit::AuditEvent::new(crate::audit::EventType::ConfigLoaded)
                    .with_reason_code("api_keys.reloaded")
                    .with_detail("path", path)
                    .with_detail("keys", u64::try_from(keys).unwrap_or(u64::MAX))
                    .with_detail("generation", self.generation.load(Ordering::SeqCst)),
            ),
            ReloadOutcome::Rejected(reason) => crate::audit::global().record(
                crate::audit::AuditEvent::new(crate::audit::EventType::ConfigLoaded)
                    .with_severity(crate::audit::Severity::Warn)
                    .with_reason_code("api_keys.reload_failed")
                    .with_reason(format!("kept the last good API keys: {reason}"))
                    .with_detail("path", path)
                    .with_detail("keys", u64::try_from(keys).unwrap_or(u64::MAX)),
            ),
            ReloadOutcome::Unchanged => {}
        }
        if let Some(hook) = &self.hook {
            hook(&outcome);
        }
        outcome
    }
}

impl Authenticator for ApiKeyAuthenticator {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(std::future::ready(self.outcome(parts)))
    }

    /// Key lookup and comparison never wait, so the answer is always immediate.
    fn authenticate_now(&self, parts: &Parts) -> Option<Result<Option<Principal>, Rejection>> {
        Some(self.outcome(parts))
    }
}

/// Configures an [`ApiKeyAuthenticator`].
#[must_use]
pub struct ApiKeyAuthenticatorBuilder {
    records: Vec<ApiKeyRecord>,
    text: Option<String>,
    file: Option<PathBuf>,
    interval: Option<Duration>,
    hook: Option<ReloadHook>,
    clock: SharedClock,
    scheme: Option<String>,
    header: Option<HeaderName>,
    query: Option<String>,
    errors: Vec<ConfigError>,
}

impl fmt::Debug for ApiKeyAuthenticatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyAuthenticatorBuilder")
            .field("records", &self.records)
            .field("file", &self.file)
            .field("interval", &self.interval)
            .field("scheme", &self.scheme)
            .field("header", &self.header)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl ApiKeyAuthenticatorBuilder {
    /// Adds one key record.
    pub fn key(mut self, record: ApiKeyRecord) -> Self {
        self.records.push(record);
        self
    }
    /// Keys in the key file format, given as text (not watched).
    pub fn keys_text(mut self, text: &str) -> Self {
        self.text = Some(text.to_owned());
        self
    }
    /// Keys from a key file, read now and watched for changes (see the [module docs](self)).
    pub fn keys_file(mut self, path: impl AsRef<Path>) -> Self {
        self.file = Some(path.as_ref().to_owned());
        self
    }
    /// How often the key file is read (default 5 s, at least 10 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }
    /// No watcher thread: the key file is re-read only by
    /// [`reload_now`](ApiKeyAuthenticator::reload_now).
    pub fn manual_reload(mut self) -> Self {
        self.interval = None;
        self
    }
    /// Runs `hook` after every reload attempt that saw a new version of the key file (or a
    /// new read failure). It runs on the watcher thread; keep it short.
    pub fn on_reload(mut self, hook: impl Fn(&ReloadOutcome) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }
    /// The clock for key expiry (default the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
    /// The `Authorization` scheme that carries a key (default `ApiKey`; compared without
    /// regard to case). `Bearer` is refused: it belongs to token authenticators.
    pub fn authorization_scheme(mut self, scheme: impl Into<String>) -> Self {
        self.scheme = Some(scheme.into());
        self
    }
    /// Stops reading keys from the `Authorization` header (then set a [`header`](Self::header)).
    pub fn no_authorization_header(mut self) -> Self {
        self.scheme = None;
        self
    }
    /// Also reads keys from this header (for example `x-api-key`). A request with a key both
    /// there and in `Authorization` is refused with 400.
    pub fn header(mut self, name: &str) -> Self {
        match HeaderName::try_from(name) {
            Ok(name) if name != AUTHORIZATION => self.header = Some(name),
            _ => self.errors.push(ConfigError::new(format!(
                "API key header {name:?} is not a valid header name other than Authorization"
            ))),
        }
        self
    }
    /// Also reads keys from the query parameter `name`. Insecure: URLs are written to access
    /// logs, proxy logs and browser history, and sent in `Referer` headers.
    pub fn insecure_query_parameter(mut self, name: impl Into<String>) -> Self {
        self.query = Some(name.into());
        self
    }

    /// Checks the configuration, loads the keys and starts the watcher.
    pub fn build(self) -> Result<ApiKeyAuthenticator, ConfigError> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        if let Some(scheme) = &self.scheme
            && (scheme.eq_ignore_ascii_case("bearer")
                || scheme.is_empty()
                || !scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(ConfigError::new(format!(
                "API key scheme {scheme:?} must be a token other than Bearer"
            )));
        }
        if self.scheme.is_none() && self.header.is_none() && self.query.is_none() {
            return Err(ConfigError::new(
                "API keys must be read from somewhere: Authorization, a header or a query parameter",
            ));
        }
        if self.query.as_ref().is_some_and(String::is_empty) {
            return Err(ConfigError::new("the API key query parameter needs a name"));
        }
        let sources = usize::from(self.file.is_some())
            + usize::from(self.text.is_some())
            + usize::from(!self.records.is_empty());
        if sources > 1 {
            return Err(ConfigError::new(
                "API keys come from one of: a key file, key text, or records",
            ));
        }
        let mut set = match &self.text {
            Some(text) => ApiKeySet::parse(text)?,
            None => ApiKeySet::new(),
        };
        for record in self.records {
            set.insert(record)?;
        }
        let file = match &self.file {
            Some(path) => {
                let seen = SeenContent::default();
                let bytes = match seen.lock().check(path, MAX_KEY_FILE_BYTES) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => watch::FileBytes::default(),
                    Err(reason) => return Err(ConfigError::new(reason.unwrap_or_default())),
                };
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| ConfigError::new(format!("{} is not UTF-8", path.display())))?;
                set = ApiKeySet::parse(text).map_err(|e| {
                    ConfigError::new(format!("{}: {}", path.display(), e.message()))
                })?;
                Some(FileSource {
                    path: path.clone(),
                    seen,
                })
            }
            None => None,
        };
        let inner = Arc::new(Inner {
            keys: RwLock::new(Arc::new(set)),
            generation: AtomicU64::new(0),
            file,
            hook: self.hook,
            clock: self.clock,
            scheme: self.scheme,
            header: self.header,
            query: self.query,
            dummy: Sha256::digest(b"portcullis: no such API key").into(),
        });
        if inner.file.is_some()
            && let Some(interval) = self.interval
        {
            watch::spawn_poller("api-key-watch", interval, Arc::downgrade(&inner), |inner| {
                inner.reload();
            })?;
        }
        Ok(ApiKeyAuthenticator { inner })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http::{Request, StatusCode};

    use super::*;
    use crate::authn::authenticate;
    use crate::clock::ManualClock;

    fn parts(headers: &[(&str, &str)], uri: &str) -> Parts {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn line(key: &GeneratedApiKey, rest: &str) -> String {
        format!("{}:{}:{rest}\n", key.id(), key.sha256_hex())
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = generate_api_key("svc-1").unwrap();
        let text = key.key().expose_secret();
        assert!(text.starts_with("pk_svc-1_"));
        assert_eq!(text.len(), "pk_svc-1_".len() + 43);
        assert_eq!(split_key(text), Some("svc-1"));
        assert_eq!(
            key.sha256_hex(),
            crate::hex::encode(&Sha256::digest(text.as_bytes()))
        );
        assert!(!format!("{key:?}").contains(&text[9..]));
        assert!(generate_api_key("bad_id").is_err());
    }

    #[test]
    fn key_file_parsing() {
        let a = generate_api_key("a").unwrap();
        let text = format!(
            "# comment\n\n{}  {}",
            line(
                &a,
                "reader,editor client=svc-a scopes=docs:read,docs:write expires=2030-01-02T03:04:05Z"
            ),
            "b:0000000000000000000000000000000000000000000000000000000000000000:\n"
        );
        let set = ApiKeySet::parse(&text).unwrap();
        assert_eq!(set.len(), 2);
        let rec = set.get("a").unwrap();
        assert_eq!(rec.client, "svc-a");
        assert_eq!(rec.roles, ["reader", "editor"]);
        assert_eq!(rec.scopes, ["docs:read", "docs:write"]);
        assert_eq!(
            rec.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_893_553_445))
        );
        assert!(set.get("b").unwrap().roles.is_empty());
        assert_eq!(set.get("b").unwrap().client, "b");

        let bad = [
            ("a:abc:reader", "line 1: the hash must be 64 hex digits"),
            ("a_b:", "line 1: expected id:sha256-hex:roles"),
            ("bad_id:{h}:r", "line 1: the id must be"),
            ("a:{h}:r unknown=1", "line 1: unknown attribute \"unknown\""),
            (
                "a:{h}:r expires=2030-02-30T00:00:00Z",
                "line 1: expires must be",
            ),
            ("a:{h}:r\na:{h}:r", "line 2: id a appears twice"),
            ("a:{h}:r,,x=y", "line 1: a role name"),
        ];
        for (input, want) in bad {
            let input = input.replace("{h}", a.sha256_hex());
            let err = ApiKeySet::parse(&input).unwrap_err();
            assert!(err.message().contains(want), "{input}: {err}");
            assert!(
                !err.message().contains(a.sha256_hex()),
                "hash echoed: {err}"
            );
        }
    }

    #[test]
    fn times() {
        let t = |s| parse_time(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("2000-02-29T12:00:00.5Z"), Some(951_825_600));
        assert_eq!(t("1700000000"), Some(1_700_000_000));
        for bad in [
            "2001-02-29T00:00:00Z",
            "2030-01-01T00:00:00+01:00",
            "2030-01-01",
            "",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    fn authenticator(text: &str, clock: &ManualClock) -> ApiKeyAuthenticator {
        ApiKeyAuthenticator::builder()
            .keys_text(text)
            .header("x-api-key")
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn outcomes_through_the_one_credential_rule() {
        let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(1_000));
        let good = generate_api_key("good").unwrap();
        let expiring = generate_api_key("old").unwrap();
        let auth = authenticator(
            &format!(
                "{}{}",
                line(&good, "reader client=svc-a scopes=s1"),
                line(&expiring, "reader client=svc-a expires=500")
            ),
            &clock,
        );
        let all: Vec<Arc<dyn Authenticator>> = vec![Arc::new(auth.clone())];
        let key = good.key().expose_secret();
        let run = |headers: Vec<(&str, String)>, uri: &str| {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let p = parts(&headers, uri);
            let all = all.clone();
            async move { authenticate(&all, &p).await }
        };

        let p = run(vec![("authorization", format!("ApiKey {key}"))], "/")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.subject(), "svc-a");
        assert_eq!(p.kind(), PrincipalKind::Service);
        assert_eq!(
            p.auth_method(),
            &AuthMethod::ApiKey {
                key_id: "good".into()
            }
        );
        assert_eq!(p.auth_method().name(), "api_key");
        assert_eq!(p.roles(), ["reader"]);
        assert_eq!(p.scopes(), ["s1"]);
        let p = run(vec![("x-api-key", key.to_owned())], "/").await.unwrap();
        assert!(p.is_some());
        let lower = run(vec![("authorization", format!("apikey {key}"))], "/").await;
        assert!(lower.unwrap().is_some(), "schemes are case-insensitive");

        // Query strings are not read unless insecurely enabled: anonymous.
        let q = run(vec![], &format!("/?api_key={key}")).await.unwrap();
        assert!(q.is_none());

        let status = |r: Result<Option<Principal>, Rejection>| r.unwrap_err().status();
        let mut wrong = key.to_owned();
        wrong.pop();
        wrong.push(if key.ends_with('A') { 'B' } else { 'A' });
        let unknown = key.replacen("pk_good_", "pk_nobody_", 1);
        let cases: Vec<(Vec<(&str, String)>, StatusCode)> = vec![
            (
                vec![("authorization", format!("ApiKey {wrong}"))],
                StatusCode::UNAUTHORIZED,
            ),
            (
                vec![("authorization", format!("ApiKey {unknown}"))],
                StatusCode::UNAUTHORIZED,
            ),
            (
                vec![("authorization", "ApiKey pk_good_short".into())],
                StatusCode::UNAUTHORIZED,
            ),
            (
                vec![("authorization", "ApiKey not-a-key".into())],
                StatusCode::UNAUTHORIZED,
            ),
            (
                vec![("authorization", format!("ApiKey {}", "x".repeat(5000)))],
                StatusCode::UNAUTHORIZED,
            ),
            (
                vec![(
                    "authorization",
                    format!("ApiKey {}", expiring.key().expose_secret()),
                )],
                StatusCode::UNAUTHORIZED,
            ),
            (
                vec![("authorization", "ApiKey".into())],
                StatusCode::BAD_REQUEST,
            ),
            (
                vec![("authorization", "ApiKey   ".into())],
                StatusCode::BAD_REQUEST,
            ),
            (vec![("x-api-key", "".into())], StatusCode::BAD_REQUEST),
            (
                vec![("x-api-key", key.to_owned()), ("x-api-key", key.to_owned())],
                StatusCode::BAD_REQUEST,
            ),
            (
                vec![
                    ("x-api-key", key.to_owned()),
                    ("authorization", format!("ApiKey {key}")),
                ],
                StatusCode::BAD_REQUEST,
            ),
            // Another scheme nobody understands: the layer's 401.
            (
                vec![("authorization", format!("Basic {key}"))],
                StatusCode::UNAUTHORIZED,
            ),
        ];
        for (headers, want) in cases {
            let shown = format!("{headers:?}");
            let rejection = run(headers, "/").await;
            assert_eq!(status(rejection.clone()), want, "{shown}");
            let detail = rejection.unwrap_err().detail().to_owned();
            assert!(!detail.contains(&key[8..]), "secret in detail: {detail}");
        }

        // Wrong secret and unknown id: the same rejection kind; only the audit detail differs.
        let w = run(vec![("authorization", format!("ApiKey {wrong}"))], "/")
            .await
            .unwrap_err();
        let u = run(vec![("authorization", format!("ApiKey {unknown}"))], "/")
            .await
            .unwrap_err();
        assert_eq!(w.kind(), u.kind());
        assert_eq!(
            w.to_http_response(Some("r")).body(),
            u.to_http_response(Some("r")).body()
        );
        assert!(w.detail().contains("wrong secret"));
        assert!(u.detail().contains("unknown"));

        // Expiry follows the clock.
        clock.set(UNIX_EPOCH + Duration::from_secs(1_000));
        let old = ApiKeyAuthenticator::builder()
            .keys_text(&line(&expiring, "r expires=2000"))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let k = expiring.key().expose_secret();
        assert!(old.verify_key(k).is_ok());
        clock.advance(Duration::from_secs(1_000));
        assert!(old.verify_key(k).unwrap_err().detail().contains("expired"));
    }

    #[test]
    fn expiry_behind_the_edge_uses_the_arrival_time_only_with_the_system_clock() {
        use crate::clock::Clock;
        use crate::context::RequestContext;

        let key = generate_api_key("exp").unwrap();
        let now = SystemClock.unix_seconds();
        let text = line(&key, &format!("r expires={}", now + 3_600));
        let header = format!("ApiKey {}", key.key().expose_secret());
        let request = |received: Option<SystemTime>| {
            let mut p = parts(&[("authorization", header.as_str())], "/");
            if let Some(received) = received {
                p.extensions
                    .insert(RequestContext::arrived_at(received, None));
            }
            p
        };
        let accepted =
            |auth: &ApiKeyAuthenticator, p: &Parts| match auth.authenticate_now(p).unwrap() {
                Ok(principal) => principal.is_some(),
                Err(rejection) => {
                    assert!(rejection.detail().contains("expired"), "{rejection:?}");
                    false
                }
            };
        let system = ApiKeyAuthenticator::builder()
            .keys_text(&text)
            .build()
            .unwrap();
        let later = UNIX_EPOCH + Duration::from_secs(now + 7_200);
        assert!(accepted(&system, &request(None)));
        assert!(accepted(&system, &request(Some(SystemTime::now()))));
        // Arrived (by the edge's record) after the expiry: the clock was not read.
        assert!(!accepted(&system, &request(Some(later))));

        // An injected clock decides, whatever the request's arrival time.
        let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(now));
        let manual = ApiKeyAuthenticator::builder()
            .keys_text(&text)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        assert!(accepted(&manual, &request(Some(later))));
        clock.advance(Duration::from_secs(3_600));
        assert!(!accepted(&manual, &request(Some(SystemTime::now()))));
    }

    #[test]
    fn query_parameter_only_when_insecurely_enabled() {
        let good = generate_api_key("q").unwrap();
        let auth = ApiKeyAuthenticator::builder()
            .keys_text(&line(&good, "reader"))
            .insecure_query_parameter("api_key")
            .build()
            .unwrap();
        let key = good.key().expose_secret();
        let p = parts(&[], &format!("/x?a=1&api_key={key}"));
        assert!(auth.find_key(&p).unwrap().is_some());
        let p = parts(&[], &format!("/x?api_key={key}&api_key={key}"));
        assert_eq!(
            auth.find_key(&p).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn configuration_errors() {
        let bearer = ApiKeyAuthenticator::builder()
            .authorization_scheme("Bearer")
            .build();
        assert!(bearer.is_err());
        let nowhere = ApiKeyAuthenticator::builder()
            .no_authorization_header()
            .build();
        assert!(nowhere.is_err());
        let bad_header = ApiKeyAuthenticator::builder().header("bad header").build();
        assert!(bad_header.is_err());
        let missing = ApiKeyAuthenticator::builder()
            .keys_file("/nonexistent/portcullis/keys")
            .build()
            .unwrap_err();
        assert!(missing.message().contains("cannot open"), "{missing}");
    }

    #[test]
    fn an_overlapping_reload_never_leaves_an_older_set_installed() {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-apikeys-race-{}",
            crate::secrets::random_token(8).unwrap().expose_secret()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        let replace = move |path: &std::path::Path, content: &str| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        };
        let compromised = generate_api_key("compromised").unwrap();
        let fresh = generate_api_key("fresh").unwrap();
        let other = generate_api_key("other").unwrap();
        replace(&path, &line(&other, "reader"));
        let auth = ApiKeyAuthenticator::builder()
            .keys_file(&path)
            .manual_reload()
            .build()
            .unwrap();
        replace(
            &path,
            &format!("{}{}", line(&other, "reader"), line(&compromised, "admin")),
        );
        let operator = Arc::new(Mutex::new(None));
        let (handle, slot, file) = (auth.clone(), operator.clone(), path.clone());
        let fixed = line(&fresh, "admin");
        // The watcher has read the file holding the compromised key; the operator replaces
        // it and calls `reload_now` before the watcher installs what it read.
        auth.inner
            .file
            .as_ref()
            .unwrap()
            .seen
            .after_next_read(move || {
                replace(&file, &fixed);
                let (tx, rx) = std::sync::mpsc::channel();
                *slot.lock().unwrap() = Some(std::thread::spawn(move || {
                    let outcome = handle.reload_now();
                    let _ = tx.send(());
                    outcome
                }));
                // Without the reload lock the operator's reload installs the fixed set now
                // and the watcher then installs the compromised one over it. With the lock
                // it waits for the watcher, and the bound only ends the wait.
                let _ = rx.recv_timeout(Duration::from_millis(500));
            });
        assert_eq!(auth.reload_now(), ReloadOutcome::Reloaded);
        let operator = operator.lock().unwrap().take().unwrap();
        assert_eq!(operator.join().unwrap(), ReloadOutcome::Reloaded);
        assert!(
            auth.verify_key(compromised.key().expose_secret()).is_err(),
            "the removed key is still accepted"
        );
        assert!(auth.verify_key(fresh.key().expose_secret()).is_ok());
        assert_eq!(auth.reload_now(), ReloadOutcome::Unchanged);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn key_file_reload_keeps_the_last_good_set() {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-apikeys-{}",
            crate::secrets::random_token(8).unwrap().expose_secret()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        let a = generate_api_key("a").unwrap();
        let b = generate_api_key("b").unwrap();
        std::fs::write(&path, line(&a, "reader")).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let auth = ApiKeyAuthenticator::builder()
            .keys_file(&path)
            .manual_reload()
            .on_reload(move |o| seen.lock().unwrap().push(o.clone()))
            .build()
            .unwrap();
        assert_eq!(auth.reload_now(), ReloadOutcome::Unchanged);
        std::fs::write(
            &path,
            format!("{}{}", line(&a, "reader"), line(&b, "admin")),
        )
        .unwrap();
        assert_eq!(auth.reload_now(), ReloadOutcome::Reloaded);
        assert!(auth.verify_key(b.key().expose_secret()).is_ok());
        std::fs::write(&path, format!("{}garbage\n", line(&b, "admin"))).unwrap();
        let ReloadOutcome::Rejected(reason) = auth.reload_now() else {
            panic!("invalid file accepted");
        };
        assert!(reason.contains("line 2"), "{reason}");
        assert!(
            auth.verify_key(a.key().expose_secret()).is_ok(),
            "last good set kept"
        );
        std::fs::write(&path, line(&b, "admin")).unwrap();
        assert_eq!(auth.reload_now(), ReloadOutcome::Reloaded);
        assert!(
            auth.verify_key(a.key().expose_secret()).is_err(),
            "removed key refused"
        );
        assert_eq!(auth.generation(), 2);
        assert_eq!(events.lock().unwrap().len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
