//! The generic cell rate algorithm, on nanosecond timestamps.
//!
//! Each key has a theoretical arrival time (TAT). A request at `now` is allowed when
//! `max(TAT, now) - now <= tau` (the burst tolerance), and then moves the TAT by one emission
//! interval `T = period / count`. `tau = T * (burst - 1)`.

use crate::ratelimit::{Quota, RateLimitDecision};

/// Checks one request against `tat` (0 = never seen) at `now`. Returns the decision and the TAT
/// to store (unchanged when refused).
pub(crate) fn check(quota: &Quota, tat: u64, now: u64) -> (RateLimitDecision, u64) {
    let t = quota.emission_nanos();
    let tau = quota.tolerance_nanos();
    let tat = tat.max(now);
    let allow_at = tat.saturating_sub(tau);
    if now < allow_at {
        let decision = RateLimitDecision::refuse(allow_at - now, tat - now);
        return (decision, tat);
    }
    let new_tat = tat.saturating_add(t);
    // Units left after this one: how many more emission intervals fit under the tolerance.
    let decision = RateLimitDecision::allow(now.saturating_add(tau) - tat, t, new_tat - now);
    (decision, new_tat)
}

/// A refusal used when the state cannot be reached and the configuration says to refuse.
pub(crate) fn deny_all(quota: &Quota) -> RateLimitDecision {
    RateLimitDecision::refuse(quota.emission_nanos(), quota.emission_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn quota(count: u32, burst: u32) -> Quota {
        Quota::per_second(NonZeroU32::new(count).unwrap())
            .with_burst(NonZeroU32::new(burst).unwrap())
    }

    #[test]
    fn burst_then_steady_rate() {
        let q = quota(10, 5);
        let mut tat = 0;
        let now = 1_000_000_000_000;
        for expected_remaining in (0..5).rev() {
            let (d, t) = check(&q, tat, now);
            assert!(d.is_allowed());
            assert_eq!(d.remaining(), expected_remaining);
            tat = t;
        }
        let (d, t2) = check(&q, tat, now);
        assert!(!d.is_allowed());
        assert_eq!(t2, tat);
        assert_eq!(d.retry_after(), Duration::from_millis(100));
        let (d, _) = check(&q, tat, now + 100_000_000);
        assert!(d.is_allowed());
    }

    proptest! {
        /// Over any window, no more than burst + rate * window requests are allowed.
        #[test]
        fn never_more_than_burst_plus_rate(
            count in 1u32..1_000,
            burst in 1u32..100,
            gaps in proptest::collection::vec(0u64..50_000_000, 1..400),
        ) {
            let q = quota(count, burst);
            let start = 1_000_000_000_000u64;
            let mut now = start;
            let mut tat = 0;
            let mut allowed = 0u64;
            for gap in gaps {
                now += gap;
                let (d, t) = check(&q, tat, now);
                tat = t;
                if d.is_allowed() {
                    allowed += 1;
                    prop_assert!(d.retry_after().is_zero());
                } else {
                    prop_assert!(d.retry_after() > Duration::ZERO);
                    // Retrying after the advertised delay succeeds.
                    let (again, _) = check(&q, tat, now + d.retry_after().as_nanos() as u64);
                    prop_assert!(again.is_allowed());
                }
            }
            let elapsed = now - start;
            let bound = u64::from(burst) + elapsed * u64::from(count) / 1_000_000_000 + 1;
            prop_assert!(allowed <= bound, "{} > {}", allowed, bound);
        }
    }
}
