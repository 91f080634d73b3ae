//! Authorization of loaded resources, inside handlers.
//!
//! Route guards decide before the handler runs; some rules need the resource itself ("only the
//! owner may edit"). A [`ResourcePolicies`] names one policy per action on a kind of resource;
//! after loading the resource, the handler calls [`ResourcePolicies::authorize`] and gets
//! either [`Authorized<T>`], proof that the check ran and allowed, or the standard 403
//! [`Rejection`] (401 for anonymous callers). Every decision is recorded like a route decision.
//!
//! ```
//! use http::Method;
//! use portcullis::authz::abac::{resource, rule, subject};
//! use portcullis::authz::{PolicyContext, Rbac, ResourcePolicies, all_of, any_of, has_role};
//! use portcullis::principal::{AuthMethod, Principal};
//! use serde_json::json;
//!
//! let rbac = Rbac::builder().inherit("admin", "editor").build().unwrap();
//! let documents = ResourcePolicies::new("document")
//!     .action("update", any_of([
//!         has_role("admin"),
//!         all_of([has_role("editor"), rule("owner", subject().eq(resource("owner")))]),
//!     ]));
//!
//! let editor = Principal::builder("erin", AuthMethod::Other("test".into())).roles(["editor"]).build();
//! let ctx = PolicyContext::new(&Method::PUT, "/documents/{id}").with_principal(Some(&editor)).with_rbac(&rbac);
//!
//! let own = json!({"id": 1, "owner": "erin"});
//! let proof = documents.authorize(&ctx, "update", own).unwrap();
//! assert_eq!(proof["id"], 1);
//!
//! let theirs = json!({"id": 2, "owner": "someone-else"});
//! assert_eq!(documents.authorize(&ctx, "update", theirs).unwrap_err().status(), 403);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::time::Instant;

use serde_json::{Map, Value};

use super::decision::DecisionRecord;
use super::{Decision, DenyCode, Policy, PolicyContext, SharedPolicy};
use crate::context::RequestId;
use crate::principal::Principal;
use crate::rejection::{Rejection, RejectionKind};

/// Something with attributes a policy can read (through
/// [`abac::resource`](super::abac::resource)).
pub trait Resource {
    /// The attributes.
    fn attributes(&self) -> Map<String, Value>;
}

impl Resource for Value {
    fn attributes(&self) -> Map<String, Value> {
        self.as_object().cloned().unwrap_or_default()
    }
}

impl Resource for Map<String, Value> {
    fn attributes(&self) -> Map<String, Value> {
        self.clone()
    }
}

/// Proof that an authorization check ran and allowed access to `T`.
///
/// Only [`ResourcePolicies::authorize`] creates one, so a function that takes `Authorized<T>`
/// cannot be called with an unchecked resource.
#[derive(Debug, Clone)]
pub struct Authorized<T> {
    value: T,
    policy_id: std::sync::Arc<str>,
}

impl<T> Authorized<T> {
    /// The authorized value.
    pub fn into_inner(self) -> T {
        self.value
    }
    /// The policy that allowed.
    pub fn policy_id(&self) -> &str {
        &self.policy_id
    }
}

impl<T> Deref for Authorized<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// One policy per action on a kind of resource. Unknown actions are denied.
#[derive(Clone)]
pub struct ResourcePolicies {
    kind: String,
    actions: BTreeMap<String, SharedPolicy>,
    allow_sample_every: u32,
    allow_counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl fmt::Debug for ResourcePolicies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourcePolicies")
            .field("kind", &self.kind)
            .field("actions", &self.actions)
            .field("allow_sample_every", &self.allow_sample_every)
            .finish()
    }
}

impl ResourcePolicies {
    /// Policies for resources of `kind` (used in decision records as `kind:action`).
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            actions: BTreeMap::new(),
            allow_sample_every: 100,
            allow_counter: Default::default(),
        }
    }

    /// Records one allow decision in `every` (default 100; 1 records all, 0 none). Denials are
    /// always recorded.
    #[must_use]
    pub fn with_allow_sampling(mut self, every: u32) -> Self {
        self.allow_sample_every = every;
        self
    }

    /// Allows `action` under `policy`.
    #[must_use]
    pub fn action(mut self, action: impl Into<String>, policy: SharedPolicy) -> Self {
        self.actions.insert(action.into(), policy);
        self
    }

    fn sample_allow(&self) -> bool {
        self.allow_sample_every != 0
            && self
                .allow_counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .is_multiple_of(u64::from(self.allow_sample_every))
    }

    /// Every (action, policy), for reports.
    pub fn actions(&self) -> impl Iterator<Item = (&str, &SharedPolicy)> {
        self.actions.iter().map(|(a, p)| (a.as_str(), p))
    }

    /// Decides whether the caller in `ctx` may perform `action` on `resource`; records the
    /// decision (denials always, allows as sampled by the caller's configuration).
    pub fn authorize<T: Resource>(
        &self,
        ctx: &PolicyContext<'_>,
        action: &str,
        resource: T,
    ) -> Result<Authorized<T>, Rejection> {
        let target = format!("{}:{action}", self.kind);
        let Some(policy) = self.actions.get(action) else {
            let decision_id = RequestId::generate();
            record(
                &decision_id,
                false,
                "unknown_action",
                Some(DenyCode::NoRulePermits),
                Some("no policy for this action"),
                ctx,
                &target,
                Default::default(),
            );
            return Err(
                Rejection::forbidden(format!("no policy for action {target}"))
                    .with_policy_id("unknown_action")
                    .with_decision_id(decision_id.as_str()),
            );
        };
        let attributes = resource.attributes();
        let ctx = ctx.with_resource(Some(&attributes));
        let started = Instant::now();
        let decision = policy.evaluate(&ctx);
        let evaluation = started.elapsed();
        match decision {
            Decision::Allow => {
                if self.sample_allow() {
                    record(
                        &RequestId::generate(),
                        true,
                        policy.id(),
                        None,
                        None,
                        &ctx,
                        &target,
                        evaluation,
                    );
                }
                Ok(Authorized {
                    value: resource,
                    policy_id: policy.id().clone(),
                })
            }
            Decision::Deny(denial) => {
                let decision_id = RequestId::generate();
                record(
                    &decision_id,
                    false,
                    &denial.policy_id,
                    Some(denial.code),
                    Some(&denial.reason),
                    &ctx,
                    &target,
                    evaluation,
                );
                let kind = if denial.code == DenyCode::NotAuthenticated {
                    RejectionKind::MissingCredential
                } else {
                    RejectionKind::Forbidden
                };
                Err(Rejection::new(
                    kind,
                    format!(
                        "policy {} denied {target}: {} ({})",
                        denial.policy_id,
                        denial.reason,
                        denial.code.as_str()
                    ),
                )
                .with_policy_id(denial.policy_id)
                .with_decision_id(decision_id.as_str()))
            }
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one record's fields, passed through once"
)]
fn record(
    decision_id: &RequestId,
    allowed: bool,
    policy_id: &str,
    reason_code: Option<DenyCode>,
    reason: Option<&str>,
    ctx: &PolicyContext<'_>,
    target: &str,
    evaluation: std::time::Duration,
) {
    let mut event = DecisionRecord {
        decision_id: decision_id.as_str(),
        allowed,
        policy_id,
        reason_code,
        reason,
        evaluation,
        method: ctx.method.as_str(),
        route: target,
        subject: ctx.principal.map(Principal::subject),
        request_id: None,
    }
    .to_event();
    event.principal = ctx.principal.cloned();
    crate::audit::global().record(event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::abac::{resource, rule, subject};
    use crate::authz::{Rbac, all_of, any_of, has_role};
    use crate::principal::AuthMethod;
    use http::Method;
    use serde_json::json;

    #[test]
    fn owner_matrix() {
        let rbac = Rbac::builder()
            .inherit("admin", "editor")
            .inherit("editor", "reader")
            .build()
            .unwrap();
        let documents = ResourcePolicies::new("document").action(
            "update",
            any_of([
                has_role("admin"),
                all_of([
                    has_role("editor"),
                    rule("owner", subject().eq(resource("owner"))),
                ]),
            ]),
        );
        let who = |name: &str, role: &str| {
            Principal::builder(name, AuthMethod::Other("t".into()))
                .roles([role])
                .build()
        };
        let cases = [
            (Some(who("erin", "editor")), "erin", 200),
            (Some(who("erin", "editor")), "olga", 403),
            (Some(who("root", "admin")), "olga", 200),
            (Some(who("rita", "reader")), "rita", 403),
            (None, "erin", 401),
        ];
        for (principal, owner, want) in cases {
            let ctx = PolicyContext::new(&Method::PUT, "/documents/{id}")
                .with_principal(principal.as_ref())
                .with_rbac(&rbac);
            let doc = json!({"owner": owner});
            let got = match documents.authorize(&ctx, "update", doc) {
                Ok(proof) => {
                    assert_eq!(proof["owner"], owner);
                    200
                }
                Err(r) => {
                    assert!(r.decision_id().is_some());
                    r.status().as_u16()
                }
            };
            assert_eq!(got, want, "{principal:?} on a document owned by {owner}");
        }
        let ctx = PolicyContext::new(&Method::PUT, "/").with_rbac(&rbac);
        let err = documents.authorize(&ctx, "purge", json!({})).unwrap_err();
        assert_eq!(err.status(), 403);
    }
}
