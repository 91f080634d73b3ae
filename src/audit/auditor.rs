//! The [`Auditor`]: sampling, metrics, the alert detector, and the sinks.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::alert::{AlertDetector, Signal};
use super::event::{AuditEvent, EventType, Severity};
use crate::error::ConfigError;

/// Where audit events go. Implementations must not block on I/O: they run on the request
/// path. [`JsonLinesSink`](super::JsonLinesSink) queues; [`TracingSink`] hands the event to
/// the `tracing` dispatcher.
///
/// Closures `Fn(&AuditEvent)` are sinks too.
pub trait AuditSink: Send + Sync + 'static {
    /// Records one event.
    fn record(&self, event: &AuditEvent);

    /// Records one event the sink may keep (the last sink of an [`Auditor`] gets the event by
    /// value, so a queueing sink need not clone it). Default: [`record`](AuditSink::record).
    fn record_owned(&self, event: AuditEvent) {
        self.record(&event);
    }
}

impl<F> AuditSink for F
where
    F: Fn(&AuditEvent) + Send + Sync + 'static,
{
    fn record(&self, event: &AuditEvent) {
        self(event)
    }
}

/// Writes events to the `tracing` target [`TARGET`](super::TARGET) (`portcullis::audit`):
/// `WARN` for refusals, `INFO` otherwise, one field per schema field (`policy_ids` joined by
/// commas, `details` as a JSON object text). The default sink.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl AuditSink for TracingSink {
    fn record(&self, e: &AuditEvent) {
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "portcullis::audit",
                    $level,
                    v = super::SCHEMA_VERSION,
                    event = e.event.as_str(),
                    request_id = e.request_id.as_ref().map(|id| id.as_str()),
                    trace_id = e.trace_id.as_ref().map(|id| id.as_str()),
                    decision_id = e.decision_id.as_deref(),
                    subject = e.principal.as_ref().map(|p| p.subject()),
                    principal_kind = e.principal.as_ref().map(|p| match p.kind() {
                        crate::principal::PrincipalKind::Service => "service",
                        _ => "user",
                    }),
                    issuer = e.principal.as_ref().and_then(|p| p.issuer()),
                    auth_method = e.principal.as_ref().map(|p| p.auth_method().name()),
                    key_id = e.key_id(),
                    client_ip = e.client_ip.map(tracing::field::display),
                    method = e.method.as_ref().map(http::Method::as_str),
                    route = e.route.as_deref(),
                    path = e.path.as_deref(),
                    grpc_method = e.grpc_method.as_deref(),
                    status = e.status,
                    grpc_status = e.grpc_status,
                    policy_ids = e.policy_ids_joined(),
                    reason_code = e.reason_code,
                    reason = e.reason.as_deref(),
                    duration_us = e.duration.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                    details = e.details_json(),
                )
            };
        }
        match e.severity {
            Severity::Warn => emit!(tracing::Level::WARN),
            _ => emit!(tracing::Level::INFO),
        }
    }
}

/// Which successes are recorded. Refusals, alerts and losses are always recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sampling {
    /// Every one.
    All,
    /// One in `n` (counted, not random, so the rate is exact).
    OneIn(NonZeroU32),
    /// None.
    Never,
}

impl Sampling {
    fn keep(self, counter: &AtomicU64) -> bool {
        match self {
            Sampling::All => true,
            Sampling::Never => false,
            Sampling::OneIn(n) => counter
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(u64::from(n.get())),
        }
    }
}

struct Inner {
    sinks: Vec<Arc<dyn AuditSink>>,
    success: Sampling,
    authn_success: Sampling,
    success_counter: AtomicU64,
    authn_counter: AtomicU64,
    detector: Option<AlertDetector>,
}

/// The audit pipeline: every event goes through [`record`](Auditor::record), which counts it
/// in the metrics (feature `metrics`), feeds the alert detector, applies sampling to successes,
/// and hands it to each sink. Cheap to clone.
///
/// [`RequestContextLayer::with_auditor`](crate::context::RequestContextLayer::with_auditor)
/// uses one for its per-request events and passes it to the inner layers in the request
/// extensions; events outside a request (revocations, key rotations, alerts) go to the
/// [`global`] auditor.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use portcullis::audit::{AuditEvent, Auditor, EventType, Sampling};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = {
///     let seen = seen.clone();
///     move |e: &AuditEvent| seen.lock().unwrap().push(e.event)
/// };
/// let auditor = Auditor::builder()
///     .sink(sink)
///     .success_sampling(Sampling::Never)
///     .build()
///     .unwrap();
/// auditor.record(AuditEvent::new(EventType::AuthzAllow));
/// auditor.record(AuditEvent::new(EventType::AuthzDeny));
/// assert_eq!(*seen.lock().unwrap(), [EventType::AuthzDeny]);
/// ```
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auditor")
            .field("sinks", &self.inner.sinks.len())
            .field("success", &self.inner.success)
            .field("authn_success", &self.inner.authn_success)
            .field("alerts", &self.inner.detector.is_some())
            .finish()
    }
}

impl Default for Auditor {
    fn default() -> Self {
        Self::tracing()
    }
}

impl Auditor {
    /// Configures an auditor.
    pub fn builder() -> AuditorBuilder {
        AuditorBuilder {
            sinks: Vec::new(),
            success: Sampling::All,
            authn_success: Sampling::Never,
            detector: None,
        }
    }

    /// The default: every event to [`TracingSink`], all successes, no alerts.
    pub fn tracing() -> Self {
        Self {
            inner: Arc::new(Inner {
                sinks: vec![Arc::new(TracingSink)],
                success: Sampling::All,
                authn_success: Sampling::Never,
                success_counter: AtomicU64::new(0),
                authn_counter: AtomicU64::new(0),
                detector: None,
            }),
        }
    }

    /// Records one event (see the [type docs](Auditor)).
    pub fn record(&self, event: AuditEvent) {
        super::metrics::event(&event);
        if let Some(detector) = &self.inner.detector {
            for signal in Signal::of(&event) {
                detector.observe(signal, self);
            }
        }
        let keep = match event.event {
            EventType::AuthnSuccess => self.inner.authn_success.keep(&self.inner.authn_counter),
            e if e.is_success() => self.inner.success.keep(&self.inner.success_counter),
            _ => true,
        };
        if keep && let Some((last, others)) = self.inner.sinks.split_last() {
            for sink in others {
                sink.record(&event);
            }
            last.record_owned(event);
        }
    }

    /// Reports a signal that is not an audit event of its own (a JWKS refresh failure) to the
    /// alert detector.
    pub fn signal(&self, signal: Signal) {
        if let Some(detector) = &self.inner.detector {
            detector.observe(signal, self);
        }
    }

    /// Whether `authn.success` events would be kept at all (lets the authentication layer skip
    /// building them).
    pub(crate) fn wants_authn_success(&self) -> bool {
        self.inner.authn_success != Sampling::Never
    }

    /// The alert detector, when configured.
    pub fn alerts(&self) -> Option<&AlertDetector> {
        self.inner.detector.as_ref()
    }
}

/// Configures an [`Auditor`].
#[must_use]
pub struct AuditorBuilder {
    sinks: Vec<Arc<dyn AuditSink>>,
    success: Sampling,
    authn_success: Sampling,
    detector: Option<AlertDetector>,
}

impl fmt::Debug for AuditorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditorBuilder")
            .field("sinks", &self.sinks.len())
            .field("success", &self.success)
            .finish_non_exhaustive()
    }
}

impl AuditorBuilder {
    /// Adds a sink. At least one is required.
    pub fn sink(mut self, sink: impl AuditSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Adds a shared sink (keep the other handle to flush or shut it down).
    pub fn shared_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Which `authz.allow` events (completed requests) are recorded. Default
    /// [`Sampling::All`]: one event per request. Sampling lowers the cost of the audit trail
    /// at the price of a partial record of successful access; refusals are always recorded.
    pub fn success_sampling(mut self, sampling: Sampling) -> Self {
        self.success = sampling;
        self
    }

    /// Which `authn.success` events (one per verified credential, beside the request's own
    /// event) are recorded. Default [`Sampling::Never`]: the request's event already names the
    /// principal, its authentication method and key id.
    pub fn authn_success_sampling(mut self, sampling: Sampling) -> Self {
        self.authn_success = sampling;
        self
    }

    /// Runs the alert detector over every event.
    pub fn alerts(mut self, detector: AlertDetector) -> Self {
        self.detector = Some(detector);
        self
    }

    /// The auditor. Fails without a sink.
    pub fn build(self) -> Result<Auditor, ConfigError> {
        if self.sinks.is_empty() {
            return Err(ConfigError::new("an auditor needs at least one sink"));
        }
        Ok(Auditor {
            inner: Arc::new(Inner {
                sinks: self.sinks,
                success: self.success,
                authn_success: self.authn_success,
                success_counter: AtomicU64::new(0),
                authn_counter: AtomicU64::new(0),
                detector: self.detector,
            }),
        })
    }
}

static GLOBAL: OnceLock<Auditor> = OnceLock::new();

/// The process-wide auditor: the one given to [`install_global`], or [`Auditor::tracing`].
/// Events that happen outside a request (revocations, key rotations, JWKS failures) and
/// layers without an auditor of their own use it.
pub fn global() -> &'static Auditor {
    static FALLBACK: OnceLock<Auditor> = OnceLock::new();
    GLOBAL
        .get()
        .unwrap_or_else(|| FALLBACK.get_or_init(Auditor::tracing))
}

/// Installs the process-wide auditor. Once per process: a second call fails and leaves the
/// first in place.
pub fn install_global(auditor: Auditor) -> Result<(), ConfigError> {
    GLOBAL
        .set(auditor)
        .map_err(|_| ConfigError::new("the global auditor is already installed"))
}

impl Auditor {
    /// Whether this is the auditor given to [`install_global`], which [`global`] returns for
    /// the rest of the process.
    pub(crate) fn is_installed_global(&self) -> bool {
        GLOBAL
            .get()
            .is_some_and(|global| Arc::ptr_eq(&global.inner, &self.inner))
    }
}

/// Records `event` with the auditor in `extensions` (put there by the edge layer), or the
/// [`global`] one.
pub(crate) fn record_in(extensions: &http::Extensions, event: AuditEvent) {
    match extensions.get::<Auditor>() {
        Some(auditor) => auditor.record(event),
        None => global().record(event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn collecting(success: Sampling, authn: Sampling) -> (Auditor, Arc<Mutex<Vec<EventType>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let seen = seen.clone();
            move |e: &AuditEvent| seen.lock().unwrap().push(e.event)
        };
        let auditor = Auditor::builder()
            .sink(sink)
            .success_sampling(success)
            .authn_success_sampling(authn)
            .build()
            .unwrap();
        (auditor, seen)
    }

    #[test]
    fn successes_are_sampled_refusals_never() {
        let (auditor, seen) = collecting(
            Sampling::OneIn(NonZeroU32::new(10).unwrap()),
            Sampling::Never,
        );
        for _ in 0..100 {
            auditor.record(AuditEvent::new(EventType::AuthzAllow));
            auditor.record(AuditEvent::new(EventType::AuthnSuccess));
            auditor.record(AuditEvent::new(EventType::AuthzDeny));
        }
        let seen = seen.lock().unwrap();
        let count = |t| seen.iter().filter(|e| **e == t).count();
        assert_eq!(count(EventType::AuthzAllow), 10);
        assert_eq!(count(EventType::AuthnSuccess), 0);
        assert_eq!(count(EventType::AuthzDeny), 100);
        assert!(!auditor.wants_authn_success());
    }

    #[test]
    fn every_sink_gets_every_kept_event() {
        let (first, seen_first) = collecting(Sampling::All, Sampling::All);
        let seen_second = Arc::new(Mutex::new(0));
        let auditor = Auditor::builder()
            .sink(move |e: &AuditEvent| first.record(e.clone()))
            .sink({
                let seen = seen_second.clone();
                move |_: &AuditEvent| *seen.lock().unwrap() += 1
            })
            .build()
            .unwrap();
        auditor.record(AuditEvent::new(EventType::AuthnSuccess));
        auditor.record(AuditEvent::new(EventType::TokenRevoked));
        // The default for `authn.success` is never.
        assert_eq!(*seen_first.lock().unwrap(), [EventType::TokenRevoked]);
        assert_eq!(*seen_second.lock().unwrap(), 1);
        assert!(Auditor::builder().build().is_err());
    }
}
