//! Attribute-based rules: conditions over the principal, the request and the resource.
//!
//! A [`Condition`] compares [`Operand`]s: principal claims ([`claim`]), the subject and tenant,
//! path parameters ([`param`]), resource attributes ([`resource`]), the method and route, and
//! literals; plus client-network and time-window checks read from the
//! [`PolicyContext`] (time through its [`Clock`](crate::clock::Clock)). [`rule`] turns a
//! condition into a policy that composes with the RBAC built-ins.
//!
//! ```
//! use http::Method;
//! use portcullis::authz::abac::{claim, param, rule, Condition};
//! use portcullis::authz::{Policy, PolicyContext, all_of, has_role};
//! use portcullis::principal::{AuthMethod, Principal};
//!
//! // Editors of a tenant may only touch that tenant's documents, from the office network.
//! let policy = all_of([
//!     has_role("editor"),
//!     rule("same-tenant", claim("tenant").eq(param("tenant"))),
//!     rule("office-network", Condition::client_ip_in(["10.20.0.0/16"]).unwrap()),
//! ]);
//!
//! let alice = Principal::builder("alice", AuthMethod::Other("test".into()))
//!     .roles(["editor"])
//!     .attribute("tenant", "acme")
//!     .build();
//! let params = [("tenant", "acme")];
//! let ctx = PolicyContext::new(&Method::PUT, "/tenants/{tenant}/documents")
//!     .with_principal(Some(&alice))
//!     .with_params(&params)
//!     .with_client_ip(Some("10.20.3.4".parse().unwrap()));
//! assert!(policy.evaluate(&ctx).is_allow());
//!
//! let elsewhere = [("tenant", "globex")];
//! assert!(!policy.evaluate(&ctx.with_params(&elsewhere)).is_allow());
//! ```

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Decision, DenyCode, Policy, PolicyContext, SharedPolicy};
use crate::claims::lookup;
use crate::client_ip::IpNet;
use crate::error::ConfigError;

/// Something a condition reads.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Operand {
    /// A principal attribute (claim) by dotted path.
    Claim(String),
    /// The principal's subject.
    Subject,
    /// The principal's tenant.
    Tenant,
    /// A path parameter by name.
    Param(String),
    /// A resource attribute by dotted path (set by [`ResourcePolicies::authorize`](super::ResourcePolicies::authorize)).
    Resource(String),
    /// The request method.
    Method,
    /// The matched route template.
    Route,
    /// A constant.
    Literal(Value),
}

/// A principal claim by dotted path (`tenant`, `org.id`).
pub fn claim(path: impl Into<String>) -> Operand {
    Operand::Claim(path.into())
}
/// The principal's subject.
pub fn subject() -> Operand {
    Operand::Subject
}
/// The principal's tenant.
pub fn tenant() -> Operand {
    Operand::Tenant
}
/// A path parameter.
pub fn param(name: impl Into<String>) -> Operand {
    Operand::Param(name.into())
}
/// A resource attribute by dotted path.
pub fn resource(path: impl Into<String>) -> Operand {
    Operand::Resource(path.into())
}
/// A constant.
pub fn literal(value: impl Into<Value>) -> Operand {
    Operand::Literal(value.into())
}

/// An operand's value during evaluation, borrowed where possible.
#[derive(Debug, Clone, Copy)]
enum Resolved<'a> {
    Json(&'a Value),
    Str(&'a str),
    Missing,
}

impl Resolved<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Resolved::Json(Value::String(s)) => Some(s),
            Resolved::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Equality across representations; missing values equal nothing (not even each other).
    fn equals(&self, other: &Resolved<'_>) -> bool {
        match (self, other) {
            (Resolved::Missing, _) | (_, Resolved::Missing) => false,
            (Resolved::Json(Value::Null), _) | (_, Resolved::Json(Value::Null)) => false,
            (Resolved::Json(a), Resolved::Json(b)) => a == b,
            _ => match (self.as_str(), other.as_str()) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
        }
    }

    /// Whether a list-valued operand contains `item`.
    fn contains(&self, item: &Resolved<'_>) -> bool {
        match self {
            Resolved::Json(Value::Array(items)) => {
                items.iter().any(|v| Resolved::Json(v).equals(item))
            }
            _ => false,
        }
    }
}

impl Operand {
    fn resolve<'a>(&'a self, ctx: &PolicyContext<'a>) -> Resolved<'a> {
        let found = match self {
            Operand::Claim(path) => ctx
                .principal
                .and_then(|p| lookup(p.attributes(), path))
                .map(Resolved::Json),
            Operand::Subject => ctx.principal.map(|p| Resolved::Str(p.subject())),
            Operand::Tenant => ctx.principal.and_then(|p| p.tenant()).map(Resolved::Str),
            Operand::Param(name) => ctx.param(name).map(Resolved::Str),
            Operand::Resource(path) => ctx
                .resource
                .and_then(|r| lookup(r, path))
                .map(Resolved::Json),
            Operand::Method => Some(Resolved::Str(ctx.method.as_str())),
            Operand::Route => Some(Resolved::Str(ctx.route)),
            Operand::Literal(value) => Some(Resolved::Json(value)),
        };
        found.unwrap_or(Resolved::Missing)
    }

    fn reads_principal(&self) -> bool {
        matches!(self, Operand::Claim(_) | Operand::Subject | Operand::Tenant)
    }

    /// `self == other`.
    pub fn eq(self, other: Operand) -> Condition {
        Condition::Eq(self, other)
    }
    /// `self != other` (false when either side is missing).
    pub fn ne(self, other: Operand) -> Condition {
        Condition::Ne(self, other)
    }
    /// `self` is one of `values`.
    pub fn one_of<I, V>(self, values: I) -> Condition
    where
        I: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        Condition::OneOf(self, values.into_iter().map(Into::into).collect())
    }
    /// `self` (a list) contains `item`.
    pub fn contains(self, item: Operand) -> Condition {
        Condition::Contains(self, item)
    }
    /// `self` is present and not null.
    pub fn exists(self) -> Condition {
        Condition::Exists(self)
    }
}

/// A predicate over the [`PolicyContext`].
#[derive(Clone)]
#[non_exhaustive]
pub enum Condition {
    /// Both sides present and equal.
    Eq(Operand, Operand),
    /// Both sides present and different.
    Ne(Operand, Operand),
    /// The operand equals one of the values.
    OneOf(Operand, Vec<Value>),
    /// The first operand is a list containing the second.
    Contains(Operand, Operand),
    /// The operand is present and not null.
    Exists(Operand),
    /// The client address is in one of the networks.
    ClientIpIn(Vec<IpNet>),
    /// The clock's UTC time of day, in minutes since midnight, is in `[start, end)` (wrapping
    /// past midnight when `start > end`).
    TimeOfDayUtc {
        /// First minute inside the window.
        start: u16,
        /// First minute after the window.
        end: u16,
    },
    /// The clock's UTC weekday (0 = Monday ... 6 = Sunday) is in the set.
    WeekdaysUtc(Vec<u8>),
    /// Every condition holds.
    All(Vec<Condition>),
    /// At least one condition holds.
    Any(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
    /// A closure, for anything else.
    Custom(Arc<dyn Fn(&PolicyContext<'_>) -> bool + Send + Sync>),
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Eq(a, b) => write!(f, "{a:?} == {b:?}"),
            Condition::Ne(a, b) => write!(f, "{a:?} != {b:?}"),
            Condition::OneOf(a, v) => write!(f, "{a:?} in {v:?}"),
            Condition::Contains(a, b) => write!(f, "{a:?} contains {b:?}"),
            Condition::Exists(a) => write!(f, "exists {a:?}"),
            Condition::ClientIpIn(nets) => write!(f, "client_ip in {nets:?}"),
            Condition::TimeOfDayUtc { start, end } => write!(f, "utc minute in {start}..{end}"),
            Condition::WeekdaysUtc(days) => write!(f, "utc weekday in {days:?}"),
            Condition::All(c) => write!(f, "all{c:?}"),
            Condition::Any(c) => write!(f, "any{c:?}"),
            Condition::Not(c) => write!(f, "not({c:?})"),
            Condition::Custom(_) => f.write_str("custom"),
        }
    }
}

impl Condition {
    /// The client address is inside one of `networks` (`"10.0.0.0/8"`, `"::1"`).
    pub fn client_ip_in<I, S>(networks: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = networks
            .into_iter()
            .map(|n| n.as_ref().parse::<IpNet>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Condition::ClientIpIn(nets))
    }

    /// UTC office hours: `start_hour:00` to `end_hour:00`.
    pub fn utc_hours(start_hour: u8, end_hour: u8) -> Result<Self, ConfigError> {
        if start_hour > 24 || end_hour > 24 {
            return Err(ConfigError::new("hours must be within 0..=24"));
        }
        Ok(Condition::TimeOfDayUtc {
            start: u16::from(start_hour) * 60,
            end: u16::from(end_hour) * 60,
        })
    }

    /// A closure condition.
    pub fn custom(f: impl Fn(&PolicyContext<'_>) -> bool + Send + Sync + 'static) -> Self {
        Condition::Custom(Arc::new(f))
    }

    /// Both conditions.
    pub fn and(self, other: Condition) -> Self {
        Condition::All(vec![self, other])
    }
    /// Either condition.
    pub fn or(self, other: Condition) -> Self {
        Condition::Any(vec![self, other])
    }
    /// The negation.
    pub fn negate(self) -> Self {
        Condition::Not(Box::new(self))
    }

    /// Evaluates the condition.
    pub fn holds(&self, ctx: &PolicyContext<'_>) -> bool {
        match self {
            Condition::Eq(a, b) => a.resolve(ctx).equals(&b.resolve(ctx)),
            Condition::Ne(a, b) => {
                let (a, b) = (a.resolve(ctx), b.resolve(ctx));
                !matches!(a, Resolved::Missing) && !matches!(b, Resolved::Missing) && !a.equals(&b)
            }
            Condition::OneOf(a, values) => {
                let a = a.resolve(ctx);
                values.iter().any(|v| a.equals(&Resolved::Json(v)))
            }
            Condition::Contains(list, item) => list.resolve(ctx).contains(&item.resolve(ctx)),
            Condition::Exists(a) => !matches!(
                a.resolve(ctx),
                Resolved::Missing | Resolved::Json(Value::Null)
            ),
            Condition::ClientIpIn(nets) => ctx
                .client_ip
                .is_some_and(|ip| nets.iter().any(|n| n.contains(ip))),
            Condition::TimeOfDayUtc { start, end } => {
                let minute = ((ctx.clock.unix_seconds() % 86_400) / 60) as u16;
                if start <= end {
                    (*start..*end).contains(&minute)
                } else {
                    minute >= *start || minute < *end
                }
            }
            Condition::WeekdaysUtc(days) => {
                // 1970-01-01 was a Thursday (index 3 when Monday is 0).
                let weekday = ((ctx.clock.unix_seconds() / 86_400 + 3) % 7) as u8;
                days.contains(&weekday)
            }
            Condition::All(all) => all.iter().all(|c| c.holds(ctx)),
            Condition::Any(any) => any.iter().any(|c| c.holds(ctx)),
            Condition::Not(c) => !c.holds(ctx),
            Condition::Custom(f) => f(ctx),
        }
    }

    fn reads_principal(&self) -> bool {
        match self {
            Condition::Eq(a, b) | Condition::Ne(a, b) | Condition::Contains(a, b) => {
                a.reads_principal() || b.reads_principal()
            }
            Condition::OneOf(a, _) | Condition::Exists(a) => a.reads_principal(),
            Condition::All(c) | Condition::Any(c) => c.iter().any(Condition::reads_principal),
            Condition::Not(c) => c.reads_principal(),
            Condition::Custom(_) => true,
            _ => false,
        }
    }

    fn reads_params(&self) -> bool {
        match self {
            Condition::Eq(a, b) | Condition::Ne(a, b) | Condition::Contains(a, b) => {
                matches!(a, Operand::Param(_)) || matches!(b, Operand::Param(_))
            }
            Condition::OneOf(a, _) | Condition::Exists(a) => matches!(a, Operand::Param(_)),
            Condition::All(c) | Condition::Any(c) => c.iter().any(Condition::reads_params),
            Condition::Not(c) => c.reads_params(),
            Condition::Custom(_) => true,
            _ => false,
        }
    }
}

struct Rule {
    id: Arc<str>,
    condition: Condition,
    needs_principal: bool,
    needs_params: bool,
}

impl Policy for Rule {
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        if self.needs_principal && ctx.principal.is_none() {
            return Decision::deny(
                DenyCode::NotAuthenticated,
                self.id.clone(),
                "anonymous caller",
            );
        }
        if self.condition.holds(ctx) {
            Decision::Allow
        } else {
            Decision::deny(DenyCode::NoRulePermits, self.id.clone(), "condition false")
        }
    }
    fn describe(&self) -> String {
        format!("rule({})", self.id)
    }
    fn uses_path_params(&self) -> bool {
        self.needs_params
    }
}

/// A policy that allows exactly when `condition` holds. A condition that reads the principal
/// denies anonymous callers as "not authenticated" (401).
pub fn rule(id: impl Into<String>, condition: Condition) -> SharedPolicy {
    let id: Arc<str> = Arc::from(format!("rule({})", id.into()));
    SharedPolicy::new(Rule {
        needs_principal: condition.reads_principal(),
        needs_params: condition.reads_params(),
        id,
        condition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::principal::{AuthMethod, Principal};
    use http::Method;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn alice() -> Principal {
        Principal::builder("alice", AuthMethod::Other("t".into()))
            .tenant("acme")
            .attribute("groups", json!(["ops", "dev"]))
            .attribute("org", json!({"id": 7}))
            .build()
    }

    #[test]
    fn condition_matrix() {
        let p = alice();
        let params = [("tenant", "acme"), ("user", "alice")];
        let doc = json!({"owner": "alice", "tenant": "acme", "labels": ["public"]});
        let doc = doc.as_object().unwrap();
        let ctx = PolicyContext::new(&Method::GET, "/t/{tenant}")
            .with_principal(Some(&p))
            .with_params(&params)
            .with_resource(Some(doc))
            .with_client_ip(Some("10.1.2.3".parse().unwrap()));
        let table: Vec<(Condition, bool)> = vec![
            (tenant().eq(param("tenant")), true),
            (subject().eq(param("user")), true),
            (subject().eq(resource("owner")), true),
            (tenant().eq(resource("tenant")), true),
            (claim("org.id").eq(literal(7)), true),
            (claim("org.id").eq(literal("7")), false),
            (claim("missing").eq(claim("also-missing")), false),
            (claim("missing").ne(literal("x")), false),
            (subject().ne(literal("bob")), true),
            (claim("groups").contains(literal("ops")), true),
            (resource("labels").contains(literal("secret")), false),
            (Operand::Method.one_of(["GET", "HEAD"]), true),
            (Operand::Route.eq(literal("/t/{tenant}")), true),
            (claim("org").exists(), true),
            (claim("nope").exists(), false),
            (Condition::client_ip_in(["10.0.0.0/8"]).unwrap(), true),
            (Condition::client_ip_in(["192.168.0.0/16"]).unwrap(), false),
            (
                subject()
                    .eq(literal("alice"))
                    .and(tenant().eq(literal("x"))),
                false,
            ),
            (
                subject().eq(literal("alice")).or(tenant().eq(literal("x"))),
                true,
            ),
            (tenant().eq(literal("x")).negate(), true),
        ];
        for (i, (condition, want)) in table.into_iter().enumerate() {
            assert_eq!(condition.holds(&ctx), want, "case {i}: {condition:?}");
        }
    }

    #[test]
    fn time_windows_use_the_clock() {
        // 1970-01-05 was a Monday; 09:30 UTC.
        let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(4 * 86_400 + 9 * 3600 + 1800));
        let ctx = PolicyContext::new(&Method::GET, "/").with_clock(&clock);
        assert!(Condition::utc_hours(9, 17).unwrap().holds(&ctx));
        assert!(!Condition::utc_hours(17, 9).unwrap().holds(&ctx));
        assert!(Condition::WeekdaysUtc(vec![0, 1, 2, 3, 4]).holds(&ctx));
        clock.advance(Duration::from_secs(5 * 86_400)); // Saturday
        assert!(!Condition::WeekdaysUtc(vec![0, 1, 2, 3, 4]).holds(&ctx));
        clock.advance(Duration::from_secs(12 * 3600)); // Saturday 21:30
        assert!(Condition::utc_hours(17, 9).unwrap().holds(&ctx));
        assert!(Condition::utc_hours(25, 9).is_err());
    }

    #[test]
    fn rules_deny_anonymous_as_not_authenticated() {
        let ctx = PolicyContext::new(&Method::GET, "/");
        match rule("r", subject().eq(literal("a"))).evaluate(&ctx) {
            Decision::Deny(d) => assert_eq!(d.code, DenyCode::NotAuthenticated),
            Decision::Allow => panic!("anonymous allowed"),
        }
        // A condition that does not read the principal applies to anonymous callers too.
        assert!(
            rule("get", Operand::Method.eq(literal("GET")))
                .evaluate(&ctx)
                .is_allow()
        );
    }
}
