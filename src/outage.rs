//! Logging an outage of a backing service once per interval, not once per failed request.
//!
//! While the database or the rate-limit store is down every request fails the same way: with one
//! warning per failure, 1,000 requests a second made 1,000 log lines a second that said nothing
//! new and buried everything else. Instead the first failure is logged at once, later ones are
//! counted, and a line with the count goes out at most once per [`INTERVAL`]; the first success
//! after logged failures says the service is back, with how long it was gone. [`OutageLog`]
//! decides when a line is due; its owner writes the line in its own words.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// At most one "unavailable" line per this long.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Failures of one backing service, counted between log lines.
#[derive(Debug, Default)]
pub struct OutageLog {
    /// Set while failures have been recorded and no success has followed: the only thing the
    /// success path reads.
    down: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Failures not yet reported in a line.
    unreported: u64,
    /// When the last "unavailable" line went out.
    last_line: Option<Instant>,
    /// The first failure of this outage.
    since: Option<Instant>,
    /// Whether a line went out during this outage (else its end is not worth one either).
    logged: bool,
}

/// The end of an outage that was logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Failures since the last line.
    pub unreported_failures: u64,
    /// How long the service was gone, from its first failure.
    pub outage: Duration,
}

/// What the counters say (for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Failures not yet reported in a line.
    pub unreported: u64,
    /// Whether failures were recorded and no success followed.
    pub down: bool,
    /// Whether an outage is under way (its first failure is known).
    pub in_outage: bool,
    /// Whether a line went out during this outage.
    pub logged: bool,
}

impl OutageLog {
    /// Counts a failure. `Some(failures)` when a line is due now (none went out in the last
    /// [`INTERVAL`]): the caller logs it with that count, which is then reset.
    pub fn failed(&self) -> Option<u64> {
        let mut state = self.lock();
        let now = Instant::now();
        state.unreported += 1;
        state.since.get_or_insert(now);
        self.down.store(true, Ordering::Relaxed);
        if state
            .last_line
            .is_some_and(|last| now.duration_since(last) < INTERVAL)
        {
            return None;
        }
        state.last_line = Some(now);
        state.logged = true;
        Some(std::mem::take(&mut state.unreported))
    }

    /// Counts a success. `Some` when it ends an outage a line was written about: the caller logs
    /// that the service is back.
    pub fn answered(&self) -> Option<Recovered> {
        if !self.down.load(Ordering::Relaxed) {
            return None;
        }
        let mut state = self.lock();
        self.down.store(false, Ordering::Relaxed);
        let since = state.since.take();
        if !std::mem::take(&mut state.logged) {
            return None;
        }
        Some(Recovered {
            unreported_failures: std::mem::take(&mut state.unreported),
            outage: since.map_or(Duration::ZERO, |since| since.elapsed()),
        })
    }

    /// The counters as they are.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        Snapshot {
            unreported: state.unreported,
            down: self.down.load(Ordering::Relaxed),
            in_outage: state.since.is_some(),
            logged: state.logged,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Counters stay meaningful even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `duration` in whole milliseconds, for log fields.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_within_the_interval_are_counted_not_logged() {
        let log = OutageLog::default();
        assert_eq!(log.failed(), Some(1), "the first failure goes out at once");
        for _ in 0..99 {
            assert_eq!(log.failed(), None);
        }
        let state = log.snapshot();
        assert_eq!(state.unreported, 99, "only the first failure went out");
        assert!(state.in_outage && state.down && state.logged);
    }

    #[test]
    fn the_first_answer_ends_the_outage_and_the_next_one_is_quiet() {
        let log = OutageLog::default();
        assert_eq!(log.failed(), Some(1));
        log.failed();
        let recovered = log
            .answered()
            .expect("the end of a logged outage is logged");
        assert_eq!(recovered.unreported_failures, 1);
        assert!(!log.snapshot().down && !log.snapshot().in_outage);
        assert_eq!(log.answered(), None);
        // A new failure within the interval of the last line is counted, not logged, and its
        // end is not logged either: a flapping service makes at most two lines per interval.
        assert_eq!(log.failed(), None);
        assert_eq!(log.answered(), None);
        let state = log.snapshot();
        assert_eq!(state.unreported, 1);
        assert!(!state.logged && !state.in_outage);
    }
}
