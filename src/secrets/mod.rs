//! Secrets: where they come from, how they change, how they are held.
//!
//! - [`SecretSource`]: a secret from an environment variable or a file (`/run/secrets/...`,
//!   a Kubernetes secret volume, a file rendered by Vault Agent). File contents lose **one**
//!   trailing newline (`\n` or `\r\n`), the one `echo` and most templating add; nothing else is
//!   trimmed.
//! - [`WatchedSecret`]: a file secret that follows changes: a library-owned thread polls the
//!   file, the new value replaces the old one only when it is valid (non-empty UTF-8 within the
//!   size limit), otherwise the last good value is kept and the failure is reported.
//! - [`KeyRing`]: signing / HMAC keys with ids; [`rotate`](KeyRing::rotate) makes a new key
//!   active while the previous one keeps verifying for a grace period (time through the
//!   crate's [`Clock`](crate::clock::Clock)). The hash-chained audit log takes its key here:
//!   [`KeyRing::active`] gives the active key's id and bytes.
//!
//! Every value is held in a [`secrecy`] type (redacted `Debug`, no `Display`, wiped on drop),
//! compared in constant time ([`constant_time_eq`]), and never written to a log, an error or a
//! response: errors name the variable or the path, never the value.
//!
//! Events go to the audit target ([`crate::audit::TARGET`]): `secret.reloaded` (INFO),
//! `secret.reload_failed` (WARN), `key.rotated` (INFO); they carry paths and key ids only.
//!
//! ```
//! use secrecy::ExposeSecret;
//! use portcullis::secrets::SecretSource;
//!
//! let dir = std::env::temp_dir().join(format!("portcullis-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("db_password");
//! std::fs::write(&path, "s3cr3t-value\n").unwrap(); // as `echo` writes it
//!
//! let secret = SecretSource::file(&path).load().unwrap();
//! assert_eq!(secret.expose_secret(), "s3cr3t-value"); // one trailing newline removed
//! assert!(!format!("{secret:?}").contains("s3cr3t")); // Debug is redacted
//!
//! let missing = SecretSource::env("PORTCULLIS_DOC_UNSET_VARIABLE").load().unwrap_err();
//! assert_eq!(missing.to_string(), "secret PORTCULLIS_DOC_UNSET_VARIABLE: environment variable is not set");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! # Deployment caveat
//! Environment variables are readable by anything that can read the process environment
//! (`/proc/<pid>/environ` for the same user, crash reporters, child processes that inherit it):
//! prefer files on a memory-backed volume (`/run/secrets`, Kubernetes `secret` volumes) with
//! mode `0400`. A [`WatchedSecret`] sees a change within one polling interval (5 s by default);
//! anything that copied the value out of it (a connection pool's password) keeps the old one.
//! Zeroizing on drop protects memory that portcullis owns, not copies made by the operating
//! system, the allocator before the secret was moved in, or a swapped-out page.

mod keyring;
pub(crate) mod watch;

pub use keyring::{
    DEFAULT_GRACE_PERIOD, HmacTag, KeyRing, KeyRingBuilder, MAX_KEY_BYTES, MIN_KEY_BYTES,
    SigningKey,
};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use subtle::ConstantTimeEq;

use crate::error::ConfigError;

/// Largest secret read from a file or the environment.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// How often a [`WatchedSecret`] looks at its file unless told otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Compares two byte strings in constant time (for equal lengths; the length itself is not
/// hidden, so compare fixed-length values such as digests when the length is secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// `bytes` random bytes from the operating system, base64url without padding.
pub(crate) fn random_token(bytes: usize) -> Result<SecretString, ConfigError> {
    let mut buf = secrecy::zeroize::Zeroizing::new(vec![0u8; bytes]);
    getrandom::fill(&mut buf)
        .map_err(|e| ConfigError::new(format!("no randomness from the operating system: {e}")))?;
    Ok(SecretString::from(URL_SAFE_NO_PAD.encode(&*buf)))
}

/// Why a secret could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretErrorKind {
    /// The variable is not set, or the file does not exist or cannot be read.
    Unavailable,
    /// The value is empty (after removing one trailing newline).
    Empty,
    /// The value is not UTF-8 (text secrets only).
    NotUtf8,
    /// The value is larger than [`MAX_SECRET_BYTES`].
    TooLarge,
}

/// A secret that could not be loaded. Names the source (variable or path), never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError {
    kind: SecretErrorKind,
    message: String,
}

impl SecretError {
    fn new(kind: SecretErrorKind, source: &SecretSource, what: impl fmt::Display) -> Self {
        Self {
            kind,
            message: format!("secret {source}: {what}"),
        }
    }
    /// What went wrong.
    pub fn kind(&self) -> SecretErrorKind {
        self.kind
    }
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SecretError {}

impl From<SecretError> for ConfigError {
    fn from(e: SecretError) -> Self {
        ConfigError::new(e.message)
    }
}

/// Where a secret comes from.
///
/// `Display` shows the source (`$NAME` or the path), which is safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretSource {
    /// An environment variable, used as is.
    Env(String),
    /// A file, read in full; one trailing newline is removed from text secrets.
    File(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => f.write_str(name),
            SecretSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Removes one trailing `\n` or `\r\n`.
fn trim_one_newline(bytes: &[u8]) -> &[u8] {
    match bytes.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => bytes,
    }
}

impl SecretSource {
    /// The environment variable `name`.
    pub fn env(name: impl Into<String>) -> Self {
        SecretSource::Env(name.into())
    }
    /// The file at `path` (`/run/secrets/<name>`, a Kubernetes secret volume, a Vault Agent
    /// template's destination).
    pub fn file(path: impl AsRef<Path>) -> Self {
        SecretSource::File(path.as_ref().to_owned())
    }

    /// Loads a text secret: UTF-8, non-empty, at most [`MAX_SECRET_BYTES`]; one trailing
    /// newline removed from files.
    pub fn load(&self) -> Result<SecretString, SecretError> {
        self.text_from_raw(&self.read_raw()?)
    }

    /// Validates raw content read from this source as a text secret.
    fn text_from_raw(&self, raw: &[u8]) -> Result<SecretString, SecretError> {
        let bytes = self.bytes_from_raw(raw)?;
        let text = std::str::from_utf8(bytes.expose_secret())
            .map_err(|_| SecretError::new(SecretErrorKind::NotUtf8, self, "value is not UTF-8"))?;
        Ok(SecretString::from(text))
    }

    /// Loads a secret as bytes: non-empty, at most [`MAX_SECRET_BYTES`]; one trailing newline
    /// removed from files (encode binary key material, for instance in base64, if it may end
    /// in a newline byte).
    pub fn load_bytes(&self) -> Result<SecretSlice<u8>, SecretError> {
        self.bytes_from_raw(&self.read_raw()?)
    }

    /// Reads the raw content of this source.
    fn read_raw(&self) -> Result<secrecy::zeroize::Zeroizing<Vec<u8>>, SecretError> {
        Ok(match self {
            SecretSource::Env(name) => match std::env::var_os(name) {
                None => {
                    return Err(SecretError::new(
                        SecretErrorKind::Unavailable,
                        self,
                        "environment variable is not set",
                    ));
                }
                Some(value) => secrecy::zeroize::Zeroizing::new(value.into_encoded_bytes()),
            },
            SecretSource::File(path) => {
                watch::read_bounded(path, MAX_SECRET_BYTES).map_err(|e| {
                    let kind = if e.contains("larger than") {
                        SecretErrorKind::TooLarge
                    } else {
                        SecretErrorKind::Unavailable
                    };
                    SecretError {
                        kind,
                        message: format!("secret {e}"),
                    }
                })?
            }
        })
    }

    /// Validates raw content read from this source as a byte secret.
    fn bytes_from_raw(&self, raw: &[u8]) -> Result<SecretSlice<u8>, SecretError> {
        if raw.len() > MAX_SECRET_BYTES {
            return Err(SecretError::new(
                SecretErrorKind::TooLarge,
                self,
                format_args!("value is larger than {MAX_SECRET_BYTES} bytes"),
            ));
        }
        let value = match self {
            SecretSource::Env(_) => raw,
            SecretSource::File(_) => trim_one_newline(raw),
        };
        if value.is_empty() {
            return Err(SecretError::new(
                SecretErrorKind::Empty,
                self,
                "value is empty",
            ));
        }
        Ok(SecretSlice::from(value.to_vec()))
    }
}

/// The result of looking at a watched file once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// The content is the one already seen (valid or not): nothing to do.
    Unchanged,
    /// New valid content replaced the previous value.
    Reloaded,
    /// New content (or a missing file) was refused; the last good value is kept. The reason
    /// names the path and the problem (a line number, a field), never secret material.
    Rejected(String),
}

/// A callback run with each new valid value of a watched secret.
type ChangeHook = Arc<dyn Fn(&SecretString) + Send + Sync>;

/// A callback run after every reload attempt that saw new content.
pub(crate) type ReloadHook = Arc<dyn Fn(&ReloadOutcome) + Send + Sync>;

/// Tracks the last content seen in a watched file, so each version is handled once.
#[derive(Default)]
pub(crate) struct SeenContent {
    last: Mutex<Option<Result<[u8; 32], String>>>,
    /// Runs once, inside the reload lock, after the next read (to interleave reloads in tests).
    #[cfg(test)]
    after_read: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

#[cfg(test)]
impl SeenContent {
    /// Runs `hook` once, after the next read and before its content is installed.
    pub(crate) fn after_next_read(&self, hook: impl FnOnce() + Send + 'static) {
        *self.after_read.lock().unwrap() = Some(Box::new(hook));
    }

    /// Runs the hook set by [`after_next_read`](Self::after_next_read), if any.
    pub(crate) fn run_after_read(&self) {
        let hook = self.after_read.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

impl SeenContent {
    /// Takes the reload lock. Hold the guard across read, fingerprint, parse and install:
    /// two reloads that overlap could otherwise install in the opposite order to the one they
    /// read in, leaving an older file's content installed while the newest fingerprint says
    /// "unchanged" to every later poll.
    pub(crate) fn lock(&self) -> SeenGuard<'_> {
        SeenGuard {
            last: self.last.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

/// The held reload lock of a [`SeenContent`].
pub(crate) struct SeenGuard<'a> {
    last: MutexGuard<'a, Option<Result<[u8; 32], String>>>,
}

impl SeenGuard<'_> {
    /// Reads `path` and decides whether it is new. `Ok(Some(bytes))`: new content to parse;
    /// `Ok(None)`: unchanged; `Err(reason)`: a read failure not reported before.
    pub(crate) fn check(
        &mut self,
        path: &Path,
        max_bytes: usize,
    ) -> Result<Option<watch::FileBytes>, Option<String>> {
        match watch::read_bounded(path, max_bytes) {
            Ok(bytes) => {
                let fingerprint = watch::fingerprint(&bytes);
                if matches!(&*self.last, Some(Ok(seen)) if *seen == fingerprint) {
                    return Ok(None);
                }
                *self.last = Some(Ok(fingerprint));
                Ok(Some(bytes))
            }
            Err(reason) => {
                if matches!(&*self.last, Some(Err(seen)) if *seen == reason) {
                    return Err(None);
                }
                *self.last = Some(Err(reason.clone()));
                Err(Some(reason))
            }
        }
    }
}

struct WatchedInner {
    source: SecretSource,
    path: PathBuf,
    current: RwLock<Arc<SecretString>>,
    generation: AtomicU64,
    seen: SeenContent,
    hook: Option<ChangeHook>,
}

/// A file secret that follows changes to the file. Cheap to clone; see the
/// [module docs](self).
///
/// ```
/// use secrecy::ExposeSecret;
/// use portcullis::secrets::{ReloadOutcome, WatchedSecret};
///
/// let dir = std::env::temp_dir().join(format!("portcullis-doc-w-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("token");
/// std::fs::write(&path, "first\n").unwrap();
///
/// let secret = WatchedSecret::builder(&path).build().unwrap();
/// assert_eq!(secret.current().expose_secret(), "first");
///
/// std::fs::write(&path, "").unwrap(); // an empty file is refused ...
/// assert!(matches!(secret.check_now(), ReloadOutcome::Rejected(_)));
/// assert_eq!(secret.current().expose_secret(), "first"); // ... the last good value stays
///
/// std::fs::write(&path, "second\n").unwrap();
/// assert_eq!(secret.check_now(), ReloadOutcome::Reloaded);
/// assert_eq!(secret.current().expose_secret(), "second");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone)]
pub struct WatchedSecret {
    inner: Arc<WatchedInner>,
}

impl fmt::Debug for WatchedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedSecret")
            .field("path", &self.inner.path)
            .field("generation", &self.generation())
            .field("value", &"[REDACTED]")
            .finish()
    }
}

impl WatchedSecret {
    /// Starts a watched secret for the file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> WatchedSecretBuilder {
        WatchedSecretBuilder {
            path: path.as_ref().to_owned(),
            interval: Some(DEFAULT_POLL_INTERVAL),
            hook: None,
        }
    }

    /// The current value.
    pub fn current(&self) -> Arc<SecretString> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times the value was replaced since it was first loaded.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Looks at the file now (the background thread does the same every interval).
    pub fn check_now(&self) -> ReloadOutcome {
        self.inner.check()
    }
}

impl WatchedInner {
    fn check(&self) -> ReloadOutcome {
        // Held until the value is installed, so overlapping checks install in read order.
        let mut seen = self.seen.lock();
        let read = seen.check(&self.path, MAX_SECRET_BYTES);
        #[cfg(test)]
        self.seen.run_after_read();
        let outcome = match read {
            Ok(None) | Err(None) => return ReloadOutcome::Unchanged,
            Err(Some(reason)) => ReloadOutcome::Rejected(reason),
            // Parsed from the bytes just fingerprinted: a second read could see a newer file
            // whose fingerprint would then never be recorded.
            Ok(Some(bytes)) => match self.source.text_from_raw(&bytes) {
                Ok(value) => {
                    let value = Arc::new(value);
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) = value.clone();
                    self.generation.fetch_add(1, Ordering::SeqCst);
                    if let Some(hook) = &self.hook {
                        hook(&value);
                    }
                    ReloadOutcome::Reloaded
                }
                Err(e) => ReloadOutcome::Rejected(e.to_string()),
            },
        };
        drop(seen);
        let path = self.path.display().to_string();
        match &outcome {
            ReloadOutcome::Reloaded => crate::audit::global().record(
                crate::audit::AuditEvent::new(crate::audit::EventType::ConfigLoaded)
                    .with_reason_code("secret.reloaded")
                    .with_detail("path", path)
                    .with_detail("generation", self.generation.load(Ordering::SeqCst)),
            ),
            ReloadOutcome::Rejected(reason) => crate::audit::global().record(
                crate::audit::AuditEvent::new(crate::audit::EventType::ConfigLoaded)
                    .with_severity(crate::audit::Severity::Warn)
                    .with_reason_code("secret.reload_failed")
                    .with_reason(format!("kept the last good value: {reason}"))
                    .with_detail("path", path),
            ),
            ReloadOutcome::Unchanged => {}
        }
        outcome
    }
}

/// Configures a [`WatchedSecret`].
#[must_use]
pub struct WatchedSecretBuilder {
    path: PathBuf,
    interval: Option<Duration>,
    hook: Option<ChangeHook>,
}

impl fmt::Debug for WatchedSecretBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedSecretBuilder")
            .field("path", &self.path)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl WatchedSecretBuilder {
    /// How often the file is read (default [`DEFAULT_POLL_INTERVAL`], at least 10 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }
    /// No background thread: the value changes only through
    /// [`check_now`](WatchedSecret::check_now).
    pub fn manual_reload(mut self) -> Self {
        self.interval = None;
        self
    }
    /// Runs `hook` with each new valid value (for example to
    /// [`rotate`](KeyRing::rotate) a [`KeyRing`]). It runs on the watcher thread; keep it
    /// short and never log the value.
    pub fn on_change(mut self, hook: impl Fn(&SecretString) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }
    /// Loads the file (it must hold a valid secret now) and starts watching it.
    pub fn build(self) -> Result<WatchedSecret, ConfigError> {
        let source = SecretSource::File(self.path.clone());
        let seen = SeenContent::default();
        // One read, fingerprinted and parsed: the first tick does not report this content as
        // a change, and a file replaced between two reads could not be skipped.
        let initial = match seen.lock().check(&self.path, MAX_SECRET_BYTES) {
            Ok(Some(bytes)) => source.text_from_raw(&bytes)?,
            // A fresh `SeenContent` has seen nothing, so `Ok(None)` cannot occur; a read
            // failure is reported by `load` with its typed error.
            Ok(None) | Err(_) => source.load()?,
        };
        let inner = Arc::new(WatchedInner {
            source,
            path: self.path,
            current: RwLock::new(Arc::new(initial)),
            generation: AtomicU64::new(0),
            seen,
            hook: self.hook,
        });
        if let Some(interval) = self.interval {
            watch::spawn_poller("secret-watch", interval, Arc::downgrade(&inner), |inner| {
                inner.check();
            })?;
        }
        Ok(WatchedSecret { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-{tag}-{}",
            random_token(8).unwrap().expose_secret()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn files_lose_exactly_one_trailing_newline() {
        let dir = temp_dir("trim");
        let cases: [(&[u8], &str); 5] = [
            (b"abc", "abc"),
            (b"abc\n", "abc"),
            (b"abc\r\n", "abc"),
            (b"abc\n\n", "abc\n"),
            (b" abc \n", " abc "),
        ];
        for (content, want) in cases {
            let path = dir.join("s");
            std::fs::write(&path, content).unwrap();
            let got = SecretSource::file(&path).load().unwrap();
            assert_eq!(got.expose_secret(), want, "{content:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_source_not_the_value() {
        let dir = temp_dir("errors");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = SecretSource::file(&empty).load().unwrap_err();
        assert_eq!(err.kind(), SecretErrorKind::Empty);
        let binary = dir.join("binary");
        std::fs::write(&binary, [0xff, 0xfe, b'X', b'Y', b'Z', b'Q']).unwrap();
        let err = SecretSource::file(&binary).load().unwrap_err();
        assert_eq!(err.kind(), SecretErrorKind::NotUtf8);
        assert!(!err.to_string().contains("XYZQ"), "{err}");
        assert!(err.to_string().contains("binary"));
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; MAX_SECRET_BYTES + 1]).unwrap();
        assert_eq!(
            SecretSource::file(&big).load().unwrap_err().kind(),
            SecretErrorKind::TooLarge
        );
        let missing = SecretSource::file(dir.join("missing")).load().unwrap_err();
        assert_eq!(missing.kind(), SecretErrorKind::Unavailable);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn environment_values_are_used_as_is() {
        // A variable every test process has; the value is not a secret here.
        let path = std::env::var("PATH").unwrap();
        let got = SecretSource::env("PATH").load().unwrap();
        assert_eq!(got.expose_secret(), path);
        assert_eq!(
            SecretSource::env("PORTCULLIS_TEST_SURELY_UNSET_VAR")
                .load()
                .unwrap_err()
                .kind(),
            SecretErrorKind::Unavailable
        );
    }

    #[test]
    fn watched_secret_keeps_the_last_good_value_and_runs_the_hook() {
        let dir = temp_dir("watched");
        let path = dir.join("secret");
        std::fs::write(&path, "one\n").unwrap();
        let changes = Arc::new(Mutex::new(Vec::new()));
        let seen = changes.clone();
        let secret = WatchedSecret::builder(&path)
            .manual_reload()
            .on_change(move |value| seen.lock().unwrap().push(value.expose_secret().to_owned()))
            .build()
            .unwrap();
        assert_eq!(secret.check_now(), ReloadOutcome::Unchanged);
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(secret.check_now(), ReloadOutcome::Rejected(r) if r.contains("cannot open"))
        );
        // Reported once, not on every tick.
        assert_eq!(secret.check_now(), ReloadOutcome::Unchanged);
        assert_eq!(secret.current().expose_secret(), "one");
        std::fs::write(&path, "two").unwrap();
        assert_eq!(secret.check_now(), ReloadOutcome::Reloaded);
        assert_eq!(secret.current().expose_secret(), "two");
        assert_eq!(secret.generation(), 1);
        assert_eq!(*changes.lock().unwrap(), ["two"]);
        assert!(!format!("{secret:?}").contains("two"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_watcher_thread_picks_up_changes() {
        let dir = temp_dir("thread");
        let path = dir.join("secret");
        std::fs::write(&path, "before").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let secret = WatchedSecret::builder(&path)
            .poll_interval(Duration::from_millis(10))
            .on_change(move |v| {
                let _ = tx.lock().unwrap().send(v.expose_secret().to_owned());
            })
            .build()
            .unwrap();
        std::fs::write(&path, "after").unwrap();
        // Waits for the event, not for a duration: the bound only stops a broken watcher
        // from hanging the test.
        let got = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(got, "after");
        assert_eq!(secret.current().expose_secret(), "after");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Replaces the file in one step, as secret volumes and config managers do.
    fn replace(path: &Path, content: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn an_overlapping_check_never_leaves_an_older_value_installed() {
        let dir = temp_dir("race");
        let path = dir.join("secret");
        replace(&path, "old");
        let secret = WatchedSecret::builder(&path)
            .manual_reload()
            .build()
            .unwrap();
        replace(&path, "older-than-new");
        let second = Arc::new(Mutex::new(None));
        let (other, slot, file) = (secret.clone(), second.clone(), path.clone());
        // The first check has read "older-than-new"; the file changes and a second check
        // starts before the first installs.
        secret.inner.seen.after_next_read(move || {
            replace(&file, "new");
            let (tx, rx) = std::sync::mpsc::channel();
            *slot.lock().unwrap() = Some(std::thread::spawn(move || {
                let outcome = other.check_now();
                let _ = tx.send(());
                outcome
            }));
            // Without the reload lock the second check installs "new" now and this one then
            // installs its older value over it. With the lock it waits for this check, and
            // the bound only ends the wait.
            let _ = rx.recv_timeout(Duration::from_millis(500));
        });
        assert_eq!(secret.check_now(), ReloadOutcome::Reloaded);
        let second = second.lock().unwrap().take().unwrap();
        assert_eq!(second.join().unwrap(), ReloadOutcome::Reloaded);
        assert_eq!(secret.current().expose_secret(), "new");
        assert_eq!(secret.check_now(), ReloadOutcome::Unchanged);
        assert_eq!(secret.generation(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
