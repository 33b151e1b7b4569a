//! Logging a database outage once per interval, not once per failed request.
//!
//! While the database is down or frozen every request fails the same way: with one warning per
//! failure, 1,000 requests a second made 1,000 log lines a second that said nothing new and
//! buried everything else. Instead the first failure is logged at once, later ones are counted,
//! and a line with the count goes out at most once per [`INTERVAL`]; the first success after
//! logged failures says the database is back, with how long it was gone.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// At most one "unavailable" line per this long.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Failures of one pool, counted between log lines.
#[derive(Debug, Default)]
pub struct OutageLog {
    /// Set while failures have been logged and no success has followed: the only thing the
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

impl OutageLog {
    /// Records a failure of `database`; logs it if no line went out in the last [`INTERVAL`].
    pub fn failed(&self, database: &'static str, error: &anyhow::Error) {
        let mut state = self.lock();
        let now = Instant::now();
        state.unreported += 1;
        state.since.get_or_insert(now);
        self.down.store(true, Ordering::Relaxed);
        if state
            .last_line
            .is_none_or(|last| now.duration_since(last) >= INTERVAL)
        {
            tracing::warn!(
                database,
                failures = state.unreported,
                error = format!("{error:#}"),
                "database unavailable; requests get 503 (logged at most every {}s)",
                INTERVAL.as_secs()
            );
            state.unreported = 0;
            state.last_line = Some(now);
            state.logged = true;
        }
    }

    /// Records that `database` answered; the first answer after a logged failure is logged.
    pub fn answered(&self, database: &'static str) {
        if !self.down.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.lock();
        self.down.store(false, Ordering::Relaxed);
        let since = state.since.take();
        if std::mem::take(&mut state.logged)
            && let Some(since) = since
        {
            tracing::info!(
                database,
                unreported_failures = state.unreported,
                outage_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "database answering again"
            );
            state.unreported = 0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Counters stay meaningful even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_within_the_interval_are_counted_not_logged() {
        let log = OutageLog::default();
        let error = anyhow::anyhow!("connection refused");
        log.failed("postgres", &error);
        for _ in 0..99 {
            log.failed("postgres", &error);
        }
        let state = log.lock();
        assert_eq!(state.unreported, 99, "only the first failure went out");
        assert!(state.since.is_some());
    }

    #[test]
    fn the_first_answer_ends_the_outage_and_the_next_one_is_quiet() {
        let log = OutageLog::default();
        log.failed("sqlite", &anyhow::anyhow!("busy"));
        log.answered("sqlite");
        assert!(!log.down.load(Ordering::Relaxed));
        assert!(log.lock().since.is_none());
        log.answered("sqlite");
        // A new failure within the interval of the last line is counted, not logged, and its
        // end is not logged either: a flapping database makes at most two lines per interval.
        log.failed("sqlite", &anyhow::anyhow!("busy"));
        log.answered("sqlite");
        let state = log.lock();
        assert_eq!(state.unreported, 1);
        assert!(!state.logged && state.since.is_none());
    }
}
