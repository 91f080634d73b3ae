//! Claim validation and the mapping from claims to a [`Principal`].

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use crate::claims::{numeric_date, string_list};
use serde_json::{Map, Value};

use crate::principal::{AuthMethod, Principal, PrincipalKind};

/// A claim named by a path: `roles`, `realm_access.roles`, or a namespaced name such as
/// `https://example.com/roles` (tried whole first, then split on dots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimPath(String);

impl ClaimPath {
    pub(crate) fn new(path: impl Into<String>) -> Self {
        Self(path.into())
    }

    pub(crate) fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        crate::claims::lookup(claims, &self.0)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub(crate) issuers: Option<Vec<String>>,
    pub(crate) audiences: Option<Vec<String>>,
    pub(crate) leeway: Duration,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) required: Vec<ClaimPath>,
    pub(crate) roles: ClaimPath,
    pub(crate) scopes: Vec<ClaimPath>,
    pub(crate) permissions: Option<ClaimPath>,
    pub(crate) tenant: Option<ClaimPath>,
}

pub(crate) struct Validated {
    pub(crate) expires_at: u64,
}

impl ClaimRules {
    /// Checks time, issuer, audience and required claims at `now` (Unix seconds).
    pub(crate) fn validate(
        &self,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<Validated, Cow<'static, str>> {
        let leeway = self.leeway.as_secs();
        let exp = claims
            .get("exp")
            .ok_or(Cow::Borrowed("token has no exp"))
            .and_then(|v| numeric_date(v).ok_or(Cow::Borrowed("exp is not a NumericDate")))?;
        if now > exp.saturating_add(leeway) {
            return Err(format!("token expired {}s ago", now - exp).into());
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(Cow::Borrowed("nbf is not a NumericDate"))?;
            if now.saturating_add(leeway) < nbf {
                return Err(format!("token not valid for another {}s", nbf - now).into());
            }
        }
        let iat = match claims.get("iat") {
            Some(v) => Some(numeric_date(v).ok_or(Cow::Borrowed("iat is not a NumericDate"))?),
            None => None,
        };
        if let Some(iat) = iat
            && iat > now.saturating_add(leeway)
        {
            return Err("token issued in the future".into());
        }
        if let Some(max) = self.max_lifetime {
            let lifetime = exp.saturating_sub(iat.unwrap_or(now));
            if lifetime > max.as_secs() {
                return Err(format!(
                    "token lifetime {lifetime}s exceeds the maximum {}s",
                    max.as_secs()
                )
                .into());
            }
        }
        if let Some(issuers) = &self.issuers {
            match claims.get("iss").and_then(Value::as_str) {
                Some(iss) if issuers.iter().any(|i| i == iss) => {}
                Some(_) => return Err("issuer not accepted".into()),
                None => return Err("token has no iss".into()),
            }
        }
        if let Some(audiences) = &self.audiences {
            let accepted = |a: &str| audiences.iter().any(|x| x == a);
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => accepted(a),
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(accepted),
                Some(_) => return Err("aud is neither a string nor an array".into()),
                None => return Err("token has no aud".into()),
            };
            if !ok {
                return Err("audience not accepted".into());
            }
        }
        for path in &self.required {
            if path.lookup(claims).is_none_or(Value::is_null) {
                return Err(format!("required claim {} is missing", path.0).into());
            }
        }
        Ok(Validated { expires_at: exp })
    }

    /// Builds the principal from validated claims.
    pub(crate) fn principal(
        &self,
        claims: Map<String, Value>,
        validated: &Validated,
        kid: Option<String>,
        alg: String,
    ) -> Result<Principal, Cow<'static, str>> {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let client_id = claims
            .get("client_id")
            .or_else(|| claims.get("azp"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        // Client-credentials tokens either carry no sub or a sub equal to the client id.
        let (subject, kind) = match (sub, client_id) {
            (Some(s), Some(c)) if s == c => (s, PrincipalKind::Service),
            (Some(s), _) => (s, PrincipalKind::User),
            (None, Some(c)) => (c, PrincipalKind::Service),
            (None, None) => return Err("token has neither sub nor client_id".into()),
        };
        let roles = string_list(self.roles.lookup(&claims));
        let scopes = self
            .scopes
            .iter()
            .find_map(|p| p.lookup(&claims))
            .map(|v| string_list(Some(v)))
            .unwrap_or_default();
        let permissions = self
            .permissions
            .as_ref()
            .map(|p| string_list(p.lookup(&claims)))
            .unwrap_or_default();
        let tenant = self
            .tenant
            .as_ref()
            .and_then(|p| p.lookup(&claims))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let issuer = claims.get("iss").and_then(Value::as_str).map(str::to_owned);
        let mut builder = Principal::builder(subject, AuthMethod::Jwt { kid, alg })
            .kind(kind)
            .roles(roles)
            .scopes(scopes)
            .permissions(permissions)
            .expires_at(UNIX_EPOCH + Duration::from_secs(validated.expires_at));
        if let Some(issuer) = issuer {
            builder = builder.issuer(issuer);
        }
        if let Some(tenant) = tenant {
            builder = builder.tenant(tenant);
        }
        Ok(builder.attributes(claims).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuers: Some(vec!["https://iss".into()]),
            audiences: Some(vec!["api".into()]),
            leeway: Duration::from_secs(60),
            max_lifetime: Some(Duration::from_secs(3600)),
            required: vec![],
            roles: ClaimPath::new("realm_access.roles"),
            scopes: vec![ClaimPath::new("scope"), ClaimPath::new("scp")],
            permissions: Some(ClaimPath::new("permissions")),
            tenant: None,
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn time_and_identity_table() {
        let now = 1_000_000;
        let base =
            json!({"iss": "https://iss", "aud": "api", "sub": "u", "exp": now + 600, "iat": now});
        let cases: Vec<(Value, bool)> = vec![
            (base.clone(), true),
            (
                json!({"iss": "https://iss", "aud": ["x", "api"], "sub": "u", "exp": now + 600}),
                true,
            ),
            (
                json!({"iss": "https://iss", "aud": "api", "sub": "u", "exp": now - 30}),
                true,
            ),
            (
                json!({"iss": "https://iss", "aud": "api", "sub": "u", "exp": now - 61}),
                false,
            ),
            (
                json!({"iss": "https://iss", "aud": "api", "sub": "u"}),
                false,
            ),
            (
                json!({"iss": "https://iss", "aud": "api", "sub": "u", "exp": "soon"}),
                false,
            ),
            (
                json!({"iss": "https://iss", "aud": "api", "sub": "u", "exp": now + 600, "nbf": now + 120}),
                false,
            ),
            (
                json!({"iss": "https://iss", "aud": "api", "sub": "u", "exp": now + 600, "nbf": now + 30}),
                true,
            ),
            (
                json!({"iss": "https://iss", "aud": "api", "sub": "u", "exp": now + 600, "iat": now + 300}),
                false,
            ),
            (
                json!({"iss": "https://iss", "aud": "api", "sub": "u", "exp": now + 7200, "iat": now}),
                false,
            ),
            (
                json!({"iss": "https://other", "aud": "api", "sub": "u", "exp": now + 600}),
                false,
            ),
            (json!({"aud": "api", "sub": "u", "exp": now + 600}), false),
            (
                json!({"iss": "https://iss", "aud": "web", "sub": "u", "exp": now + 600}),
                false,
            ),
            (
                json!({"iss": "https://iss", "sub": "u", "exp": now + 600}),
                false,
            ),
            (
                json!({"iss": "https://iss", "aud": 7, "sub": "u", "exp": now + 600}),
                false,
            ),
            (
                json!({"iss": "https://iss", "aud": "api", "sub": "u", "exp": -5}),
                false,
            ),
        ];
        let rules = rules();
        for (i, (c, ok)) in cases.into_iter().enumerate() {
            assert_eq!(
                rules.validate(&claims(c.clone()), now).is_ok(),
                ok,
                "case {i}: {c}"
            );
        }
    }

    #[test]
    fn claim_paths_and_shapes() {
        let mut rules = rules();
        let c = claims(json!({
            "sub": "u", "exp": 10,
            "realm_access": {"roles": ["reader", 7, "editor"]},
            "scope": "docs:read docs:write",
            "https://example.com/roles": ["admin"],
            "permissions": ["p1"],
        }));
        let v = Validated { expires_at: 10 };
        let p = rules
            .principal(c.clone(), &v, None, "RS256".into())
            .unwrap();
        assert_eq!(p.roles(), ["reader", "editor"]);
        assert_eq!(p.scopes(), ["docs:read", "docs:write"]);
        assert_eq!(p.permissions(), ["p1"]);
        assert_eq!(p.kind(), PrincipalKind::User);
        rules.roles = ClaimPath::new("https://example.com/roles");
        let p = rules.principal(c, &v, None, "RS256".into()).unwrap();
        assert_eq!(p.roles(), ["admin"]);

        let svc = claims(json!({"client_id": "svc-a", "exp": 10, "scp": ["a", "b"]}));
        let p = rules.principal(svc, &v, None, "RS256".into()).unwrap();
        assert_eq!(p.subject(), "svc-a");
        assert_eq!(p.kind(), PrincipalKind::Service);
        assert_eq!(p.scopes(), ["a", "b"]);
        assert!(
            rules
                .principal(claims(json!({"exp": 10})), &v, None, "x".into())
                .is_err()
        );
    }

    #[test]
    fn required_claims() {
        let mut rules = rules();
        rules.required = vec![ClaimPath::new("tenant.id")];
        let now = 100;
        let ok = json!({"iss": "https://iss", "aud": "api", "sub": "u", "exp": now + 60, "tenant": {"id": "t1"}});
        let missing = json!({"iss": "https://iss", "aud": "api", "sub": "u", "exp": now + 60});
        assert!(rules.validate(&claims(ok), now).is_ok());
        assert!(rules.validate(&claims(missing), now).is_err());
    }
}
