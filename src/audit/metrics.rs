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
    //! Every label set that can occur on the request path is written out with literal names
    //! and values, so the `metrics` macros use a static, pre-hashed key: no label vector, no
    //! hashing and no copy of the key per call. Handles are not cached: a recorder set with
    //! `metrics::with_local_recorder` must see every call. The literal names are checked
    //! against the constants above in the tests.

    use super::*;
    use crate::audit::EventType;
    use metrics::{counter, gauge, histogram};

    /// `counter!` of `portcullis_audit_events_total` with the literal wire name of each type.
    macro_rules! audit_events {
        ($event:expr, $($variant:ident => $name:literal),* $(,)?) => {
            match $event {
                $(EventType::$variant => {
                    counter!("portcullis_audit_events_total", "event" => $name)
                })*
            }
        };
    }

    pub(crate) fn event(e: &AuditEvent) {
        audit_events!(e.event,
            AuthnSuccess => "authn.success",
            AuthnFailure => "authn.failure",
            AuthzAllow => "authz.allow",
            AuthzDeny => "authz.deny",
            AuthzDecision => "authz.decision",
            RateLimited => "ratelimit.limited",
            LockoutLocked => "lockout.locked",
            TokenRevoked => "token.revoked",
            KeyRotated => "key.rotated",
            ConfigLoaded => "config.loaded",
            SecurityAlert => "security.alert",
            RequestRejected => "request.rejected",
            AuditLoss => "audit.loss",
            AuditSealed => "audit.sealed",
            RateLimitShadow => "ratelimit.shadow",
            LockoutShadow => "lockout.shadow",
            RateLimitFallback => "ratelimit.fallback",
            RateLimitStoreUnavailable => "ratelimit.store_unavailable",
            LockoutFallback => "lockout.fallback",
            LockoutStoreUnavailable => "lockout.store_unavailable",
            AuthzShadowDisagreement => "authz.shadow_disagreement",
        )
        .increment(1);
        match e.event {
            EventType::AuthzDecision => {
                if let Some(policy) = e.policy_ids.first() {
                    // The policy id is shared with the key, not copied.
                    let policy = metrics::SharedString::from(policy.clone());
                    let decision = if e.reason_code.is_some() {
                        "deny"
                    } else {
                        "allow"
                    };
                    counter!("portcullis_authz_decisions_total", "policy" => policy, "decision" => decision)
                        .increment(1);
                }
            }
            EventType::RateLimited => counter!("portcullis_ratelimit_limited_total").increment(1),
            EventType::LockoutLocked => counter!("portcullis_lockout_total").increment(1),
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
            rejection(code);
        }
    }

    /// `portcullis_rejections_total` by `kind`: the rejection kinds with static keys.
    fn rejection(kind: &'static str) {
        macro_rules! kinds {
            ($($name:literal),* $(,)?) => {
                match kind {
                    $($name => counter!("portcullis_rejections_total", "kind" => $name),)*
                    other => counter!(REJECTIONS, "kind" => other),
                }
            };
        }
        kinds!(
            "missing_credential",
            "invalid_credential",
            "invalid_credential_request",
            "forbidden",
            "bad_request",
            "not_found",
            "method_not_allowed",
            "payload_too_large",
            "unsupported_media_type",
            "validation_failed",
            "rate_limited",
            "locked_out",
            "cross_site_request",
        )
        .increment(1);
    }

    pub(crate) fn authn(method: &str, success: bool, seconds: f64) {
        macro_rules! methods {
            ($($name:literal),* $(,)?) => {
                match (method, success) {
                    $(
                        ($name, true) => (
                            counter!("portcullis_authn_total", "method" => $name, "result" => "success"),
                            histogram!("portcullis_authn_verification_seconds", "method" => $name, "result" => "success"),
                        ),
                        ($name, false) => (
                            counter!("portcullis_authn_total", "method" => $name, "result" => "failure"),
                            histogram!("portcullis_authn_verification_seconds", "method" => $name, "result" => "failure"),
                        ),
                    )*
                    (other, _) => {
                        let result = if success { "success" } else { "failure" };
                        let method = metrics::SharedString::from(other.to_owned());
                        (
                            counter!(AUTHN, "method" => method.clone(), "result" => result),
                            histogram!(AUTHN_DURATION, "method" => method, "result" => result),
                        )
                    }
                }
            };
        }
        let (count, duration) = methods!("jwt", "api_key", "mtls", "none");
        count.increment(1);
        duration.record(seconds);
    }

    #[cfg_attr(
        not(feature = "oidc"),
        expect(dead_code, reason = "used by RemoteJwks")
    )]
    pub(crate) fn jwks_refresh(result: &'static str) {
        match result {
            "updated" => counter!("portcullis_jwks_refresh_total", "result" => "updated"),
            "unchanged" => counter!("portcullis_jwks_refresh_total", "result" => "unchanged"),
            "failure" => counter!("portcullis_jwks_refresh_total", "result" => "failure"),
            other => counter!(JWKS_REFRESH, "result" => other),
        }
        .increment(1);
    }

    pub(crate) fn audit_queue_depth(depth: u64) {
        gauge!("portcullis_audit_queue_depth").set(depth as f64);
    }

    pub(crate) fn audit_written(n: u64) {
        counter!("portcullis_audit_events_written_total").increment(n);
    }

    pub(crate) fn audit_dropped(n: u64) {
        counter!("portcullis_audit_events_dropped_total").increment(n);
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::audit::DetailValue;
        use crate::context::RequestId;
        use std::sync::Arc;

        /// Every literal name and label above against the constants and wire names.
        #[test]
        fn static_keys_have_the_documented_names_and_labels() {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let types = [
                EventType::AuthnSuccess,
                EventType::AuthnFailure,
                EventType::AuthzAllow,
                EventType::AuthzDeny,
                EventType::AuthzDecision,
                EventType::RateLimited,
                EventType::LockoutLocked,
                EventType::TokenRevoked,
                EventType::KeyRotated,
                EventType::ConfigLoaded,
                EventType::SecurityAlert,
                EventType::RequestRejected,
                EventType::AuditLoss,
                EventType::AuditSealed,
                EventType::RateLimitShadow,
                EventType::LockoutShadow,
                EventType::RateLimitFallback,
                EventType::RateLimitStoreUnavailable,
                EventType::LockoutFallback,
                EventType::LockoutStoreUnavailable,
                EventType::AuthzShadowDisagreement,
            ];
            let kinds = [
                "missing_credential",
                "invalid_credential",
                "invalid_credential_request",
                "forbidden",
                "bad_request",
                "not_found",
                "method_not_allowed",
                "payload_too_large",
                "unsupported_media_type",
                "validation_failed",
                "rate_limited",
                "locked_out",
                "cross_site_request",
                "some_future_kind",
            ];
            metrics::with_local_recorder(&recorder, || {
                for t in types {
                    event(&AuditEvent::new(t));
                }
                for kind in kinds {
                    event(
                        &AuditEvent::new(EventType::AuthzDeny)
                            .with_request_id(RequestId::generate())
                            .with_reason_code(kind),
                    );
                }
                let mut decision =
                    AuditEvent::new(EventType::AuthzDecision)
                        .with_policy_id(Arc::<str>::from("has_role(admin)"));
                event(&decision);
                decision.reason_code = Some("no_rule_permits");
                event(&decision);
                event(
                    &AuditEvent::new(EventType::SecurityAlert)
                        .with_detail("alert", DetailValue::from("authn_failure_spike")),
                );
                for method in ["jwt", "api_key", "mtls", "none", "custom"] {
                    authn(method, true, 0.001);
                    authn(method, false, 0.002);
                }
                for result in ["updated", "unchanged", "failure"] {
                    jwks_refresh(result);
                }
                audit_queue_depth(3);
                audit_written(2);
                audit_dropped(1);
            });
            let text = handle.render();
            let has = |needle: String| assert!(text.contains(&needle), "{needle} missing:\n{text}");
            for t in types {
                has(format!("{AUDIT_EVENTS}{{event=\"{}\"}} ", t.as_str()));
            }
            // The bare authz.deny and the 14 refusals.
            has(format!("{AUDIT_EVENTS}{{event=\"authz.deny\"}} 15"));
            for kind in kinds {
                has(format!("{REJECTIONS}{{kind=\"{kind}\"}} 1"));
            }
            has(format!(
                "{AUTHZ_DECISIONS}{{policy=\"has_role(admin)\",decision=\"allow\"}} 1"
            ));
            has(format!(
                "{AUTHZ_DECISIONS}{{policy=\"has_role(admin)\",decision=\"deny\"}} 1"
            ));
            has(format!("{ALERTS}{{alert=\"authn_failure_spike\"}} 1"));
            has(format!("{RATELIMIT_LIMITED} 1"));
            has(format!("{LOCKOUT} 1"));
            for method in ["jwt", "api_key", "mtls", "none", "custom"] {
                for result in ["success", "failure"] {
                    has(format!(
                        "{AUTHN}{{method=\"{method}\",result=\"{result}\"}} 1"
                    ));
                    has(format!(
                        "{AUTHN_DURATION}_count{{method=\"{method}\",result=\"{result}\"}} 1"
                    ));
                }
            }
            for result in ["updated", "unchanged", "failure"] {
                has(format!("{JWKS_REFRESH}{{result=\"{result}\"}} 1"));
            }
            has(format!("{AUDIT_QUEUE_DEPTH} 3"));
            has(format!("{AUDIT_WRITTEN} 2"));
            has(format!("{AUDIT_DROPPED} 1"));
        }
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
