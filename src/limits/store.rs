//! Where budgets and counters live: this process's memory, or Redis shared by replicas. Both
//! implement the same operations with the same arithmetic (GCRA for rate limits; consecutive
//! failures with a doubling backoff, and failures per window, for the login throttle).

use std::time::Duration;

use secrecy::SecretString;

use super::Throttled;
use super::memory::MemoryStore;
use super::rate::Rate;
use super::redis_store::RedisStore;
use crate::config::ThrottleSettings;

/// A store call that failed (Redis unreachable, timed out, or answered nonsense).
#[derive(Debug, thiserror::Error)]
#[error("rate-limit store failed: {0:#}")]
pub struct StoreError(pub anyhow::Error);

/// One GCRA step's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraOutcome {
    /// Whether the request fits the budget (and was taken from it).
    pub allowed: bool,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// Until a refused request fits; zero when allowed.
    pub retry_after: Duration,
}

/// The store in use.
#[derive(Debug)]
pub enum Store {
    /// This process's memory (the default).
    Memory(MemoryStore),
    /// Redis (`REDIS_URL`); boxed, being much the larger.
    Redis(Box<RedisStore>),
}

impl Store {
    pub fn memory() -> Self {
        Self::Memory(MemoryStore::default())
    }

    /// A Redis store for `url`; fails only on a malformed URL (it connects on first use).
    pub fn redis(url: &SecretString, timeout: Duration) -> anyhow::Result<Self> {
        RedisStore::new(url, timeout).map(|store| Self::Redis(Box::new(store)))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Takes one request from `key`'s budget at `rate` if it fits.
    pub async fn gcra(&self, key: &str, rate: Rate) -> Result<GcraOutcome, StoreError> {
        match self {
            Self::Memory(store) => Ok(store.gcra(key, rate)),
            Self::Redis(store) => store.gcra(key, rate).await,
        }
    }

    /// The login throttle's atomic step: refuses if `pair` is inside its backoff or `account`
    /// is over its failure cap; otherwise counts the attempt as a failure of both.
    pub async fn login_attempt(
        &self,
        pair: &str,
        account: &str,
        settings: &ThrottleSettings,
    ) -> Result<Option<Throttled>, StoreError> {
        match self {
            Self::Memory(store) => Ok(store.login_attempt(pair, account, settings)),
            Self::Redis(store) => store.login_attempt(pair, account, settings).await,
        }
    }

    /// Deletes `keys` (a successful login clears its counters).
    pub async fn clear(&self, keys: &[String]) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => {
                store.clear(keys);
                Ok(())
            }
            Self::Redis(store) => store.clear(keys).await,
        }
    }

    /// Drops expired in-memory entries.
    pub fn sweep(&self) {
        if let Self::Memory(store) = self {
            store.sweep();
        }
    }

    /// Logs a failure, at most once per interval (and the recovery once), saying whether
    /// requests are admitted (`admit`) or refused meanwhile.
    pub fn outage(&self, err: &StoreError, admit: bool) {
        match self {
            Self::Memory(_) => tracing::error!(error = %err, "in-memory rate-limit store failed"),
            Self::Redis(store) => store.outage(err, admit),
        }
    }
}
