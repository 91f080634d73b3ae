//! Shadow policies: roll out a stricter (or looser) policy safely.
//!
//! [`shadow`] wraps the enforced policy together with a candidate. Both are evaluated on every
//! request; only the enforced one decides. Each disagreement is written to the audit stream
//! (event `authz.shadow_disagreement`) and counted in the returned [`ShadowStats`], so you can
//! watch what the candidate would change before switching to it.
//!
//! ```
//! use http::Method;
//! use portcullis::authz::shadow::shadow;
//! use portcullis::authz::{Policy, PolicyContext, authenticated, has_role};
//! use portcullis::principal::{AuthMethod, Principal};
//!
//! let (policy, stats) = shadow(authenticated(), has_role("reader"));
//! let bob = Principal::builder("bob", AuthMethod::Other("test".into())).build();
//! let ctx = PolicyContext::new(&Method::GET, "/reports").with_principal(Some(&bob));
//! assert!(policy.evaluate(&ctx).is_allow()); // the enforced policy still decides
//! assert_eq!(stats.would_deny(), 1);          // the candidate would have refused bob
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Decision, Policy, PolicyContext, SharedPolicy};

/// Counters of one shadowed policy. Cheap to clone; all clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct ShadowStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    evaluations: AtomicU64,
    would_deny: AtomicU64,
    would_allow: AtomicU64,
}

impl ShadowStats {
    /// How many decisions were shadowed.
    pub fn evaluations(&self) -> u64 {
        self.inner.evaluations.load(Ordering::Relaxed)
    }
    /// Requests the enforced policy allowed and the candidate would have denied.
    pub fn would_deny(&self) -> u64 {
        self.inner.would_deny.load(Ordering::Relaxed)
    }
    /// Requests the enforced policy denied and the candidate would have allowed.
    pub fn would_allow(&self) -> u64 {
        self.inner.would_allow.load(Ordering::Relaxed)
    }
    /// All disagreements.
    pub fn disagreements(&self) -> u64 {
        self.would_deny() + self.would_allow()
    }
}

struct Shadow {
    enforced: SharedPolicy,
    candidate: SharedPolicy,
    stats: ShadowStats,
}

impl Policy for Shadow {
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        let enforced = self.enforced.evaluate(ctx);
        let candidate = self.candidate.evaluate(ctx);
        let counters = &self.stats.inner;
        counters.evaluations.fetch_add(1, Ordering::Relaxed);
        if enforced.is_allow() != candidate.is_allow() {
            let would = if enforced.is_allow() {
                counters.would_deny.fetch_add(1, Ordering::Relaxed);
                "deny"
            } else {
                counters.would_allow.fetch_add(1, Ordering::Relaxed);
                "allow"
            };
            let mut event =
                crate::audit::AuditEvent::new(crate::audit::EventType::AuthzShadowDisagreement)
                    .with_policy_id(self.enforced.id().clone())
                    .with_policy_id(self.candidate.id().clone())
                    .with_route(ctx.route)
                    .with_detail("candidate_would", would);
            event.method = Some(ctx.method.clone());
            event.principal = ctx.principal.cloned();
            crate::audit::global().record(event);
        }
        enforced
    }
    fn describe(&self) -> String {
        self.enforced.id().to_string()
    }
    fn uses_path_params(&self) -> bool {
        self.enforced.uses_path_params() || self.candidate.uses_path_params()
    }
}

/// Enforces `enforced` while evaluating `candidate` beside it. The returned policy reports as
/// the enforced one (so route reports and decision records stay unchanged); the stats count
/// what the candidate would change.
pub fn shadow(enforced: SharedPolicy, candidate: SharedPolicy) -> (SharedPolicy, ShadowStats) {
    let stats = ShadowStats::default();
    let policy = SharedPolicy::new(Shadow {
        enforced,
        candidate,
        stats: stats.clone(),
    });
    (policy, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{authenticated, has_role, public};
    use crate::principal::AuthMethod;
    use crate::principal::Principal;
    use http::Method;
    use proptest::prelude::*;

    fn leaf(i: u8) -> SharedPolicy {
        match i % 4 {
            0 => public(),
            1 => authenticated(),
            2 => has_role("reader"),
            _ => has_role("admin"),
        }
    }

    proptest! {
        /// A shadow never changes the decision, and counts exactly the disagreements.
        #[test]
        fn shadow_never_changes_the_decision(
            enforced in 0u8..4,
            candidate in 0u8..4,
            roles in proptest::collection::vec(prop_oneof![Just("reader"), Just("admin")], 0..2),
            anonymous in any::<bool>(),
        ) {
            let p = Principal::builder("u", AuthMethod::Other("t".into())).roles(roles).build();
            let ctx = PolicyContext::new(&Method::GET, "/")
                .with_principal(if anonymous { None } else { Some(&p) });
            let (policy, stats) = shadow(leaf(enforced), leaf(candidate));
            let alone = leaf(enforced).evaluate(&ctx);
            prop_assert_eq!(policy.evaluate(&ctx), alone.clone());
            let disagree = alone.is_allow() != leaf(candidate).evaluate(&ctx).is_allow();
            prop_assert_eq!(stats.disagreements(), u64::from(disagree));
            prop_assert_eq!(stats.evaluations(), 1);
            prop_assert_eq!(policy.describe(), leaf(enforced).describe());
        }
    }
}
