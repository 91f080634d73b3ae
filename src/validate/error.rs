//! The one error type of the validated types, and the bridge from serde and garde errors to
//! [`FieldError`](crate::rejection::FieldError) codes.

use std::borrow::Cow;
use std::fmt;

/// Why a value was refused by a validated type: a stable code, never the value.
///
/// The code is one of a fixed set of `snake_case` words (`length`, `range`, `pattern`,
/// `control_character`, `url_scheme`, `url_private_address`...), listed in `docs/validation.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValidationError {
    code: &'static str,
}

impl ValidationError {
    /// An error with `code` (use a short `snake_case` word).
    pub const fn new(code: &'static str) -> Self {
        Self { code }
    }
    /// The code.
    pub const fn code(&self) -> &'static str {
        self.code
    }

    /// This error as a serde error: the code travels in the message behind a marker, so the
    /// extractors can recover it (and only it) from whatever error the format wraps it in.
    pub(crate) fn into_de<E: serde::de::Error>(self) -> E {
        E::custom(format_args!("{MARKER}{}", self.code))
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid value ({})", self.code)
    }
}

impl std::error::Error for ValidationError {}

impl From<ValidationError> for garde::Error {
    fn from(e: ValidationError) -> Self {
        garde::Error::new(e.code)
    }
}

const MARKER: &str = "portcullis-validation:";

/// The code of a deserialization error message: ours when a validated type refused the value,
/// otherwise one of a few generic codes derived from serde's wording. The message itself (which
/// may quote the input) never leaves this function.
#[cfg(feature = "axum")]
pub(crate) fn code_of_serde_message(message: &str) -> Cow<'static, str> {
    if let Some(at) = message.find(MARKER) {
        let rest = &message[at + MARKER.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        if end > 0 {
            return Cow::Owned(rest[..end].to_owned());
        }
    }
    let code = if message.starts_with("missing field") {
        "required"
    } else if message.starts_with("unknown field") {
        "unknown_field"
    } else if message.starts_with("duplicate field") {
        "duplicate_field"
    } else if message.starts_with("unknown variant") {
        "unknown_variant"
    } else if message.starts_with("invalid length") {
        "length"
    } else {
        "invalid_type"
    };
    Cow::Borrowed(code)
}

/// garde messages rendered as codes: garde's rule messages go through this translator while an
/// extractor validates, so every built-in rule reports its rule name instead of English text
/// (which, for some rules, would repeat configuration or input fragments).
pub(crate) struct CodeI18n;

impl garde::I18n for CodeI18n {
    fn length_lower_than(&self, _: usize) -> Cow<'static, str> {
        Cow::Borrowed("length")
    }
    fn length_greater_than(&self, _: usize) -> Cow<'static, str> {
        Cow::Borrowed("length")
    }
    fn range_lower_than(&self, _: &dyn fmt::Display) -> Cow<'static, str> {
        Cow::Borrowed("range")
    }
    fn range_greater_than(&self, _: &dyn fmt::Display) -> Cow<'static, str> {
        Cow::Borrowed("range")
    }
    fn credit_card_invalid(&self, _: garde::i18n::InvalidCreditCard) -> Cow<'static, str> {
        Cow::Borrowed("credit_card")
    }
    fn pattern_no_match(&self, _: &dyn fmt::Display) -> Cow<'static, str> {
        Cow::Borrowed("pattern")
    }
    fn contains_missing(&self, _: &dyn fmt::Display) -> Cow<'static, str> {
        Cow::Borrowed("contains")
    }
    fn url_invalid(&self, _: garde::i18n::InvalidUrl) -> Cow<'static, str> {
        Cow::Borrowed("url")
    }
    fn prefix_missing(&self, _: &dyn fmt::Display) -> Cow<'static, str> {
        Cow::Borrowed("prefix")
    }
    fn suffix_missing(&self, _: &dyn fmt::Display) -> Cow<'static, str> {
        Cow::Borrowed("suffix")
    }
    fn phone_number_invalid(&self, _: garde::i18n::InvalidPhoneNumber) -> Cow<'static, str> {
        Cow::Borrowed("phone_number")
    }
    fn ip_invalid(&self, _: garde::i18n::IpKind) -> Cow<'static, str> {
        Cow::Borrowed("ip")
    }
    fn matches_field_mismatch(&self, _: &dyn fmt::Display) -> Cow<'static, str> {
        Cow::Borrowed("matches")
    }
    fn email_invalid(&self, _: garde::i18n::InvalidEmail) -> Cow<'static, str> {
        Cow::Borrowed("email")
    }
    fn ascii_invalid(&self) -> Cow<'static, str> {
        Cow::Borrowed("ascii")
    }
    fn alphanumeric_invalid(&self) -> Cow<'static, str> {
        Cow::Borrowed("alphanumeric")
    }
    fn required_not_set(&self) -> Cow<'static, str> {
        Cow::Borrowed("required")
    }
}

/// Runs garde validation with codes instead of messages.
pub fn validate_with_codes<T: garde::Validate + ?Sized>(
    value: &T,
    context: &T::Context,
) -> Result<(), garde::Report> {
    garde::with_i18n(CodeI18n, || value.validate_with(context))
}

/// The field errors of a garde report, sorted by path (paths as garde renders them, messages
/// as codes; a custom rule's free text becomes `invalid`).
pub fn field_errors_of(report: &garde::Report) -> Vec<crate::rejection::FieldError> {
    let mut errors: Vec<_> = report
        .iter()
        .map(|(path, error)| {
            crate::rejection::FieldError::new(&path.to_string(), error.message().to_owned())
        })
        .collect();
    errors.sort_by(|a, b| (a.path(), a.code()).cmp(&(b.path(), b.code())));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "axum")]
    fn serde_messages_map_to_codes_without_input() {
        let ours: serde_json::Error = ValidationError::new("url_private_address").into_de();
        assert_eq!(
            code_of_serde_message(&ours.to_string()),
            "url_private_address"
        );
        for (message, code) in [
            ("missing field `title` at line 1 column 2", "required"),
            ("unknown field `x`, expected `a`", "unknown_field"),
            (
                "invalid type: string \"secret\", expected u32",
                "invalid_type",
            ),
            ("portcullis-validation:", "invalid_type"),
        ] {
            assert_eq!(code_of_serde_message(message), code);
        }
    }
}
