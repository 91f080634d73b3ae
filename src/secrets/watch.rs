//! The file watcher behind [`WatchedSecret`](super::WatchedSecret) and the API key file: a
//! polling thread owned by the library.
//!
//! Polling (rather than inotify) because the ways secrets reach a container replace files in
//! ways change notifications miss or report twice: Kubernetes swaps a `..data` symlink, Vault
//! Agent and `kubectl cp` rename over the target. Each tick reads the file (bounded) and
//! compares a SHA-256 fingerprint, so a change is seen whatever the mechanism, and one version
//! of the content is parsed and reported once.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use secrecy::zeroize::Zeroizing;
use sha2::{Digest, Sha256};

use crate::error::ConfigError;

/// Shortest accepted polling interval (keeps a misconfiguration from spinning a core).
pub(crate) const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The content of a file read in full, wiped from memory when dropped.
pub(crate) type FileBytes = Zeroizing<Vec<u8>>;

/// Why a file could not be read. Names the path and the failure, never the content.
pub(crate) fn read_bounded(path: &Path, max_bytes: usize) -> Result<FileBytes, String> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| format!("cannot open {shown}: {}", e.kind()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {}", e.kind()))?;
    if bytes.len() > max_bytes {
        return Err(format!("{shown} is larger than {max_bytes} bytes"));
    }
    Ok(bytes)
}

/// SHA-256 of a file's content, to tell versions apart without keeping them.
pub(crate) fn fingerprint(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Calls `tick` on the target every `interval` from a background thread, until every strong
/// reference to the target is gone (then the thread ends within one interval).
pub(crate) fn spawn_poller<T: Send + Sync + 'static>(
    name: &str,
    interval: Duration,
    target: Weak<T>,
    tick: fn(&T),
) -> Result<(), ConfigError> {
    if interval < MIN_POLL_INTERVAL {
        return Err(ConfigError::new(format!(
            "{name}: the polling interval must be at least {MIN_POLL_INTERVAL:?}"
        )));
    }
    std::thread::Builder::new()
        .name(format!("portcullis-{name}"))
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                match target.upgrade() {
                    Some(target) => tick(&target),
                    None => break,
                }
            }
        })
        .map(drop)
        .map_err(|e| ConfigError::new(format!("{name}: cannot start the file watcher: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded_and_errors_name_no_content() {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-watch-{}",
            secrecy::ExposeSecret::expose_secret(&crate::secrets::random_token(8).unwrap())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(&read_bounded(&path, 10).unwrap()[..], b"0123456789");
        let err = read_bounded(&path, 9).unwrap_err();
        assert!(err.contains("larger than 9 bytes"), "{err}");
        assert!(!err.contains("0123"));
        let missing = read_bounded(&dir.join("missing"), 9).unwrap_err();
        assert!(missing.contains("cannot open"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn too_short_intervals_are_refused() {
        let target = std::sync::Arc::new(());
        let err = spawn_poller(
            "test",
            Duration::from_millis(1),
            std::sync::Arc::downgrade(&target),
            |_| {},
        )
        .unwrap_err();
        assert!(err.message().contains("at least"));
    }
}
