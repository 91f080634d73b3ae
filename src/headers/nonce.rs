//! The per-request CSP nonce and its extractor.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Bytes of randomness in a nonce (128 bits, as CSP Level 3 asks for at least).
const NONCE_BYTES: usize = 16;

/// A fresh, random, base64 Content-Security-Policy nonce for one response.
///
/// [`SecureHeadersLayer`](super::SecureHeadersLayer) with a policy that names `{nonce}` (the
/// [HTML profile](super::Profile::Html)) makes one per request, puts it into the request
/// extensions and writes it into that response's `Content-Security-Policy`. A handler takes it
/// with the extractor (feature `axum`) and stamps it on the inline scripts and styles it trusts:
///
/// ```
/// use axum::response::Html;
/// use portcullis::headers::CspNonce;
///
/// async fn page(nonce: CspNonce) -> Html<String> {
///     Html(format!("<script nonce=\"{nonce}\">document.title = 'ok'</script>"))
/// }
/// # let _ = page;
/// ```
///
/// An inline script without the nonce (or with another response's nonce) is blocked by the
/// browser. The nonce is base64 (`A-Z a-z 0-9 + / =`), so it needs no escaping inside an HTML
/// attribute.
#[derive(Clone, PartialEq, Eq)]
pub struct CspNonce(Arc<str>);

impl CspNonce {
    /// A fresh nonce from the OS random source; `None` when the OS has no randomness to give
    /// (the layer then sends a policy without a nonce, which blocks every inline script).
    pub(crate) fn generate() -> Option<Self> {
        let mut bytes = [0u8; NONCE_BYTES];
        getrandom::fill(&mut bytes).ok()?;
        Some(Self(STANDARD.encode(bytes).into()))
    }

    /// A nonce that no policy names: inline scripts stamped with it never run. Handed out when
    /// the layer could not make a real one.
    #[cfg(any(feature = "axum", test))]
    fn inert() -> Self {
        Self(Arc::from("portcullis-no-nonce"))
    }

    /// The nonce text, for a `nonce="..."` attribute.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CspNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Nonces are single-use capabilities for one page; they are not logged.
impl fmt::Debug for CspNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CspNonce(..)")
    }
}

/// The nonce of this request as made by the layer, or an inert one (see [`CspNonce`]).
///
/// Never fails: without the layer's nonce (the HTML profile is not installed, or the OS random
/// source failed) the handler gets a nonce that no policy names, so its inline scripts do not
/// run under any nonce policy.
#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CspNonce {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(match parts.extensions.get::<CspNonce>() {
            Some(nonce) => nonce.clone(),
            None => {
                tracing::warn!(
                    target: "portcullis::headers",
                    "CspNonce extracted without a SecureHeadersLayer nonce policy; inline scripts will not run"
                );
                Self::inert()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_random_base64_of_128_bits() {
        let a = CspNonce::generate().unwrap();
        let b = CspNonce::generate().unwrap();
        assert_ne!(a, b);
        let decoded = STANDARD.decode(a.as_str()).unwrap();
        assert_eq!(decoded.len(), NONCE_BYTES);
        assert!(!format!("{a:?}").contains(a.as_str()));
        assert_ne!(CspNonce::inert(), a);
    }
}
