//! Configuration errors, reported at build time.

use std::fmt;

/// A configuration mistake found while building a layer, authenticator or router.
///
/// Invalid configuration never reaches request time: every `build()` in portcullis checks its
/// inputs and returns this error instead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// An error with a precise, human-readable message (never containing secret material).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "portcullis configuration error: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}
