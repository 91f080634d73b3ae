//! The hash chain of the audit file and its verifier.
//!
//! Every line of a chained file is one JSON object that ends with four fields:
//!
//! ```text
//! {…event fields…,"seq":42,"prev":"<64 hex>","chain_key":"audit-1","hash":"<64 hex>"}
//! ```
//!
//! `seq` counts lines from 1, `prev` is the previous line's `hash` (64 zeros for the first
//! line), `chain_key` (the key id) is present only in keyed files, and `hash` is SHA-256 — or HMAC-SHA-256
//! under the key named by `chain_key` — of the line's bytes up to (not including) `,"hash":"`.
//! A clean shutdown appends an `audit.sealed` line, so a file that ends without one has lost
//! its tail (or its writer is still running, or crashed).
//!
//! Without a key the chain proves order and completeness against accidental damage and
//! against an attacker who cannot rewrite the whole file from the altered line on; with a
//! key, rewriting needs the key.
//!
//! # Deployment caveat
//! The seal proves a clean end, not the right end: a file cut back to an earlier seal (from
//! a previous restart) verifies. Record the last hash printed at shutdown
//! ([`ShutdownReport::last_hash`](super::ShutdownReport::last_hash)) outside the host and
//! compare it with [`VerifyReport::last_hash`]. Keep the HMAC key off the host that writes the
//! log when possible (a verifier needs it, the writer's host should not be able to read it back).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::path::Path;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

use crate::error::ConfigError;

const HASH_MARK: &[u8] = b",\"hash\":\"";
/// `,"hash":"` + 64 hex + `"}`.
const SUFFIX_LEN: usize = HASH_MARK.len() + 64 + 2;
const ZERO: [u8; 32] = [0; 32];

/// A key that turns the chain's SHA-256 into HMAC-SHA-256, with the id written in every line
/// so a verifier can pick the right key after a rotation. `Debug` shows the id only.
#[derive(Clone)]
pub struct ChainKey {
    id: String,
    key: SecretSlice<u8>,
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ChainKey {
    /// A key of at least 32 bytes; the id is 1..=64 characters of `[A-Za-z0-9._-]`.
    pub fn new(id: impl Into<String>, key: SecretSlice<u8>) -> Result<Self, ConfigError> {
        let id = id.into();
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(ConfigError::new(
                "audit key id must be 1..=64 characters of [A-Za-z0-9._-]",
            ));
        }
        if key.expose_secret().len() < 32 {
            return Err(ConfigError::new("audit HMAC key must be at least 32 bytes"));
        }
        Ok(Self { id, key })
    }

    /// Reads the key from a file (its bytes, with one trailing newline removed). The id is
    /// `sha256:` and the first 16 hex digits of the SHA-256 of the key, unless given.
    pub fn from_file(path: impl AsRef<Path>, id: Option<&str>) -> Result<Self, ConfigError> {
        let mut bytes = std::fs::read(path.as_ref())
            .map_err(|e| ConfigError::new(format!("audit HMAC key file: {e}")))?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        let id = match id {
            Some(id) => id.to_owned(),
            None => {
                let digest = Sha256::digest(&bytes);
                format!("sha256-{}", &crate::hex::encode(&digest)[..16])
            }
        };
        Self::new(id, SecretSlice::from(bytes))
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

fn mac(key: Option<&ChainKey>, data: &[u8]) -> [u8; 32] {
    match key {
        Some(key) => match Hmac::<Sha256>::new_from_slice(key.key.expose_secret()) {
            Ok(mut mac) => {
                mac.update(data);
                mac.finalize().into_bytes().into()
            }
            // HMAC accepts keys of any length; unreachable, and a wrong hash fails closed.
            Err(_) => ZERO,
        },
        None => Sha256::digest(data).into(),
    }
}

/// SHA-256 of `data`, hex (for `config.loaded` digests).
#[cfg_attr(
    not(feature = "config"),
    expect(dead_code, reason = "used by PolicyFile")
)]
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    crate::hex::encode(&Sha256::digest(data))
}

/// The writer's side of the chain.
#[derive(Debug)]
pub(crate) struct Chain {
    seq: u64,
    prev: [u8; 32],
    key: Option<ChainKey>,
    /// The file existed and did not end with a seal: its writer stopped without `shutdown`.
    unclean: bool,
}

impl Chain {
    /// Continues the chain of the file at `path`: after its last line, or from the start when
    /// the file is empty or absent. Fails when the file ends with an incomplete or unchained
    /// line: that file needs verifying and moving aside, not appending to.
    pub(crate) fn resume(path: &Path, key: Option<ChainKey>) -> Result<Self, ConfigError> {
        let fresh = Self {
            seq: 0,
            prev: ZERO,
            key,
            unclean: false,
        };
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(fresh),
            Err(e) => return Err(ConfigError::new(format!("audit file: {e}"))),
        };
        let err = |e: io::Error| ConfigError::new(format!("audit file: {e}"));
        let len = file.seek(SeekFrom::End(0)).map_err(err)?;
        if len == 0 {
            return Ok(fresh);
        }
        // The last line is at most one event; 1 MiB is far beyond any line the writer makes.
        let tail_len = len.min(1 << 20);
        file.seek(SeekFrom::Start(len - tail_len)).map_err(err)?;
        let mut tail = Vec::with_capacity(usize::try_from(tail_len).unwrap_or(0));
        file.read_to_end(&mut tail).map_err(err)?;
        if tail.last() != Some(&b'\n') {
            return Err(ConfigError::new(
                "audit file ends with an incomplete line; verify it and move it aside",
            ));
        }
        let body = &tail[..tail.len() - 1];
        let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let line = std::str::from_utf8(&body[start..])
            .map_err(|_| ConfigError::new("audit file's last line is not UTF-8"))?;
        let parsed = parse_line(line).ok_or_else(|| {
            ConfigError::new(
                "audit file's last line is not a chained audit line; verify it and move it aside",
            )
        })?;
        Ok(Self {
            seq: parsed.seq,
            prev: parsed.hash,
            unclean: !parsed.sealed,
            ..fresh
        })
    }

    /// Completes a line whose event fields (without the closing brace) are in `buf` from
    /// `start`: appends the chain fields, the hash, `}` and a newline.
    pub(crate) fn finish_line(&mut self, buf: &mut Vec<u8>, start: usize) {
        self.seq += 1;
        buf.extend_from_slice(b",\"seq\":");
        buf.extend_from_slice(self.seq.to_string().as_bytes());
        buf.extend_from_slice(b",\"prev\":\"");
        buf.extend_from_slice(crate::hex::encode(&self.prev).as_bytes());
        buf.push(b'"');
        if let Some(key) = &self.key {
            buf.extend_from_slice(b",\"chain_key\":\"");
            buf.extend_from_slice(key.id.as_bytes());
            buf.push(b'"');
        }
        let hash = mac(self.key.as_ref(), &buf[start..]);
        buf.extend_from_slice(HASH_MARK);
        buf.extend_from_slice(crate::hex::encode(&hash).as_bytes());
        buf.extend_from_slice(b"\"}\n");
        self.prev = hash;
    }

    /// Whether the previous writer of the file stopped without sealing it.
    pub(crate) fn resumed_unclean(&self) -> bool {
        self.unclean
    }

    /// Lines written so far (including those before a resume).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The last line's hash, hex.
    pub(crate) fn last_hash(&self) -> String {
        crate::hex::encode(&self.prev)
    }
}

struct ParsedLine {
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    key_id: Option<String>,
    sealed: bool,
    /// Byte length of the hashed prefix.
    prefix_len: usize,
}

fn parse_line(line: &str) -> Option<ParsedLine> {
    let bytes = line.as_bytes();
    if bytes.len() < SUFFIX_LEN + 2 || !line.ends_with("\"}") {
        return None;
    }
    let prefix_len = bytes.len() - SUFFIX_LEN;
    if &bytes[prefix_len..prefix_len + HASH_MARK.len()] != HASH_MARK {
        return None;
    }
    let hash = crate::hex::decode_32(
        line.get(prefix_len + HASH_MARK.len()..bytes.len() - 2)?,
        crate::hex::Letters::Lowercase,
    )?;
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let object = value.as_object()?;
    let seq = object.get("seq")?.as_u64()?;
    let prev = crate::hex::decode_32(
        object.get("prev")?.as_str()?,
        crate::hex::Letters::Lowercase,
    )?;
    let key_id = match object.get("chain_key") {
        None => None,
        Some(id) => Some(id.as_str()?.to_owned()),
    };
    let sealed = object.get("event").and_then(serde_json::Value::as_str) == Some("audit.sealed");
    Some(ParsedLine {
        seq,
        prev,
        hash,
        key_id,
        sealed,
        prefix_len,
    })
}

/// What went wrong, at which line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyErrorKind {
    /// The line's content does not match its hash, or it is not a chained line.
    Altered,
    /// One or more lines are missing before this line.
    Removed,
    /// This line is out of order (swapped, moved or duplicated).
    Reordered,
    /// The file ends inside a line, or without a seal (its tail was cut off, or the writer is
    /// still running or did not shut down cleanly).
    Truncated,
    /// The line is keyed and no key was given, or its key id is unknown, or the log was
    /// expected to be keyed and this line is not.
    Key,
    /// The file could not be read.
    Io,
}

/// The first problem the verifier found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    kind: VerifyErrorKind,
    line: u64,
    message: String,
}

impl VerifyError {
    fn new(kind: VerifyErrorKind, line: u64, message: impl Into<String>) -> Self {
        Self {
            kind,
            line,
            message: message.into(),
        }
    }
    /// The kind of problem.
    pub fn kind(&self) -> VerifyErrorKind {
        self.kind
    }
    /// The 1-based line number of the first line that is altered, out of place, preceded by
    /// a gap, or missing.
    pub fn line(&self) -> u64 {
        self.line
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for VerifyError {}

/// An intact file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Lines verified.
    pub lines: u64,
    /// The `seq` of the last line.
    pub last_seq: u64,
    /// The last line's hash, hex: compare it with the value recorded at shutdown (the
    /// `secure_api` example prints it) to detect a file cut back to an earlier seal.
    pub last_hash: String,
    /// Whether the file ends with an `audit.sealed` line.
    pub sealed: bool,
}

/// Options of [`verify`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Keys for keyed files. When any is given, every line must be keyed.
    pub keys: Vec<ChainKey>,
    /// Accept a file that does not end with a seal (a log still being written). Default
    /// `false`: a missing seal is reported as a truncated tail.
    pub allow_unsealed: bool,
}

impl VerifyOptions {
    /// Adds a key.
    #[must_use]
    pub fn with_key(mut self, key: ChainKey) -> Self {
        self.keys.push(key);
        self
    }
    /// Accepts a file without a final seal.
    #[must_use]
    pub fn allow_unsealed(mut self) -> Self {
        self.allow_unsealed = true;
        self
    }
}

/// Verifies a chained audit file: every line's hash, every link to the previous line, the
/// sequence numbers, and (by default) the final seal. Returns the first problem, naming its
/// line.
pub fn verify_file(
    path: impl AsRef<Path>,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let file = File::open(path.as_ref())
        .map_err(|e| VerifyError::new(VerifyErrorKind::Io, 0, format!("cannot open: {e}")))?;
    verify(io::BufReader::new(file), options)
}

/// [`verify_file`] over any reader.
pub fn verify(
    mut reader: impl BufRead,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let mut line_no = 0u64;
    let mut expected_seq = 1u64;
    let mut prev = ZERO;
    let mut sealed = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| VerifyError::new(VerifyErrorKind::Io, line_no + 1, e.to_string()))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            return Err(VerifyError::new(
                VerifyErrorKind::Truncated,
                line_no,
                "incomplete line at the end of the file (truncated)",
            ));
        }
        buf.pop();
        let altered =
            |why: &str| VerifyError::new(VerifyErrorKind::Altered, line_no, why.to_owned());
        let line = std::str::from_utf8(&buf).map_err(|_| altered("altered (not UTF-8)"))?;
        let parsed =
            parse_line(line).ok_or_else(|| altered("altered (not a chained audit line)"))?;
        let key = match (&parsed.key_id, options.keys.is_empty()) {
            (None, true) => None,
            (None, false) => {
                return Err(VerifyError::new(
                    VerifyErrorKind::Key,
                    line_no,
                    "line is not keyed, but the log is expected to be (altered or replaced)",
                ));
            }
            (Some(_), true) => {
                return Err(VerifyError::new(
                    VerifyErrorKind::Key,
                    line_no,
                    "the log is keyed (HMAC); give its key",
                ));
            }
            (Some(id), false) => {
                Some(options.keys.iter().find(|k| &k.id == id).ok_or_else(|| {
                    VerifyError::new(
                        VerifyErrorKind::Key,
                        line_no,
                        format!("no key with id {id:?} was given"),
                    )
                })?)
            }
        };
        if mac(key, &buf[..parsed.prefix_len]) != parsed.hash {
            return Err(altered("altered (its content does not match its hash)"));
        }
        if parsed.seq != expected_seq {
            if parsed.seq > expected_seq && !seq_appears_later(&mut reader, expected_seq) {
                let missing = parsed.seq - expected_seq;
                return Err(VerifyError::new(
                    VerifyErrorKind::Removed,
                    line_no,
                    format!(
                        "{missing} line(s) removed before this line (expected seq {expected_seq}, found {})",
                        parsed.seq
                    ),
                ));
            }
            return Err(VerifyError::new(
                VerifyErrorKind::Reordered,
                line_no,
                format!(
                    "out of order (expected seq {expected_seq}, found {})",
                    parsed.seq
                ),
            ));
        }
        if parsed.prev != prev {
            return Err(VerifyError::new(
                VerifyErrorKind::Altered,
                line_no.saturating_sub(1).max(1),
                format!("altered (line {line_no} does not chain to it)"),
            ));
        }
        prev = parsed.hash;
        expected_seq = parsed.seq + 1;
        sealed = parsed.sealed;
    }
    if line_no == 0 {
        return Err(VerifyError::new(
            VerifyErrorKind::Truncated,
            1,
            "the file is empty",
        ));
    }
    if !sealed && !options.allow_unsealed {
        return Err(VerifyError::new(
            VerifyErrorKind::Truncated,
            line_no + 1,
            format!(
                "the log ends after line {line_no} without a seal: its tail was removed, or the writer is still running or did not shut down cleanly"
            ),
        ));
    }
    Ok(VerifyReport {
        lines: line_no,
        last_seq: expected_seq - 1,
        last_hash: crate::hex::encode(&prev),
        sealed,
    })
}

/// Whether a line with `seq` follows in the rest of `reader` (tells a move from a removal).
fn seq_appears_later(reader: &mut impl BufRead, seq: u64) -> bool {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if let Ok(line) = std::str::from_utf8(&buf)
            && let Some(parsed) = parse_line(line.trim_end_matches('\n'))
            && parsed.seq == seq
        {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> ChainKey {
        ChainKey::new(id, SecretSlice::from(vec![byte; 32])).unwrap()
    }

    fn file(lines: usize, key: Option<ChainKey>) -> Vec<String> {
        let mut chain = Chain {
            seq: 0,
            prev: ZERO,
            key,
            unclean: false,
        };
        let mut out = Vec::new();
        for i in 0..lines {
            let mut buf = Vec::new();
            let event = if i + 1 == lines {
                "audit.sealed"
            } else {
                "authz.allow"
            };
            buf.extend_from_slice(format!("{{\"v\":1,\"event\":\"{event}\",\"n\":{i}").as_bytes());
            chain.finish_line(&mut buf, 0);
            out.push(String::from_utf8(buf).unwrap());
        }
        out
    }

    fn check(lines: &[String], options: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
        verify(lines.concat().as_bytes(), options)
    }

    #[test]
    fn intact_files_verify_and_every_kind_of_damage_is_named() {
        let lines = file(10, None);
        let report = check(&lines, &VerifyOptions::default()).unwrap();
        assert_eq!(report.lines, 10);
        assert!(report.sealed);

        let mut altered = lines.clone();
        altered[3] = altered[3].replace("\"n\":3", "\"n\":4");
        let err = check(&altered, &VerifyOptions::default()).unwrap_err();
        assert_eq!((err.kind(), err.line()), (VerifyErrorKind::Altered, 4));

        let mut removed = lines.clone();
        removed.remove(5);
        let err = check(&removed, &VerifyOptions::default()).unwrap_err();
        assert_eq!((err.kind(), err.line()), (VerifyErrorKind::Removed, 6));

        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        let err = check(&swapped, &VerifyOptions::default()).unwrap_err();
        assert_eq!((err.kind(), err.line()), (VerifyErrorKind::Reordered, 3));

        let cut = &lines[..7];
        let err = check(cut, &VerifyOptions::default()).unwrap_err();
        assert_eq!((err.kind(), err.line()), (VerifyErrorKind::Truncated, 8));
        assert_eq!(
            check(cut, &VerifyOptions::default().allow_unsealed())
                .unwrap()
                .lines,
            7
        );

        let mut torn = lines.concat();
        torn.truncate(torn.len() - 10);
        let err = verify(torn.as_bytes(), &VerifyOptions::default()).unwrap_err();
        assert_eq!((err.kind(), err.line()), (VerifyErrorKind::Truncated, 10));

        // An attacker who recomputes the hash of an altered unkeyed line breaks the next link.
        let mut forged = lines.clone();
        let prefix_end = forged[3].find(",\"hash\":\"").unwrap();
        let prefix = forged[3][..prefix_end].replace("\"n\":3", "\"n\":9");
        forged[3] = format!(
            "{prefix},\"hash\":\"{}\"}}\n",
            crate::hex::encode(&mac(None, prefix.as_bytes()))
        );
        let err = check(&forged, &VerifyOptions::default()).unwrap_err();
        assert_eq!((err.kind(), err.line()), (VerifyErrorKind::Altered, 4));
    }

    #[test]
    fn keyed_files_need_the_key() {
        let k = key("k1", 7);
        let lines = file(5, Some(k.clone()));
        assert!(lines[0].contains("\"chain_key\":\"k1\""));
        let with_key = VerifyOptions::default().with_key(k);
        assert_eq!(check(&lines, &with_key).unwrap().lines, 5);
        let err = check(&lines, &VerifyOptions::default()).unwrap_err();
        assert_eq!(err.kind(), VerifyErrorKind::Key);
        let wrong = VerifyOptions::default().with_key(key("k1", 8));
        assert_eq!(
            check(&lines, &wrong).unwrap_err().kind(),
            VerifyErrorKind::Altered
        );
        let other_id = VerifyOptions::default().with_key(key("k2", 7));
        assert_eq!(
            check(&lines, &other_id).unwrap_err().kind(),
            VerifyErrorKind::Key
        );
        // An unkeyed file passed off as the keyed log is refused.
        let plain = file(5, None);
        assert_eq!(
            check(&plain, &with_key).unwrap_err().kind(),
            VerifyErrorKind::Key
        );
    }

    #[test]
    fn keys_are_validated_and_redacted() {
        assert!(ChainKey::new("ok", SecretSlice::from(vec![1; 31])).is_err());
        assert!(ChainKey::new("bad id", SecretSlice::from(vec![1; 32])).is_err());
        let k = key("k1", 0x41);
        let debug = format!("{k:?}");
        assert!(
            debug.contains("k1") && !debug.contains("AAAA") && !debug.contains("65"),
            "{debug}"
        );
    }
}
