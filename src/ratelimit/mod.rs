//! Rate limiting: GCRA quotas per client IP, principal, API key, route or custom key, with
//! bounded memory and the IETF `RateLimit` headers.
//!
//! A [`RateLimitLayer`] spends one unit of a [`Quota`] per request from the bucket of the
//! request's [`RateLimitKey`]. When the bucket is empty it refuses with
//! [`RejectionKind::RateLimited`](crate::rejection::RejectionKind::RateLimited): HTTP 429 with
//! `Retry-After`, `RateLimit-Policy` and `RateLimit` headers (gRPC `RESOURCE_EXHAUSTED`, rendered
//! at the edge). Several layers stack: a per-IP limit before authentication and a per-subject
//! limit (with per-role tiers) after it.
//!
//! The algorithm is GCRA (the one `governor` uses), implemented over portcullis's own bounded
//! [`MemoryStore`] so memory has a hard bound and time comes from the injectable
//! [`Clock`](crate::clock::Clock). `Quota::per_second(n)` means *n per second*.
//!
//! ```
//! use std::num::NonZeroU32;
//! use http::{Request, Response, StatusCode};
//! use portcullis::context::{ClientIp, RequestContextLayer};
//! use portcullis::ratelimit::{Quota, RateLimitKey, RateLimitLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio_test_block_on(async {
//! let per_ip = RateLimitLayer::builder("per-ip")
//!     .quota(Quota::per_second(NonZeroU32::new(1).unwrap()))
//!     .key(RateLimitKey::client_ip())
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(RequestContextLayer::new())
//!     .layer(per_ip)
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(String::new()))
//!     }));
//! let request = || {
//!     let mut req = Request::new(String::new());
//!     req.extensions_mut().insert(ClientIp("203.0.113.7".parse().unwrap()));
//!     req
//! };
//! assert_eq!(svc.clone().oneshot(request()).await.unwrap().status(), StatusCode::OK);
//! let refused = svc.oneshot(request()).await.unwrap();
//! assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(refused.headers()["retry-after"], "1");
//! assert_eq!(refused.headers()["ratelimit-policy"], "\"per-ip\";q=1;w=1");
//! assert_eq!(refused.headers()["ratelimit"], "\"per-ip\";r=0;t=1");
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! # Headers
//!
//! portcullis follows `draft-ietf-httpapi-ratelimit-headers-10` (structured fields, RFC 9651):
//!
//! - `RateLimit-Policy: "<name>";q=<burst>;w=<seconds>`: the policy name given to the builder
//!   (tiers add `.<role>`), `q` the burst (the most requests available at once) and `w` the
//!   seconds needed to refill a full burst (`burst × period / count`, rounded up).
//! - `RateLimit: "<name>";r=<remaining>;t=<seconds>`: `r` requests left now, `t` seconds until
//!   the full burst is available again (rounded up).
//! - `Retry-After` (429 only): seconds until the next request would be allowed (at least 1).
//!
//! Stacked limits each append their list member, so a response may carry
//! `RateLimit: "per-ip";r=9;t=1, "per-subject";r=0;t=3`. The headers are always sent on 429s;
//! on other responses only with [`with_success_headers`](RateLimitLayerBuilder::with_success_headers)
//! (they tell a client, and an attacker, the remaining budget).
//!
//! # Memory
//!
//! See [`MemoryStore`]: a hard bound on tracked keys (default 100 000 per layer), entries back
//! to full burst dropped by the store itself, keys in debt never evicted, new keys beyond the
//! bound sharing an overflow bucket.
//!
//! # Shadow mode
//!
//! [`shadow`](RateLimitLayerBuilder::shadow) evaluates the limit and counts and audits
//! (`ratelimit.shadow` on target `portcullis::audit`) each request it would refuse, but lets it
//! through: a dry run for a new limit.
//!
//! # Deployment caveat
//!
//! [`RateLimitKey::client_ip`] keys on the [`ClientIp`](crate::context::ClientIp) resolved at the
//! edge. Behind a load balancer, configure the edge's
//! [`ClientIpResolver`](crate::client_ip::ClientIpResolver) with the proxy networks, or every
//! client shares the proxy's bucket; never trust forwarded headers from everyone, or a client
//! picks its own bucket. Each replica has its own in-memory state: with N replicas behind a
//! round-robin balancer a client gets up to N times the quota. See `docs/deployment.md`.

mod future;
mod gcra;
mod layer;
pub mod lockout;
pub mod store;

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

pub use future::ResponseFuture;
pub use layer::{RateLimit, RateLimitKey, RateLimitLayer, RateLimitLayerBuilder, RateLimitStats};
pub use store::{MemoryStore, MemoryStoreBuilder};

/// Response headers of a refusal that the edge keeps when it renders the problem document:
/// `RateLimit-Policy` and `RateLimit`.
pub const REFUSAL_HEADERS: [&str; 2] = [future::POLICY_HEADER, future::STATE_HEADER];

/// [`REFUSAL_HEADERS`] as ready header names.
pub(crate) use future::NAMES as REFUSAL_HEADER_NAMES;

/// How many requests a key may make: `count` per `period`, with up to `burst` at once.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use portcullis::ratelimit::Quota;
///
/// let q = Quota::per_second(NonZeroU32::new(100).unwrap());
/// assert_eq!(q.emission_interval(), Duration::from_millis(10));
/// assert_eq!(q.burst().get(), 100); // the burst defaults to the count
/// let q = q.with_burst(NonZeroU32::new(10).unwrap());
/// assert_eq!(q.burst().get(), 10);
/// let slow = Quota::per_hour(NonZeroU32::new(60).unwrap());
/// assert_eq!(slow.emission_interval(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    count: NonZeroU32,
    period: Duration,
    burst: NonZeroU32,
    // Derived from the three above once, so a check does no division or 128-bit arithmetic
    // to find them.
    emission: u64,
    tolerance: u64,
}

impl Quota {
    /// `count` requests per second, burst `count`.
    pub const fn per_second(count: NonZeroU32) -> Self {
        Self::per_period(count, Duration::from_secs(1))
    }

    /// `count` requests per minute, burst `count`.
    pub const fn per_minute(count: NonZeroU32) -> Self {
        Self::per_period(count, Duration::from_secs(60))
    }

    /// `count` requests per hour, burst `count`.
    pub const fn per_hour(count: NonZeroU32) -> Self {
        Self::per_period(count, Duration::from_secs(3600))
    }

    /// `count` requests per `period`, burst `count`. A zero period, or one shorter than `count`
    /// nanoseconds, is refused by the layer's `build()`.
    pub const fn per_period(count: NonZeroU32, period: Duration) -> Self {
        let nanos = period.as_nanos();
        let nanos = if nanos > u64::MAX as u128 {
            u64::MAX
        } else {
            nanos as u64
        };
        let emission = nanos / count.get() as u64;
        Self {
            count,
            period,
            burst: count,
            emission,
            tolerance: emission.saturating_mul(count.get() as u64 - 1),
        }
    }

    /// The most requests allowed at once (after idleness). Default: the count. Larger bursts
    /// absorb spikes; the long-run rate stays `count` per period.
    #[must_use]
    pub const fn with_burst(mut self, burst: NonZeroU32) -> Self {
        self.burst = burst;
        self.tolerance = self.emission.saturating_mul(burst.get() as u64 - 1);
        self
    }

    /// The requests per period.
    pub const fn count(&self) -> NonZeroU32 {
        self.count
    }

    /// The period.
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// The burst.
    pub const fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The time one request "costs": `period / count`.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_nanos())
    }

    pub(crate) fn emission_nanos(&self) -> u64 {
        self.emission
    }

    pub(crate) fn tolerance_nanos(&self) -> u64 {
        self.tolerance
    }

    /// Seconds to refill a full burst, rounded up (the `w` of `RateLimit-Policy`).
    pub(crate) fn window_secs(&self) -> u64 {
        ceil_secs(Duration::from_nanos(
            self.emission_nanos()
                .saturating_mul(u64::from(self.burst.get())),
        ))
    }

    pub(crate) fn validate(&self) -> Result<(), crate::ConfigError> {
        if self.emission_nanos() == 0 {
            return Err(crate::ConfigError::new(
                "rate limit quota: the period must be at least one nanosecond per request",
            ));
        }
        Ok(())
    }
}

pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The outcome of one check.
#[derive(Clone, Copy)]
pub struct RateLimitDecision {
    allowed: bool,
    // `remaining` is `slack / per`, divided only when asked for (most checks never are).
    slack: u64,
    per: u64,
    retry_after_nanos: u64,
    reset_nanos: u64,
}

impl RateLimitDecision {
    /// An allowed request: `slack / per` requests left, the full burst back in `reset_nanos`.
    pub(crate) const fn allow(slack: u64, per: u64, reset_nanos: u64) -> Self {
        Self {
            allowed: true,
            slack,
            per: if per == 0 { 1 } else { per },
            retry_after_nanos: 0,
            reset_nanos,
        }
    }

    /// A refused request.
    pub(crate) const fn refuse(retry_after_nanos: u64, reset_nanos: u64) -> Self {
        Self {
            allowed: false,
            slack: 0,
            per: 1,
            retry_after_nanos,
            reset_nanos,
        }
    }

    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// Requests left right now after this one (0 when refused).
    pub fn remaining(&self) -> u32 {
        u32::try_from(self.slack / self.per).unwrap_or(u32::MAX)
    }

    /// When refused: how long until one request would be allowed. Zero when allowed.
    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after_nanos)
    }

    /// How long until the full burst is available again.
    pub fn reset(&self) -> Duration {
        Duration::from_nanos(self.reset_nanos)
    }
}

// By what a caller can observe, not by how `remaining` is stored.
impl PartialEq for RateLimitDecision {
    fn eq(&self, other: &Self) -> bool {
        self.allowed == other.allowed
            && self.remaining() == other.remaining()
            && self.retry_after_nanos == other.retry_after_nanos
            && self.reset_nanos == other.reset_nanos
    }
}

impl Eq for RateLimitDecision {}

impl fmt::Debug for RateLimitDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitDecision")
            .field("allowed", &self.allowed)
            .field("remaining", &self.remaining())
            .field("retry_after", &self.retry_after())
            .field("reset", &self.reset())
            .finish()
    }
}
