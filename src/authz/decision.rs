//! Decision records: every authorization decision, explainable afterwards.
//!
//! Each decision gets an id, the id of the policy that decided, a reason code that tells "not
//! authenticated", "forbidden by rule" and "no rule permits" apart, and the evaluation time.
//! Records are written to the audit stream (`tracing` target `portcullis::audit`) as events of
//! type `authz.decision` with `allowed = true|false`: denials always, allows sampled (one in
//! [`AuthzConfig::with_allow_sampling`](super::guard::AuthzConfig::with_allow_sampling)). The
//! client only ever sees the decision id, in the problem body; the request's own audit event
//! (written once at the edge) carries the same `decision_id`, linking the two.

use std::time::Duration;

use super::DenyCode;

/// One authorization decision, as written to the audit stream.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct DecisionRecord<'a> {
    /// The decision id (also in the problem body of a denial).
    pub decision_id: &'a str,
    /// Whether the decision allowed.
    pub allowed: bool,
    /// The policy that decided.
    pub policy_id: &'a str,
    /// Why it denied (`None` for allows).
    pub reason_code: Option<DenyCode>,
    /// The policy's explanation, for denials.
    pub reason: Option<&'a str>,
    /// How long the evaluation took.
    pub evaluation: Duration,
    /// The request method.
    pub method: &'a str,
    /// The route template, gRPC method, or resource action.
    pub route: &'a str,
    /// The subject, when authenticated.
    pub subject: Option<&'a str>,
    /// The request id, when the request went through the edge layer.
    pub request_id: Option<&'a str>,
}

impl DecisionRecord<'_> {
    /// Writes the record to the audit stream.
    pub fn emit(&self) {
        macro_rules! record {
            ($level:expr) => {
                tracing::event!(
                    target: "portcullis::audit",
                    $level,
                    event = "authz.decision",
                    allowed = self.allowed,
                    decision_id = self.decision_id,
                    policy = self.policy_id,
                    reason_code = self.reason_code.map(DenyCode::as_str),
                    reason = self.reason,
                    evaluation_ns = u64::try_from(self.evaluation.as_nanos()).unwrap_or(u64::MAX),
                    method = self.method,
                    route = self.route,
                    subject = self.subject,
                    request_id = self.request_id,
                )
            };
        }
        if self.allowed {
            record!(tracing::Level::INFO);
        } else {
            record!(tracing::Level::WARN);
        }
    }
}
