//! Metrics through the `metrics` facade (feature `metrics`); no-ops without it.
//!
//! Names and labels are listed in `docs/metrics.md`. Labels only take bounded values: event
//! types, authentication method names, policy ids from the configuration, rejection kinds,
//! alert names, `success`/`failure`. Never a path, a subject, an address or a credential.
//!
//! Any global or local recorder works; `install_recorder` (feature `metrics`) installs one
//! with portcullis' fixed-label series registered up front, which saves a registry lookup per
//! metric on the request path (see its caveats).
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
pub use imp::install_recorder;

#[cfg(feature = "metrics")]
mod imp {
    //! Every label set that can occur on the request path has a static, pre-hashed [`Key`]
    //! built at compile time. Without [`install_recorder`] each call resolves its key through
    //! the facade (`metrics::with_recorder`, like the `counter!` macros), so a recorder set
    //! with `metrics::with_local_recorder` sees it. After [`install_recorder`] the handles
    //! registered up front are used directly: no key copy and no registry lookup per call.
    //! Labels built at run time (policy ids, custom method names, alert names, unknown kinds)
    //! always go through the facade.

    use super::*;
    use crate::audit::EventType;
    use crate::rejection::RejectionKind;
    use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
    use std::sync::OnceLock;

    /// What the `counter!` macros would pass from this module.
    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    /// A static key with static labels (in their own static: a key only borrows them).
    macro_rules! key {
        ($name:expr, $($label:literal => $value:expr),+ $(,)?) => {{
            static LABELS: [Label; [$($label),+].len()] =
                [$(Label::from_static_parts($label, $value)),+];
            Key::from_static_parts($name, &LABELS)
        }};
    }

    /// Declares `EVENT_KEYS`, one key per event type, and `event_index`, the position of a
    /// type's key. The match is exhaustive: a new event type does not compile without a key.
    macro_rules! event_keys {
        ($($variant:ident),* $(,)?) => {
            #[derive(Clone, Copy)]
            enum EventIndex { $($variant),* }
            static EVENT_KEYS: [Key; [$(EventIndex::$variant),*].len()] =
                [$(key!(AUDIT_EVENTS, "event" => EventType::$variant.as_str())),*];
            fn event_index(t: EventType) -> usize {
                match t { $(EventType::$variant => EventIndex::$variant as usize),* }
            }
        };
    }

    event_keys!(
        AuthnSuccess,
        AuthnFailure,
        AuthzAllow,
        AuthzDeny,
        AuthzDecision,
        RateLimited,
        LockoutLocked,
        TokenRevoked,
        KeyRotated,
        ConfigLoaded,
        SecurityAlert,
        RequestRejected,
        AuditLoss,
        AuditSealed,
        RateLimitShadow,
        LockoutShadow,
        RateLimitFallback,
        RateLimitStoreUnavailable,
        LockoutFallback,
        LockoutStoreUnavailable,
        AuthzShadowDisagreement,
    );

    /// One key per value of a single label.
    macro_rules! keys {
        ($name:expr, $label:literal, [$($value:expr),* $(,)?]) => {
            [$(key!($name, $label => $value)),*]
        };
    }

    /// The rejection kinds with a static key (every [`RejectionKind`]'s name); others go
    /// through the facade.
    const KINDS: [&str; RejectionKind::ALL.len()] = {
        let mut names = [""; RejectionKind::ALL.len()];
        let mut i = 0;
        while i < names.len() {
            names[i] = RejectionKind::ALL[i].name();
            i += 1;
        }
        names
    };
    static REJECTION_KEYS: [Key; KINDS.len()] = keys!(
        REJECTIONS,
        "kind",
        [
            KINDS[0], KINDS[1], KINDS[2], KINDS[3], KINDS[4], KINDS[5], KINDS[6], KINDS[7],
            KINDS[8], KINDS[9], KINDS[10], KINDS[11], KINDS[12],
        ]
    );

    /// The built-in authentication methods; custom names go through the facade.
    const METHODS: [&str; 4] = ["jwt", "api_key", "mtls", "none"];
    /// `[method][0 = success, 1 = failure]` keys of a metric labelled by method and result.
    macro_rules! authn_keys {
        ($name:expr) => {
            [
                authn_keys!(@one $name, METHODS[0]),
                authn_keys!(@one $name, METHODS[1]),
                authn_keys!(@one $name, METHODS[2]),
                authn_keys!(@one $name, METHODS[3]),
            ]
        };
        (@one $name:expr, $method:expr) => {
            [
                key!($name, "method" => $method, "result" => "success"),
                key!($name, "method" => $method, "result" => "failure"),
            ]
        };
    }
    static AUTHN_KEYS: [[Key; 2]; METHODS.len()] = authn_keys!(AUTHN);
    static AUTHN_DURATION_KEYS: [[Key; 2]; METHODS.len()] = authn_keys!(AUTHN_DURATION);

    const JWKS_RESULTS: [&str; 3] = ["updated", "unchanged", "failure"];
    static JWKS_REFRESH_KEYS: [Key; JWKS_RESULTS.len()] = keys!(
        JWKS_REFRESH,
        "result",
        [JWKS_RESULTS[0], JWKS_RESULTS[1], JWKS_RESULTS[2]]
    );

    static RATELIMIT_LIMITED_KEY: Key = Key::from_static_name(RATELIMIT_LIMITED);
    static LOCKOUT_KEY: Key = Key::from_static_name(LOCKOUT);
    static AUDIT_QUEUE_DEPTH_KEY: Key = Key::from_static_name(AUDIT_QUEUE_DEPTH);
    static AUDIT_WRITTEN_KEY: Key = Key::from_static_name(AUDIT_WRITTEN);
    static AUDIT_DROPPED_KEY: Key = Key::from_static_name(AUDIT_DROPPED);

    /// A handle for every static key, in the same positions as the keys.
    pub(crate) struct Handles {
        events: [Counter; EVENT_KEYS.len()],
        rejections: [Counter; REJECTION_KEYS.len()],
        authn: [[Counter; 2]; METHODS.len()],
        authn_duration: [[Histogram; 2]; METHODS.len()],
        jwks_refresh: [Counter; JWKS_REFRESH_KEYS.len()],
        ratelimit_limited: Counter,
        lockout: Counter,
        audit_queue_depth: Gauge,
        audit_written: Counter,
        audit_dropped: Counter,
    }

    impl Handles {
        /// Registers every static key with `recorder`.
        pub(crate) fn register(recorder: &dyn Recorder) -> Self {
            let counter = |key: &'static Key| recorder.register_counter(key, &METADATA);
            let histogram = |key: &'static Key| recorder.register_histogram(key, &METADATA);
            Self {
                events: EVENT_KEYS.each_ref().map(counter),
                rejections: REJECTION_KEYS.each_ref().map(counter),
                authn: AUTHN_KEYS.each_ref().map(|k| k.each_ref().map(counter)),
                authn_duration: AUTHN_DURATION_KEYS
                    .each_ref()
                    .map(|k| k.each_ref().map(histogram)),
                jwks_refresh: JWKS_REFRESH_KEYS.each_ref().map(counter),
                ratelimit_limited: counter(&RATELIMIT_LIMITED_KEY),
                lockout: counter(&LOCKOUT_KEY),
                audit_queue_depth: recorder.register_gauge(&AUDIT_QUEUE_DEPTH_KEY, &METADATA),
                audit_written: counter(&AUDIT_WRITTEN_KEY),
                audit_dropped: counter(&AUDIT_DROPPED_KEY),
            }
        }
    }

    /// Set by [`install_recorder`] once its recorder is the global one.
    static HANDLES: OnceLock<Handles> = OnceLock::new();

    /// Installs `recorder` as the process-wide `metrics` recorder
    /// ([`metrics::set_global_recorder`]) and lets portcullis record its fixed-label metrics
    /// through handles registered with it up front, instead of resolving each metric through
    /// the facade on every event (a key copy and a registry lookup per metric with most
    /// recorders, a few thousand CPU instructions per request).
    ///
    /// Opt-in, and once per process. After it succeeds:
    /// - portcullis' fixed-label series (every series in `docs/metrics.md` except those
    ///   labelled by a policy id, a custom authentication method, an alert name or an unknown
    ///   rejection kind) always reach `recorder`, even inside `metrics::with_local_recorder`;
    ///   the others still go through the facade.
    /// - These series exist in `recorder` from the start, at zero, before their first event.
    /// - Do not combine it with a recorder that evicts idle series (for example
    ///   `metrics_exporter_prometheus::PrometheusBuilder::idle_timeout`): once a series is
    ///   evicted, the handle keeps updating storage the recorder no longer exports, so the
    ///   series never comes back (and an evicted histogram's samples are never drained).
    ///
    /// Without it, every metric goes through the facade to whatever recorder is current, as
    /// with `metrics::set_global_recorder`.
    ///
    /// # Errors
    /// [`metrics::SetRecorderError`], carrying `recorder` back (its fixed-label series already
    /// registered, at zero), when a global recorder is already installed; portcullis then keeps
    /// going through the facade.
    ///
    /// # Example
    /// ```
    /// use metrics_exporter_prometheus::PrometheusBuilder;
    ///
    /// let recorder = PrometheusBuilder::new().build_recorder();
    /// let handle = recorder.handle();
    /// portcullis::audit::metrics::install_recorder(recorder)?;
    /// // Run `handle.run_upkeep()` every few seconds (histograms), serve `handle.render()`.
    /// assert!(handle.render().contains("portcullis_authn_total{method=\"jwt\",result=\"success\"} 0"));
    ///
    /// // A second recorder is refused and handed back.
    /// let second = PrometheusBuilder::new().build_recorder();
    /// assert!(portcullis::audit::metrics::install_recorder(second).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn install_recorder<R>(recorder: R) -> Result<(), metrics::SetRecorderError<R>>
    where
        R: Recorder + Sync + 'static,
    {
        // Registered before the move: the handles hold shared references into the
        // recorder's storage, which stay valid wherever the recorder goes.
        let handles = Handles::register(&recorder);
        metrics::set_global_recorder(recorder)?;
        // Only the first successful `set_global_recorder` gets here, so the cell is empty.
        let _ = HANDLES.set(handles);
        Ok(())
    }

    fn increment(key: &'static Key, handle: Option<&Counter>, n: u64) {
        match handle {
            Some(counter) => counter.increment(n),
            None => metrics::with_recorder(|r| r.register_counter(key, &METADATA)).increment(n),
        }
    }

    pub(crate) fn event(e: &AuditEvent) {
        event_with(HANDLES.get(), e);
    }

    fn event_with(handles: Option<&Handles>, e: &AuditEvent) {
        let i = event_index(e.event);
        increment(&EVENT_KEYS[i], handles.map(|h| &h.events[i]), 1);
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
                    metrics::counter!(AUTHZ_DECISIONS, "policy" => policy, "decision" => decision)
                        .increment(1);
                }
            }
            EventType::RateLimited => increment(
                &RATELIMIT_LIMITED_KEY,
                handles.map(|h| &h.ratelimit_limited),
                1,
            ),
            EventType::LockoutLocked => increment(&LOCKOUT_KEY, handles.map(|h| &h.lockout), 1),
            EventType::SecurityAlert => {
                if let Some(crate::audit::DetailValue::Str(name)) = e.detail("alert") {
                    metrics::counter!(ALERTS, "alert" => name.to_string()).increment(1);
                }
            }
            _ => {}
        }
        if e.request_id.is_some()
            && e.event != EventType::AuthzDecision
            && let Some(code) = e.reason_code
            && e.event != EventType::AuthzAllow
        {
            rejection(handles, code);
        }
    }

    /// `portcullis_rejections_total` by `kind`.
    fn rejection(handles: Option<&Handles>, kind: &'static str) {
        match KINDS.iter().position(|k| *k == kind) {
            Some(i) => increment(&REJECTION_KEYS[i], handles.map(|h| &h.rejections[i]), 1),
            None => metrics::counter!(REJECTIONS, "kind" => kind).increment(1),
        }
    }

    pub(crate) fn authn(method: &str, success: bool, seconds: f64) {
        authn_with(HANDLES.get(), method, success, seconds);
    }

    fn authn_with(handles: Option<&Handles>, method: &str, success: bool, seconds: f64) {
        let r = usize::from(!success);
        match METHODS.iter().position(|m| *m == method) {
            Some(m) => match handles {
                Some(h) => {
                    h.authn[m][r].increment(1);
                    h.authn_duration[m][r].record(seconds);
                }
                None => metrics::with_recorder(|rec| {
                    rec.register_counter(&AUTHN_KEYS[m][r], &METADATA)
                        .increment(1);
                    rec.register_histogram(&AUTHN_DURATION_KEYS[m][r], &METADATA)
                        .record(seconds);
                }),
            },
            None => {
                let result = if success { "success" } else { "failure" };
                let method = metrics::SharedString::from(method.to_owned());
                metrics::counter!(AUTHN, "method" => method.clone(), "result" => result)
                    .increment(1);
                metrics::histogram!(AUTHN_DURATION, "method" => method, "result" => result)
                    .record(seconds);
            }
        }
    }

    #[cfg_attr(
        not(feature = "oidc"),
        expect(dead_code, reason = "used by RemoteJwks")
    )]
    pub(crate) fn jwks_refresh(result: &'static str) {
        jwks_refresh_with(HANDLES.get(), result);
    }

    fn jwks_refresh_with(handles: Option<&Handles>, result: &'static str) {
        match JWKS_RESULTS.iter().position(|r| *r == result) {
            Some(i) => increment(
                &JWKS_REFRESH_KEYS[i],
                handles.map(|h| &h.jwks_refresh[i]),
                1,
            ),
            None => metrics::counter!(JWKS_REFRESH, "result" => result).increment(1),
        }
    }

    pub(crate) fn audit_queue_depth(depth: u64) {
        audit_queue_depth_with(HANDLES.get(), depth);
    }

    fn audit_queue_depth_with(handles: Option<&Handles>, depth: u64) {
        match handles {
            Some(h) => h.audit_queue_depth.set(depth as f64),
            None => metrics::with_recorder(|r| r.register_gauge(&AUDIT_QUEUE_DEPTH_KEY, &METADATA))
                .set(depth as f64),
        }
    }

    pub(crate) fn audit_written(n: u64) {
        increment(
            &AUDIT_WRITTEN_KEY,
            HANDLES.get().map(|h| &h.audit_written),
            n,
        );
    }

    pub(crate) fn audit_dropped(n: u64) {
        increment(
            &AUDIT_DROPPED_KEY,
            HANDLES.get().map(|h| &h.audit_dropped),
            n,
        );
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::audit::DetailValue;
        use crate::context::RequestId;
        use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
        use std::collections::BTreeSet;
        use std::sync::Arc;

        const TYPES: [EventType; 21] = [
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
        const TEST_KINDS: [&str; 14] = [
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
        const TEST_METHODS: [&str; 5] = ["jwt", "api_key", "mtls", "none", "custom"];

        /// Every recording function once per static key (and a few dynamic ones), through
        /// `handles` when given, else through the facade.
        fn record_everything(handles: Option<&Handles>) {
            for t in TYPES {
                event_with(handles, &AuditEvent::new(t));
            }
            for kind in TEST_KINDS {
                event_with(
                    handles,
                    &AuditEvent::new(EventType::AuthzDeny)
                        .with_request_id(RequestId::generate())
                        .with_reason_code(kind),
                );
            }
            let mut decision = AuditEvent::new(EventType::AuthzDecision)
                .with_policy_id(Arc::<str>::from("has_role(admin)"));
            event_with(handles, &decision);
            decision.reason_code = Some("no_rule_permits");
            event_with(handles, &decision);
            event_with(
                handles,
                &AuditEvent::new(EventType::SecurityAlert)
                    .with_detail("alert", DetailValue::from("authn_failure_spike")),
            );
            for method in TEST_METHODS {
                authn_with(handles, method, true, 0.001);
                authn_with(handles, method, false, 0.002);
            }
            for result in JWKS_RESULTS {
                jwks_refresh_with(handles, result);
            }
            audit_queue_depth_with(handles, 3);
            increment(&AUDIT_WRITTEN_KEY, handles.map(|h| &h.audit_written), 2);
            increment(&AUDIT_DROPPED_KEY, handles.map(|h| &h.audit_dropped), 1);
        }

        /// The documented names and labels, each with the count `record_everything` gives.
        fn assert_documented(text: &str) {
            let has = |needle: String| assert!(text.contains(&needle), "{needle} missing:\n{text}");
            for t in TYPES {
                let n = match t {
                    // The bare event and the 14 refusals.
                    EventType::AuthzDeny => 15,
                    // The bare event and the two decisions.
                    EventType::AuthzDecision => 3,
                    // The bare event and the named alert.
                    EventType::SecurityAlert => 2,
                    _ => 1,
                };
                has(format!("{AUDIT_EVENTS}{{event=\"{}\"}} {n}\n", t.as_str()));
            }
            for kind in TEST_KINDS {
                has(format!("{REJECTIONS}{{kind=\"{kind}\"}} 1\n"));
            }
            has(format!(
                "{AUTHZ_DECISIONS}{{policy=\"has_role(admin)\",decision=\"allow\"}} 1\n"
            ));
            has(format!(
                "{AUTHZ_DECISIONS}{{policy=\"has_role(admin)\",decision=\"deny\"}} 1\n"
            ));
            has(format!("{ALERTS}{{alert=\"authn_failure_spike\"}} 1\n"));
            has(format!("{RATELIMIT_LIMITED} 1\n"));
            has(format!("{LOCKOUT} 1\n"));
            for method in TEST_METHODS {
                for result in ["success", "failure"] {
                    has(format!(
                        "{AUTHN}{{method=\"{method}\",result=\"{result}\"}} 1\n"
                    ));
                    has(format!(
                        "{AUTHN_DURATION}_count{{method=\"{method}\",result=\"{result}\"}} 1\n"
                    ));
                }
            }
            for result in ["updated", "unchanged", "failure"] {
                has(format!("{JWKS_REFRESH}{{result=\"{result}\"}} 1\n"));
            }
            has(format!("{AUDIT_QUEUE_DEPTH} 3\n"));
            has(format!("{AUDIT_WRITTEN} 2\n"));
            has(format!("{AUDIT_DROPPED} 1\n"));
        }

        fn lines(recorder: &PrometheusRecorder) -> BTreeSet<String> {
            recorder
                .handle()
                .render()
                .lines()
                .map(str::to_owned)
                .collect()
        }

        /// Every static key against the constants and wire names, through the facade (no
        /// installed handles) and through handles registered with a recorder: both paths give
        /// the same exposition.
        #[test]
        fn static_keys_have_the_documented_names_and_labels() {
            let facade = PrometheusBuilder::new().build_recorder();
            metrics::with_local_recorder(&facade, || record_everything(None));
            assert_documented(&facade.handle().render());

            let cached = PrometheusBuilder::new().build_recorder();
            let handles = Handles::register(&cached);
            // The dynamic labels go through the facade.
            metrics::with_local_recorder(&cached, || record_everything(Some(&handles)));
            assert_documented(&cached.handle().render());
            assert_eq!(lines(&facade), lines(&cached));
        }

        /// Registered handles reach their own recorder, not the current local one, and exist
        /// at zero before the first event.
        #[test]
        fn handles_record_to_the_recorder_they_were_registered_with() {
            let installed = PrometheusBuilder::new().build_recorder();
            let handles = Handles::register(&installed);
            let text = installed.handle().render();
            assert!(
                text.contains(&format!("{AUTHN}{{method=\"jwt\",result=\"success\"}} 0\n")),
                "{text}"
            );
            assert!(
                text.contains(&format!("{AUDIT_EVENTS}{{event=\"authz.allow\"}} 0\n")),
                "{text}"
            );

            let local = PrometheusBuilder::new().build_recorder();
            metrics::with_local_recorder(&local, || {
                authn_with(Some(&handles), "jwt", true, 0.001);
                event_with(Some(&handles), &AuditEvent::new(EventType::AuthzAllow));
            });
            let text = installed.handle().render();
            assert!(
                text.contains(&format!("{AUTHN}{{method=\"jwt\",result=\"success\"}} 1\n")),
                "{text}"
            );
            assert!(
                text.contains(&format!("{AUDIT_EVENTS}{{event=\"authz.allow\"}} 1\n")),
                "{text}"
            );
            assert!(!local.handle().render().contains("portcullis_"));
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
