//! Authorization: may this caller do this?
//!
//! A [`Policy`] evaluates a [`PolicyContext`] (principal or anonymous, method, matched route
//! template, path parameters, client address, the [`Rbac`] tables and the clock) to a
//! [`Decision`]. Policies are plain values: build them from the built-ins and combinators here,
//! or implement [`Policy`] (or pass a closure to [`policy_fn`]).
//!
//! | built-in | allows |
//! |---|---|
//! | [`public()`] | everyone, anonymous included |
//! | [`authenticated()`] | any principal |
//! | [`has_role`]`(r)` | principals holding `r` directly or through the role hierarchy |
//! | [`has_any_role`]`([..])` | principals holding at least one of the roles |
//! | [`has_permission`]`(p)` | principals granted `p` directly, as a scope, or through a role |
//! | [`has_scope`]`(s)` | principals whose token carries scope `s` |
//! | [`all_of`], [`any_of`], [`not`] | the usual logic |
//!
//! A denial says why ([`DenyCode`]): not authenticated (rendered 401), forbidden by a rule, or
//! no rule permits (both rendered 403).
//!
//! ```
//! use http::Method;
//! use portcullis::authz::{Decision, Policy, PolicyContext, Rbac, all_of, has_role, not, has_scope};
//! use portcullis::principal::{AuthMethod, Principal};
//!
//! let rbac = Rbac::builder()
//!     .inherit("admin", "editor")
//!     .inherit("editor", "reader")
//!     .build()
//!     .unwrap();
//! let admin = Principal::builder("root", AuthMethod::Other("test".into())).roles(["admin"]).build();
//!
//! let policy = all_of([has_role("reader"), not(has_scope("read-only"))]);
//! let ctx = PolicyContext::new(&Method::GET, "/documents/{id}")
//!     .with_principal(Some(&admin))
//!     .with_rbac(&rbac);
//! assert!(policy.evaluate(&ctx).is_allow());
//! assert_eq!(policy.describe(), "all_of(has_role(reader), not(has_scope(read-only)))");
//! ```

pub mod abac;
#[cfg(feature = "cedar")]
pub mod cedar;
#[cfg(feature = "config")]
pub mod config;
pub mod decision;
pub mod guard;
mod resource;
pub mod shadow;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use http::Method;

use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::principal::Principal;

pub use guard::{AuthzConfig, PolicyGuard, PolicyGuardLayer};
pub use resource::{Authorized, Resource, ResourcePolicies};

/// Why a policy denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyCode {
    /// The caller is anonymous and the policy needs a principal (rendered 401).
    NotAuthenticated,
    /// A rule explicitly forbids this (for example a `not(..)`).
    ForbiddenByRule,
    /// No rule grants this.
    NoRulePermits,
}

impl DenyCode {
    /// A stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            DenyCode::NotAuthenticated => "not_authenticated",
            DenyCode::ForbiddenByRule => "forbidden_by_rule",
            DenyCode::NoRulePermits => "no_rule_permits",
        }
    }
}

/// The details of a denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why.
    pub code: DenyCode,
    /// The id of the policy that denied (its description for built-ins).
    pub policy_id: Arc<str>,
    /// A short human explanation for the audit log.
    pub reason: Cow<'static, str>,
}

/// The outcome of evaluating a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied.
    Deny(Denial),
}

impl Decision {
    /// A denial.
    pub fn deny(
        code: DenyCode,
        policy_id: impl Into<Arc<str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Decision::Deny(Denial {
            code,
            policy_id: policy_id.into(),
            reason: reason.into(),
        })
    }
    /// Whether this is [`Decision::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Roles, their hierarchy, and the permissions each role grants.
///
/// Built once at startup; cycles and self-inheritance are configuration errors.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    /// role -> every role it implies (including itself); sorted by role, each list sorted, in
    /// [`name_order`]. Sorted slices searched by comparison beat hashing for the short names
    /// and small tables of real role sets (see `benches/authz.rs`).
    implied: Box<[(String, Box<[String]>)]>,
    /// role -> every permission it grants (including inherited ones); sorted likewise.
    permissions: Box<[(String, Box<[String]>)]>,
    declared: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
}

impl Rbac {
    /// Starts an RBAC table.
    pub fn builder() -> RbacBuilder {
        RbacBuilder::default()
    }

    /// Whether a principal holding `roles` holds `role`, directly or by inheritance.
    pub fn grants_role(&self, roles: &[String], role: &str) -> bool {
        roles.iter().any(|r| {
            r == role || table_get(&self.implied, r).is_some_and(|set| sorted_contains(set, role))
        })
    }

    /// Whether a principal holding `roles` is granted `permission` by one of them.
    pub fn grants_permission(&self, roles: &[String], permission: &str) -> bool {
        roles.iter().any(|r| {
            table_get(&self.permissions, r).is_some_and(|set| sorted_contains(set, permission))
        })
    }

    /// Every declared role with the roles it inherits directly and the permissions it grants
    /// directly, for reports.
    pub fn roles(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>, &BTreeSet<String>)> {
        self.declared
            .iter()
            .map(|(role, (inherits, perms))| (role.as_str(), inherits, perms))
    }

    /// Whether `role` was declared.
    pub fn knows_role(&self, role: &str) -> bool {
        self.declared.contains_key(role)
    }

    /// Every role holding `role` implies (itself included), when it was declared.
    #[cfg_attr(
        not(feature = "cedar"),
        expect(dead_code, reason = "used by the cedar feature")
    )]
    pub(crate) fn implied_roles(&self, role: &str) -> Option<&[String]> {
        table_get(&self.implied, role)
    }
}

/// The order of the [`Rbac`] tables: by length, then byte by byte. Names of different lengths
/// (most pairs) compare without reading them, and the inlined byte loop beats a `memcmp` call
/// on names this short.
fn name_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.bytes().cmp(b.bytes()))
}

/// The list of `key` in a table sorted by key in [`name_order`].
fn table_get<'a>(table: &'a [(String, Box<[String]>)], key: &str) -> Option<&'a [String]> {
    table
        .binary_search_by(|(k, _)| name_order(k, key))
        .ok()
        .map(|i| &*table[i].1)
}

/// Whether a list sorted in [`name_order`] holds `item`.
fn sorted_contains(sorted: &[String], item: &str) -> bool {
    sorted.binary_search_by(|s| name_order(s, item)).is_ok()
}

/// Sorts names into a list for [`sorted_contains`] and [`table_get`].
fn sorted<T>(items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> &str) -> Box<[T]> {
    let mut list: Vec<T> = items.into_iter().collect();
    list.sort_unstable_by(|a, b| name_order(key(a), key(b)));
    list.into_boxed_slice()
}

/// Builds an [`Rbac`].
#[derive(Debug, Default)]
#[must_use]
pub struct RbacBuilder {
    declared: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
}

impl RbacBuilder {
    /// Declares a role with no parents and no permissions (useful for reports).
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.declared.entry(role.into()).or_default();
        self
    }
    /// `senior` inherits everything `junior` has (`inherit("admin", "editor")`).
    pub fn inherit(mut self, senior: impl Into<String>, junior: impl Into<String>) -> Self {
        let junior = junior.into();
        self.declared.entry(junior.clone()).or_default();
        self.declared
            .entry(senior.into())
            .or_default()
            .0
            .insert(junior);
        self
    }
    /// `role` grants `permission`.
    pub fn grant(mut self, role: impl Into<String>, permission: impl Into<String>) -> Self {
        self.declared
            .entry(role.into())
            .or_default()
            .1
            .insert(permission.into());
        self
    }
    /// Checks the hierarchy for cycles and precomputes the closures.
    pub fn build(self) -> Result<Rbac, ConfigError> {
        let mut implied = Vec::with_capacity(self.declared.len());
        let mut permissions = Vec::with_capacity(self.declared.len());
        for role in self.declared.keys() {
            let mut seen = HashSet::new();
            let mut perms = HashSet::new();
            let mut stack = vec![(role.clone(), vec![role.clone()])];
            while let Some((current, path)) = stack.pop() {
                if !seen.insert(current.clone()) {
                    continue;
                }
                if let Some((parents, granted)) = self.declared.get(&current) {
                    perms.extend(granted.iter().cloned());
                    for parent in parents {
                        if path.contains(parent) {
                            return Err(ConfigError::new(format!(
                                "role hierarchy has a cycle: {} -> {parent}",
                                path.join(" -> ")
                            )));
                        }
                        let mut next = path.clone();
                        next.push(parent.clone());
                        stack.push((parent.clone(), next));
                    }
                }
            }
            implied.push((role.clone(), sorted(seen, |s| s.as_str())));
            permissions.push((role.clone(), sorted(perms, |s| s.as_str())));
        }
        Ok(Rbac {
            implied: sorted(implied, |(role, _)| role.as_str()),
            permissions: sorted(permissions, |(role, _)| role.as_str()),
            declared: self.declared,
        })
    }
}

static EMPTY_RBAC: LazyLock<Rbac> = LazyLock::new(Rbac::default);
static SYSTEM_CLOCK: SystemClock = SystemClock;

/// What a policy sees.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PolicyContext<'a> {
    /// The caller, or `None` when anonymous.
    pub principal: Option<&'a Principal>,
    /// The request method.
    pub method: &'a Method,
    /// The matched route template (`/documents/{id}`) or gRPC method path, never the raw path.
    pub route: &'a str,
    /// Path parameters, decoded, when the guard collected them.
    pub params: &'a [(&'a str, &'a str)],
    /// The client address, when known.
    pub client_ip: Option<IpAddr>,
    /// The role tables.
    pub rbac: &'a Rbac,
    /// The time source.
    pub clock: &'a dyn Clock,
    /// Attributes of the resource being accessed, when a handler authorizes a loaded resource.
    pub resource: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// Whether the request is gRPC (`route` is then the method path `/package.Service/Method`).
    pub grpc: bool,
}

impl<'a> PolicyContext<'a> {
    /// A context for an anonymous request with an empty [`Rbac`] and the system clock.
    pub fn new(method: &'a Method, route: &'a str) -> Self {
        Self {
            principal: None,
            method,
            route,
            params: &[],
            client_ip: None,
            rbac: &EMPTY_RBAC,
            clock: &SYSTEM_CLOCK,
            resource: None,
            grpc: false,
        }
    }
    /// Marks the request as gRPC (`route` is then the method path).
    pub fn with_grpc(mut self, grpc: bool) -> Self {
        self.grpc = grpc;
        self
    }
    /// Sets the resource attributes.
    pub fn with_resource(
        mut self,
        resource: Option<&'a serde_json::Map<String, serde_json::Value>>,
    ) -> Self {
        self.resource = resource;
        self
    }
    /// Sets the principal.
    pub fn with_principal(mut self, principal: Option<&'a Principal>) -> Self {
        self.principal = principal;
        self
    }
    /// Sets the path parameters.
    pub fn with_params(mut self, params: &'a [(&'a str, &'a str)]) -> Self {
        self.params = params;
        self
    }
    /// Sets the client address.
    pub fn with_client_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.client_ip = ip;
        self
    }
    /// Sets the role tables.
    pub fn with_rbac(mut self, rbac: &'a Rbac) -> Self {
        self.rbac = rbac;
        self
    }
    /// Sets the clock.
    pub fn with_clock(mut self, clock: &'a dyn Clock) -> Self {
        self.clock = clock;
        self
    }
    /// One path parameter by name.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }
}

/// An authorization rule.
pub trait Policy: Send + Sync + 'static {
    /// Decides. Must be cheap and must not block: it runs on every request.
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision;
    /// A human-readable description, used in route reports and as the policy id.
    fn describe(&self) -> String;
    /// Whether the guard must collect path parameters for this policy. On by default, so a
    /// policy that reads [`PolicyContext::params`] always sees them; a policy that never does
    /// may return `false` to save the per-request allocation (the built-ins do).
    fn uses_path_params(&self) -> bool {
        true
    }
}

/// A shared, cloneable policy. Every built-in returns one; combinators take them.
#[derive(Clone)]
pub struct SharedPolicy {
    policy: Arc<dyn Policy>,
    id: Arc<str>,
}

impl SharedPolicy {
    /// Shares `policy`; its id is its description.
    pub fn new(policy: impl Policy) -> Self {
        let id: Arc<str> = Arc::from(policy.describe());
        Self {
            policy: Arc::new(policy),
            id,
        }
    }
    /// The policy id (its description, computed once).
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }
}

impl fmt::Debug for SharedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl Policy for SharedPolicy {
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        self.policy.evaluate(ctx)
    }
    fn describe(&self) -> String {
        self.id.to_string()
    }
    fn uses_path_params(&self) -> bool {
        self.policy.uses_path_params()
    }
}

struct Public;
impl Policy for Public {
    fn evaluate(&self, _: &PolicyContext<'_>) -> Decision {
        Decision::Allow
    }
    fn describe(&self) -> String {
        "public".into()
    }
    fn uses_path_params(&self) -> bool {
        false
    }
}

/// Allows everyone, anonymous callers included. Being explicit is the point: a route without a
/// policy cannot be declared.
pub fn public() -> SharedPolicy {
    SharedPolicy::new(Public)
}

struct DenyAll;
impl Policy for DenyAll {
    fn evaluate(&self, _: &PolicyContext<'_>) -> Decision {
        Decision::deny(DenyCode::ForbiddenByRule, "deny_all", "route is closed")
    }
    fn describe(&self) -> String {
        "deny_all".into()
    }
    fn uses_path_params(&self) -> bool {
        false
    }
}

/// Denies everyone (a closed route that should still be listed in reports).
pub fn deny_all() -> SharedPolicy {
    SharedPolicy::new(DenyAll)
}

/// Builds a principal-based predicate policy.
struct PrincipalPredicate<F> {
    description: String,
    id: Arc<str>,
    check: F,
}

impl<F> Policy for PrincipalPredicate<F>
where
    F: Fn(&Principal, &PolicyContext<'_>) -> bool + Send + Sync + 'static,
{
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        match ctx.principal {
            None => Decision::deny(
                DenyCode::NotAuthenticated,
                self.id.clone(),
                "anonymous caller",
            ),
            Some(p) if (self.check)(p, ctx) => Decision::Allow,
            Some(_) => Decision::deny(DenyCode::NoRulePermits, self.id.clone(), "not granted"),
        }
    }
    fn describe(&self) -> String {
        self.description.clone()
    }
    // The built-in principal predicates read roles, scopes and permissions only.
    fn uses_path_params(&self) -> bool {
        false
    }
}

fn principal_predicate<F>(description: String, check: F) -> SharedPolicy
where
    F: Fn(&Principal, &PolicyContext<'_>) -> bool + Send + Sync + 'static,
{
    let id = Arc::from(description.as_str());
    SharedPolicy::new(PrincipalPredicate {
        description,
        id,
        check,
    })
}

/// Allows any authenticated principal.
pub fn authenticated() -> SharedPolicy {
    principal_predicate("authenticated".into(), |_, _| true)
}

/// Allows principals holding `role`, directly or through the [`Rbac`] hierarchy.
pub fn has_role(role: impl Into<String>) -> SharedPolicy {
    let role = role.into();
    principal_predicate(format!("has_role({role})"), move |p, ctx| {
        ctx.rbac.grants_role(p.roles(), &role)
    })
}

/// Allows principals holding at least one of `roles`.
pub fn has_any_role<I, R>(roles: I) -> SharedPolicy
where
    I: IntoIterator<Item = R>,
    R: Into<String>,
{
    let roles: Vec<String> = roles.into_iter().map(Into::into).collect();
    principal_predicate(
        format!("has_any_role({})", roles.join(", ")),
        move |p, ctx| roles.iter().any(|r| ctx.rbac.grants_role(p.roles(), r)),
    )
}

/// Allows principals granted `permission` directly, as a scope, or through one of their roles.
pub fn has_permission(permission: impl Into<String>) -> SharedPolicy {
    let permission = permission.into();
    principal_predicate(format!("has_permission({permission})"), move |p, ctx| {
        p.has_direct_permission(&permission) || ctx.rbac.grants_permission(p.roles(), &permission)
    })
}

/// Allows principals whose credential carries `scope`.
pub fn has_scope(scope: impl Into<String>) -> SharedPolicy {
    let scope = scope.into();
    principal_predicate(format!("has_scope({scope})"), move |p, _| {
        p.has_scope(&scope)
    })
}

struct AllOf(Vec<SharedPolicy>);
impl Policy for AllOf {
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        // An empty list (a configuration that lost its rules) must not open the route.
        if self.0.is_empty() {
            return Decision::deny(
                DenyCode::NoRulePermits,
                Arc::from("all_of()"),
                "empty all_of",
            );
        }
        for policy in &self.0 {
            let decision = policy.evaluate(ctx);
            if !decision.is_allow() {
                return decision;
            }
        }
        Decision::Allow
    }
    fn describe(&self) -> String {
        describe_list("all_of", &self.0)
    }
    fn uses_path_params(&self) -> bool {
        self.0.iter().any(Policy::uses_path_params)
    }
}

/// Allows when every policy allows. The first denial decides; the empty list denies (a list of
/// requirements that came out empty, say from configuration, must not make a route public).
pub fn all_of(policies: impl IntoIterator<Item = SharedPolicy>) -> SharedPolicy {
    SharedPolicy::new(AllOf(policies.into_iter().collect()))
}

struct AnyOf {
    policies: Vec<SharedPolicy>,
    id: Arc<str>,
}
impl Policy for AnyOf {
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        let mut anonymous_denied = false;
        for policy in &self.policies {
            match policy.evaluate(ctx) {
                Decision::Allow => return Decision::Allow,
                Decision::Deny(d) => anonymous_denied |= d.code == DenyCode::NotAuthenticated,
            }
        }
        let code = if anonymous_denied && ctx.principal.is_none() {
            DenyCode::NotAuthenticated
        } else {
            DenyCode::NoRulePermits
        };
        Decision::deny(code, self.id.clone(), "no alternative allowed")
    }
    fn describe(&self) -> String {
        describe_list("any_of", &self.policies)
    }
    fn uses_path_params(&self) -> bool {
        self.policies.iter().any(Policy::uses_path_params)
    }
}

/// Allows when at least one policy allows (the empty list denies).
pub fn any_of(policies: impl IntoIterator<Item = SharedPolicy>) -> SharedPolicy {
    let policies: Vec<SharedPolicy> = policies.into_iter().collect();
    let id = Arc::from(describe_list("any_of", &policies));
    SharedPolicy::new(AnyOf { policies, id })
}

struct Not {
    inner: SharedPolicy,
    id: Arc<str>,
}
impl Policy for Not {
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        match self.inner.evaluate(ctx) {
            Decision::Allow => Decision::deny(
                DenyCode::ForbiddenByRule,
                self.id.clone(),
                "negated rule matched",
            ),
            // "Who are you?" is not an answer to negate: an anonymous caller stays refused.
            Decision::Deny(d)
                if d.code == DenyCode::NotAuthenticated && ctx.principal.is_none() =>
            {
                Decision::Deny(d)
            }
            Decision::Deny(_) => Decision::Allow,
        }
    }
    fn describe(&self) -> String {
        format!("not({})", self.inner.id())
    }
    fn uses_path_params(&self) -> bool {
        self.inner.uses_path_params()
    }
}

/// Allows exactly when `policy` denies, except that a denial because the caller is anonymous
/// stays a denial (`not(has_role("suspended"))` does not admit anonymous callers).
pub fn not(policy: SharedPolicy) -> SharedPolicy {
    let id = Arc::from(format!("not({})", policy.id()));
    SharedPolicy::new(Not { inner: policy, id })
}

fn describe_list(name: &str, policies: &[SharedPolicy]) -> String {
    let inner: Vec<&str> = policies.iter().map(|p| &**p.id()).collect();
    format!("{name}({})", inner.join(", "))
}

struct PolicyFn<F> {
    id: Arc<str>,
    params: bool,
    f: F,
}
impl<F> Policy for PolicyFn<F>
where
    F: Fn(&PolicyContext<'_>) -> bool + Send + Sync + 'static,
{
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        if (self.f)(ctx) {
            Decision::Allow
        } else if ctx.principal.is_none() {
            Decision::deny(
                DenyCode::NotAuthenticated,
                self.id.clone(),
                "anonymous caller",
            )
        } else {
            Decision::deny(DenyCode::NoRulePermits, self.id.clone(), "predicate false")
        }
    }
    fn describe(&self) -> String {
        self.id.to_string()
    }
    fn uses_path_params(&self) -> bool {
        self.params
    }
}

/// A policy from a closure, named `id` in reports and audit events. The guard collects path
/// parameters for it, so the closure can read [`PolicyContext::param`].
///
/// ```
/// use http::Method;
/// use portcullis::authz::{Policy, PolicyContext, policy_fn};
///
/// let own_profile = policy_fn("own_profile", |ctx| {
///     ctx.principal.zip(ctx.param("user")).is_some_and(|(p, user)| p.subject() == user)
/// });
/// let ctx = PolicyContext::new(&Method::GET, "/users/{user}");
/// assert!(!own_profile.evaluate(&ctx).is_allow());
/// ```
pub fn policy_fn<F>(id: impl Into<String>, f: F) -> SharedPolicy
where
    F: Fn(&PolicyContext<'_>) -> bool + Send + Sync + 'static,
{
    SharedPolicy::new(PolicyFn {
        id: Arc::from(id.into()),
        params: true,
        f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::AuthMethod;
    use proptest::prelude::*;

    fn principal(roles: &[&str]) -> Principal {
        Principal::builder("u", AuthMethod::Other("t".into()))
            .roles(roles.iter().copied())
            .build()
    }

    fn rbac() -> Rbac {
        Rbac::builder()
            .inherit("admin", "editor")
            .inherit("editor", "reader")
            .grant("reader", "documents:read")
            .grant("editor", "documents:write")
            .build()
            .unwrap()
    }

    #[test]
    fn hierarchy_matrix() {
        let rbac = rbac();
        let table = [
            ("reader", [true, false, false]),
            ("editor", [true, true, false]),
            ("admin", [true, true, true]),
            ("other", [false, false, false]),
        ];
        for (role, expect) in table {
            let p = principal(&[role]);
            for (target, want) in ["reader", "editor", "admin"].iter().zip(expect) {
                let ctx = PolicyContext::new(&Method::GET, "/")
                    .with_principal(Some(&p))
                    .with_rbac(&rbac);
                assert_eq!(
                    has_role(*target).evaluate(&ctx).is_allow(),
                    want,
                    "{role} as {target}"
                );
            }
        }
        let admin = principal(&["admin"]);
        let ctx = PolicyContext::new(&Method::GET, "/")
            .with_principal(Some(&admin))
            .with_rbac(&rbac);
        assert!(has_permission("documents:read").evaluate(&ctx).is_allow());
        assert!(has_permission("documents:write").evaluate(&ctx).is_allow());
        assert!(!has_permission("documents:purge").evaluate(&ctx).is_allow());
    }

    #[test]
    fn cycles_are_refused() {
        let err = Rbac::builder()
            .inherit("a", "b")
            .inherit("b", "a")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("cycle"));
    }

    #[test]
    fn anonymous_gets_not_authenticated() {
        let ctx = PolicyContext::new(&Method::GET, "/");
        for policy in [
            authenticated(),
            has_role("x"),
            any_of([has_role("x"), has_scope("y")]),
        ] {
            match policy.evaluate(&ctx) {
                Decision::Deny(d) => assert_eq!(d.code, DenyCode::NotAuthenticated),
                Decision::Allow => panic!("anonymous allowed by {policy:?}"),
            }
        }
        assert!(public().evaluate(&ctx).is_allow());
        assert!(!deny_all().evaluate(&ctx).is_allow());
        assert!(!any_of([]).evaluate(&ctx).is_allow());
        assert!(!all_of([]).evaluate(&ctx).is_allow());
        // Negating a rule that needs a caller does not admit anonymous callers.
        match not(has_role("suspended")).evaluate(&ctx) {
            Decision::Deny(d) => assert_eq!(d.code, DenyCode::NotAuthenticated),
            Decision::Allow => panic!("not() admitted an anonymous caller"),
        }
    }

    fn leaf(i: u8) -> SharedPolicy {
        match i % 5 {
            0 => public(),
            1 => authenticated(),
            2 => has_role("reader"),
            3 => has_role("admin"),
            _ => has_scope("s"),
        }
    }

    proptest! {
        #[test]
        fn combinators_agree_with_definitions(
            leaves in proptest::collection::vec(0u8..5, 0..5),
            roles in proptest::collection::vec(prop_oneof![Just("reader"), Just("admin"), Just("x")], 0..3),
            anonymous in any::<bool>(),
        ) {
            let rbac = rbac();
            let p = principal(&roles);
            let ctx = PolicyContext::new(&Method::GET, "/")
                .with_principal(if anonymous { None } else { Some(&p) })
                .with_rbac(&rbac);
            let policies: Vec<SharedPolicy> = leaves.iter().map(|i| leaf(*i)).collect();
            let each: Vec<bool> = policies.iter().map(|q| q.evaluate(&ctx).is_allow()).collect();
            let needs_caller: Vec<bool> = policies
                .iter()
                .map(|q| matches!(q.evaluate(&ctx), Decision::Deny(d) if d.code == DenyCode::NotAuthenticated))
                .collect();
            prop_assert_eq!(
                all_of(policies.clone()).evaluate(&ctx).is_allow(),
                !each.is_empty() && each.iter().all(|b| *b)
            );
            prop_assert_eq!(any_of(policies.clone()).evaluate(&ctx).is_allow(), each.iter().any(|b| *b));
            for ((q, allowed), needs_caller) in policies.iter().zip(&each).zip(&needs_caller) {
                let expected = !(*allowed || (anonymous && *needs_caller));
                prop_assert_eq!(not(q.clone()).evaluate(&ctx).is_allow(), expected);
            }
        }
    }
}
