//! The auth service's clock: every "now" that decides whether a token or session is still valid
//! (issuing, expiry, idle timeout, the replay grace window, purging) comes from one [`Clock`].
//!
//! Production uses [`SystemClock`]. Tests hand the app a [`ManualClock`] and move it forward,
//! so expiry and grace-window behaviour is checked without sleeping (and without flakiness on a
//! slow machine).

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

/// Where the auth service reads the time.
pub trait Clock: Send + Sync + Debug {
    /// The current time, UTC.
    fn now(&self) -> OffsetDateTime;

    /// The current time as seconds since 1970, the unit tokens and the store use.
    fn unix_now(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stands still until told to move: for tests.
#[derive(Debug)]
pub struct ManualClock {
    at: Mutex<OffsetDateTime>,
}

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        Self { at: Mutex::new(at) }
    }

    /// A clock standing at the system's current time (so tokens it stamps are plausible to
    /// anything else that reads them).
    pub fn starting_now() -> Self {
        Self::new(OffsetDateTime::now_utc())
    }

    /// Moves the clock to `at` (backwards too).
    pub fn set(&self, at: OffsetDateTime) {
        *self.lock() = at;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut at = self.lock();
        *at = at.saturating_add(time::Duration::try_from(by).unwrap_or(time::Duration::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OffsetDateTime> {
        // The guarded value is a plain timestamp, always valid even if a holder panicked.
        self.at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.unix_now(), 1_700_000_090);
        clock.set(start);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn the_system_clock_follows_the_system() {
        let before = OffsetDateTime::now_utc();
        let now = SystemClock.now();
        assert!(now >= before && now <= OffsetDateTime::now_utc());
    }
}
