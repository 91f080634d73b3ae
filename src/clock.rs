//! Time, injected.
//!
//! Every time-dependent check in portcullis (token expiry, `nbf`/`iat`, cache lifetimes, and
//! later lockout windows and rate limits) reads the time through a [`Clock`], so tests move time
//! forward instead of sleeping.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use portcullis::clock::{Clock, ManualClock};
//!
//! let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(1_000));
//! clock.advance(Duration::from_secs(5));
//! assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_005));
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::context::RequestContext;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// Seconds since the Unix epoch, saturating at zero for times before it.
    fn unix_seconds(&self) -> u64 {
        unix_seconds(self.now())
    }

    /// Whether [`now`](Self::now) is the operating system's clock, read afresh at every call.
    /// Default: `false`; only [`SystemClock`] says `true`.
    ///
    /// Layers behind [`RequestContextLayer`](crate::context::RequestContextLayer) then take the
    /// time the request arrived ([`RequestContext::received`](crate::context::RequestContext))
    /// instead of reading the clock again for their checks (rate limits, lockout, token expiry).
    /// Any other clock, such as a [`ManualClock`] in a test, is always asked.
    fn is_system(&self) -> bool {
        false
    }
}

/// Seconds since the Unix epoch of `time`, saturating at zero for times before it.
fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The operating system's clock. The default everywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn is_system(&self) -> bool {
        true
    }
}

/// The time a check made for a request uses: with the system clock, the time the request
/// arrived at the edge ([`RequestContext::received`]), which the edge read once for every layer;
/// with any other clock, or without the edge, `clock`'s own time.
pub(crate) fn request_time(clock: &dyn Clock, extensions: &http::Extensions) -> SystemTime {
    if clock.is_system()
        && let Some(context) = extensions.get::<RequestContext>()
    {
        return context.received;
    }
    clock.now()
}

/// [`request_time`] in seconds since the Unix epoch, as [`Clock::unix_seconds`] counts them.
#[cfg_attr(not(feature = "jwt"), allow(dead_code))]
pub(crate) fn request_unix_seconds(clock: &dyn Clock, extensions: &http::Extensions) -> u64 {
    unix_seconds(request_time(clock, extensions))
}

/// A shared, cheaply cloned clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The default clock handle: [`SystemClock`].
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that only moves when told to. Clones share the same time.
///
/// Meant for tests of services built on portcullis; it is always available because it is tiny
/// and carries no risk (nothing in the crate uses it unless handed one).
#[derive(Clone)]
pub struct ManualClock {
    nanos_since_epoch: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock stopped at `time` (times before the Unix epoch are clamped to it).
    pub fn at(time: SystemTime) -> Self {
        let nanos = time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            nanos_since_epoch: Arc::new(AtomicU64::new(nanos)),
        }
    }

    /// A clock stopped at the current system time.
    pub fn now_from_system() -> Self {
        Self::at(SystemTime::now())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos_since_epoch.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `time`.
    pub fn set(&self, time: SystemTime) {
        let nanos = time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.nanos_since_epoch.store(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.nanos_since_epoch.load(Ordering::SeqCst))
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::at(UNIX_EPOCH);
        let b = a.clone();
        a.advance(Duration::from_secs(10));
        assert_eq!(b.unix_seconds(), 10);
        b.set(UNIX_EPOCH + Duration::from_secs(3));
        assert_eq!(a.unix_seconds(), 3);
    }

    #[test]
    fn only_the_system_clock_defers_to_the_request_arrival_time() {
        use crate::context::RequestContext;

        let received = UNIX_EPOCH + Duration::from_secs(1_000_000_007);
        let mut extensions = http::Extensions::new();
        let manual = ManualClock::at(UNIX_EPOCH + Duration::from_secs(42));
        let system = system();
        assert!(system.is_system() && SystemClock.is_system());
        assert!(!manual.is_system());
        // No context: every clock is read.
        assert_eq!(request_time(&manual, &extensions), manual.now());
        assert_eq!(request_unix_seconds(&manual, &extensions), 42);
        assert_ne!(request_time(&*system, &extensions), received);
        extensions.insert(RequestContext::arrived_at(received, None));
        assert_eq!(request_time(&*system, &extensions), received);
        assert_eq!(request_unix_seconds(&*system, &extensions), 1_000_000_007);
        assert_eq!(request_time(&manual, &extensions), manual.now());
        assert_eq!(request_unix_seconds(&manual, &extensions), 42);
    }

    #[test]
    fn times_before_epoch_clamp() {
        let c = ManualClock::at(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(c.unix_seconds(), 0);
    }
}
