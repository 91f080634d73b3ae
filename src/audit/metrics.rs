//! Metrics through the `metrics` facade (feature `metrics`); no-ops without it.
//!
//! Names and labels are listed in `docs/metrics.md`. Labels only take bounded values: event
//! types, authentication method names, policy ids from the configuration, rejection kinds,
//! alert names, `success`/`failure`. Never a path, a subject, an address or a credential.
//!
//! # Deployment caveat
//! A `policy` label has one value per configured policy id: generated policy ids (one per
//! tenant, say) make the series count grow with them. The Prometheus endpoint of the example is
//! behind an admin policy; metrics reveal traffic patterns and should not be public.

use super::event::AuditEvent;

/// Audit events recorded, by `event` type.
pub const AUDIT_EVENTS: &str = "portcullis_audit_events_total";
/// Authentication results, by `method` (`jwt`, `api_key`, `mtls`, custom, `none` for a
/// refused credential) and `result` (`success`, `failure`).
pub const AUTHN: &str = "portcullis_authn_total";
/// Credential verification time in seconds, by `method` and `result` (histogram).
pub const AUTHN_DURATION: &str = "portcullis_authn_verification_seconds";
/// Authorization decisions, by `policy` and `decision` (`allow`, `deny`).
pub const AUTHZ_DECISIONS: &str = "portcullis_authz_decisions_total";
/// Requests refused, by rejection `kind` (`invalid_credential`, `forbidden`, ...).
pub const REJECTIONS: &str = "portcullis_rejections_total";
/// Requests refused by a rate limit.
pub const RATELIMIT_LIMITED: &str = "portcullis_ratelimit_limited_total";
/// Lockout events: clients locked, and requests refused while locked.
pub const LOCKOUT: &str = "portcullis_lockout_total";
/// JWKS fetches, by `result` (`updated`, `unchanged`, `failure`).
pub const JWKS_REFRESH: &str = "portcullis_jwks_refresh_total";
/// Security alerts raised, by `alert`.
pub const ALERTS: &str = "portcullis_security_alerts_total";
/// Events waiting in the JSON-lines queue (gauge).
pub const AUDIT_QUEUE_DEPTH: &str = "portcullis_audit_queue_depth";
/// Event lines written by the JSON-lines sink.
pub const AUDIT_WRITTEN: &str = "portcullis_audit_events_written_total";
/// Events lost by the JSON-lines sink (overflow with the drop policy, failed writes).
pub const AUDIT_DROPPED: &str = "portcullis_audit_events_dropped_total";

#[cfg(feature = "metrics")]
mod imp {
    use super::*;
    use crate::audit::EventType;
    use metrics::{counter, gauge, histogram};

    pub(crate) fn event(e: &AuditEvent) {
        counter!(AUDIT_EVENTS, "event" => e.event.as_str()).increment(1);
        match e.event {
            EventType::AuthzDecision => {
                let decision = if e.reason_code.is_some() {
                    "deny"
                } else {
                    "allow"
                };
                if let Some(policy) = e.policy_ids.first() {
                    counter!(AUTHZ_DECISIONS, "policy" => policy.to_string(), "decision" => decision)
                        .increment(1);
                }
            }
            EventType::RateLimited => counter!(RATELIMIT_LIMITED).increment(1),
            EventType::LockoutLocked => counter!(LOCKOUT).increment(1),
            EventType::SecurityAlert => {
                if let Some(crate::audit::DetailValue::Str(name)) = e.detail("alert") {
                    counter!(ALERTS, "alert" => name.to_string()).increment(1);
                }
            }
            _ => {}
        }
        if e.request_id.is_some()
            && e.event != EventType::AuthzDecision
            && let Some(code) = e.reason_code
            && e.event != EventType::AuthzAllow
        {
            counter!(REJECTIONS, "kind" => code).increment(1);
        }
    }

    pub(crate) fn authn(method: &str, success: bool, seconds: f64) {
        let result = if success { "success" } else { "failure" };
        // The built-in names without an allocation per request.
        let method: metrics::SharedString = match method {
            "jwt" => "jwt".into(),
            "api_key" => "api_key".into(),
            "mtls" => "mtls".into(),
            "none" => "none".into(),
            other => other.to_owned().into(),
        };
        counter!(AUTHN, "method" => method.clone(), "result" => result).increment(1);
        histogram!(AUTHN_DURATION, "method" => method, "result" => result).record(seconds);
    }

    #[cfg_attr(
        not(feature = "oidc"),
        expect(dead_code, reason = "used by RemoteJwks")
    )]
    pub(crate) fn jwks_refresh(result: &'static str) {
        counter!(JWKS_REFRESH, "result" => result).increment(1);
    }

    pub(crate) fn audit_queue_depth(depth: u64) {
        gauge!(AUDIT_QUEUE_DEPTH).set(depth as f64);
    }

    pub(crate) fn audit_written(n: u64) {
        counter!(AUDIT_WRITTEN).increment(n);
    }

    pub(crate) fn audit_dropped(n: u64) {
        counter!(AUDIT_DROPPED).increment(n);
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use super::AuditEvent;
    pub(crate) fn event(_: &AuditEvent) {}
    pub(crate) fn authn(_: &str, _: bool, _: f64) {}
    #[cfg_attr(
        not(feature = "oidc"),
        expect(dead_code, reason = "used by RemoteJwks")
    )]
    pub(crate) fn jwks_refresh(_: &'static str) {}
    pub(crate) fn audit_queue_depth(_: u64) {}
    pub(crate) fn audit_written(_: u64) {}
    pub(crate) fn audit_dropped(_: u64) {}
}

pub(crate) use imp::*;
