//! Access rules from a TOML file, so operators change access without recompiling.
//!
//! The file declares roles (with inheritance and permissions), the policy of every HTTP route,
//! and optionally of gRPC methods. It is validated completely at startup: unknown fields, unknown
//! roles or permissions, malformed policies, duplicate routes and inheritance cycles are refused
//! with a message naming the offending entry.
//!
//! Policy expressions: `"public"`, `"authenticated"`, `"deny"`, `"role:NAME"`,
//! `"permission:NAME"`, `"scope:NAME"`, or tables `{ all_of = [..] }`, `{ any_of = [..] }`,
//! `{ not = .. }`.
//!
//! ```
//! use portcullis::authz::config::PolicyFile;
//!
//! let file = PolicyFile::from_toml(r#"
//!     [roles.reader]
//!     permissions = ["documents:read"]
//!     [roles.editor]
//!     inherits = ["reader"]
//!     permissions = ["documents:write"]
//!     [roles.admin]
//!     inherits = ["editor"]
//!
//!     [[routes]]
//!     method = "GET"
//!     path = "/documents/{id}"
//!     policy = "permission:documents:read"
//!
//!     [[routes]]
//!     method = "DELETE"
//!     path = "/documents/{id}"
//!     policy = { all_of = ["role:admin", "authenticated"] }
//! "#).unwrap();
//! assert_eq!(&**file.policy("GET", "/documents/{id}").unwrap().id(), "has_permission(documents:read)");
//! assert!(file.policy("PUT", "/documents/{id}").is_err()); // not configured: deny by default
//!
//! let typo = PolicyFile::from_toml(r#"
//!     [roles.reader]
//!     [[routes]]
//!     method = "GET"
//!     path = "/x"
//!     policy = "role:raeder"
//! "#).unwrap_err();
//! assert!(typo.message().contains("unknown role \"raeder\""));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::{
    Rbac, SharedPolicy, all_of, any_of, authenticated, deny_all, has_permission, has_role,
    has_scope, not, public,
};
use crate::error::ConfigError;
use crate::routing::{MethodPolicies, RouteReport};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    grpc: Vec<RawGrpc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    inherits: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: String,
    path: String,
    policy: RawPolicy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrpc {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    service: Option<String>,
    policy: RawPolicy,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawPolicy {
    Leaf(String),
    Table(RawPolicyTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyTable {
    #[serde(default)]
    all_of: Option<Vec<RawPolicy>>,
    #[serde(default)]
    any_of: Option<Vec<RawPolicy>>,
    #[serde(default)]
    not: Option<Box<RawPolicy>>,
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A validated access-rule file.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    rbac: Rbac,
    routes: BTreeMap<(String, String), SharedPolicy>,
    grpc_methods: BTreeMap<String, SharedPolicy>,
    grpc_services: BTreeMap<String, SharedPolicy>,
}

struct Validator<'a> {
    roles: &'a BTreeMap<String, RawRole>,
    permissions: BTreeSet<&'a str>,
}

impl Validator<'_> {
    fn policy(&self, raw: &RawPolicy, at: &str) -> Result<SharedPolicy, ConfigError> {
        match raw {
            RawPolicy::Leaf(text) => self.leaf(text, at),
            RawPolicy::Table(table) => {
                let given = [
                    table.all_of.is_some(),
                    table.any_of.is_some(),
                    table.not.is_some(),
                ];
                if given.iter().filter(|g| **g).count() != 1 {
                    return Err(ConfigError::new(format!(
                        "{at}: a policy table needs exactly one of all_of, any_of, not"
                    )));
                }
                if let Some(list) = &table.all_of {
                    return Ok(all_of(self.list(list, &format!("{at}.all_of"))?));
                }
                if let Some(list) = &table.any_of {
                    if list.is_empty() {
                        return Err(ConfigError::new(format!(
                            "{at}.any_of: empty list denies everyone; use \"deny\""
                        )));
                    }
                    return Ok(any_of(self.list(list, &format!("{at}.any_of"))?));
                }
                match &table.not {
                    Some(inner) => Ok(not(self.policy(inner, &format!("{at}.not"))?)),
                    None => Err(ConfigError::new(format!("{at}: empty policy table"))),
                }
            }
        }
    }

    fn list(&self, list: &[RawPolicy], at: &str) -> Result<Vec<SharedPolicy>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, p)| self.policy(p, &format!("{at}[{i}]")))
            .collect()
    }

    fn leaf(&self, text: &str, at: &str) -> Result<SharedPolicy, ConfigError> {
        match text {
            "public" => return Ok(public()),
            "authenticated" => return Ok(authenticated()),
            "deny" => return Ok(deny_all()),
            _ => {}
        }
        let Some((kind, name)) = text.split_once(':') else {
            return Err(ConfigError::new(format!("{at}: unknown policy {text:?}")));
        };
        if name.is_empty() {
            return Err(ConfigError::new(format!("{at}: {kind}: needs a name")));
        }
        match kind {
            "role" if self.roles.contains_key(name) => Ok(has_role(name)),
            "role" => Err(ConfigError::new(format!("{at}: unknown role {name:?}"))),
            "permission" if self.permissions.contains(name) => Ok(has_permission(name)),
            "permission" => Err(ConfigError::new(format!(
                "{at}: unknown permission {name:?} (no role grants it)"
            ))),
            "scope" => Ok(has_scope(name)),
            _ => Err(ConfigError::new(format!(
                "{at}: unknown policy kind {kind:?}"
            ))),
        }
    }
}

impl PolicyFile {
    /// Parses and validates `text`. A successful load is audited (`config.loaded`, with the
    /// SHA-256 of the text as `details.sha256`, so an incident review can tell which version was
    /// in force).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file = Self::parse_toml(text)?;
        crate::audit::global().record(
            crate::audit::AuditEvent::new(crate::audit::EventType::ConfigLoaded)
                .with_reason_code("policy_file")
                .with_detail("component", "policy_file")
                .with_detail("sha256", crate::audit::chain::sha256_hex(text.as_bytes())),
        );
        Ok(file)
    }

    fn parse_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| ConfigError::new(format!("policy file: {e}")))?;
        for (role, def) in &raw.roles {
            for parent in &def.inherits {
                if !raw.roles.contains_key(parent) {
                    return Err(ConfigError::new(format!(
                        "roles.{role}.inherits: unknown role {parent:?}"
                    )));
                }
            }
        }
        let mut rbac = Rbac::builder();
        for (role, def) in &raw.roles {
            rbac = rbac.role(role.clone());
            for parent in &def.inherits {
                rbac = rbac.inherit(role.clone(), parent.clone());
            }
            for permission in &def.permissions {
                rbac = rbac.grant(role.clone(), permission.clone());
            }
        }
        let rbac = rbac.build()?;
        let validator = Validator {
            roles: &raw.roles,
            permissions: raw
                .roles
                .values()
                .flat_map(|r| r.permissions.iter().map(String::as_str))
                .collect(),
        };
        let mut routes = BTreeMap::new();
        for (i, route) in raw.routes.iter().enumerate() {
            let at = format!("routes[{i}] ({} {})", route.method, route.path);
            let method = route.method.to_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                return Err(ConfigError::new(format!("{at}: unsupported method")));
            }
            if !route.path.starts_with('/') {
                return Err(ConfigError::new(format!("{at}: path must start with '/'")));
            }
            let policy = validator.policy(&route.policy, &format!("{at}.policy"))?;
            if routes
                .insert((method, route.path.clone()), policy)
                .is_some()
            {
                return Err(ConfigError::new(format!("{at}: declared twice")));
            }
        }
        let mut grpc_methods = BTreeMap::new();
        let mut grpc_services = BTreeMap::new();
        for (i, entry) in raw.grpc.iter().enumerate() {
            let at = format!("grpc[{i}]");
            let policy = validator.policy(&entry.policy, &format!("{at}.policy"))?;
            let duplicate = match (&entry.method, &entry.service) {
                (Some(method), None) => grpc_methods.insert(method.clone(), policy).is_some(),
                (None, Some(service)) => grpc_services.insert(service.clone(), policy).is_some(),
                _ => {
                    return Err(ConfigError::new(format!(
                        "{at}: needs exactly one of method, service"
                    )));
                }
            };
            if duplicate {
                return Err(ConfigError::new(format!("{at}: declared twice")));
            }
        }
        let file = Self {
            rbac,
            routes,
            grpc_methods,
            grpc_services,
        };
        // Validates the gRPC names.
        drop(file.method_policies().build()?);
        Ok(file)
    }

    /// Reads, parses and validates the file at `path`.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(format!("cannot read policy file {}: {e}", path.display()))
        })?;
        Self::from_toml(&text)
    }

    /// The role tables.
    pub fn rbac(&self) -> &Rbac {
        &self.rbac
    }

    /// The policy of `method path`; an error if the file does not configure it.
    pub fn policy(&self, method: &str, path: &str) -> Result<SharedPolicy, ConfigError> {
        self.routes
            .get(&(method.to_ascii_uppercase(), path.to_owned()))
            .cloned()
            .ok_or_else(|| {
                ConfigError::new(format!("policy file has no policy for {method} {path}"))
            })
    }

    /// The gRPC entries as [`MethodPolicies`] (with this file's roles).
    pub fn method_policies(&self) -> MethodPolicies {
        let mut policies = MethodPolicies::new().with_rbac(self.rbac.clone());
        for (method, policy) in &self.grpc_methods {
            policies = policies.method(method, policy.clone());
        }
        for (service, policy) in &self.grpc_services {
            policies = policies.service(service, policy.clone());
        }
        policies
    }

    /// Checks that the router serves exactly the configured routes: a configured route the
    /// router lacks is probably a typo; a served route the file lacks is impossible (every
    /// route's policy came from here) unless policies were mixed with code.
    pub fn check_covers(&self, report: &RouteReport) -> Result<(), ConfigError> {
        let served: BTreeSet<(String, String)> = report
            .routes
            .iter()
            .map(|e| (e.method.clone(), e.route.clone()))
            .collect();
        let missing: Vec<String> = self
            .routes
            .keys()
            .filter(|key| !served.contains(*key))
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::new(format!(
                "policy file configures routes the service does not serve: {}",
                missing.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precise_errors() {
        let cases = [
            (
                "[roles.a]\ninherits = [\"b\"]",
                "roles.a.inherits: unknown role \"b\"",
            ),
            (
                "[roles.a]\ninherits = [\"b\"]\n[roles.b]\ninherits = [\"a\"]",
                "cycle",
            ),
            ("[roles.a]\ncolour = 1", "unknown field"),
            (
                "[[routes]]\nmethod = \"GET\"\npath = \"/x\"\npolicy = \"permission:p\"",
                "unknown permission \"p\"",
            ),
            (
                "[[routes]]\nmethod = \"BREW\"\npath = \"/x\"\npolicy = \"public\"",
                "unsupported method",
            ),
            (
                "[[routes]]\nmethod = \"GET\"\npath = \"x\"\npolicy = \"public\"",
                "must start with '/'",
            ),
            (
                "[[routes]]\nmethod = \"GET\"\npath = \"/x\"\npolicy = \"wat\"",
                "unknown policy \"wat\"",
            ),
            (
                "[[routes]]\nmethod = \"GET\"\npath = \"/x\"\npolicy = { any_of = [] }",
                "empty list",
            ),
            (
                "[[routes]]\nmethod = \"GET\"\npath = \"/x\"\npolicy = { all_of = [\"public\"], not = \"public\" }",
                "exactly one",
            ),
            (
                "[[routes]]\nmethod = \"GET\"\npath = \"/x\"\npolicy = \"public\"\n[[routes]]\nmethod = \"get\"\npath = \"/x\"\npolicy = \"deny\"",
                "declared twice",
            ),
            (
                "[[grpc]]\nmethod = \"nope\"\npolicy = \"public\"",
                "not a gRPC method path",
            ),
            (
                "[[grpc]]\npolicy = \"public\"",
                "exactly one of method, service",
            ),
        ];
        for (text, want) in cases {
            let err = PolicyFile::from_toml(text).unwrap_err();
            assert!(err.message().contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn nested_policies_and_grpc() {
        let file = PolicyFile::from_toml(
            r#"
            [roles.admin]
            permissions = ["stock:write"]
            [[routes]]
            method = "post"
            path = "/stock"
            policy = { any_of = ["role:admin", { all_of = ["scope:stock", { not = "scope:read-only" }] }] }
            [[grpc]]
            service = "inv.Stock"
            policy = "authenticated"
            [[grpc]]
            method = "/inv.Stock/Write"
            policy = "permission:stock:write"
            "#,
        )
        .unwrap();
        assert_eq!(
            &**file.policy("POST", "/stock").unwrap().id(),
            "any_of(has_role(admin), all_of(has_scope(stock), not(has_scope(read-only))))"
        );
        let report = file.method_policies().build().unwrap().report();
        assert_eq!(
            report.policy_of("GRPC", "/inv.Stock/Write"),
            Some("has_permission(stock:write)")
        );
        assert!(file.check_covers(&RouteReport { routes: vec![] }).is_err());
    }
}
