//! JSON claim helpers shared by the authenticators and the attribute policies.

use serde_json::Map;
use serde_json::Value;

/// A claim by name, whole first (namespaced claims such as `https://example.com/roles` contain
/// dots), then as a dotted path (`realm_access.roles`). Used for principal claims (JWT,
/// introspection, ABAC) and resource attributes.
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = get(claims, path) {
        return Some(v);
    }
    if !path.contains('.') {
        return None;
    }
    let mut segments = path.split('.');
    let mut current = get(claims, segments.next()?)?;
    for segment in segments {
        current = get(current.as_object()?, segment)?;
    }
    Some(current)
}

/// Maps at most this large are searched by scanning their keys.
const SCAN_UP_TO: usize = 16;

/// `map.get(key)`, scanning small maps: comparing a few short keys (lengths first) costs less
/// than hashing the key, which `serde_json` does with SipHash when its `preserve_order` feature
/// is on (as another dependency, `cedar-policy`, turns it on).
fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() <= SCAN_UP_TO {
        map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    } else {
        map.get(key)
    }
}

#[cfg(feature = "jwt")]
/// A claim holding names: a JSON array of strings or a space-separated string. Other shapes
/// grant nothing.
pub(crate) fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// A JWT NumericDate (RFC 7519): non-negative, possibly fractional seconds, as whole seconds.
pub(crate) fn numeric_date(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| {
            value
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        })
        // Beyond year 9999 is no date a token can mean; refusing it here keeps every
        // `UNIX_EPOCH + secs` downstream from overflowing (a panic on hostile input).
        .filter(|secs| *secs <= MAX_NUMERIC_DATE)
}

/// 9999-12-31T23:59:59Z.
pub(crate) const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    #[cfg(feature = "jwt")]
    fn lookups_shapes_and_dates() {
        let claims = json!({"a": {"b": 1}, "https://x.example/roles": ["r"], "a.b": 2});
        let claims = claims.as_object().unwrap();
        assert_eq!(lookup(claims, "a.b"), Some(&json!(2)), "whole name first");
        assert_eq!(
            lookup(claims, "https://x.example/roles"),
            Some(&json!(["r"]))
        );
        assert_eq!(lookup(claims, "a.c"), None);
        assert_eq!(string_list(Some(&json!(["x", 1, "", "y"]))), ["x", "y"]);
        assert_eq!(string_list(Some(&json!("x  y"))), ["x", "y"]);
        assert!(string_list(Some(&json!({"x": 1}))).is_empty());
        assert_eq!(numeric_date(&json!(5)), Some(5));
        assert_eq!(numeric_date(&json!(5.9)), Some(5));
        assert_eq!(numeric_date(&json!(-1)), None);
        assert_eq!(numeric_date(&json!("5")), None);
    }
}
