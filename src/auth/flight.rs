//! Single flight for sign-ups of one name.
//!
//! Fifty sign-ups of one address at once used to hash fifty passwords (a quarter of a second of
//! a core each at cost 12) to create one account: each checked "taken" before the first had
//! inserted its row, hashed, and only then met the unique index. The losers' hashes filled the
//! queue, so other people's sign-ups got 503. Here sign-ups of the same normalised name take
//! turns: the first holds the name while it checks, hashes and inserts; the next find the row
//! and answer 409 without hashing. Names live in the map only while some sign-up wants them,
//! and a request abandoned while holding or awaiting its turn gives the name back as it drops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as TurnLock, MutexGuard};

/// How many sign-ups want a name, and the lock they take in turn.
type Wanted = (usize, Arc<TurnLock<()>>);

/// Names with a sign-up in flight.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    names: Mutex<HashMap<String, Wanted>>,
}

/// One sign-up's interest in a name. Dropping it (however the request ends, cancellation
/// included) removes the name from the map when no other sign-up wants it.
pub(super) struct Interest<'a> {
    in_flight: &'a InFlight,
    key: String,
    lock: Arc<TurnLock<()>>,
}

impl InFlight {
    /// Declares interest in `key` (a normalised name, prefixed by its kind).
    pub(super) fn join(&self, key: String) -> Interest<'_> {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let (wanted, lock) = names.entry(key.clone()).or_default();
        *wanted += 1;
        let lock = Arc::clone(lock);
        Interest {
            in_flight: self,
            key,
            lock,
        }
    }

    /// How many names are in flight now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Interest<'_> {
    /// Waits until every sign-up that wanted the name earlier is done (first come, first
    /// served); the name is this sign-up's until the guard drops.
    pub(super) async fn turn(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

impl Drop for Interest<'_> {
    fn drop(&mut self) {
        let mut names = self
            .in_flight
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The count of sign-ups wanting the name changes only under the map's mutex, so it is
        // exact here. (The lock's own reference count is not: this guard's clone is given up
        // only after this function returns, so two guards dropping at once could each see the
        // other's clone and both leave the name in the map.)
        if let Some((wanted, _)) = names.get_mut(&self.key) {
            *wanted -= 1;
            if *wanted == 0 {
                names.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn sign_ups_of_one_name_take_turns_and_the_name_is_forgotten_after() {
        let in_flight = InFlight::default();
        let first = in_flight.join("email:a@example.com".into());
        let held = first.turn().await;
        let second = in_flight.join("email:a@example.com".into());
        let other = in_flight.join("email:b@example.com".into());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), second.turn())
                .await
                .is_err(),
            "the second waits for the first"
        );
        drop(other.turn().await);
        drop(other);
        drop(held);
        drop(first);
        drop(second.turn().await);
        drop(second);
        assert_eq!(in_flight.len(), 0);
    }

    #[tokio::test]
    async fn an_abandoned_wait_does_not_leave_the_name_behind() {
        let in_flight = InFlight::default();
        let first = in_flight.join("username:ada".into());
        let held = first.turn().await;
        let waiting = async {
            let second = in_flight.join("username:ada".into());
            let _turn = second.turn().await;
        };
        // The waiting sign-up is cancelled (its future dropped) while it waits for its turn.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiting)
                .await
                .is_err()
        );
        drop(held);
        drop(first);
        assert_eq!(in_flight.len(), 0);
    }
}
