//! The in-memory store: budgets and counters in this process, for a single replica.
//!
//! Entries live in shards (a mutex over a hash map each, so concurrent requests rarely wait on
//! each other); no lock is held across an await, every operation being synchronous. Time is a
//! monotonic clock (microseconds since the store was made), so wall-clock jumps change nothing.
//!
//! Every entry carries its expiry (a GCRA budget: its TAT, when the bucket is full again; a
//! login pair: a failure window after the end of its current backoff; an account: the end of its
//! window). An expired entry reads as absent, [`MemoryStore::sweep`] drops them all, and a shard
//! that grows past twice its size after its last sweep is swept on the spot, so memory follows the
//! live entries, not everything ever counted.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::Throttled;
use super::gcra::Gcra;
use super::rate::Rate;
use super::store::GcraOutcome;
use super::throttle::{Account, Pair, Params};
use crate::config::ThrottleSettings;

/// Shards of the map: enough that two cores' worth of requests rarely meet on one.
const SHARDS: usize = 32;

/// A shard is swept inline once it holds this many entries (and then at twice what the sweep
/// left).
const MIN_SWEEP_AT: usize = 1024;

/// Budgets and counters in this process's memory.
#[derive(Debug)]
pub struct MemoryStore {
    /// Zero of the store's clock.
    base: Instant,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

#[derive(Debug)]
struct Shard {
    entries: HashMap<String, Entry>,
    /// Size at which the next inline sweep happens.
    sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the entry stops mattering (microseconds on the store's clock).
    expires_us: u64,
    value: Value,
}

#[derive(Debug, Clone, Copy)]
enum Value {
    /// A GCRA budget's theoretical arrival time.
    Tat(u64),
    /// A login (account, IP) pair.
    Pair(Pair),
    /// A login account.
    Account(Account),
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: HashMap::new(),
                        sweep_at: MIN_SWEEP_AT,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
        }
    }
}

impl MemoryStore {
    /// Takes one request from `key`'s budget at `rate` if it fits.
    pub fn gcra(&self, key: &str, rate: Rate) -> GcraOutcome {
        self.gcra_at(key, rate, self.now())
    }

    /// The login throttle's step for `pair` and `account` (see [`super::throttle`]).
    pub fn login_attempt(
        &self,
        pair: &str,
        account: &str,
        settings: &ThrottleSettings,
    ) -> Option<Throttled> {
        self.login_attempt_at(pair, account, Params::new(settings), self.now())
            .err()
    }

    /// Forgets `keys`.
    pub fn clear(&self, keys: &[String]) {
        for key in keys {
            self.lock(self.shard_of(key)).entries.remove(key);
        }
    }

    /// Drops every expired entry.
    pub fn sweep(&self) {
        let now = self.now();
        for index in 0..self.shards.len() {
            self.lock(index).sweep(now);
        }
    }

    /// Microseconds since the store was made.
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub(super) fn gcra_at(&self, key: &str, rate: Rate, now: u64) -> GcraOutcome {
        let mut shard = self.lock(self.shard_of(key));
        let tat = match shard.live(key, now) {
            Some(Value::Tat(tat)) => Some(tat),
            _ => None,
        };
        let step = Gcra::new(rate).step(tat, now);
        if let Some(tat) = step.tat {
            shard.put(key, tat, Value::Tat(tat), now);
        }
        step.outcome
    }

    pub(super) fn login_attempt_at(
        &self,
        pair_key: &str,
        account_key: &str,
        params: Params,
        now: u64,
    ) -> Result<(), Throttled> {
        let (pair_shard, account_shard) = (self.shard_of(pair_key), self.shard_of(account_key));
        // Both shards at once, so the step is atomic; always the lower index first, so two
        // steps never wait on each other.
        let (mut first, mut second) = match pair_shard.cmp(&account_shard) {
            std::cmp::Ordering::Equal => (self.lock(pair_shard), None),
            std::cmp::Ordering::Less => (self.lock(pair_shard), Some(self.lock(account_shard))),
            std::cmp::Ordering::Greater => {
                let first = self.lock(account_shard);
                (self.lock(pair_shard), Some(first))
            }
        };
        // `first` holds the pair's shard, `second` (if any) the account's.
        let pair = match first.live(pair_key, now) {
            Some(Value::Pair(pair)) => Some(pair),
            _ => None,
        };
        let account = match second.as_deref().unwrap_or(&*first).live(account_key, now) {
            Some(Value::Account(account)) => Some(account),
            _ => None,
        };
        let counted = params.attempt(pair, account, now)?;
        if let Some((pair, expires_us)) = counted.pair {
            first.put(pair_key, expires_us, Value::Pair(pair), now);
        }
        if let Some((account, expires_us)) = counted.account {
            let shard = second.as_deref_mut().unwrap_or(&mut *first);
            shard.put(account_key, expires_us, Value::Account(account), now);
        }
        Ok(())
    }

    fn shard_of(&self, key: &str) -> usize {
        // The keys are HMACs already; any bits of the hash spread them.
        (self.hasher.hash_one(key) as usize) % self.shards.len()
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // Budgets stay meaningful even if a holder panicked.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shard {
    /// `key`'s value if it has not expired.
    fn live(&self, key: &str, now: u64) -> Option<Value> {
        self.entries
            .get(key)
            .filter(|entry| entry.expires_us > now)
            .map(|entry| entry.value)
    }

    fn put(&mut self, key: &str, expires_us: u64, value: Value, now: u64) {
        let entry = Entry { expires_us, value };
        if let Some(existing) = self.entries.get_mut(key) {
            *existing = entry;
            return;
        }
        if self.entries.len() >= self.sweep_at {
            self.sweep(now);
        }
        self.entries.insert(key.to_owned(), entry);
    }

    fn sweep(&mut self, now: u64) {
        self.entries.retain(|_, entry| entry.expires_us > now);
        self.sweep_at = (self.entries.len() * 2).max(MIN_SWEEP_AT);
        // Give back what a burst of keys left behind.
        if self.entries.capacity() > self.sweep_at * 2 {
            self.entries.shrink_to(self.sweep_at);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;
    use crate::limits::ThrottleScope;

    const S: u64 = 1_000_000;

    fn rate(quota: u32, window_secs: u32) -> Rate {
        Rate::new(NonZeroU32::new(quota).expect("non-zero"), window_secs)
    }

    fn throttle(after: u32, limit: u32) -> ThrottleSettings {
        ThrottleSettings {
            backoff_after: after,
            backoff_max: Duration::from_secs(900),
            account_failure_limit: limit,
            account_failure_window: Duration::from_secs(60),
        }
    }

    fn len(store: &MemoryStore) -> usize {
        (0..store.shards.len())
            .map(|i| store.lock(i).entries.len())
            .sum()
    }

    #[test]
    fn budgets_are_per_key_and_refill_with_time() {
        let store = MemoryStore::default();
        let rate = rate(2, 10);
        assert!(store.gcra_at("a", rate, S).allowed);
        assert!(store.gcra_at("a", rate, S).allowed);
        let refused = store.gcra_at("a", rate, S);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(5));
        assert!(store.gcra_at("b", rate, S).allowed, "another key's budget");
        assert!(store.gcra_at("a", rate, 6 * S).allowed);
        // The real clock works too.
        assert!(store.gcra("c", rate).allowed);
        assert_eq!(store.gcra("c", rate).remaining, 0);
        assert!(!store.gcra("c", rate).allowed);
    }

    #[test]
    fn a_success_clears_the_throttle_and_other_pairs_are_not_slowed() {
        let store = MemoryStore::default();
        let params = Params::new(&throttle(2, 5));
        let at = |pair: &str, now| store.login_attempt_at(pair, "acct", params, now);
        assert_eq!(at("acct|ip1", 0), Ok(()));
        assert_eq!(at("acct|ip1", 0), Ok(()));
        let refused = at("acct|ip1", 0).expect_err("backoff");
        assert_eq!(refused.scope, ThrottleScope::AccountIp);
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        // The owner from another address is not slowed by that backoff.
        assert_eq!(at("acct|ip2", 0), Ok(()));
        store.clear(&["acct|ip1".to_owned(), "acct".to_owned()]);
        assert_eq!(at("acct|ip1", 0), Ok(()));
        // Account cap: 5 failures from all addresses (1 since the clear + 4 more).
        assert_eq!(at("acct|ip3", 0), Ok(()));
        assert_eq!(at("acct|ip4", 0), Ok(()));
        assert_eq!(at("acct|ip5", 0), Ok(()));
        assert_eq!(at("acct|ip6", 0), Ok(()));
        let capped = at("acct|ip7", 0).expect_err("cap");
        assert_eq!(capped.scope, ThrottleScope::Account);
        assert_eq!(capped.retry_after, Duration::from_secs(60));
        assert_eq!(at("acct|ip7", 60 * S), Ok(()));
        // Through the public entry point, on the real clock.
        let settings = throttle(1, 0);
        assert_eq!(store.login_attempt("p", "x", &settings), None);
        let refused = store.login_attempt("p", "x", &settings).expect("refused");
        assert_eq!(refused.scope, ThrottleScope::AccountIp);
    }

    #[test]
    fn pair_and_account_keys_in_one_shard_work_too() {
        let store = MemoryStore::default();
        let params = Params::new(&throttle(1, 2));
        // The same key for both: one shard, one lock (and one entry per kind is all it can
        // hold, so each step sees the other kind as absent).
        let (pair, account) = (0..10_000)
            .map(|i| (format!("p{i}"), format!("a{i}")))
            .find(|(p, a)| store.shard_of(p) == store.shard_of(a))
            .expect("two keys in one shard");
        assert_eq!(store.login_attempt_at(&pair, &account, params, 0), Ok(()));
        let refused = store
            .login_attempt_at(&pair, &account, params, 0)
            .expect_err("backoff");
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert_eq!(store.login_attempt_at(&pair, &account, params, S), Ok(()));
        let capped = store
            .login_attempt_at(&pair, &account, params, 10 * S)
            .expect_err("cap");
        assert_eq!(capped.scope, ThrottleScope::Account);
    }

    #[test]
    fn sweep_drops_what_expired_and_nothing_else() {
        let store = MemoryStore::default();
        let params = Params::new(&throttle(2, 5));
        store.gcra_at("short", rate(1, 1), 0);
        store.gcra_at("long", rate(1, 3600), 0);
        store
            .login_attempt_at("pair", "account", params, 0)
            .expect("allowed");
        assert_eq!(len(&store), 4);
        let sweep_at = |now| {
            for index in 0..store.shards.len() {
                store.lock(index).sweep(now);
            }
        };
        sweep_at(S);
        assert_eq!(len(&store), 3, "the 1/second budget is full again");
        // Pair: last attempt 0, no wait yet, expires a window (60 s) later; account likewise.
        sweep_at(60 * S);
        assert_eq!(len(&store), 1);
        assert!(!store.gcra_at("long", rate(1, 3600), 60 * S).allowed);
        sweep_at(3600 * S);
        assert_eq!(len(&store), 0);
        store.sweep();
    }

    #[test]
    fn a_shard_full_of_expired_entries_is_swept_inline() {
        let store = MemoryStore::default();
        let rate = rate(1, 1);
        // Many short-lived budgets: each expires a second after it was taken.
        for i in 0..(SHARDS * MIN_SWEEP_AT) {
            store.gcra_at(&format!("k{i}"), rate, 0);
        }
        let before = len(&store);
        assert_eq!(before, SHARDS * MIN_SWEEP_AT);
        // Ten seconds on, new keys find the shards at their threshold and sweep them.
        for i in 0..(SHARDS * MIN_SWEEP_AT) {
            store.gcra_at(&format!("n{i}"), rate, 10 * S);
        }
        let after = len(&store);
        assert!(
            after < before + SHARDS * MIN_SWEEP_AT / 2,
            "{after} entries: shards were not swept inline"
        );
    }

    #[test]
    fn concurrent_takers_never_exceed_the_budget() {
        let store = std::sync::Arc::new(MemoryStore::default());
        let rate = rate(100, 3600);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let params = Params::new(&throttle(0, 50));
                    let mut allowed = (0, 0);
                    for _ in 0..100 {
                        allowed.0 += usize::from(store.gcra("shared", rate).allowed);
                        allowed.1 +=
                            usize::from(store.login_attempt_at("p", "a", params, 0).is_ok());
                    }
                    allowed
                })
            })
            .collect();
        let (budget, logins) = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        // 400 takers, a burst of 100 refilled every 36 s: exactly the burst.
        assert_eq!(budget, 100);
        assert_eq!(logins, 50);
        assert!(!store.gcra("shared", rate).allowed);
    }
}
