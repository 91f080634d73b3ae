//! Decision records: every authorization decision, explainable afterwards.
//!
//! Each decision gets an id, the id of the policy that decided, a reason code that tells "not
//! authenticated", "forbidden by rule" and "no rule permits" apart, and the evaluation time.
//! Records are written to the audit stream (the request's [`Auditor`](crate::audit::Auditor))
//! as events of type `authz.decision` with `details.allowed = true|false`: denials always, allows sampled (one in
//! [`AuthzConfig::with_allow_sampling`](super::guard::AuthzConfig::with_allow_sampling)). The
//! client only ever sees the decision id, in the problem body; the request's own audit event
//! (written once at the edge) carries the same `decision_id`, linking the two.

use std::time::Duration;

use super::DenyCode;
use crate::audit::{AuditEvent, EventType, Severity};
use crate::context::RequestId;

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
    /// Writes the record to the [global](crate::audit::global) auditor.
    pub fn emit(&self) {
        let mut event = self.to_event();
        if let Some(subject) = self.subject {
            event = event.with_detail("subject", subject.to_owned());
        }
        crate::audit::global().record(event);
    }

    /// The record as an `authz.decision` audit event: `allowed` in `details`, the evaluation
    /// time as the duration. The subject is not included: set the event's principal.
    pub fn to_event(&self) -> AuditEvent {
        let mut event = AuditEvent::new(EventType::AuthzDecision)
            .with_severity(if self.allowed {
                Severity::Info
            } else {
                Severity::Warn
            })
            .with_policy_id(self.policy_id)
            .with_route(self.route)
            .with_detail("allowed", self.allowed);
        event.decision_id = Some(self.decision_id.into());
        event.reason_code = self.reason_code.map(DenyCode::as_str);
        event.reason = self.reason.map(|r| r.to_owned().into());
        event.duration = Some(self.evaluation);
        event.method = http::Method::from_bytes(self.method.as_bytes()).ok();
        event.request_id = self.request_id.and_then(RequestId::parse);
        event
    }
}
