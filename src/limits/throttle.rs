//! The login throttle's arithmetic, shared by both stores (the Redis store runs the same steps in
//! Lua, `login.lua`). Times are whole microseconds on the store's clock.
//!
//! - Per (account, client IP), `failures` consecutive failures and when the last allowed attempt
//!   was. From `LOGIN_BACKOFF_AFTER` failures on, the next attempt waits
//!   `min(2^(failures - AFTER), LOGIN_BACKOFF_MAX_SECS)` seconds after that last attempt.
//! - Per account (every IP), the failures since the first one of the current window. At
//!   `LOGIN_ACCOUNT_FAILURE_LIMIT` failures the account refuses until that window ends.
//!
//! An attempt is checked against both; if either refuses, nothing is counted and the refusal
//! with the longer wait is reported (the per-(account, IP) one on a tie). Otherwise the attempt
//! counts as a failure in both at once (a success clears them afterwards), so attempts racing
//! each other cannot slip past the backoff.

use super::gcra::micros;
use super::{ThrottleScope, Throttled};
use crate::config::ThrottleSettings;

/// The longest a backoff can be: `LOGIN_BACKOFF_MAX_SECS` allows at most a day, and `2^20`
/// seconds is past it, so larger exponents need not be computed.
const MAX_EXPONENT: u32 = 20;

/// One (account, IP) pair's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// Consecutive failures (attempts allowed and not cleared by a success).
    pub failures: u32,
    /// When the last of them was allowed.
    pub last_us: u64,
}

/// One account's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// Failures in the current window.
    pub failures: u32,
    /// When the first of them was, which starts the window.
    pub start_us: u64,
}

/// The settings in the arithmetic's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// `LOGIN_BACKOFF_AFTER`; 0 turns the per-(account, IP) backoff off.
    pub after: u32,
    /// `LOGIN_BACKOFF_MAX_SECS`, in whole seconds.
    pub max_secs: u64,
    /// `LOGIN_ACCOUNT_FAILURE_LIMIT`; 0 turns the per-account cap off.
    pub limit: u32,
    /// `LOGIN_ACCOUNT_FAILURE_WINDOW_SECS`, in microseconds.
    pub window_us: u64,
}

/// What an allowed attempt leaves behind: the states to store, each with when it expires.
/// `None` for a part that is off (nothing is stored for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// The pair's new state and its expiry.
    pub pair: Option<(Pair, u64)>,
    /// The account's new state and its expiry.
    pub account: Option<(Account, u64)>,
}

impl Params {
    /// The settings in microseconds.
    pub fn new(settings: &ThrottleSettings) -> Self {
        Self {
            after: settings.backoff_after,
            // At least a second: a zero maximum would make the backoff no backoff.
            max_secs: settings.backoff_max.as_secs().max(1),
            limit: settings.account_failure_limit,
            window_us: u64::try_from(settings.account_failure_window.as_micros())
                .unwrap_or(u64::MAX / 4),
        }
    }

    /// The wait after `failures` consecutive failures before the next attempt, in microseconds
    /// (zero below the threshold, or with the backoff off).
    pub fn delay_us(self, failures: u32) -> u64 {
        if self.after == 0 || failures < self.after {
            return 0;
        }
        let exponent = failures - self.after;
        let secs = if exponent >= MAX_EXPONENT {
            self.max_secs
        } else {
            (1u64 << exponent).min(self.max_secs)
        };
        secs * 1_000_000
    }

    /// When a pair's state can be forgotten: a window after the end of its current wait (so a
    /// guesser who pauses keeps the backoff unless they pause the account window on top of the
    /// wait, and every entry goes within `max + window`).
    pub fn pair_expiry(self, pair: Pair) -> u64 {
        pair.last_us + self.delay_us(pair.failures) + self.window_us
    }

    /// When an account's state is forgotten: the end of its window.
    pub fn account_expiry(self, account: Account) -> u64 {
        account.start_us + self.window_us
    }

    /// One login attempt at `now` from a pair and account in states `pair` and `account`
    /// (`None`: nothing stored, or expired). A refusal changes nothing.
    pub fn attempt(
        self,
        pair: Option<Pair>,
        account: Option<Account>,
        now: u64,
    ) -> Result<Counted, Throttled> {
        let pair = pair.filter(|p| self.after > 0 && self.pair_expiry(*p) > now);
        let account = account.filter(|a| self.limit > 0 && self.account_expiry(*a) > now);

        let pair_wait = pair
            .map(|p| (p.last_us + self.delay_us(p.failures)).saturating_sub(now))
            .filter(|&wait| wait > 0);
        let account_wait = account
            .filter(|a| a.failures >= self.limit)
            .map(|a| self.account_expiry(a) - now);
        let refusal = match (pair_wait, account_wait) {
            (Some(p), Some(a)) if a > p => Some((ThrottleScope::Account, a)),
            (Some(p), _) => Some((ThrottleScope::AccountIp, p)),
            (None, Some(a)) => Some((ThrottleScope::Account, a)),
            (None, None) => None,
        };
        if let Some((scope, wait)) = refusal {
            return Err(Throttled {
                scope,
                retry_after: micros(wait),
            });
        }

        let pair = (self.after > 0).then(|| {
            let next = Pair {
                failures: pair.map_or(0, |p| p.failures).saturating_add(1),
                last_us: now,
            };
            (next, self.pair_expiry(next))
        });
        let account = (self.limit > 0).then(|| {
            let next = match account {
                Some(a) => Account {
                    failures: a.failures.saturating_add(1),
                    start_us: a.start_us,
                },
                None => Account {
                    failures: 1,
                    start_us: now,
                },
            };
            (next, self.account_expiry(next))
        });
        Ok(Counted { pair, account })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    const S: u64 = 1_000_000;

    fn params(after: u32, max_secs: u64, limit: u32, window_secs: u64) -> Params {
        Params::new(&ThrottleSettings {
            backoff_after: after,
            backoff_max: Duration::from_secs(max_secs),
            account_failure_limit: limit,
            account_failure_window: Duration::from_secs(window_secs),
        })
    }

    /// A store of one pair and one account, in a test.
    #[derive(Debug, Default)]
    struct Memory {
        pair: Option<Pair>,
        account: Option<Account>,
    }

    impl Memory {
        fn attempt(&mut self, params: Params, now: u64) -> Result<(), Throttled> {
            let counted = params.attempt(self.pair, self.account, now)?;
            self.pair = counted.pair.map(|(p, _)| p);
            self.account = counted.account.map(|(a, _)| a);
            Ok(())
        }
    }

    fn refused(scope: ThrottleScope, secs: u64) -> Result<(), Throttled> {
        Err(Throttled {
            scope,
            retry_after: Duration::from_secs(secs),
        })
    }

    #[test]
    fn the_backoff_doubles_after_the_threshold_as_the_contract_says() {
        let params = params(5, 900, 0, 3600);
        let mut memory = Memory::default();
        let mut now = 100 * S;
        for _ in 0..5 {
            assert_eq!(memory.attempt(params, now), Ok(()));
        }
        // 6th at once: wait 1 s.
        assert_eq!(
            memory.attempt(params, now),
            refused(ThrottleScope::AccountIp, 1)
        );
        now += S;
        assert_eq!(memory.attempt(params, now), Ok(()));
        assert_eq!(
            memory.attempt(params, now),
            refused(ThrottleScope::AccountIp, 2)
        );
        // Half-way through the wait: the rest of it.
        now += S;
        assert_eq!(
            memory.attempt(params, now),
            refused(ThrottleScope::AccountIp, 1)
        );
        now += S;
        assert_eq!(memory.attempt(params, now), Ok(()));
        assert_eq!(
            memory.attempt(params, now),
            refused(ThrottleScope::AccountIp, 4)
        );
        // Refusals are not counted: the wait stays 4 s however often one knocks.
        for _ in 0..10 {
            assert!(memory.attempt(params, now).is_err());
        }
        assert_eq!(memory.pair.map(|p| p.failures), Some(7));
    }

    #[test]
    fn the_backoff_is_capped_by_its_maximum() {
        let params = params(1, 10, 0, 3600);
        assert_eq!(params.delay_us(0), 0);
        assert_eq!(params.delay_us(1), S);
        assert_eq!(params.delay_us(4), 8 * S);
        assert_eq!(params.delay_us(5), 10 * S);
        assert_eq!(params.delay_us(u32::MAX), 10 * S);
        let big = self::params(3, 86_400, 0, 60);
        assert_eq!(big.delay_us(3 + 16), 65_536 * S);
        assert_eq!(big.delay_us(3 + 17), 86_400 * S);
        assert_eq!(big.delay_us(3 + 40), 86_400 * S);
    }

    #[test]
    fn the_account_cap_refuses_everyone_until_its_window_ends() {
        let params = params(0, 900, 3, 60);
        let mut memory = Memory::default();
        assert_eq!(memory.attempt(params, 10 * S), Ok(()));
        assert_eq!(memory.attempt(params, 20 * S), Ok(()));
        assert_eq!(memory.attempt(params, 30 * S), Ok(()));
        // Window started at 10 s, ends at 70 s.
        assert_eq!(
            memory.attempt(params, 40 * S),
            refused(ThrottleScope::Account, 30)
        );
        assert_eq!(
            memory.attempt(params, 70 * S - 1),
            Err(Throttled {
                scope: ThrottleScope::Account,
                retry_after: Duration::from_micros(1)
            })
        );
        assert_eq!(memory.pair, None, "the backoff is off: no pair state");
        // The window is over: a new one starts with this attempt.
        assert_eq!(memory.attempt(params, 70 * S), Ok(()));
        assert_eq!(
            memory.account,
            Some(Account {
                failures: 1,
                start_us: 70 * S
            })
        );
    }

    #[test]
    fn when_both_refuse_the_longer_wait_is_reported() {
        let params = params(1, 900, 2, 60);
        let mut memory = Memory::default();
        assert_eq!(memory.attempt(params, 0), Ok(()));
        assert_eq!(memory.attempt(params, S), Ok(()));
        // Pair: 2 failures, next after 2 s from 1 s = 3 s. Account: capped until 60 s.
        assert_eq!(
            memory.attempt(params, S),
            refused(ThrottleScope::Account, 59)
        );
        // With a short account window the backoff is the longer.
        let params = self::params(1, 900, 2, 2);
        let mut memory = Memory::default();
        memory.attempt(params, 0).expect("first");
        memory.attempt(params, S).expect("second");
        assert_eq!(
            memory.attempt(params, S),
            refused(ThrottleScope::AccountIp, 2)
        );
    }

    #[test]
    fn both_parts_off_allow_everything_and_store_nothing() {
        let params = params(0, 900, 0, 60);
        let counted = params.attempt(None, None, 5).expect("allowed");
        assert_eq!(
            counted,
            Counted {
                pair: None,
                account: None
            }
        );
        // Old states written under other settings are ignored.
        let old = Pair {
            failures: 50,
            last_us: 5,
        };
        let capped = Account {
            failures: 1_000,
            start_us: 5,
        };
        assert!(params.attempt(Some(old), Some(capped), 6).is_ok());
    }

    #[test]
    fn states_expire_a_window_after_the_wait_and_at_the_window_end() {
        let params = params(2, 900, 10, 100);
        let pair = Pair {
            failures: 3,
            last_us: 1_000 * S,
        };
        // Wait 2 s, then the window of 100 s.
        assert_eq!(params.pair_expiry(pair), 1_102 * S);
        // An expired pair is a fresh one.
        let counted = params
            .attempt(Some(pair), None, 1_102 * S)
            .expect("allowed");
        let (fresh, expiry) = counted.pair.expect("pair");
        assert_eq!(fresh.failures, 1);
        assert_eq!(expiry, 1_202 * S);
        let (account, expiry) = counted.account.expect("account");
        assert_eq!(account.start_us, 1_102 * S);
        assert_eq!(expiry, 1_202 * S);
    }

    proptest! {
        /// Whatever the timing, an allowed attempt never comes inside the pair's wait nor past
        /// the account's cap, and a refusal's wait, once waited, is enough.
        #[test]
        fn refusals_are_honest_and_waits_suffice(
            after in 0u32..4,
            max_secs in 1u64..20,
            limit in 0u32..12,
            window_secs in 1u64..30,
            gaps in prop::collection::vec(prop_oneof![Just(0u64), 0u64..3 * S, 0u64..40 * S], 1..80),
        ) {
            let params = params(after, max_secs, limit, window_secs);
            let mut memory = Memory::default();
            let mut now = 1_000 * S;
            for gap in gaps {
                now += gap;
                let before = (memory.pair, memory.account);
                match memory.attempt(params, now) {
                    Ok(()) => {
                        if let Some(p) = before.0.filter(|p| params.pair_expiry(*p) > now) {
                            prop_assert!(now >= p.last_us + params.delay_us(p.failures));
                        }
                        if let Some(a) = memory.account {
                            prop_assert!(a.failures <= limit);
                        }
                    }
                    Err(throttled) => {
                        prop_assert_eq!((memory.pair, memory.account), before);
                        let wait = u64::try_from(throttled.retry_after.as_micros()).unwrap_or(u64::MAX);
                        prop_assert!(wait > 0);
                        prop_assert!(params.attempt(memory.pair, memory.account, now + wait).is_ok());
                    }
                }
            }
        }
    }
}
