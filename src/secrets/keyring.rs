//! [`KeyRing`]: HMAC / signing keys with ids, rotation with a grace period.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

use crate::clock::{SharedClock, SystemClock};
use crate::error::ConfigError;

/// Shortest key accepted: 32 bytes, the output size of SHA-256 (RFC 2104 §3 recommends no
/// less than the hash output for HMAC).
pub const MIN_KEY_BYTES: usize = 32;
/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 1024;
/// How long a replaced key keeps verifying unless configured otherwise.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(24 * 3600);
const MAX_KEY_ID_BYTES: usize = 128;

struct RingKey {
    id: Arc<str>,
    material: SecretSlice<u8>,
}

/// One key of a [`KeyRing`]: its id and its bytes. `Debug` shows the id only.
///
/// The bytes are reached through [`ExposeSecret`]; keep what you do with them as short-lived
/// as possible.
#[derive(Clone)]
pub struct SigningKey {
    key: Arc<RingKey>,
}

impl SigningKey {
    /// The key id (safe to log, store next to signatures, put in a `kid`).
    pub fn id(&self) -> &str {
        &self.key.id
    }

    /// HMAC-SHA256 of `message` under this key.
    pub fn hmac_sha256(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// Checks an HMAC-SHA256 tag in constant time.
    pub fn verify_hmac_sha256(&self, message: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    }

    #[expect(
        clippy::expect_used,
        reason = "HMAC accepts keys of any length (RFC 2104 hashes long keys): cannot fail"
    )]
    fn mac(&self) -> Hmac<Sha256> {
        let key = self.key.material.expose_secret();
        // HMAC accepts keys of any length (RFC 2104 hashes long ones), so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
    }
}

impl ExposeSecret<[u8]> for SigningKey {
    fn expose_secret(&self) -> &[u8] {
        self.key.material.expose_secret()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.key.id)
            .field("material", &"[REDACTED]")
            .finish()
    }
}

/// A MAC with the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacTag {
    /// The id of the key.
    pub key_id: String,
    /// HMAC-SHA256 of the message.
    pub tag: [u8; 32],
}

struct State {
    active: Arc<RingKey>,
    /// Replaced keys and the time until which they still verify, newest first.
    retired: Vec<(Arc<RingKey>, SystemTime)>,
}

struct Inner {
    name: String,
    state: RwLock<State>,
    clock: SharedClock,
    grace: Duration,
}

/// Signing / HMAC keys with ids: one active key signs, replaced keys keep verifying for a grace
/// period. Cheap to clone (clones share the keys).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use std::sync::Arc;
/// use secrecy::ExposeSecret;
/// use portcullis::clock::ManualClock;
/// use portcullis::secrets::KeyRing;
///
/// let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(1_000_000));
/// let ring = KeyRing::builder()
///     .name("audit")
///     .key("k1", vec![1u8; 32])
///     .grace_period(Duration::from_secs(3600))
///     .clock(Arc::new(clock.clone()))
///     .build()
///     .unwrap();
///
/// // What the audit log needs: the active key's id and bytes.
/// let active = ring.active();
/// assert_eq!(active.id(), "k1");
/// assert_eq!(active.expose_secret().len(), 32);
///
/// let signed = ring.sign(b"line 1");
/// ring.rotate("k2", vec![2u8; 32]).unwrap();
/// assert_eq!(ring.active().id(), "k2");
/// assert!(ring.verify(&signed.key_id, b"line 1", &signed.tag)); // k1: within the grace period
/// clock.advance(Duration::from_secs(3601));
/// assert!(!ring.verify(&signed.key_id, b"line 1", &signed.tag)); // k1 is gone
/// ```
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        f.debug_struct("KeyRing")
            .field("name", &self.inner.name)
            .field("active", &state.active.id)
            .field(
                "retired",
                &state.retired.iter().map(|(k, _)| &k.id).collect::<Vec<_>>(),
            )
            .field("grace", &self.inner.grace)
            .finish()
    }
}

fn check_key(id: &str, material: &[u8]) -> Result<(), ConfigError> {
    if id.is_empty()
        || id.len() > MAX_KEY_ID_BYTES
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ConfigError::new(format!(
            "key id {id:?} must be 1..={MAX_KEY_ID_BYTES} characters of A-Z a-z 0-9 - _ ."
        )));
    }
    if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&material.len()) {
        return Err(ConfigError::new(format!(
            "key {id}: {} bytes, expected {MIN_KEY_BYTES}..={MAX_KEY_BYTES}",
            material.len()
        )));
    }
    Ok(())
}

impl KeyRing {
    /// Starts a key ring.
    pub fn builder() -> KeyRingBuilder {
        KeyRingBuilder {
            name: "default".into(),
            key: None,
            grace: DEFAULT_GRACE_PERIOD,
            clock: Arc::new(SystemClock),
        }
    }

    /// A key id derived from key material: `k-` and the first 16 hex digits of its SHA-256.
    /// Stable for the same bytes, so every replica that reads the same secret file names the
    /// key alike; it reveals nothing usable about a high-entropy key.
    pub fn derive_key_id(material: &[u8]) -> String {
        let digest = Sha256::digest(material);
        let mut id = String::with_capacity(18);
        id.push_str("k-");
        for byte in &digest[..8] {
            id.push_str(&format!("{byte:02x}"));
        }
        id
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The key that signs now.
    pub fn active(&self) -> SigningKey {
        SigningKey {
            key: self.read().active.clone(),
        }
    }

    /// The key with this id, if it is active or still within its grace period.
    pub fn get(&self, id: &str) -> Option<SigningKey> {
        let now = self.inner.clock.now();
        let state = self.read();
        if &*state.active.id == id {
            return Some(SigningKey {
                key: state.active.clone(),
            });
        }
        state
            .retired
            .iter()
            .find(|(key, until)| &*key.id == id && now < *until)
            .map(|(key, _)| SigningKey { key: key.clone() })
    }

    /// Every key that verifies now: the active key first, then retired keys newest first.
    pub fn verification_keys(&self) -> Vec<SigningKey> {
        let now = self.inner.clock.now();
        let state = self.read();
        std::iter::once(&state.active)
            .chain(
                state
                    .retired
                    .iter()
                    .filter(|(_, until)| now < *until)
                    .map(|(k, _)| k),
            )
            .map(|key| SigningKey { key: key.clone() })
            .collect()
    }

    /// HMAC-SHA256 of `message` under the active key.
    pub fn sign(&self, message: &[u8]) -> HmacTag {
        let key = self.active();
        HmacTag {
            key_id: key.id().to_owned(),
            tag: key.hmac_sha256(message),
        }
    }

    /// Checks a tag made by the key `key_id` (active or within its grace period), in constant
    /// time. Unknown and expired key ids fail like a wrong tag.
    pub fn verify(&self, key_id: &str, message: &[u8], tag: &[u8]) -> bool {
        self.get(key_id)
            .is_some_and(|key| key.verify_hmac_sha256(message, tag))
    }

    /// Makes `material` the active key under `id`. The previous key keeps verifying for the
    /// grace period; keys whose grace period ended are dropped. Writes a `key.rotated` audit
    /// event (ids only).
    ///
    /// Refused (nothing changes) when the id is malformed or already in the ring, or the key
    /// is shorter than [`MIN_KEY_BYTES`] or longer than [`MAX_KEY_BYTES`].
    pub fn rotate(
        &self,
        id: impl Into<String>,
        material: impl Into<SecretSlice<u8>>,
    ) -> Result<(), ConfigError> {
        let id = id.into();
        let material = material.into();
        check_key(&id, material.expose_secret())?;
        let now = self.inner.clock.now();
        let until = now + self.inner.grace;
        let mut state = self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        state.retired.retain(|(_, until)| now < *until);
        if &*state.active.id == id.as_str() || state.retired.iter().any(|(k, _)| *k.id == *id) {
            return Err(ConfigError::new(format!(
                "key ring {}: key id {id} is already in use",
                self.inner.name
            )));
        }
        let new = Arc::new(RingKey {
            id: Arc::from(id.as_str()),
            material,
        });
        let previous = std::mem::replace(&mut state.active, new);
        let previous_id = previous.id.clone();
        state.retired.insert(0, (previous, until));
        drop(state);
        crate::audit::global().record(
            crate::audit::AuditEvent::new(crate::audit::EventType::KeyRotated)
                .with_reason_code("key_ring.rotated")
                .with_detail("key_ring", self.inner.name.clone())
                .with_detail("key_id", id.clone())
                .with_detail("previous_key_id", previous_id.to_string())
                .with_detail("grace_secs", self.inner.grace.as_secs()),
        );
        Ok(())
    }

    /// Rotates to `material` under [`derive_key_id`](Self::derive_key_id), unless it is the
    /// active key already (then nothing happens and `Ok(false)` is returned). Meant for a
    /// [`WatchedSecret`](super::WatchedSecret) hook: a re-rendered file with the same key is
    /// not a rotation.
    pub fn rotate_to(&self, material: impl Into<SecretSlice<u8>>) -> Result<bool, ConfigError> {
        let material = material.into();
        let id = Self::derive_key_id(material.expose_secret());
        if *self.read().active.id == *id {
            return Ok(false);
        }
        self.rotate(id, material).map(|()| true)
    }
}

/// Configures a [`KeyRing`].
#[must_use]
pub struct KeyRingBuilder {
    name: String,
    key: Option<(String, SecretSlice<u8>)>,
    grace: Duration,
    clock: SharedClock,
}

impl fmt::Debug for KeyRingBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRingBuilder")
            .field("name", &self.name)
            .field("key", &self.key.as_ref().map(|(id, _)| id))
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl KeyRingBuilder {
    /// A name for audit events (default `default`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// The initial active key (required).
    pub fn key(mut self, id: impl Into<String>, material: impl Into<SecretSlice<u8>>) -> Self {
        self.key = Some((id.into(), material.into()));
        self
    }
    /// The initial active key, named by [`KeyRing::derive_key_id`].
    pub fn derived_key(self, material: impl Into<SecretSlice<u8>>) -> Self {
        let material = material.into();
        let id = KeyRing::derive_key_id(material.expose_secret());
        self.key(id, material)
    }
    /// How long a replaced key keeps verifying (default 24 h). Longer: more time for
    /// in-flight signatures and caches to move to the new key, and more time for a leaked old
    /// key to be useful.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
    /// The clock for grace periods (default the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
    /// Checks the key and builds the ring.
    pub fn build(self) -> Result<KeyRing, ConfigError> {
        let Some((id, material)) = self.key else {
            return Err(ConfigError::new(format!(
                "key ring {}: an initial key is required",
                self.name
            )));
        };
        check_key(&id, material.expose_secret())?;
        if self.grace > Duration::from_secs(365 * 24 * 3600) {
            return Err(ConfigError::new("key ring grace period exceeds one year"));
        }
        Ok(KeyRing {
            inner: Arc::new(Inner {
                name: self.name,
                state: RwLock::new(State {
                    active: Arc::new(RingKey {
                        id: Arc::from(id),
                        material,
                    }),
                    retired: Vec::new(),
                }),
                clock: self.clock,
                grace: self.grace,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::clock::ManualClock;

    fn ring(clock: &ManualClock) -> KeyRing {
        KeyRing::builder()
            .name("test")
            .key("k1", vec![1u8; 32])
            .grace_period(Duration::from_secs(60))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap()
    }

    #[test]
    fn rotation_keeps_the_old_key_for_the_grace_period_only() {
        let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(10_000));
        let ring = ring(&clock);
        let old = ring.sign(b"m");
        assert_eq!(old.key_id, "k1");
        ring.rotate("k2", vec![2u8; 32]).unwrap();
        let new = ring.sign(b"m");
        assert_eq!(new.key_id, "k2");
        assert_ne!(old.tag, new.tag);
        assert!(ring.verify("k1", b"m", &old.tag));
        assert!(ring.verify("k2", b"m", &new.tag));
        assert!(
            !ring.verify("k2", b"m", &old.tag),
            "tag under the wrong key"
        );
        assert!(!ring.verify("k1", b"other", &old.tag));
        let ids: Vec<_> = ring
            .verification_keys()
            .iter()
            .map(|k| k.id().to_owned())
            .collect();
        assert_eq!(ids, ["k2", "k1"]);
        clock.advance(Duration::from_secs(59));
        assert!(ring.verify("k1", b"m", &old.tag));
        clock.advance(Duration::from_secs(1));
        assert!(!ring.verify("k1", b"m", &old.tag));
        assert!(ring.get("k1").is_none());
        assert!(
            ring.verify("k2", b"m", &new.tag),
            "active keys never expire"
        );
    }

    #[test]
    fn invalid_rotations_change_nothing() {
        let clock = ManualClock::at(UNIX_EPOCH);
        let ring = ring(&clock);
        assert!(ring.rotate("k1", vec![3u8; 32]).is_err(), "duplicate id");
        assert!(ring.rotate("k3", vec![3u8; 31]).is_err(), "short key");
        assert!(ring.rotate("bad id", vec![3u8; 32]).is_err());
        assert!(ring.rotate("", vec![3u8; 32]).is_err());
        assert_eq!(ring.active().id(), "k1");
        ring.rotate("k2", vec![2u8; 32]).unwrap();
        assert!(
            ring.rotate("k1", vec![3u8; 32]).is_err(),
            "a retired id in its grace period"
        );
        assert!(KeyRing::builder().build().is_err(), "no key");
    }

    #[test]
    fn derived_ids_and_no_op_rotation() {
        let clock = ManualClock::at(UNIX_EPOCH);
        let ring = ring(&clock);
        let material = vec![7u8; 48];
        let id = KeyRing::derive_key_id(&material);
        assert!(id.starts_with("k-") && id.len() == 18, "{id}");
        assert!(ring.rotate_to(material.clone()).unwrap());
        assert_eq!(ring.active().id(), id);
        assert!(!ring.rotate_to(material).unwrap());
    }

    #[test]
    fn debug_never_shows_key_material() {
        let clock = ManualClock::at(UNIX_EPOCH);
        let ring = KeyRing::builder()
            .key("k1", b"super-secret-hmac-key-material-0123456789".to_vec())
            .clock(Arc::new(clock))
            .build()
            .unwrap();
        for text in [format!("{ring:?}"), format!("{:?}", ring.active())] {
            assert!(!text.contains("super-secret"), "{text}");
            assert!(text.contains("k1"));
        }
    }

    /// Runs `f` with a JSON subscriber capturing every event; returns the captured text.
    pub(crate) fn capture_events(f: impl FnOnce()) -> String {
        use std::io;
        use std::sync::Mutex;
        use tracing_subscriber::layer::SubscriberExt;
        #[derive(Clone)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf(Arc::new(Mutex::new(Vec::new())));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn rotation_is_audited_by_id_and_a_watched_file_drives_it() {
        use crate::secrets::{ReloadOutcome, WatchedSecret};
        let clock = ManualClock::at(UNIX_EPOCH);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-ring-{}",
            crate::secrets::random_token(8).unwrap().expose_secret()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hmac-key");
        let first = "first-hmac-key-material-0123456789abcdef";
        let second = "second-hmac-key-material-0123456789abcdef";
        std::fs::write(&path, format!("{first}\n")).unwrap();
        let ring = KeyRing::builder()
            .name("audit")
            .derived_key(
                crate::secrets::SecretSource::file(&path)
                    .load_bytes()
                    .unwrap(),
            )
            .clock(Arc::new(clock))
            .build()
            .unwrap();
        let first_id = ring.active().id().to_owned();
        let follower = ring.clone();
        let watched = WatchedSecret::builder(&path)
            .manual_reload()
            .on_change(move |value| {
                let _ = follower.rotate_to(value.expose_secret().as_bytes().to_vec());
            })
            .build()
            .unwrap();
        let signed = ring.sign(b"entry");
        let text = capture_events(|| {
            std::fs::write(&path, format!("{second}\n")).unwrap();
            assert_eq!(watched.check_now(), ReloadOutcome::Reloaded);
        });
        let second_id = ring.active().id().to_owned();
        assert_ne!(first_id, second_id);
        assert_eq!(second_id, KeyRing::derive_key_id(second.as_bytes()));
        assert!(ring.verify(&signed.key_id, b"entry", &signed.tag));
        let rotated = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["event"] == "key.rotated")
            .expect("a key.rotated event");
        // The audit schema carries event-specific fields in `details` (JSON text on tracing).
        let details: serde_json::Value =
            serde_json::from_str(rotated["details"].as_str().unwrap()).unwrap();
        assert_eq!(details["key_ring"], "audit");
        assert_eq!(details["key_id"], second_id.as_str());
        assert_eq!(details["previous_key_id"], first_id.as_str());
        assert!(text.contains("secret.reloaded"));
        assert!(!text.contains("hmac-key-material"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hmac_matches_rfc_4231_case_6() {
        // RFC 4231 test case 6 uses a 131-byte key; verify against it.
        let key = vec![0xaau8; 131];
        let ring = KeyRing::builder().key("rfc", key).build().unwrap();
        let tag = ring.sign(b"Test Using Larger Than Block-Size Key - Hash Key First");
        let want = "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54";
        let got: String = tag.tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want);
    }
}
