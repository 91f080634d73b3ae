//! Spike detection over sliding windows: 401s, 403s, 429s, unknown `kid`s, JWKS failures and
//! lockouts.
//!
//! The [`AlertDetector`] watches the events that pass through an [`Auditor`]. When a signal
//! reaches its threshold within its window it raises a `security.alert` event (through the
//! same auditor, so it lands in the audit trail and the metrics) and calls every
//! [`AlertHook`]. A signal that fired stays quiet for one window, so a sustained attack gives
//! one alert per window rather than one per request.
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, UNIX_EPOCH};
//! use portcullis::audit::{Alert, AlertDetector, AuditEvent, Auditor, EventType, Signal};
//! use portcullis::clock::ManualClock;
//!
//! let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(1_000));
//! let fired = Arc::new(Mutex::new(Vec::new()));
//! let hook = {
//!     let fired = fired.clone();
//!     move |alert: &Alert| fired.lock().unwrap().push(alert.signal)
//! };
//! let detector = AlertDetector::builder()
//!     .rule(Signal::Unauthorized, NonZeroU32::new(3).unwrap(), Duration::from_secs(60))
//!     .clock(Arc::new(clock.clone()))
//!     .hook(hook)
//!     .build()
//!     .unwrap();
//! let auditor = Auditor::builder().sink(|_: &AuditEvent| {}).alerts(detector).build().unwrap();
//! for _ in 0..3 {
//!     let mut e = AuditEvent::new(EventType::AuthnFailure);
//!     e.status = Some(401);
//!     auditor.record(e);
//! }
//! assert_eq!(*fired.lock().unwrap(), [Signal::Unauthorized]);
//! ```
//!
//! # Deployment caveat
//! Counts are per process: behind a load balancer each replica sees its share of an attack,
//! so set thresholds per replica (or alert on the summed metrics instead). Hooks run on the
//! thread that recorded the triggering event; they must return quickly (the
//! [`WebhookHook`](crate::audit::WebhookHook) only queues).

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::auditor::Auditor;
use super::event::{AuditEvent, EventType};
use crate::clock::{self, SharedClock};
use crate::error::ConfigError;

/// What the detector counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// A request refused with 401.
    Unauthorized,
    /// A request refused with 403.
    Forbidden,
    /// A request refused by a rate limit (429).
    RateLimited,
    /// A token named a `kid` that no key source knows.
    UnknownKid,
    /// A JWKS fetch failed.
    JwksFailure,
    /// A client was locked out, or a locked-out client was refused.
    Lockout,
}

const SIGNALS: [Signal; 6] = [
    Signal::Unauthorized,
    Signal::Forbidden,
    Signal::RateLimited,
    Signal::UnknownKid,
    Signal::JwksFailure,
    Signal::Lockout,
];

impl Signal {
    /// The alert name: `unauthorized_spike`, `forbidden_spike`, `rate_limited_spike`,
    /// `unknown_kid_spike`, `jwks_failures`, `lockout_spike`.
    pub const fn alert_name(self) -> &'static str {
        match self {
            Signal::Unauthorized => "unauthorized_spike",
            Signal::Forbidden => "forbidden_spike",
            Signal::RateLimited => "rate_limited_spike",
            Signal::UnknownKid => "unknown_kid_spike",
            Signal::JwksFailure => "jwks_failures",
            Signal::Lockout => "lockout_spike",
        }
    }

    const fn index(self) -> usize {
        match self {
            Signal::Unauthorized => 0,
            Signal::Forbidden => 1,
            Signal::RateLimited => 2,
            Signal::UnknownKid => 3,
            Signal::JwksFailure => 4,
            Signal::Lockout => 5,
        }
    }

    /// The signals an event carries.
    pub(crate) fn of(event: &AuditEvent) -> impl Iterator<Item = Signal> {
        let mut out = [None, None];
        // A gRPC refusal travels as HTTP 200 with a `grpc-status`; count it as the HTTP status
        // it stands for, or gRPC traffic (or an HTTP client claiming gRPC) would never alert.
        let status = match event.grpc_status {
            Some(16) => Some(401),
            Some(7) => Some(403),
            Some(8) => Some(429),
            _ => event.status,
        };
        match (event.event, status) {
            (EventType::LockoutLocked, _) => out[0] = Some(Signal::Lockout),
            (EventType::RateLimited, _) | (_, Some(429)) => out[0] = Some(Signal::RateLimited),
            (_, Some(401)) => {
                out[0] = Some(Signal::Unauthorized);
                if event
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("unknown kid"))
                {
                    out[1] = Some(Signal::UnknownKid);
                }
            }
            (_, Some(403)) => out[0] = Some(Signal::Forbidden),
            _ => {}
        }
        out.into_iter().flatten()
    }
}

/// A raised alert.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Alert {
    /// What spiked.
    pub signal: Signal,
    /// Occurrences within the window when it fired.
    pub count: u32,
    /// The threshold.
    pub threshold: u32,
    /// The window.
    pub window: Duration,
    /// When it fired.
    pub at: SystemTime,
}

impl Alert {
    /// The alert as a JSON object (the webhook body): `alert`, `count`, `threshold`,
    /// `window_secs`, `at`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "alert": self.signal.alert_name(),
            "count": self.count,
            "threshold": self.threshold,
            "window_secs": self.window.as_secs(),
            "at": super::event::rfc3339(self.at),
        })
        .to_string()
    }
}

/// Called for every raised alert. Closures `Fn(&Alert)` are hooks; `()` is the no-op.
pub trait AlertHook: Send + Sync + 'static {
    /// Handles one alert. Must return quickly: it runs on a request's thread.
    fn on_alert(&self, alert: &Alert);
}

impl<F> AlertHook for F
where
    F: Fn(&Alert) + Send + Sync + 'static,
{
    fn on_alert(&self, alert: &Alert) {
        self(alert)
    }
}

impl AlertHook for () {
    fn on_alert(&self, _: &Alert) {}
}

/// One signal's threshold and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    threshold: NonZeroU32,
    window: Duration,
}

struct Window {
    /// Times of the most recent occurrences, at most `threshold` of them.
    times: VecDeque<SystemTime>,
    quiet_until: Option<SystemTime>,
}

struct Inner {
    rules: [Option<Rule>; 6],
    windows: [Mutex<Window>; 6],
    hooks: Vec<Arc<dyn AlertHook>>,
    clock: SharedClock,
}

/// Counts signals over sliding windows and raises alerts. See the [module docs](self).
#[derive(Clone)]
pub struct AlertDetector {
    inner: Arc<Inner>,
}

impl fmt::Debug for AlertDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertDetector")
            .field("rules", &self.inner.rules)
            .field("hooks", &self.inner.hooks.len())
            .finish()
    }
}

impl AlertDetector {
    /// A detector with the default rules:
    ///
    /// | signal | threshold | window |
    /// |---|---|---|
    /// | 401 | 100 | 60 s |
    /// | 403 | 50 | 60 s |
    /// | 429 | 500 | 60 s |
    /// | unknown `kid` | 20 | 60 s |
    /// | JWKS failure | 3 | 5 min |
    /// | lockout | 10 | 5 min |
    ///
    /// Lower thresholds alert earlier and more often on ordinary noise (expired tokens,
    /// crawlers); higher ones let a slow attack go unnoticed.
    pub fn builder() -> AlertDetectorBuilder {
        let rule = |threshold: u32, secs: u64| {
            NonZeroU32::new(threshold).map(|threshold| Rule {
                threshold,
                window: Duration::from_secs(secs),
            })
        };
        AlertDetectorBuilder {
            rules: [
                rule(100, 60),
                rule(50, 60),
                rule(500, 60),
                rule(20, 60),
                rule(3, 300),
                rule(10, 300),
            ],
            hooks: Vec::new(),
            clock: clock::system(),
        }
    }

    /// Counts one occurrence of `signal`; raises an alert through `auditor` and the hooks when
    /// the threshold is reached.
    pub(crate) fn observe(&self, signal: Signal, auditor: &Auditor) {
        let i = signal.index();
        let Some(rule) = self.inner.rules[i] else {
            return;
        };
        let now = self.inner.clock.now();
        let alert = {
            let Ok(mut window) = self.inner.windows[i].lock() else {
                return;
            };
            let threshold = usize::try_from(rule.threshold.get()).unwrap_or(usize::MAX);
            if window.times.len() >= threshold {
                window.times.pop_front();
            }
            window.times.push_back(now);
            while window
                .times
                .front()
                .is_some_and(|t| now.duration_since(*t).unwrap_or_default() > rule.window)
            {
                window.times.pop_front();
            }
            let quiet = window.quiet_until.is_some_and(|until| now < until);
            if window.times.len() >= threshold && !quiet {
                window.quiet_until = Some(now + rule.window);
                Some(Alert {
                    signal,
                    count: u32::try_from(window.times.len()).unwrap_or(u32::MAX),
                    threshold: rule.threshold.get(),
                    window: rule.window,
                    at: now,
                })
            } else {
                None
            }
        };
        let Some(alert) = alert else {
            return;
        };
        auditor.record(
            AuditEvent::new(EventType::SecurityAlert)
                .with_timestamp(now)
                .with_reason_code(signal.alert_name())
                .with_detail("alert", signal.alert_name())
                .with_detail("count", alert.count)
                .with_detail("threshold", alert.threshold)
                .with_detail("window_secs", alert.window.as_secs()),
        );
        for hook in &self.inner.hooks {
            hook.on_alert(&alert);
        }
    }
}

/// Configures an [`AlertDetector`].
#[must_use]
pub struct AlertDetectorBuilder {
    rules: [Option<Rule>; 6],
    hooks: Vec<Arc<dyn AlertHook>>,
    clock: SharedClock,
}

impl fmt::Debug for AlertDetectorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertDetectorBuilder")
            .field("rules", &self.rules)
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

impl AlertDetectorBuilder {
    /// Alerts when `signal` happens `threshold` times within `window`.
    pub fn rule(mut self, signal: Signal, threshold: NonZeroU32, window: Duration) -> Self {
        self.rules[signal.index()] = Some(Rule { threshold, window });
        self
    }

    /// Never alerts on `signal`.
    pub fn disable(mut self, signal: Signal) -> Self {
        self.rules[signal.index()] = None;
        self
    }

    /// Adds a hook.
    pub fn hook(mut self, hook: impl AlertHook) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The detector. Fails on a zero or longer-than-a-day window.
    pub fn build(self) -> Result<AlertDetector, ConfigError> {
        for (rule, signal) in self.rules.iter().zip(SIGNALS) {
            if let Some(rule) = rule
                && (rule.window.is_zero() || rule.window > Duration::from_secs(86_400))
            {
                return Err(ConfigError::new(format!(
                    "alert window of {} must be within (0, 24 h]",
                    signal.alert_name()
                )));
            }
        }
        let window = || {
            Mutex::new(Window {
                times: VecDeque::new(),
                quiet_until: None,
            })
        };
        Ok(AlertDetector {
            inner: Arc::new(Inner {
                rules: self.rules,
                windows: [window(), window(), window(), window(), window(), window()],
                hooks: self.hooks,
                clock: self.clock,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::UNIX_EPOCH;

    type Seen = Arc<Mutex<Vec<AuditEvent>>>;

    fn setup(
        threshold: u32,
        window_secs: u64,
    ) -> (ManualClock, Auditor, Seen, Arc<Mutex<Vec<Alert>>>) {
        let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(10_000));
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let mut builder = AlertDetector::builder()
            .clock(Arc::new(clock.clone()))
            .hook({
                let alerts = alerts.clone();
                move |a: &Alert| alerts.lock().unwrap().push(a.clone())
            });
        for signal in SIGNALS {
            builder = builder.rule(
                signal,
                NonZeroU32::new(threshold).unwrap(),
                Duration::from_secs(window_secs),
            );
        }
        let auditor = Auditor::builder()
            .sink({
                let seen = seen.clone();
                move |e: &AuditEvent| seen.lock().unwrap().push(e.clone())
            })
            .alerts(builder.build().unwrap())
            .build()
            .unwrap();
        (clock, auditor, seen, alerts)
    }

    fn refusal(event: EventType, status: u16, reason: &'static str) -> AuditEvent {
        let mut e = AuditEvent::new(event).with_reason(reason);
        e.status = Some(status);
        e
    }

    #[test]
    fn fires_at_the_threshold_within_the_window_only() {
        let (clock, auditor, seen, alerts) = setup(5, 60);
        // Four 401s, then a pause longer than the window: the old ones no longer count.
        for _ in 0..4 {
            auditor.record(refusal(EventType::AuthnFailure, 401, "expired"));
            clock.advance(Duration::from_secs(10));
        }
        clock.advance(Duration::from_secs(60));
        auditor.record(refusal(EventType::AuthnFailure, 401, "expired"));
        assert!(alerts.lock().unwrap().is_empty());
        for _ in 0..4 {
            clock.advance(Duration::from_secs(1));
            auditor.record(refusal(EventType::AuthnFailure, 401, "expired"));
        }
        let fired = alerts.lock().unwrap().clone();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].signal, Signal::Unauthorized);
        assert_eq!(fired[0].count, 5);
        // The alert is an audit event too.
        let events = seen.lock().unwrap();
        let alert = events
            .iter()
            .find(|e| e.event == EventType::SecurityAlert)
            .unwrap();
        assert_eq!(
            alert.detail("alert"),
            Some(&super::super::DetailValue::from("unauthorized_spike"))
        );
        assert_eq!(alert.reason_code, Some("unauthorized_spike"));
    }

    #[test]
    fn quiet_for_one_window_after_firing_then_fires_again() {
        let (clock, auditor, _, alerts) = setup(3, 60);
        for _ in 0..10 {
            auditor.record(refusal(EventType::AuthzDeny, 403, "no"));
        }
        assert_eq!(alerts.lock().unwrap().len(), 1);
        clock.advance(Duration::from_secs(61));
        for _ in 0..3 {
            auditor.record(refusal(EventType::AuthzDeny, 403, "no"));
        }
        let fired = alerts.lock().unwrap();
        assert_eq!(fired.len(), 2);
        assert!(fired.iter().all(|a| a.signal == Signal::Forbidden));
    }

    #[test]
    fn each_signal_is_counted_apart() {
        let (_, auditor, _, alerts) = setup(2, 60);
        auditor.record(refusal(EventType::AuthnFailure, 401, "unknown kid"));
        auditor.record(refusal(
            EventType::RateLimited,
            429,
            "rate limit per-ip exceeded",
        ));
        auditor.record(refusal(EventType::AuthzDeny, 403, "no"));
        auditor.record(AuditEvent::new(EventType::LockoutLocked));
        auditor.signal(Signal::JwksFailure);
        assert!(alerts.lock().unwrap().is_empty());
        auditor.record(refusal(EventType::AuthnFailure, 401, "unknown kid"));
        auditor.signal(Signal::JwksFailure);
        auditor.record(AuditEvent::new(EventType::LockoutLocked));
        let mut fired: Vec<Signal> = alerts.lock().unwrap().iter().map(|a| a.signal).collect();
        fired.sort_by_key(|s| s.index());
        assert_eq!(
            fired,
            [
                Signal::Unauthorized,
                Signal::UnknownKid,
                Signal::JwksFailure,
                Signal::Lockout
            ]
        );
        // Successes never count.
        let mut ok = AuditEvent::new(EventType::AuthzAllow);
        ok.status = Some(200);
        assert_eq!(Signal::of(&ok).count(), 0);
        // gRPC refusals are HTTP 200 with a grpc-status; they count as what they stand for.
        for (code, signal) in [
            (16, Signal::Unauthorized),
            (7, Signal::Forbidden),
            (8, Signal::RateLimited),
        ] {
            let mut grpc = AuditEvent::new(EventType::AuthnFailure);
            grpc.status = Some(200);
            grpc.grpc_status = Some(code);
            assert_eq!(Signal::of(&grpc).collect::<Vec<_>>(), [signal], "{code}");
        }
    }

    #[test]
    fn disabled_signals_and_bad_windows() {
        assert!(
            AlertDetector::builder()
                .rule(Signal::Forbidden, NonZeroU32::MIN, Duration::ZERO)
                .build()
                .is_err()
        );
        let fired = Arc::new(Mutex::new(0));
        let detector = AlertDetector::builder()
            .disable(Signal::Forbidden)
            .hook({
                let fired = fired.clone();
                move |_: &Alert| *fired.lock().unwrap() += 1
            })
            .build()
            .unwrap();
        let auditor = Auditor::builder()
            .sink(|_: &AuditEvent| {})
            .alerts(detector)
            .build()
            .unwrap();
        for _ in 0..1000 {
            auditor.record(refusal(EventType::AuthzDeny, 403, "no"));
        }
        assert_eq!(*fired.lock().unwrap(), 0);
        // The default 401 rule (100 per minute) still applies.
        for _ in 0..100 {
            auditor.record(refusal(EventType::AuthnFailure, 401, "expired"));
        }
        assert_eq!(*fired.lock().unwrap(), 1);
    }
}
