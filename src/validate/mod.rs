//! Validated input: requests that are refused before a handler sees them unless their shape and
//! values are acceptable.
//!
//! - [`hygiene`] (always on, no feature): [`RequestHygieneLayer`](hygiene::RequestHygieneLayer)
//!   refuses ambiguous paths (encoded slashes, dot segments, `;` parameters, NUL, invalid
//!   UTF-8, backslashes), over-long URIs and headers, too many headers and unknown methods,
//!   before a guard or handler sees them. [`SecureRouter`](crate::routing::SecureRouter) applies
//!   it by default.
//! - Feature `validate` (default): [`Valid`] extractors (`Valid<Json<T>>`, `Valid<Query<T>>`,
//!   `Valid<Path<T>>`, `Valid<Form<T>>`) that deserialize, validate with
//!   [garde](https://docs.rs/garde) and refuse with 400/413/415/422 problem documents whose
//!   `errors` list paths and codes, never values; value types that cannot hold an invalid value
//!   ([`BoundedString`], [`BoundedU32`] and friends, [`Matching`] with the [`pattern!`](crate::pattern)
//!   macro, [`Identifier`], [`Slug`]); and [`SafeUrl`], the SSRF guard for URLs a server will
//!   store or fetch, with an injectable [`Resolver`] for the resolution check.
//!
//! Every type deserializes with validation and serializes to its plain value, implements
//! `garde::Validate` (as already valid) so it composes with `#[garde(dive)]`, and the string
//! types accept garde's string rules for extra constraints.
//!
//! ```
//! use portcullis::validate::{BoundedString, SafeUrl, Slug};
//!
//! #[derive(serde::Deserialize, garde::Validate)]
//! struct NewDocument {
//!     #[garde(dive)]
//!     title: BoundedString<1, 200>,
//!     #[garde(dive)]
//!     url: SafeUrl,
//!     #[garde(length(max = 8), dive)]
//!     tags: Vec<Slug>,
//! }
//!
//! let ok: Result<NewDocument, _> = serde_json::from_str(
//!     r#"{"title": "Q3", "url": "https://example.com/q3", "tags": ["finance"]}"#,
//! );
//! assert!(ok.is_ok());
//! let ssrf: Result<NewDocument, _> = serde_json::from_str(
//!     r#"{"title": "Q3", "url": "https://169.254.169.254/latest/meta-data/", "tags": []}"#,
//! );
//! assert!(ssrf.is_err());
//! ```
//!
//! See `docs/validation.md` for the threats each check answers and the list of codes.
//!
//! # Deployment caveat
//! `SafeUrl` checks the URL text; it cannot know what a host name will resolve to when the URL
//! is fetched. Code that fetches must call [`UrlPolicy::check_resolved`] in
//! [`Resolution::Strict`] mode right before, connect only to the addresses it returns, and not
//! follow redirects without checking each target the same way. The hygiene layer sees the
//! request as the server received it: a proxy in front that decodes or normalizes paths
//! differently can still route an ambiguous path elsewhere, so configure it to pass paths
//! through unmodified, or to refuse the same forms.

#[cfg(feature = "validate")]
mod error;
#[cfg(all(feature = "validate", feature = "axum"))]
mod extract;
pub mod hygiene;
#[cfg(feature = "validate")]
pub mod ip;
#[cfg(feature = "validate")]
mod types;
#[cfg(feature = "validate")]
mod url;

#[cfg(feature = "validate")]
pub use error::{ValidationError, field_errors_of, validate_with_codes};
#[cfg(all(feature = "validate", feature = "axum"))]
pub use extract::{Valid, ValidationConfig};
#[cfg(feature = "validate")]
pub use types::{
    BoundedI32, BoundedI64, BoundedString, BoundedU8, BoundedU16, BoundedU32, BoundedU64,
    BoundedUsize, Identifier, Matching, Pattern, Slug, check_pattern, compile_pattern, parses_as,
};
#[cfg(feature = "validate")]
pub use url::{
    __fuzz_safe_url, DefaultUrlRules, Resolution, ResolveError, ResolveFuture, Resolver, SafeUrl,
    StaticResolver, SystemResolver, UrlPolicy, UrlPolicyBuilder, UrlRules,
};

/// Re-exports for the [`pattern!`](crate::pattern) macro.
#[cfg(feature = "validate")]
#[doc(hidden)]
pub mod __private {
    pub use regex::Regex;
}
