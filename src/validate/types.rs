//! Validated value types: bounded strings and integers, regex-pattern strings, identifiers and
//! slugs. Each one can only hold a valid value: construction and deserialization check, and
//! serialization writes the plain value back.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::ValidationError;

/// garde sees these types as already valid (the invariant holds by construction), so they
/// compose inside `#[derive(garde::Validate)]` structs with `#[garde(dive)]`, and string types
/// also accept garde's string rules (`length`, `prefix`, `pattern`...) for extra constraints.
macro_rules! string_type_common {
    ($name:ident [$($generics:tt)*] [$($args:tt)*]) => {
        impl<$($generics)*> $name<$($args)*> {
            /// The value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// The value, owned.
            pub fn into_inner(self) -> String {
                self.0
            }
        }
        impl<$($generics)*> Deref for $name<$($args)*> {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl<$($generics)*> AsRef<str> for $name<$($args)*> {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl<$($generics)*> fmt::Display for $name<$($args)*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl<$($generics)*> FromStr for $name<$($args)*> {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, ValidationError> {
                Self::new(s)
            }
        }
        impl<$($generics)*> TryFrom<String> for $name<$($args)*> {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, ValidationError> {
                Self::new(s)
            }
        }
        impl<$($generics)*> From<$name<$($args)*>> for String {
            fn from(v: $name<$($args)*>) -> String {
                v.0
            }
        }
        impl<$($generics)*> Serialize for $name<$($args)*> {
            fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de, $($generics)*> Deserialize<'de> for $name<$($args)*> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(s.into_owned()).map_err(ValidationError::into_de)
            }
        }
        impl<$($generics)*> garde::Validate for $name<$($args)*> {
            type Context = ();
            fn validate_into(
                &self,
                _: &(),
                _: &mut dyn FnMut() -> garde::Path,
                _: &mut garde::Report,
            ) {
            }
        }
        impl<$($generics)*> garde::rules::AsStr for $name<$($args)*> {
            fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl<$($generics)*> garde::rules::length::HasSimpleLength for $name<$($args)*> {
            fn length(&self) -> usize {
                self.0.len()
            }
        }
        impl<$($generics)*> garde::rules::length::HasBytes for $name<$($args)*> {
            fn num_bytes(&self) -> usize {
                self.0.len()
            }
        }
        impl<$($generics)*> garde::rules::length::HasChars for $name<$($args)*> {
            fn num_chars(&self) -> usize {
                self.0.chars().count()
            }
        }
    };
}

/// A garde rule that accepts a string field when it parses as the validated type `T`, so a
/// struct of plain `String` fields reports every bad field at once (deserializing straight into
/// validated types stops at the first):
/// `#[garde(custom(parses_as::<SafeUrl>))] url: String`.
///
/// ```
/// use garde::Validate;
/// use portcullis::validate::{BoundedString, SafeUrl, parses_as};
///
/// #[derive(garde::Validate)]
/// struct NewDocument {
///     #[garde(custom(parses_as::<BoundedString<1, 200>>))]
///     title: String,
///     #[garde(custom(parses_as::<SafeUrl>))]
///     url: String,
/// }
/// let bad = NewDocument { title: String::new(), url: "https://localhost/".into() };
/// let report = bad.validate().unwrap_err();
/// assert_eq!(report.iter().count(), 2);
/// ```
pub fn parses_as<T>(value: &str, _context: &()) -> garde::Result
where
    T: FromStr<Err = ValidationError>,
{
    value.parse::<T>().map(|_| ()).map_err(Into::into)
}

/// A string of `MIN..=MAX` characters (Unicode scalar values) without control characters other
/// than tab, line feed and carriage return.
///
/// ```
/// use portcullis::validate::BoundedString;
///
/// type Title = BoundedString<1, 200>;
/// assert!("Quarterly report".parse::<Title>().is_ok());
/// assert_eq!("".parse::<Title>().unwrap_err().code(), "length");
/// assert_eq!("a\u{0}b".parse::<Title>().unwrap_err().code(), "control_character");
/// let title: Title = serde_json::from_str("\"Notes\"").unwrap();
/// assert_eq!(serde_json::to_string(&title).unwrap(), "\"Notes\"");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoundedString<const MIN: usize, const MAX: usize>(String);

impl<const MIN: usize, const MAX: usize> BoundedString<MIN, MAX> {
    /// Checks `value`: length in characters, then control characters.
    pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
        const { assert!(MIN <= MAX, "BoundedString needs MIN <= MAX") };
        let value = value.into();
        // Counting stops at MAX + 1, so a huge value costs no more than a valid one.
        let chars = value.chars().take(MAX.saturating_add(1)).count();
        if chars < MIN || chars > MAX {
            return Err(ValidationError::new("length"));
        }
        if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(ValidationError::new("control_character"));
        }
        Ok(Self(value))
    }
}

impl<const MIN: usize, const MAX: usize> fmt::Debug for BoundedString<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

string_type_common!(BoundedString [const MIN: usize, const MAX: usize] [MIN, MAX]);

macro_rules! bounded_int {
    ($($(#[$doc:meta])* $name:ident: $t:ty;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name<const MIN: $t, const MAX: $t>($t);

        impl<const MIN: $t, const MAX: $t> $name<MIN, MAX> {
            /// Checks that `value` is within `MIN..=MAX` (code `range` otherwise).
            pub const fn new(value: $t) -> Result<Self, ValidationError> {
                const { assert!(MIN <= MAX, "bounded integers need MIN <= MAX") };
                if value < MIN || value > MAX {
                    Err(ValidationError::new("range"))
                } else {
                    Ok(Self(value))
                }
            }
            /// The value.
            pub const fn get(self) -> $t {
                self.0
            }
        }
        impl<const MIN: $t, const MAX: $t> fmt::Display for $name<MIN, MAX> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl<const MIN: $t, const MAX: $t> FromStr for $name<MIN, MAX> {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, ValidationError> {
                Self::new(s.parse().map_err(|_| ValidationError::new("invalid_type"))?)
            }
        }
        impl<const MIN: $t, const MAX: $t> TryFrom<$t> for $name<MIN, MAX> {
            type Error = ValidationError;
            fn try_from(v: $t) -> Result<Self, ValidationError> {
                Self::new(v)
            }
        }
        impl<const MIN: $t, const MAX: $t> From<$name<MIN, MAX>> for $t {
            fn from(v: $name<MIN, MAX>) -> $t {
                v.0
            }
        }
        impl<const MIN: $t, const MAX: $t> Serialize for $name<MIN, MAX> {
            fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
                self.0.serialize(s)
            }
        }
        impl<'de, const MIN: $t, const MAX: $t> Deserialize<'de> for $name<MIN, MAX> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::new(<$t>::deserialize(d)?).map_err(ValidationError::into_de)
            }
        }
        impl<const MIN: $t, const MAX: $t> garde::Validate for $name<MIN, MAX> {
            type Context = ();
            fn validate_into(
                &self,
                _: &(),
                _: &mut dyn FnMut() -> garde::Path,
                _: &mut garde::Report,
            ) {
            }
        }
        impl<const MIN: $t, const MAX: $t> garde::rules::range::Bounds for $name<MIN, MAX> {
            type Size = $t;
            const MIN: $t = MIN;
            const MAX: $t = MAX;
            fn validate_bounds(
                &self,
                lower: $t,
                upper: $t,
            ) -> Result<(), garde::rules::range::OutOfBounds> {
                if self.0 < lower {
                    Err(garde::rules::range::OutOfBounds::Lower)
                } else if self.0 > upper {
                    Err(garde::rules::range::OutOfBounds::Upper)
                } else {
                    Ok(())
                }
            }
        }
    )*};
}

bounded_int! {
    /// A `u8` within `MIN..=MAX`.
    BoundedU8: u8;
    /// A `u16` within `MIN..=MAX`.
    BoundedU16: u16;
    /// A `u32` within `MIN..=MAX`.
    ///
    /// ```
    /// use portcullis::validate::BoundedU32;
    ///
    /// type PageSize = BoundedU32<1, 100>;
    /// assert_eq!(serde_json::from_str::<PageSize>("50").unwrap().get(), 50);
    /// assert!(serde_json::from_str::<PageSize>("0").is_err());
    /// assert_eq!("101".parse::<PageSize>().unwrap_err().code(), "range");
    /// ```
    BoundedU32: u32;
    /// A `u64` within `MIN..=MAX`.
    BoundedU64: u64;
    /// A `usize` within `MIN..=MAX`.
    BoundedUsize: usize;
    /// An `i32` within `MIN..=MAX`.
    BoundedI32: i32;
    /// An `i64` within `MIN..=MAX`.
    BoundedI64: i64;
}

/// A regular expression that a [`Matching`] string must match as a whole.
///
/// Implement it with the [`pattern!`](crate::pattern) macro, which compiles the expression once
/// (on first use, in a `LazyLock`) and anchors it at both ends.
pub trait Pattern: 'static {
    /// The expression (the `regex` crate's syntax: linear-time matching, no backtracking).
    const PATTERN: &'static str;
    /// The longest accepted value in bytes, checked before matching (default 256).
    const MAX_LEN: usize = 256;
    /// The compiled, anchored expression; `None` if it does not compile, in which case every
    /// value is refused (code `pattern`) and [`check_pattern`] reports the mistake at startup.
    fn regex() -> Option<&'static regex::Regex>;
}

/// Compiles `pattern` anchored at both ends, with a bounded program size. Used by
/// [`pattern!`](crate::pattern).
#[doc(hidden)]
pub fn compile_pattern(pattern: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .ok()
}

/// Startup check of a [`Pattern`]: `Err` when its expression does not compile.
pub fn check_pattern<P: Pattern>() -> Result<(), crate::ConfigError> {
    match P::regex() {
        Some(_) => Ok(()),
        None => Err(crate::ConfigError::new(format!(
            "pattern {:?} does not compile",
            P::PATTERN
        ))),
    }
}

/// Declares a [`Pattern`] type: `pattern!(pub Sku = r"[A-Z]{3}-[0-9]{4}");` then use
/// `Matching<Sku>`. An optional `, max_len = N` overrides the 256-byte cap.
///
/// ```
/// use portcullis::pattern;
/// use portcullis::validate::Matching;
///
/// pattern!(
///     /// A product code such as `ABC-1234`.
///     pub Sku = r"[A-Z]{3}-[0-9]{4}"
/// );
/// assert!("ABC-1234".parse::<Matching<Sku>>().is_ok());
/// // Anchored: a match inside a longer value is not enough.
/// assert_eq!("xABC-1234".parse::<Matching<Sku>>().unwrap_err().code(), "pattern");
/// ```
#[macro_export]
macro_rules! pattern {
    ($(#[$meta:meta])* $vis:vis $name:ident = $re:expr $(, max_len = $max:expr)? $(,)?) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis struct $name;

        impl $crate::validate::Pattern for $name {
            const PATTERN: &'static str = $re;
            $(const MAX_LEN: usize = $max;)?
            fn regex() -> ::std::option::Option<&'static $crate::validate::__private::Regex> {
                static RE: ::std::sync::LazyLock<
                    ::std::option::Option<$crate::validate::__private::Regex>,
                > = ::std::sync::LazyLock::new(|| {
                    $crate::validate::compile_pattern(<$name as $crate::validate::Pattern>::PATTERN)
                });
                RE.as_ref()
            }
        }
    };
}

/// A string that matches the [`Pattern`] `P` as a whole (code `pattern`), at most
/// `P::MAX_LEN` bytes (code `length`).
pub struct Matching<P: Pattern>(String, PhantomData<fn() -> P>);

impl<P: Pattern> Matching<P> {
    /// Checks `value` against `P`.
    pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        if value.len() > P::MAX_LEN {
            return Err(ValidationError::new("length"));
        }
        match P::regex() {
            Some(re) if re.is_match(&value) => Ok(Self(value, PhantomData)),
            _ => Err(ValidationError::new("pattern")),
        }
    }
}

impl<P: Pattern> Clone for Matching<P> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), PhantomData)
    }
}
impl<P: Pattern> PartialEq for Matching<P> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<P: Pattern> Eq for Matching<P> {}
impl<P: Pattern> std::hash::Hash for Matching<P> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}
impl<P: Pattern> fmt::Debug for Matching<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

string_type_common!(Matching [P: Pattern] [P]);

/// A programming-language-style identifier: an ASCII letter or `_`, then ASCII letters, digits
/// and `_`; at most `MAX` bytes (default 64). Codes: `length`, `identifier`.
///
/// ```
/// use portcullis::validate::Identifier;
///
/// assert!("user_id2".parse::<Identifier>().is_ok());
/// assert_eq!("2fast".parse::<Identifier>().unwrap_err().code(), "identifier");
/// assert_eq!("a-b".parse::<Identifier>().unwrap_err().code(), "identifier");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identifier<const MAX: usize = 64>(String);

impl<const MAX: usize> Identifier<MAX> {
    /// Checks `value`.
    pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        if value.is_empty() || value.len() > MAX {
            return Err(ValidationError::new("length"));
        }
        let bytes = value.as_bytes();
        let first_ok = bytes[0].is_ascii_alphabetic() || bytes[0] == b'_';
        if !first_ok
            || !bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            return Err(ValidationError::new("identifier"));
        }
        Ok(Self(value))
    }
}

impl<const MAX: usize> fmt::Debug for Identifier<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

string_type_common!(Identifier [const MAX: usize] [MAX]);

/// A URL slug: lowercase ASCII letters and digits in groups joined by single hyphens
/// (`quarterly-report-2024`), at most `MAX` bytes (default 64). Codes: `length`, `slug`.
///
/// ```
/// use portcullis::validate::Slug;
///
/// assert!("quarterly-report-2024".parse::<Slug>().is_ok());
/// for bad in ["-a", "a-", "a--b", "A", "a_b", "a.b", "../x"] {
///     assert_eq!(bad.parse::<Slug>().unwrap_err().code(), "slug", "{bad}");
/// }
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slug<const MAX: usize = 64>(String);

impl<const MAX: usize> Slug<MAX> {
    /// Checks `value`.
    pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        if value.is_empty() || value.len() > MAX {
            return Err(ValidationError::new("length"));
        }
        let groups_ok = value.split('-').all(|group| {
            !group.is_empty()
                && group
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if !groups_ok {
            return Err(ValidationError::new("slug"));
        }
        Ok(Self(value))
    }
}

impl<const MAX: usize> fmt::Debug for Slug<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

string_type_common!(Slug [const MAX: usize] [MAX]);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    crate::pattern!(Hex = "[0-9a-f]+", max_len = 8);
    crate::pattern!(Broken = "(unclosed");

    #[test]
    fn bounded_string_table() {
        type T = BoundedString<2, 4>;
        for (value, want) in [
            ("", Err("length")),
            ("a", Err("length")),
            ("ab", Ok(())),
            ("äöüß", Ok(())),
            ("abcde", Err("length")),
            ("a\nb", Ok(())),
            ("a\u{1b}b", Err("control_character")),
            ("a\u{85}b", Err("control_character")),
        ] {
            assert_eq!(
                T::new(value).map(|_| ()).map_err(|e| e.code()),
                want,
                "{value:?}"
            );
        }
    }

    #[test]
    fn deserialization_validates_and_serialization_round_trips() {
        let err = serde_json::from_str::<BoundedString<1, 3>>("\"toolong\"").unwrap_err();
        assert!(err.to_string().contains("portcullis-validation:length"));
        assert!(!err.to_string().contains("toolong"));
        let ok: BoundedI32<-5, 5> = serde_json::from_str("-5").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "-5");
        assert!(serde_json::from_str::<BoundedI32<-5, 5>>("6").is_err());
        let slug: Slug = serde_json::from_str("\"a-b\"").unwrap();
        assert_eq!(serde_json::to_value(&slug).unwrap(), "a-b");
    }

    #[test]
    fn patterns_are_anchored_and_bounded() {
        assert!(Matching::<Hex>::new("beef").is_ok());
        assert_eq!(Matching::<Hex>::new("xbeef").unwrap_err().code(), "pattern");
        assert_eq!(
            Matching::<Hex>::new("beef\n").unwrap_err().code(),
            "pattern"
        );
        assert_eq!(
            Matching::<Hex>::new("a".repeat(9)).unwrap_err().code(),
            "length"
        );
        assert!(check_pattern::<Hex>().is_ok());
        assert!(check_pattern::<Broken>().is_err());
        assert_eq!(Matching::<Broken>::new("x").unwrap_err().code(), "pattern");
    }

    #[derive(garde::Validate, Deserialize)]
    struct Form {
        #[garde(dive)]
        name: Slug<32>,
        #[garde(length(chars, max = 3))]
        nick: BoundedString<1, 10>,
        #[garde(range(max = 50))]
        age: BoundedU8<1, 120>,
    }

    #[test]
    fn composes_with_garde_rules() {
        use garde::Validate as _;
        let form: Form =
            serde_json::from_str(r#"{"name": "a-b", "nick": "abcd", "age": 60}"#).unwrap();
        let report = form.validate().unwrap_err();
        let mut paths: Vec<String> = report.iter().map(|(p, _)| p.to_string()).collect();
        paths.sort();
        assert_eq!(paths, ["age", "nick"]);
    }

    proptest! {
        #[test]
        fn slug_accepts_exactly_its_grammar(s in "[a-z0-9-]{0,70}") {
            let grammar = !s.is_empty() && s.len() <= 64 && !s.starts_with('-')
                && !s.ends_with('-') && !s.contains("--");
            prop_assert_eq!(Slug::<64>::new(s.clone()).is_ok(), grammar);
        }

        #[test]
        fn identifier_never_panics_and_accepts_only_ascii_words(s in "\\PC{0,80}") {
            if let Ok(id) = Identifier::<64>::new(s.clone()) {
                prop_assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
                prop_assert!(!id.as_bytes()[0].is_ascii_digit());
            }
        }

        #[test]
        fn bounded_string_length_is_in_chars(s in "\\PC{0,12}") {
            let n = s.chars().count();
            prop_assert_eq!(BoundedString::<3, 8>::new(s).is_ok(), (3..=8).contains(&n));
        }

        #[test]
        fn bounded_int_round_trips(v in any::<i64>()) {
            let parsed = BoundedI64::<-1000, 1000>::new(v);
            prop_assert_eq!(parsed.is_ok(), (-1000..=1000).contains(&v));
            if let Ok(b) = parsed {
                let json = serde_json::to_string(&b).unwrap();
                prop_assert_eq!(serde_json::from_str::<BoundedI64<-1000, 1000>>(&json).unwrap(), b);
            }
        }
    }
}
