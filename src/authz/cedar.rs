//! [Cedar](https://www.cedarpolicy.com) policies as a portcullis [`Policy`] (feature `cedar`).
//!
//! [`CedarPolicy`] answers every request with a Cedar authorization call built from the
//! [`PolicyContext`]. The policies are parsed once, when the policy is built, and validated
//! against a Cedar schema in strict mode: a policy that names an unknown entity type, action or
//! attribute, or compares values of the wrong types, is refused at startup with the validator's
//! messages, never discovered on a request.
//!
//! # The Cedar request
//!
//! With namespace `Ns` ([`CedarPolicyBuilder::namespace`]; without one the types are
//! unqualified):
//!
//! | Cedar | built from |
//! |---|---|
//! | principal | `Ns::User::"<subject>"` for an authenticated caller (users and services alike); `Ns::Anonymous::"anonymous"` for an anonymous caller |
//! | roles | the user's parents are `Ns::Role::"<role>"` for every role it holds, directly or through the [`Rbac`](super::Rbac) hierarchy of the context: with admin ⊇ editor ⊇ reader (`inherit("admin", "editor")`, `inherit("editor", "reader")`), an admin's parents are `Role::"admin"`, `Role::"editor"` and `Role::"reader"`, so `principal in Ns::Role::"reader"` holds for admins. (Resolving the hierarchy here, instead of sending role entities with parents, spares Cedar a transitive closure per request; no role entity is sent, so compare roles through the principal only.) |
//! | action | `Ns::Action::"<METHOD> <route template>"` for HTTP, e.g. `Action::"GET /documents/{id}"` (a `HEAD` request uses the `GET` action unless the schema declares a `HEAD` one); `Ns::Action::"<method path>"` for gRPC, e.g. `Action::"/inventory.v1.Stock/Get"` |
//! | resource | `Ns::Route::"<route template>"` (HTTP) or `Ns::Route::"<method path>"` (gRPC): the same string the action names, so policies can grant a whole route with `resource == Route::"/documents/{id}"` or one method with the action |
//! | context | `authenticated: Bool`, `scopes: Set<String>` (the credential's scopes), `client_ip: ipaddr` (only when the address is known), and for routes whose template has parameters, `params: { <name>: String, .. }` with the decoded path parameters |
//!
//! The route template is the one the router matched, never the raw path, as for every other
//! policy. A schema for this model looks like:
//!
//! ```text
//! namespace Ns {
//!   entity Role;
//!   entity User in [Role];
//!   entity Anonymous;
//!   entity Route;
//!   type Request = { authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr };
//!   action "GET /health" appliesTo { principal: [User, Anonymous], resource: Route, context: Request };
//!   action "GET /documents/{id}" appliesTo {
//!     principal: User, resource: Route,
//!     context: { authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr, params: { id: String } },
//!   };
//! }
//! ```
//!
//! [`build`](CedarPolicyBuilder::build) checks that the schema declares `User` (member of
//! `Role`, without required attributes), `Role` and `Route`, and sends a probe
//! request for every action named like a route or gRPC method, so a context type that does not
//! match the record above (for example `client_ip` declared as required, or a missing `params`
//! record) is a startup error too. `Anonymous` is optional: an action whose principal types do
//! not include it is refused to anonymous callers.
//!
//! # Decisions
//!
//! | Cedar answer | portcullis decision |
//! |---|---|
//! | allow | [`Decision::Allow`], unless a `forbid` policy failed to evaluate (Cedar skips it): then deny, [`DenyCode::ForbiddenByRule`] (fail closed) |
//! | deny, a `forbid` policy fired | [`DenyCode::ForbiddenByRule`], `policy_id` = the ids of the forbid policies |
//! | deny, no `permit` satisfied | [`DenyCode::NotAuthenticated`] for an anonymous caller (rendered 401, as the built-in policies do), [`DenyCode::NoRulePermits`] otherwise |
//! | no action for the request in the schema, or a request the schema refuses (principal type not allowed...) | as "no permit satisfied" |
//!
//! A policy's id is its `@id("...")` annotation, or `policy<N>` in declaration order (across all
//! sources). Denials carry the reason in the decision record; the client only sees the decision
//! id.
//!
//! ```
//! use http::Method;
//! use portcullis::authz::cedar::CedarPolicy;
//! use portcullis::authz::{Decision, DenyCode, Policy, PolicyContext, Rbac};
//! use portcullis::principal::{AuthMethod, Principal};
//!
//! let policy = CedarPolicy::builder()
//!     .namespace("Docs")
//!     .schema_str(r#"
//!         namespace Docs {
//!           entity Role;
//!           entity User in [Role];
//!           entity Anonymous;
//!           entity Route;
//!           type Ctx = { authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr };
//!           action "GET /reports" appliesTo { principal: [User, Anonymous], resource: Route, context: Ctx };
//!         }
//!     "#)
//!     .policies_str(r#"
//!         @id("readers-see-reports")
//!         permit(principal in Docs::Role::"reader", action == Docs::Action::"GET /reports", resource);
//!     "#)
//!     .build()
//!     .unwrap();
//!
//! let rbac = Rbac::builder().inherit("admin", "reader").build().unwrap();
//! let admin = Principal::builder("ada", AuthMethod::Other("test".into())).roles(["admin"]).build();
//! let ctx = PolicyContext::new(&Method::GET, "/reports").with_rbac(&rbac);
//! assert!(policy.evaluate(&ctx.with_principal(Some(&admin))).is_allow());
//! match policy.evaluate(&ctx) {
//!     Decision::Deny(denial) => assert_eq!(denial.code, DenyCode::NotAuthenticated),
//!     Decision::Allow => unreachable!("anonymous callers are not readers"),
//! }
//! ```
//!
//! # Deployment caveat
//! Cedar sees only what is listed above: principal attributes (claims, tenant) and resource
//! attributes passed to [`ResourcePolicies::authorize`](super::ResourcePolicies::authorize) are
//! not part of the request, so rules over them belong in [`abac`](super::abac) policies combined
//! with this one (`all_of([cedar, rule(..)])`). The role hierarchy comes from the router's
//! [`Rbac`](super::Rbac): a router built without one gives Cedar only the roles written in the
//! credential.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Effect, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use http::Method;

use super::{Decision, DenyCode, Policy, PolicyContext, SharedPolicy};
use crate::error::ConfigError;

/// The context attribute names, in one place.
const AUTHENTICATED: &str = "authenticated";
const SCOPES: &str = "scopes";
const CLIENT_IP: &str = "client_ip";
const PARAMS: &str = "params";
/// The id of the anonymous principal entity.
const ANONYMOUS_ID: &str = "anonymous";
/// The key of gRPC actions in [`CedarPolicy::actions`] (HTTP actions are keyed by method).
const GRPC: &str = "";

/// A policy that asks Cedar. See the [module documentation](self) for the request it builds.
///
/// Build it once with [`CedarPolicy::builder`] and share it between routes with
/// [`into_shared`](Self::into_shared).
pub struct CedarPolicy {
    id: Arc<str>,
    /// Every policy (each [`Target`] holds the ones that can apply to it).
    policies: PolicySet,
    authorizer: Authorizer,
    types: Types,
    anonymous: EntityUid,
    actions: Actions,
    needs_params: bool,
    ips: IpCache,
}

impl fmt::Debug for CedarPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CedarPolicy")
            .field("id", &self.id)
            .field("policies", &self.policies.num_of_policies())
            .field(
                "actions",
                &self.actions.values().map(HashMap::len).sum::<usize>(),
            )
            .finish()
    }
}

/// Cedar `ip(..)` values of recent client addresses.
///
/// `RestrictedExpression::new_ip` runs Cedar's policy parser (on the name `ip`) every time,
/// which costs more than the whole authorization; client addresses repeat, so the expressions
/// are kept. At most [`IpCache::CAPACITY`] addresses, forgotten all at once when full (a client
/// cycling through addresses only gets the uncached cost); a contended lock is not waited for.
#[derive(Default)]
struct IpCache {
    cache: Mutex<HashMap<IpAddr, RestrictedExpression>>,
}

impl IpCache {
    const CAPACITY: usize = 4096;

    fn expression(&self, ip: IpAddr) -> RestrictedExpression {
        // Cedar's `ip()` does not read IPv4-mapped IPv6 notation: give it the IPv4 address.
        let ip = ip.to_canonical();
        let Ok(mut cache) = self.cache.try_lock() else {
            return RestrictedExpression::new_ip(ip.to_string());
        };
        if let Some(expression) = cache.get(&ip) {
            return expression.clone();
        }
        if cache.len() >= Self::CAPACITY {
            cache.clear();
        }
        let expression = RestrictedExpression::new_ip(ip.to_string());
        cache.insert(ip, expression.clone());
        expression
    }
}

/// method (or [`GRPC`]) -> route template or method path -> the Cedar action.
type Actions = HashMap<Box<str>, HashMap<Box<str>, Target>>;

/// policy id -> (source name, source text), for error locations.
type Origins = HashMap<PolicyId, (String, Arc<str>)>;

struct Types {
    user: EntityTypeName,
    role: EntityTypeName,
    anonymous: EntityTypeName,
    route: EntityTypeName,
    action: EntityTypeName,
}

/// Everything about one route or gRPC method that does not depend on the request, made once
/// at build time.
struct Target {
    action: EntityUid,
    /// The action entity with its action groups as parents (for `action in Action::"group"`).
    action_entity: Entity,
    resource: EntityUid,
    /// The route template's parameters: the context then carries `params` with exactly these.
    params: Box<[Box<str>]>,
    /// Whether the schema lets `User` / `Anonymous` be the principal of this action.
    allows_user: bool,
    allows_anonymous: bool,
    /// The policies whose action scope can match this action: the others cannot apply, so
    /// Cedar need not evaluate them (same decisions, less work per request).
    policies: PolicySet,
}

impl CedarPolicy {
    /// Starts a Cedar policy.
    pub fn builder() -> CedarPolicyBuilder {
        CedarPolicyBuilder::default()
    }

    /// Wraps the policy for use on routes (`get(handler, cedar.clone())`).
    pub fn into_shared(self) -> SharedPolicy {
        SharedPolicy::new(self)
    }

    /// How many policies were loaded.
    pub fn policy_count(&self) -> usize {
        self.policies.num_of_policies()
    }

    fn target(&self, ctx: &PolicyContext<'_>) -> Option<&Target> {
        if ctx.grpc {
            return self.actions.get(GRPC)?.get(ctx.route);
        }
        let by_method = |method: &str| self.actions.get(method)?.get(ctx.route);
        by_method(ctx.method.as_str()).or_else(|| {
            // `GET` routes also serve `HEAD` (as `SecureRouter` does).
            (ctx.method == Method::HEAD)
                .then(|| by_method(Method::GET.as_str()))
                .flatten()
        })
    }

    fn role_uid(&self, role: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.types.role.clone(), EntityId::new(role))
    }

    /// The action entity (with its action groups) and the principal entity, whose parents are
    /// every role it holds, directly or through the [`Rbac`](super::Rbac) hierarchy.
    ///
    /// The hierarchy is resolved here rather than sent as role entities with parents: Cedar
    /// would compute the transitive closure of the entity graph on every request, which costs
    /// more than the rest of the request (see `benches/authz.rs`). The decisions are the same.
    fn entities(&self, ctx: &PolicyContext<'_>, target: &Target) -> (EntityUid, Vec<Entity>) {
        let Some(principal) = ctx.principal else {
            return (self.anonymous.clone(), vec![target.action_entity.clone()]);
        };
        let uid = EntityUid::from_type_name_and_id(
            self.types.user.clone(),
            EntityId::new(principal.subject()),
        );
        let mut roles: Vec<&str> = Vec::new();
        for held in principal.roles() {
            match ctx.rbac.implied_roles(held) {
                Some(implied) => roles.extend(implied.iter().map(String::as_str)),
                None => roles.push(held),
            }
        }
        roles.sort_unstable();
        roles.dedup();
        let parents = roles.into_iter().map(|role| self.role_uid(role)).collect();
        (
            uid.clone(),
            vec![
                target.action_entity.clone(),
                Entity::new_no_attrs(uid, parents),
            ],
        )
    }

    fn context(ctx: &PolicyContext<'_>, target: &Target, ips: &IpCache) -> Result<Context, String> {
        let scopes = ctx.principal.map(|p| p.scopes()).unwrap_or_default();
        let mut pairs = Vec::with_capacity(4);
        pairs.push((
            AUTHENTICATED.to_owned(),
            RestrictedExpression::new_bool(ctx.principal.is_some()),
        ));
        pairs.push((
            SCOPES.to_owned(),
            RestrictedExpression::new_set(
                scopes
                    .iter()
                    .map(|s| RestrictedExpression::new_string(s.clone())),
            ),
        ));
        if let Some(ip) = ctx.client_ip {
            pairs.push((CLIENT_IP.to_owned(), ips.expression(ip)));
        }
        if !target.params.is_empty() {
            let mut params = Vec::with_capacity(target.params.len());
            for name in &target.params {
                let value = ctx
                    .param(name)
                    .ok_or_else(|| format!("path parameter {name} was not collected"))?;
                params.push((
                    String::from(&**name),
                    RestrictedExpression::new_string(value.to_owned()),
                ));
            }
            let params = RestrictedExpression::new_record(params)
                .map_err(|e| format!("path parameters: {e}"))?;
            pairs.push((PARAMS.to_owned(), params));
        }
        Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))
    }

    /// The denial when no permit applies: 401 material for anonymous callers.
    fn not_permitted(
        &self,
        ctx: &PolicyContext<'_>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Decision {
        let code = if ctx.principal.is_none() {
            DenyCode::NotAuthenticated
        } else {
            DenyCode::NoRulePermits
        };
        Decision::deny(code, self.id.clone(), reason)
    }

    fn effect_of(&self, id: &PolicyId) -> Option<Effect> {
        self.policies.policy(id).map(cedar_policy::Policy::effect)
    }
}

impl Policy for CedarPolicy {
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        let Some(target) = self.target(ctx) else {
            return self.not_permitted(ctx, "no Cedar action for this method and route");
        };
        // The schema accepted requests of exactly this shape at build time (see `probe`), so
        // the only check left per request is the principal type; Cedar's own validation of
        // every request and entity against the schema would repeat that work each time.
        let allowed_principal = match ctx.principal {
            None => target.allows_anonymous,
            Some(_) => target.allows_user,
        };
        if !allowed_principal {
            return self.not_permitted(ctx, "principal type not allowed for this action");
        }
        let (principal, entities) = self.entities(ctx, target);
        // `add_entities` repairs the closure of the added entities only; `from_entities` runs
        // a full strongly-connected-components pass, several times slower for these two.
        let entities = match Entities::empty().add_entities(entities, None) {
            Ok(entities) => entities,
            Err(e) => return self.not_permitted(ctx, format!("entities: {e}")),
        };
        let context = match Self::context(ctx, target, &self.ips) {
            Ok(context) => context,
            Err(e) => return self.not_permitted(ctx, e),
        };
        let request = match Request::new(
            principal,
            target.action.clone(),
            target.resource.clone(),
            context,
            None,
        ) {
            Ok(request) => request,
            Err(e) => return self.not_permitted(ctx, format!("request: {e}")),
        };
        let response = self
            .authorizer
            .is_authorized(&request, &target.policies, &entities);
        let diagnostics = response.diagnostics();
        match response.decision() {
            cedar_policy::Decision::Allow => {
                let mut errored_forbids: Vec<String> = diagnostics
                    .errors()
                    .map(|cedar_policy::AuthorizationError::PolicyEvaluationError(e)| e.policy_id())
                    .filter(|id| self.effect_of(id) == Some(Effect::Forbid))
                    .map(ToString::to_string)
                    .collect();
                if errored_forbids.is_empty() {
                    return Decision::Allow;
                }
                errored_forbids.sort();
                let ids = errored_forbids.join(",");
                let reason = format!("forbid policy {ids} failed to evaluate; failing closed");
                Decision::deny(DenyCode::ForbiddenByRule, ids, reason)
            }
            cedar_policy::Decision::Deny => {
                let mut forbids: Vec<String> =
                    diagnostics.reason().map(ToString::to_string).collect();
                if forbids.is_empty() {
                    let errors = diagnostics.errors().count();
                    return if errors == 0 {
                        self.not_permitted(ctx, "no Cedar permit policy satisfied")
                    } else {
                        let detail: Vec<String> =
                            diagnostics.errors().map(ToString::to_string).collect();
                        self.not_permitted(
                            ctx,
                            format!("no Cedar permit policy satisfied; {}", detail.join("; ")),
                        )
                    };
                }
                forbids.sort();
                let ids = forbids.join(",");
                let reason = format!("Cedar forbid policy {ids} applies");
                Decision::deny(DenyCode::ForbiddenByRule, ids, reason)
            }
        }
    }

    fn describe(&self) -> String {
        self.id.to_string()
    }

    fn uses_path_params(&self) -> bool {
        self.needs_params
    }
}

/// Where a policy or schema text comes from.
#[derive(Debug)]
enum Source {
    Text(String),
    File(PathBuf),
}

impl Source {
    /// The text and a name for messages (the path, or `inline text`).
    fn load(&self, what: &str) -> Result<(String, String), ConfigError> {
        match self {
            Source::Text(text) => Ok(("inline text".to_owned(), text.clone())),
            Source::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(format!("cannot read Cedar {what} {}: {e}", path.display()))
                })?;
                Ok((path.display().to_string(), text))
            }
        }
    }

    fn short_name(&self) -> String {
        match self {
            Source::Text(_) => "inline".to_owned(),
            Source::File(path) => path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
        }
    }
}

/// Builds a [`CedarPolicy`]. A schema and at least one policy source are required.
#[derive(Debug, Default)]
#[must_use]
pub struct CedarPolicyBuilder {
    policies: Vec<Source>,
    schemas: Vec<Source>,
    namespace: Option<String>,
}

impl CedarPolicyBuilder {
    /// Adds policies in the Cedar policy language. May be called several times; the sources
    /// are read in order (policy ids `policy<N>` count across them).
    pub fn policies_str(mut self, policies: impl Into<String>) -> Self {
        self.policies.push(Source::Text(policies.into()));
        self
    }

    /// Adds policies from a `.cedar` file, read by [`build`](Self::build).
    pub fn policies_file(mut self, path: impl AsRef<Path>) -> Self {
        self.policies.push(Source::File(path.as_ref().to_owned()));
        self
    }

    /// The schema, in the Cedar schema syntax. Required (exactly one schema).
    pub fn schema_str(mut self, schema: impl Into<String>) -> Self {
        self.schemas.push(Source::Text(schema.into()));
        self
    }

    /// The schema from a `.cedarschema` file, read by [`build`](Self::build).
    pub fn schema_file(mut self, path: impl AsRef<Path>) -> Self {
        self.schemas.push(Source::File(path.as_ref().to_owned()));
        self
    }

    /// The Cedar namespace of the entity types and actions (`Demo`, `Acme::Docs`). Default:
    /// none, so the types are `User`, `Role`, `Anonymous`, `Route` and `Action`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Reads, parses and validates everything (strict mode); any problem is an error naming
    /// the source, the policy and, where Cedar gives one, the line and column.
    pub fn build(self) -> Result<CedarPolicy, ConfigError> {
        let [schema_source] = self.schemas.as_slice() else {
            return Err(ConfigError::new(format!(
                "a Cedar policy needs exactly one schema ({} given)",
                self.schemas.len()
            )));
        };
        if self.policies.is_empty() {
            return Err(ConfigError::new(
                "a Cedar policy needs at least one policy source",
            ));
        }
        let (schema_name, schema_text) = schema_source.load("schema")?;
        let (schema, _warnings) = Schema::from_cedarschema_str(&schema_text).map_err(|e| {
            ConfigError::new(format!(
                "Cedar schema ({schema_name}): {}",
                diagnostic(&e, &schema_text)
            ))
        })?;
        let types = Types::new(self.namespace.as_deref())?;
        check_entity_types(&schema, &types)?;

        let (policies, origins) = parse_policies(&self.policies)?;
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let messages: Vec<String> = result
                .validation_errors()
                .map(|e| {
                    let origin = origins.get(e.policy_id());
                    match origin {
                        Some((name, text)) => format!("({name}) {}", diagnostic(e, text)),
                        None => e.to_string(),
                    }
                })
                .collect();
            return Err(ConfigError::new(format!(
                "Cedar policies do not validate against the schema ({schema_name}) in strict mode: {}",
                messages.join("; ")
            )));
        }

        let actions = targets(&schema, &types, &policies)?;
        let needs_params = actions
            .values()
            .flat_map(HashMap::values)
            .any(|t| !t.params.is_empty());
        let names: Vec<String> = self.policies.iter().map(Source::short_name).collect();
        let anonymous =
            EntityUid::from_type_name_and_id(types.anonymous.clone(), EntityId::new(ANONYMOUS_ID));
        Ok(CedarPolicy {
            id: Arc::from(format!("cedar({})", names.join(", "))),
            policies,
            authorizer: Authorizer::new(),
            types,
            anonymous,
            actions,
            needs_params,
            ips: IpCache::default(),
        })
    }
}

impl Types {
    fn new(namespace: Option<&str>) -> Result<Self, ConfigError> {
        let name = |basename: &str| {
            let full = match namespace {
                Some(ns) => format!("{ns}::{basename}"),
                None => basename.to_owned(),
            };
            EntityTypeName::from_str(&full).map_err(|e| {
                ConfigError::new(format!(
                    "invalid Cedar namespace {:?}: {e}",
                    namespace.unwrap_or_default()
                ))
            })
        };
        Ok(Self {
            user: name("User")?,
            role: name("Role")?,
            anonymous: name("Anonymous")?,
            route: name("Route")?,
            action: name("Action")?,
        })
    }
}

/// The schema must declare the entity types the requests use, in the shape they are sent.
fn check_entity_types(schema: &Schema, types: &Types) -> Result<(), ConfigError> {
    let declared: HashSet<&EntityTypeName> = schema.entity_types().collect();
    let mut problems = Vec::new();
    for ty in [&types.user, &types.role, &types.route] {
        if !declared.contains(ty) {
            problems.push(format!("entity type {ty} is not declared"));
        }
    }
    let user_in_role = schema
        .ancestors(&types.user)
        .is_some_and(|mut a| a.any(|parent| parent == &types.role));
    if problems.is_empty() && !user_in_role {
        problems.push(format!(
            "{} must be declared `in [{}]`",
            types.user, types.role
        ));
    }
    if problems.is_empty() {
        // Entities as requests send them (a user in its roles, without attributes), and the
        // resource and anonymous principal, which are not sent, so must not need attributes
        // either. Requests are not validated one by one at run time: this makes that safe.
        let uid = |ty: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
        };
        let mut probe = vec![
            Entity::new_no_attrs(
                uid(&types.user, "probe"),
                HashSet::from([uid(&types.role, "a")]),
            ),
            Entity::new_no_attrs(uid(&types.route, "/probe"), HashSet::new()),
        ];
        if declared.contains(&types.anonymous) {
            probe.push(Entity::new_no_attrs(
                uid(&types.anonymous, ANONYMOUS_ID),
                HashSet::new(),
            ));
        }
        if let Err(e) = Entities::from_entities(probe, Some(schema)) {
            problems.push(format!(
                "{}, {} and {} must not require attributes: {e}",
                types.user, types.route, types.anonymous
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::new(format!(
            "Cedar schema does not fit the portcullis request model: {}",
            problems.join("; ")
        )))
    }
}

/// Parses every source and gives each policy its final id (`@id` or `policy<N>`). Returns the
/// set and, per id, the source it came from (for error locations).
fn parse_policies(sources: &[Source]) -> Result<(PolicySet, Origins), ConfigError> {
    let mut set = PolicySet::new();
    let mut origins = HashMap::new();
    let mut counter = 0usize;
    for source in sources {
        let (name, text) = source.load("policies")?;
        let parsed = PolicySet::from_str(&text).map_err(|e| {
            ConfigError::new(format!(
                "Cedar policies ({name}): {}",
                diagnostic(&e, &text)
            ))
        })?;
        if parsed.num_of_templates() > 0 {
            return Err(ConfigError::new(format!(
                "Cedar policies ({name}): templates (policies with ?principal or ?resource slots) are not supported"
            )));
        }
        let text: Arc<str> = Arc::from(text);
        // `policies()` iterates in no particular order; the parser numbers them `policy<N>` in
        // source order, which is the order to keep.
        let mut parsed: Vec<&cedar_policy::Policy> = parsed.policies().collect();
        parsed.sort_by_key(|p| source_index(p.id()));
        for policy in parsed {
            let id = match policy.annotation("id") {
                Some(id) => id.to_owned(),
                None => format!("policy{counter}"),
            };
            counter += 1;
            let id = PolicyId::new(&id);
            if origins.contains_key(&id) {
                return Err(ConfigError::new(format!(
                    "Cedar policies ({name}): duplicate policy id {id}"
                )));
            }
            set.add(policy.new_id(id.clone())).map_err(|e| {
                ConfigError::new(format!("Cedar policies ({name}): policy {id}: {e}"))
            })?;
            origins.insert(id, (name.clone(), text.clone()));
        }
    }
    if set.is_empty() {
        return Err(ConfigError::new(
            "the Cedar policy sources contain no policy",
        ));
    }
    Ok((set, origins))
}

/// The position of a policy in its source, from the id the parser gave it (`policy<N>`).
fn source_index(id: &PolicyId) -> usize {
    id.to_string()
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// A Cedar error with its location (`line L, column C`) and help, when Cedar gives them.
fn diagnostic<E: miette::Diagnostic + fmt::Display + ?Sized>(error: &E, source: &str) -> String {
    let mut message = error.to_string();
    if let Some(offset) = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset())
    {
        let before = source.get(..offset).unwrap_or(source);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        message.push_str(&format!(" (line {line}, column {column})"));
    }
    if let Some(help) = error.help() {
        message.push_str(&format!("; help: {help}"));
    }
    message
}

/// The HTTP methods an action name may start with.
const HTTP_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Every action named like a route (`"GET /x"`) or gRPC method (`"/pkg.Svc/M"`), with a probe
/// request to prove the schema accepts the requests this policy will send for it.
fn targets(schema: &Schema, types: &Types, policies: &PolicySet) -> Result<Actions, ConfigError> {
    let action_entities = schema
        .action_entities()
        .map_err(|e| ConfigError::new(format!("Cedar schema actions: {e}")))?;
    let mut actions = Actions::new();
    let mut problems = Vec::new();
    for action in schema.actions() {
        if action.type_name() != &types.action {
            continue;
        }
        let name = action.id().unescaped();
        let (method, route) = if name.starts_with('/') {
            (GRPC, name)
        } else {
            match name.split_once(' ') {
                Some((method, route)) if route.starts_with('/') => {
                    if !HTTP_METHODS.contains(&method) {
                        problems.push(format!(
                            "action {name:?}: {method:?} is not an HTTP method in upper case"
                        ));
                        continue;
                    }
                    (method, route)
                }
                // An action group or an action of the application's own.
                _ => continue,
            }
        };
        let params: Box<[Box<str>]> = if method == GRPC {
            Box::default()
        } else {
            template_params(route).into_iter().map(Box::from).collect()
        };
        let (allows_user, allows_anonymous) = schema
            .principals_for_action(action)
            .map(|principals| {
                principals.fold((false, false), |(user, anonymous), ty| {
                    (
                        user || ty == &types.user,
                        anonymous || ty == &types.anonymous,
                    )
                })
            })
            .unwrap_or_default();
        let mut relevant = PolicySet::new();
        for policy in policies.policies() {
            if can_apply(policy, action, &action_entities) {
                relevant
                    .add(policy.clone())
                    .map_err(|e| ConfigError::new(format!("Cedar policy {}: {e}", policy.id())))?;
            }
        }
        let target = Target {
            action: action.clone(),
            action_entity: action_entities
                .get(action)
                .cloned()
                .unwrap_or_else(|| Entity::new_no_attrs(action.clone(), HashSet::new())),
            resource: EntityUid::from_type_name_and_id(types.route.clone(), EntityId::new(route)),
            params,
            allows_user,
            allows_anonymous,
            policies: relevant,
        };
        if let Err(problem) = probe(schema, types, &target) {
            problems.push(format!("action {name:?}: {problem}"));
        }
        actions
            .entry(Box::from(method))
            .or_default()
            .insert(Box::from(route), target);
    }
    if problems.is_empty() {
        Ok(actions)
    } else {
        Err(ConfigError::new(format!(
            "Cedar schema does not fit the portcullis request model: {}",
            problems.join("; ")
        )))
    }
}

/// Whether `policy`'s action scope can match `action` (`action in group` holds when the group
/// is the action itself or one of its ancestors in the schema's action hierarchy).
fn can_apply(policy: &cedar_policy::Policy, action: &EntityUid, hierarchy: &Entities) -> bool {
    match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => &uid == action,
        ActionConstraint::In(groups) => groups
            .iter()
            .any(|group| group == action || hierarchy.is_ancestor_of(group, action)),
    }
}

/// The parameter names of a route template (`/a/{id}/{*rest}` -> `id`, `rest`).
fn template_params(route: &str) -> Vec<&str> {
    route
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}'))
        .map(|(name, _)| name.trim_start_matches('*'))
        .collect()
}

/// Checks that the schema accepts the requests sent for `target`, with and without a client
/// address. Requests are not validated one by one at run time: this is what makes that safe.
fn probe(schema: &Schema, types: &Types, target: &Target) -> Result<(), String> {
    let principal = if target.allows_user {
        EntityUid::from_type_name_and_id(types.user.clone(), EntityId::new("probe"))
    } else if target.allows_anonymous {
        EntityUid::from_type_name_and_id(types.anonymous.clone(), EntityId::new(ANONYMOUS_ID))
    } else {
        return Err(format!(
            "applies to neither {} nor {}",
            types.user, types.anonymous
        ));
    };
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let values: Vec<(&str, &str)> = target.params.iter().map(|p| (&**p, "probe")).collect();
    for client_ip in [Some(ip), None] {
        let method = Method::GET;
        let ctx = PolicyContext::new(&method, "")
            .with_client_ip(client_ip)
            .with_params(&values);
        let context = CedarPolicy::context(&ctx, target, &IpCache::default())?;
        Request::new(
            principal.clone(),
            target.action.clone(),
            target.resource.clone(),
            context,
            Some(schema),
        )
        .map_err(|e| {
            let expected = if target.params.is_empty() {
                "{ authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr }".to_owned()
            } else {
                let fields: Vec<String> =
                    target.params.iter().map(|p| format!("{p}: String")).collect();
                format!(
                    "{{ authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr, params: {{ {} }} }}",
                    fields.join(", ")
                )
            };
            format!("{e} (the context sent is {expected}, resource type {})", types.route)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::Rbac;
    use crate::principal::{AuthMethod, Principal};

    const SCHEMA: &str = r#"
        namespace Shop {
          entity Role in [Role];
          entity User in [Role];
          entity Anonymous;
          entity Route;
          type Ctx = { authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr };
          type ItemCtx = { authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr, params: { id: String } };
          action "GET /items", "POST /items" appliesTo { principal: [User, Anonymous], resource: Route, context: Ctx };
          action "GET /items/{id}", "DELETE /items/{id}" appliesTo { principal: [User, Anonymous], resource: Route, context: ItemCtx };
          action "/shop.v1.Stock/Get" appliesTo { principal: [User], resource: Route, context: Ctx };
        }
    "#;

    const POLICIES: &str = r#"
        @id("anyone-lists")
        permit(principal, action == Shop::Action::"GET /items", resource);

        @id("readers-read")
        permit(principal in Shop::Role::"reader", action == Shop::Action::"GET /items/{id}", resource);

        @id("no-item-13")
        forbid(principal, action, resource)
        when { context has params && context.params.id == "13" };

        @id("writers-write-from-office")
        permit(principal in Shop::Role::"writer", action == Shop::Action::"POST /items", resource)
        when { context has client_ip && context.client_ip.isInRange(ip("10.0.0.0/8")) };

        @id("scoped-delete")
        permit(principal is Shop::User, action == Shop::Action::"DELETE /items/{id}", resource)
        when { context.scopes.contains("items:delete") };

        @id("stock-readers")
        permit(principal in Shop::Role::"reader", action == Shop::Action::"/shop.v1.Stock/Get", resource == Shop::Route::"/shop.v1.Stock/Get");
    "#;

    fn policy() -> CedarPolicy {
        CedarPolicy::builder()
            .namespace("Shop")
            .schema_str(SCHEMA)
            .policies_str(POLICIES)
            .build()
            .unwrap()
    }

    fn rbac() -> Rbac {
        Rbac::builder()
            .inherit("admin", "writer")
            .inherit("writer", "reader")
            .build()
            .unwrap()
    }

    fn user(roles: &[&str], scopes: &[&str]) -> Principal {
        Principal::builder("u-1", AuthMethod::Other("test".into()))
            .roles(roles.iter().copied())
            .scopes(scopes.iter().copied())
            .build()
    }

    fn denial(decision: Decision) -> crate::authz::Denial {
        match decision {
            Decision::Deny(d) => d,
            Decision::Allow => panic!("allowed"),
        }
    }

    #[test]
    fn allow_deny_matrix() {
        let policy = policy();
        let rbac = rbac();
        let admin = user(&["admin"], &[]);
        let reader = user(&["reader"], &[]);
        let plain = user(&[], &[]);
        let deleter = user(&[], &["items:delete"]);
        let office = Some("10.1.2.3".parse().unwrap());
        let mapped = Some("::ffff:10.1.2.3".parse().unwrap());
        let home = Some("192.0.2.1".parse().unwrap());
        let id1 = [("id", "1")];
        let id13 = [("id", "13")];
        type Row<'a> = (
            Method,
            &'a str,
            Option<&'a Principal>,
            &'a [(&'a str, &'a str)],
            Option<std::net::IpAddr>,
            Result<(), DenyCode>,
        );
        let table: Vec<Row<'_>> = vec![
            (Method::GET, "/items", None, &[], None, Ok(())),
            (Method::HEAD, "/items", None, &[], None, Ok(())),
            (
                Method::GET,
                "/items/{id}",
                None,
                &id1,
                None,
                Err(DenyCode::NotAuthenticated),
            ),
            (
                Method::GET,
                "/items/{id}",
                Some(&plain),
                &id1,
                None,
                Err(DenyCode::NoRulePermits),
            ),
            (
                Method::GET,
                "/items/{id}",
                Some(&reader),
                &id1,
                None,
                Ok(()),
            ),
            // Inherited: admin in writer in reader.
            (Method::GET, "/items/{id}", Some(&admin), &id1, None, Ok(())),
            (
                Method::GET,
                "/items/{id}",
                Some(&admin),
                &id13,
                None,
                Err(DenyCode::ForbiddenByRule),
            ),
            (Method::POST, "/items", Some(&admin), &[], office, Ok(())),
            (Method::POST, "/items", Some(&admin), &[], mapped, Ok(())),
            (
                Method::POST,
                "/items",
                Some(&admin),
                &[],
                home,
                Err(DenyCode::NoRulePermits),
            ),
            (
                Method::POST,
                "/items",
                Some(&admin),
                &[],
                None,
                Err(DenyCode::NoRulePermits),
            ),
            (
                Method::POST,
                "/items",
                Some(&reader),
                &[],
                office,
                Err(DenyCode::NoRulePermits),
            ),
            (
                Method::DELETE,
                "/items/{id}",
                Some(&deleter),
                &id1,
                None,
                Ok(()),
            ),
            (
                Method::DELETE,
                "/items/{id}",
                Some(&admin),
                &id1,
                None,
                Err(DenyCode::NoRulePermits),
            ),
            // No action in the schema for these.
            (
                Method::PUT,
                "/items",
                Some(&admin),
                &[],
                None,
                Err(DenyCode::NoRulePermits),
            ),
            (
                Method::GET,
                "/elsewhere",
                None,
                &[],
                None,
                Err(DenyCode::NotAuthenticated),
            ),
            // Parameters missing from the context: the schema refuses the request.
            (
                Method::GET,
                "/items/{id}",
                Some(&reader),
                &[],
                None,
                Err(DenyCode::NoRulePermits),
            ),
        ];
        for (i, (method, route, principal, params, ip, want)) in table.into_iter().enumerate() {
            let ctx = PolicyContext::new(&method, route)
                .with_principal(principal)
                .with_params(params)
                .with_client_ip(ip)
                .with_rbac(&rbac);
            let got = match policy.evaluate(&ctx) {
                Decision::Allow => Ok(()),
                Decision::Deny(d) => Err(d.code),
            };
            assert_eq!(got, want, "case {i}: {method} {route}");
        }
    }

    #[test]
    fn forbid_is_forbidden_by_rule_with_its_id() {
        let policy = policy();
        let admin = user(&["admin"], &[]);
        let rbac = rbac();
        let params = [("id", "13")];
        let ctx = PolicyContext::new(&Method::GET, "/items/{id}")
            .with_principal(Some(&admin))
            .with_params(&params)
            .with_rbac(&rbac);
        let d = denial(policy.evaluate(&ctx));
        assert_eq!(d.code, DenyCode::ForbiddenByRule);
        assert_eq!(&*d.policy_id, "no-item-13");
        // A forbid applies to anonymous callers as well: it is a rule, not a missing login.
        let d = denial(policy.evaluate(&ctx.with_principal(None)));
        assert_eq!(d.code, DenyCode::ForbiddenByRule);
    }

    #[test]
    fn anonymous_gets_not_authenticated() {
        let policy = policy();
        let params = [("id", "1")];
        let ctx = PolicyContext::new(&Method::GET, "/items/{id}").with_params(&params);
        let d = denial(policy.evaluate(&ctx));
        assert_eq!(d.code, DenyCode::NotAuthenticated);
        assert_eq!(&*d.policy_id, "cedar(inline)");
        // The gRPC action does not apply to Anonymous at all: still 401 material.
        let ctx = PolicyContext::new(&Method::POST, "/shop.v1.Stock/Get").with_grpc(true);
        assert_eq!(
            denial(policy.evaluate(&ctx)).code,
            DenyCode::NotAuthenticated
        );
    }

    #[test]
    fn grpc_actions_are_method_paths() {
        let policy = policy();
        let rbac = rbac();
        let reader = user(&["reader"], &[]);
        let ctx = PolicyContext::new(&Method::POST, "/shop.v1.Stock/Get")
            .with_principal(Some(&reader))
            .with_rbac(&rbac);
        assert!(policy.evaluate(&ctx.with_grpc(true)).is_allow());
        // The same path over plain HTTP is `POST /shop.v1.Stock/Get`, which is not declared.
        assert_eq!(denial(policy.evaluate(&ctx)).code, DenyCode::NoRulePermits);
        let other = PolicyContext::new(&Method::POST, "/shop.v1.Stock/Put")
            .with_principal(Some(&reader))
            .with_grpc(true);
        assert!(!policy.evaluate(&other).is_allow());
    }

    #[test]
    fn errored_forbid_fails_closed() {
        let policy = CedarPolicy::builder()
            .namespace("Shop")
            .schema_str(SCHEMA)
            .policies_str(
                r#"
                permit(principal, action == Shop::Action::"GET /items", resource);
                @id("overflowing")
                forbid(principal, action, resource) when { 9223372036854775807 + context.scopes.isEmpty().length() > 0 };
                "#,
            )
            .build();
        // Strict validation may already refuse the ill-typed forbid; if it does not, the
        // runtime error must not turn into an allow.
        if let Ok(policy) = policy {
            let ctx = PolicyContext::new(&Method::GET, "/items");
            assert!(!policy.evaluate(&ctx).is_allow());
        }
        let policy = CedarPolicy::builder()
            .namespace("Shop")
            .schema_str(SCHEMA)
            .policies_str(
                r#"
                permit(principal, action == Shop::Action::"GET /items", resource);
                @id("overflowing")
                forbid(principal, action, resource) when { 9223372036854775807 + 1 > 0 };
                "#,
            )
            .build()
            .unwrap();
        let d = denial(policy.evaluate(&PolicyContext::new(&Method::GET, "/items")));
        assert_eq!(d.code, DenyCode::ForbiddenByRule);
        assert_eq!(&*d.policy_id, "overflowing");
    }

    fn build_error(schema: &str, policies: &str) -> String {
        CedarPolicy::builder()
            .namespace("Shop")
            .schema_str(schema)
            .policies_str(policies)
            .build()
            .unwrap_err()
            .message()
            .to_owned()
    }

    #[test]
    fn strict_validation_failures_are_refused_at_build() {
        // An attribute the schema does not declare.
        let err = build_error(
            SCHEMA,
            "permit(principal, action, resource) when { context.tenant == \"acme\" };",
        );
        assert!(err.contains("strict mode"), "{err}");
        assert!(err.contains("tenant"), "{err}");
        assert!(err.contains("line 1"), "{err}");
        // An unknown action, on the second line, with its @id.
        let err = build_error(
            SCHEMA,
            "@id(\"typo\")\npermit(principal, action == Shop::Action::\"GET /itmes\", resource);",
        );
        assert!(err.contains("typo"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        // Comparing a string to a long.
        let err = build_error(
            SCHEMA,
            "permit(principal, action == Shop::Action::\"GET /items/{id}\", resource) when { context.params.id == 1 };",
        );
        assert!(err.contains("strict mode"), "{err}");
    }

    #[test]
    fn bad_sources_are_refused_at_build() {
        let parse = build_error(SCHEMA, "permit(principal, action, resource)\npermit(");
        assert!(parse.contains("line 2"), "{parse}");
        let schema = build_error("namespace Shop { entity User in [Nope]; }", POLICIES);
        assert!(schema.contains("Cedar schema"), "{schema}");
        let duplicate = build_error(
            SCHEMA,
            "@id(\"a\") permit(principal, action, resource); @id(\"a\") forbid(principal, action, resource);",
        );
        assert!(duplicate.contains("duplicate policy id a"), "{duplicate}");
        let template = build_error(SCHEMA, "permit(principal == ?principal, action, resource);");
        assert!(template.contains("templates"), "{template}");
        let empty = build_error(SCHEMA, "// nothing\n");
        assert!(empty.contains("no policy"), "{empty}");
        let no_schema = CedarPolicy::builder()
            .policies_str(POLICIES)
            .build()
            .unwrap_err();
        assert!(no_schema.message().contains("exactly one schema"));
        let no_policies = CedarPolicy::builder()
            .schema_str(SCHEMA)
            .build()
            .unwrap_err();
        assert!(no_policies.message().contains("at least one policy"));
        let missing = CedarPolicy::builder()
            .schema_file("/nonexistent/x.cedarschema")
            .policies_str(POLICIES)
            .build()
            .unwrap_err();
        assert!(missing.message().contains("cannot read"), "{missing}");
        let namespace = CedarPolicy::builder()
            .namespace("not a name")
            .schema_str(SCHEMA)
            .policies_str(POLICIES)
            .build()
            .unwrap_err();
        assert!(namespace.message().contains("namespace"), "{namespace}");
    }

    #[test]
    fn schemas_that_do_not_fit_the_request_model_are_refused() {
        let permit = "permit(principal, action, resource);";
        // No Route entity type.
        let err = build_error(
            "namespace Shop { entity Role in [Role]; entity User in [Role]; }",
            permit,
        );
        assert!(err.contains("Shop::Route is not declared"), "{err}");
        // Users outside the role hierarchy.
        let err = build_error(
            "namespace Shop { entity Role in [Role]; entity User; entity Route; }",
            permit,
        );
        assert!(
            err.contains("Shop::User must be declared `in [Shop::Role]`"),
            "{err}"
        );
        // Users with a required attribute portcullis cannot fill.
        let err = build_error(
            "namespace Shop { entity Role in [Role]; entity User in [Role] { tenant: String }; entity Route; }",
            permit,
        );
        assert!(err.contains("must not require attributes"), "{err}");
        // A required client_ip: requests from unknown addresses would all be refused.
        let err = build_error(
            r#"namespace Shop { entity Role in [Role]; entity User in [Role]; entity Route;
               action "GET /x" appliesTo { principal: User, resource: Route,
                 context: { authenticated: Bool, scopes: Set<String>, client_ip: ipaddr } }; }"#,
            permit,
        );
        assert!(err.contains("action \"GET /x\""), "{err}");
        // A route with parameters but no `params` record.
        let err = build_error(
            r#"namespace Shop { entity Role in [Role]; entity User in [Role]; entity Route;
               action "GET /x/{id}" appliesTo { principal: User, resource: Route,
                 context: { authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr } }; }"#,
            permit,
        );
        assert!(err.contains("params: { id: String }"), "{err}");
        // A lower-case method.
        let err = build_error(
            r#"namespace Shop { entity Role in [Role]; entity User in [Role]; entity Route;
               action "get /x" appliesTo { principal: User, resource: Route,
                 context: { authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr } }; }"#,
            permit,
        );
        assert!(err.contains("upper case"), "{err}");
    }

    #[test]
    fn policy_ids_follow_annotations_and_source_order() {
        let policy = CedarPolicy::builder()
            .namespace("Shop")
            .schema_str(SCHEMA)
            .policies_str("forbid(principal, action == Shop::Action::\"GET /items\", resource);")
            .policies_str(
                "permit(principal, action, resource);\nforbid(principal, action == Shop::Action::\"POST /items\", resource);",
            )
            .build()
            .unwrap();
        assert_eq!(policy.policy_count(), 3);
        let get = PolicyContext::new(&Method::GET, "/items");
        assert_eq!(&*denial(policy.evaluate(&get)).policy_id, "policy0");
        let post = PolicyContext::new(&Method::POST, "/items");
        assert_eq!(&*denial(policy.evaluate(&post)).policy_id, "policy2");
        assert_eq!(policy.describe(), "cedar(inline, inline)");
    }

    #[test]
    fn the_example_files_build() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let policy = CedarPolicy::builder()
            .namespace("Demo")
            .schema_file(dir.join("secure_api.cedarschema"))
            .policies_file(dir.join("secure_api.cedar"))
            .build()
            .unwrap();
        assert_eq!(policy.describe(), "cedar(secure_api.cedar)");
        assert!(policy.uses_path_params());
    }

    #[test]
    fn action_groups_apply_to_their_members() {
        let policy = CedarPolicy::builder()
            .schema_str(
                r#"
                entity Role in [Role];
                entity User in [Role];
                entity Route;
                type Ctx = { authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr };
                action "read";
                action "GET /a" in ["read"] appliesTo { principal: User, resource: Route, context: Ctx };
                action "GET /b" in ["reports"] appliesTo { principal: User, resource: Route, context: Ctx };
                action "reports" in ["read"];
                action "POST /a" appliesTo { principal: User, resource: Route, context: Ctx };
                "#,
            )
            .policies_str(
                r#"
                permit(principal in Role::"reader", action in Action::"read", resource);
                forbid(principal, action in [Action::"POST /a"], resource);
                "#,
            )
            .build()
            .unwrap();
        let reader = user(&["reader"], &[]);
        for (method, route, allowed) in [
            (Method::GET, "/a", true),
            // A member of a group inside the group.
            (Method::GET, "/b", true),
            (Method::POST, "/a", false),
        ] {
            let ctx = PolicyContext::new(&method, route).with_principal(Some(&reader));
            assert_eq!(
                policy.evaluate(&ctx).is_allow(),
                allowed,
                "{method} {route}"
            );
        }
        let post = PolicyContext::new(&Method::POST, "/a").with_principal(Some(&reader));
        assert_eq!(
            denial(policy.evaluate(&post)).code,
            DenyCode::ForbiddenByRule
        );
        // No namespace: the anonymous type is plain `Anonymous`, which this schema lacks.
        let get = PolicyContext::new(&Method::GET, "/a");
        assert_eq!(
            denial(policy.evaluate(&get)).code,
            DenyCode::NotAuthenticated
        );
    }

    #[test]
    fn template_parameters() {
        assert_eq!(template_params("/a/{id}/b/{*rest}"), ["id", "rest"]);
        assert!(template_params("/a/b").is_empty());
    }
}
