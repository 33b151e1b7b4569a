//! GCRA (the generic cell rate algorithm): the rate-limit arithmetic both stores share. The Redis
//! store runs the same steps in Lua (`gcra.lua`); the tests here pin the arithmetic, and the
//! store tests check that the two agree.
//!
//! A budget's whole state is one number, its theoretical arrival time (TAT): when the bucket
//! would be full again if nothing more came. Each request pushes it `T = window / quota` later;
//! a request fits while the TAT stays within the burst tolerance `τ = quota × T` of now (so a full
//! bucket takes `quota` requests at once, and then one more every `T`). All times are whole
//! microseconds on the store's clock.
//!
//! `T` is rounded down to a whole microsecond (at least one), and `τ` is `quota × T` rather than
//! the window itself, so that a full bucket holds exactly `quota` requests whatever the rounding:
//! the refill is at most a microsecond per request faster than `quota` per window. A quota above
//! one per microsecond (over a million a second) is refilled at one per microsecond.

use std::time::Duration;

use super::rate::Rate;
use super::store::GcraOutcome;

/// A rate in the arithmetic's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// `T`: how much one request pushes the TAT, in microseconds (at least one).
    pub interval_us: u64,
    /// `τ`: how far ahead of now the TAT may be, in microseconds (`quota × T`).
    pub tolerance_us: u64,
}

/// One step's result: the outcome, and the TAT to store if the request was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// What the caller learns.
    pub outcome: GcraOutcome,
    /// The new TAT when the request was allowed (store it, expiring then); `None` when refused
    /// (nothing changes).
    pub tat: Option<u64>,
}

impl Gcra {
    /// `rate` in microseconds.
    pub fn new(rate: Rate) -> Self {
        let quota = u64::from(rate.quota());
        let window_us = u64::from(rate.window_secs()) * 1_000_000;
        let interval_us = (window_us / quota).max(1);
        Self {
            interval_us,
            tolerance_us: interval_us * quota,
        }
    }

    /// One request at `now` against a budget whose TAT is `tat` (`None`: untouched or expired,
    /// the same as a full bucket).
    pub fn step(self, tat: Option<u64>, now: u64) -> Step {
        let Self {
            interval_us: t,
            tolerance_us: tau,
        } = self;
        // A TAT in the past is a full bucket: the budget does not save up beyond it.
        let base = tat.unwrap_or(now).max(now);
        let new_tat = base + t;
        let ahead = new_tat - now;
        if ahead <= tau {
            Step {
                outcome: GcraOutcome {
                    allowed: true,
                    remaining: remaining(tau - ahead, t),
                    reset: micros(ahead),
                    retry_after: Duration::ZERO,
                },
                tat: Some(new_tat),
            }
        } else {
            // Retrying at `now + ahead - τ` makes `ahead` exactly `τ` then: allowed.
            let held = base - now;
            Step {
                outcome: GcraOutcome {
                    allowed: false,
                    remaining: remaining(tau.saturating_sub(held), t),
                    reset: micros(held),
                    retry_after: micros(ahead - tau),
                },
                tat: None,
            }
        }
    }
}

/// Whole requests that fit in `room` microseconds of tolerance.
fn remaining(room: u64, interval_us: u64) -> u32 {
    u32::try_from(room / interval_us).unwrap_or(u32::MAX)
}

/// A duration of `us` microseconds.
pub fn micros(us: u64) -> Duration {
    Duration::from_micros(us)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use proptest::prelude::*;

    use super::*;

    fn rate(quota: u32, window_secs: u32) -> Rate {
        Rate::new(NonZeroU32::new(quota).expect("non-zero"), window_secs)
    }

    const S: u64 = 1_000_000;

    #[test]
    fn a_full_bucket_takes_the_burst_at_once_then_one_per_interval() {
        let gcra = Gcra::new(rate(3, 60));
        assert_eq!(gcra.interval_us, 20 * S);
        assert_eq!(gcra.tolerance_us, 60 * S);
        let now = 1_000 * S;
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let step = gcra.step(tat, now);
            assert!(step.outcome.allowed);
            assert_eq!(step.outcome.remaining, expected_remaining);
            assert_eq!(step.outcome.retry_after, Duration::ZERO);
            tat = step.tat;
        }
        assert_eq!(tat, Some(now + 60 * S));
        let refused = gcra.step(tat, now);
        assert_eq!(
            refused.outcome,
            GcraOutcome {
                allowed: false,
                remaining: 0,
                reset: Duration::from_secs(60),
                retry_after: Duration::from_secs(20),
            }
        );
        assert_eq!(refused.tat, None, "a refusal changes nothing");
        // Just before the retry time: still refused, by one microsecond.
        let early = gcra.step(tat, now + 20 * S - 1);
        assert!(!early.outcome.allowed);
        assert_eq!(early.outcome.retry_after, Duration::from_micros(1));
        // At it: allowed, and the bucket is empty again.
        let retry = gcra.step(tat, now + 20 * S);
        assert!(retry.outcome.allowed);
        assert_eq!(retry.outcome.remaining, 0);
        assert_eq!(retry.outcome.reset, Duration::from_secs(60));
    }

    #[test]
    fn an_idle_budget_refills_to_the_burst_and_no_further() {
        let gcra = Gcra::new(rate(5, 10));
        let now = 50 * S;
        let step = gcra.step(Some(now + 6 * S), now);
        // TAT 6 s ahead = 3 requests' worth used; this one is the 4th.
        assert!(step.outcome.allowed);
        assert_eq!(step.outcome.remaining, 1);
        assert_eq!(step.outcome.reset, Duration::from_secs(8));
        // A TAT long past is a full bucket, not a bigger one.
        let idle = gcra.step(Some(S), now);
        assert_eq!(idle.outcome.remaining, 4);
        assert_eq!(idle.tat, Some(now + 2 * S));
        assert_eq!(gcra.step(None, now), idle);
    }

    #[test]
    fn uneven_and_extreme_rates_keep_the_burst_exact() {
        // 60 s / 7 is not a whole number of microseconds: T rounds down, the burst stays 7.
        let gcra = Gcra::new(rate(7, 60));
        assert_eq!(gcra.interval_us, 8_571_428);
        let mut tat = None;
        let allowed = (0..10)
            .filter(|_| {
                let step = gcra.step(tat, 0);
                tat = step.tat.or(tat);
                step.outcome.allowed
            })
            .count();
        assert_eq!(allowed, 7);
        // More than one per microsecond: T is one microsecond, the burst still the quota.
        let huge = Gcra::new(rate(super::super::rate::MAX_QUOTA, 1));
        assert_eq!(huge.interval_us, 1);
        assert_eq!(huge.tolerance_us, u64::from(super::super::rate::MAX_QUOTA));
        let first = huge.step(None, 0);
        assert_eq!(first.outcome.remaining, super::super::rate::MAX_QUOTA - 1);
        // 1/day: one request, then a day's wait.
        let daily = Gcra::new(rate(1, 86_400));
        let first = daily.step(None, 7);
        assert!(first.outcome.allowed);
        assert_eq!(first.outcome.remaining, 0);
        let second = daily.step(first.tat, 7);
        assert_eq!(second.outcome.retry_after, Duration::from_secs(86_400));
    }

    #[test]
    fn a_tat_beyond_the_tolerance_refuses_without_underflow() {
        // A budget written under a larger rate (a replica with other settings, or the clock of
        // a restarted Redis): refused until it comes back within the tolerance.
        let gcra = Gcra::new(rate(2, 10));
        let step = gcra.step(Some(100 * S), 0);
        assert!(!step.outcome.allowed);
        assert_eq!(step.outcome.remaining, 0);
        assert_eq!(step.outcome.reset, Duration::from_secs(100));
        assert_eq!(step.outcome.retry_after, Duration::from_secs(95));
        assert!(gcra.step(Some(100 * S), 95 * S).outcome.allowed);
    }

    /// A rate, and requests as gaps (microseconds) since the previous one.
    fn scenario() -> impl Strategy<Value = (u32, u32, Vec<u64>)> {
        (
            1u32..50,
            prop::sample::select(vec![1u32, 2, 7, 60, 3600]),
            prop::collection::vec(
                prop_oneof![Just(0u64), 0u64..1_000, 0u64..5 * S, 0u64..200 * S],
                1..200,
            ),
        )
    }

    proptest! {
        #[test]
        fn never_more_than_the_burst_plus_the_refill_in_any_span((quota, window, gaps) in scenario()) {
            let gcra = Gcra::new(rate(quota, window));
            let mut now = 1_000 * S;
            let mut tat = None;
            let mut allowed_at = Vec::new();
            for gap in gaps {
                now += gap;
                let step = gcra.step(tat, now);
                if let Some(new_tat) = step.tat {
                    tat = Some(new_tat);
                    allowed_at.push(now);
                }
            }
            for (i, &start) in allowed_at.iter().enumerate() {
                for (j, &end) in allowed_at.iter().enumerate().skip(i) {
                    let count = (j - i + 1) as u64;
                    let bound = u64::from(quota) + (end - start) / gcra.interval_us;
                    prop_assert!(count <= bound, "{count} allowed in [{start}, {end}], bound {bound}");
                }
            }
        }

        #[test]
        fn a_refused_request_retried_after_retry_after_is_allowed((quota, window, gaps) in scenario()) {
            let gcra = Gcra::new(rate(quota, window));
            let mut now = 0;
            let mut tat = None;
            for gap in gaps {
                now += gap;
                let step = gcra.step(tat, now);
                match step.tat {
                    Some(new_tat) => {
                        prop_assert_eq!(step.outcome.retry_after, Duration::ZERO);
                        tat = Some(new_tat);
                    }
                    None => {
                        let wait = u64::try_from(step.outcome.retry_after.as_micros()).unwrap_or(u64::MAX);
                        prop_assert!(wait > 0);
                        prop_assert!(gcra.step(tat, now + wait).outcome.allowed);
                        prop_assert!(!gcra.step(tat, now + wait - 1).outcome.allowed);
                    }
                }
            }
        }

        #[test]
        fn remaining_and_reset_say_what_comes_next((quota, window, gaps) in scenario()) {
            let gcra = Gcra::new(rate(quota, window));
            let mut now = 0;
            let mut tat = None;
            for gap in gaps {
                now += gap;
                let step = gcra.step(tat, now);
                tat = step.tat.or(tat);
                // Exactly `remaining` more fit right now.
                let mut probe = tat;
                for _ in 0..step.outcome.remaining {
                    let next = gcra.step(probe, now);
                    prop_assert!(next.outcome.allowed);
                    probe = next.tat;
                }
                prop_assert!(!gcra.step(probe, now).outcome.allowed);
                // After `reset` the bucket is full: a burst of `quota` fits.
                let full_at = now + u64::try_from(step.outcome.reset.as_micros()).unwrap_or(u64::MAX);
                let after = gcra.step(tat, full_at);
                prop_assert_eq!(after.outcome.remaining, quota - 1);
            }
        }
    }
}
