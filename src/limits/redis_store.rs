//! The Redis store: budgets and counters in Redis, shared by every replica.
//!
//! Each decision is one Lua script (`scripts/*.lua`, the arithmetic of [`super::gcra`] and
//! [`super::throttle`]), atomic on the server and timed by the server's clock (`TIME`), so
//! replicas with drifting clocks still share one budget. Scripts run with `EVALSHA` and fall back
//! to `EVAL` when the server does not know them (after a restart or `SCRIPT FLUSH`). Every key is
//! written with an expiry and starts with `cerego:`.
//!
//! Nothing connects before the first call, so the service starts with Redis down. Every call is
//! bounded by `REDIS_TIMEOUT_MS`. After a failure the store does not ask Redis for
//! [`OPEN_FOR`] (the calls fail at once), then lets one call probe it: a dead Redis costs one
//! request per second the timeout, not every request. A connection found broken (Redis
//! restarted) is replaced and the call retried once within its timeout, so a restart costs no
//! request a failure. Outages are logged once per [`LOG_INTERVAL`] with a count, and their end
//! once; the URL (which may hold a password) is never logged, only its host and port.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisResult, Script, ScriptInvocation};
use secrecy::{ExposeSecret as _, SecretString};

use super::gcra::{Gcra, micros};
use super::rate::Rate;
use super::store::{GcraOutcome, StoreError};
use super::throttle::Params;
use super::{ThrottleScope, Throttled};
use crate::config::ThrottleSettings;

/// The prefix of every key this service writes.
pub const KEY_PREFIX: &str = "cerego:";

/// How long Redis is left alone after a failure before one call probes it.
pub const OPEN_FOR: Duration = Duration::from_secs(1);

/// At most one "unavailable" line per this long.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The GCRA step.
static GCRA: OnceLock<Script> = OnceLock::new();
/// The login throttle's step.
static LOGIN: OnceLock<Script> = OnceLock::new();

fn gcra_script() -> &'static Script {
    GCRA.get_or_init(|| Script::new(include_str!("scripts/gcra.lua")))
}

fn login_script() -> &'static Script {
    LOGIN.get_or_init(|| Script::new(include_str!("scripts/login.lua")))
}

/// Budgets and counters in Redis.
pub struct RedisStore {
    client: redis::Client,
    /// Made on first use (it needs the runtime), then reconnects by itself.
    manager: OnceLock<ConnectionManager>,
    timeout: Duration,
    /// `cerego:` (tests add to it, to keep apart from each other).
    prefix: String,
    /// Host and port, for logs (never the URL: it may hold a password).
    address: String,
    breaker: Breaker,
    outage: OutageLog,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `url` whose calls give up after `timeout`. Fails only when `url` is not a
    /// Redis URL; nothing is connected yet.
    pub fn new(url: &SecretString, timeout: Duration) -> anyhow::Result<Self> {
        Self::with_prefix(url, timeout, KEY_PREFIX.to_owned())
    }

    fn with_prefix(url: &SecretString, timeout: Duration, prefix: String) -> anyhow::Result<Self> {
        // The crate's parse errors say what is wrong without repeating the URL.
        let client = redis::Client::open(url.expose_secret())
            .map_err(|err| anyhow!("REDIS_URL is not a usable Redis URL: {err}"))?;
        let address = client.get_connection_info().addr().to_string();
        Ok(Self {
            client,
            manager: OnceLock::new(),
            timeout,
            prefix,
            address,
            breaker: Breaker::default(),
            outage: OutageLog::default(),
        })
    }

    /// Takes one request from `key`'s budget at `rate` if it fits.
    pub async fn gcra(&self, key: &str, rate: Rate) -> Result<GcraOutcome, StoreError> {
        let gcra = Gcra::new(rate);
        let mut invocation = gcra_script().prepare_invoke();
        invocation
            .key(self.key(key))
            .arg(gcra.interval_us)
            .arg(gcra.tolerance_us);
        let reply: Vec<i64> = self.call(&Op::Script(invocation)).await?;
        gcra_outcome(&reply).map_err(StoreError)
    }

    /// The login throttle's step for `pair` and `account` (see [`super::throttle`]).
    pub async fn login_attempt(
        &self,
        pair: &str,
        account: &str,
        settings: &ThrottleSettings,
    ) -> Result<Option<Throttled>, StoreError> {
        let params = Params::new(settings);
        let mut invocation = login_script().prepare_invoke();
        invocation
            .key(self.key(pair))
            .key(self.key(account))
            .arg(params.after)
            .arg(params.max_secs)
            .arg(params.limit)
            .arg(params.window_us);
        let reply: Vec<i64> = self.call(&Op::Script(invocation)).await?;
        throttle_outcome(&reply).map_err(StoreError)
    }

    /// Deletes `keys`.
    pub async fn clear(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut del = redis::cmd("DEL");
        for key in keys {
            del.arg(self.key(key));
        }
        self.call::<i64>(&Op::Command(del)).await.map(drop)
    }

    /// Records a failed call (this store's or one it skipped): logged at once if no line went out
    /// in the last [`LOG_INTERVAL`], else counted for the next line.
    pub fn outage(&self, err: &StoreError, admit: bool) {
        self.outage.failed(&self.address, err, admit);
    }

    /// `PING`, through the same path as every call.
    #[cfg(test)]
    async fn ping(&self) -> Result<(), StoreError> {
        self.call::<String>(&Op::Command(redis::cmd("PING")))
            .await
            .map(drop)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs `op` on the connection within the timeout, unless the breaker is open; retries it
    /// once if the connection turned out broken (the manager is reconnecting then, and the retry
    /// waits for the new connection).
    async fn call<T: FromRedisValue>(&self, op: &Op<'_>) -> Result<T, StoreError> {
        let permit = self.breaker.admit(Instant::now()).map_err(|last| {
            StoreError(anyhow!(
                "Redis at {} not asked: it failed less than {} ms ago ({last})",
                self.address,
                OPEN_FOR.as_millis()
            ))
        })?;
        let mut conn = self.manager().map_err(StoreError)?;
        let attempt = async {
            match op.run(&mut conn).await {
                Err(err) if err.is_unrecoverable_error() || err.is_io_error() => {
                    op.run(&mut conn).await
                }
                other => other,
            }
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            // The client's error repeats its cause in its own message: its text says it all.
            Ok(Err(err)) => Err(anyhow!("Redis at {}: {err}", self.address)),
            Err(_) => Err(anyhow!(
                "Redis at {} did not answer within {} ms",
                self.address,
                self.timeout.as_millis()
            )),
        };
        match result {
            Ok(value) => {
                permit.succeeded();
                self.outage.answered(&self.address);
                Ok(value)
            }
            Err(err) => {
                permit.failed(Instant::now(), &err);
                Err(StoreError(err))
            }
        }
    }

    /// The connection manager, made on first use (it spawns a task, so it needs the runtime).
    fn manager(&self) -> anyhow::Result<ConnectionManager> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // One connection attempt per call: the breaker paces the attempts, not the manager.
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .context("setting up the Redis connection")?;
        // Two first calls at once: one manager wins, the other is dropped unused.
        Ok(self.manager.get_or_init(|| manager).clone())
    }
}

/// One request to Redis (kept, so that it can be sent again on a new connection).
enum Op<'a> {
    /// A script (`EVALSHA`, and `EVAL` if the server does not know it).
    Script(ScriptInvocation<'a>),
    /// A plain command.
    Command(redis::Cmd),
}

impl Op<'_> {
    async fn run<T: FromRedisValue>(&self, conn: &mut ConnectionManager) -> RedisResult<T> {
        match self {
            Self::Script(invocation) => invocation.invoke_async(conn).await,
            Self::Command(command) => command.query_async(conn).await,
        }
    }
}

/// The GCRA script's reply.
fn gcra_outcome(reply: &[i64]) -> anyhow::Result<GcraOutcome> {
    let &[allowed, remaining, reset, retry_after] = reply else {
        return Err(anyhow!("the GCRA script answered {reply:?}"));
    };
    let us = |n: i64| u64::try_from(n).map(micros);
    Ok(GcraOutcome {
        allowed: match allowed {
            0 => false,
            1 => true,
            _ => return Err(anyhow!("the GCRA script answered {reply:?}")),
        },
        remaining: u32::try_from(remaining)?,
        reset: us(reset)?,
        retry_after: us(retry_after)?,
    })
}

/// The login script's reply.
fn throttle_outcome(reply: &[i64]) -> anyhow::Result<Option<Throttled>> {
    let scope = match reply {
        [0, 0] => return Ok(None),
        [1, _] => ThrottleScope::AccountIp,
        [2, _] => ThrottleScope::Account,
        _ => return Err(anyhow!("the login script answered {reply:?}")),
    };
    let wait = u64::try_from(reply[1]).ok().filter(|&wait| wait > 0);
    let wait = wait.ok_or_else(|| anyhow!("the login script answered {reply:?}"))?;
    Ok(Some(Throttled {
        scope,
        retry_after: micros(wait),
    }))
}

/// Skips Redis for [`OPEN_FOR`] after a failure, then lets one call through to probe it.
#[derive(Debug, Default)]
struct Breaker {
    /// Set after a failure until a success: the only thing a call reads while Redis answers.
    open: AtomicBool,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    /// When the next probe may go.
    until: Option<Instant>,
    /// A probe is under way.
    probing: bool,
    /// The failure that opened the breaker, for the errors of the calls it skips.
    last_error: String,
}

/// Leave to ask Redis; report how it went ([`Permit::succeeded`], [`Permit::failed`]).
#[derive(Debug)]
#[must_use]
struct Permit<'a> {
    breaker: &'a Breaker,
    /// This call is the probe of an open breaker.
    probe: bool,
}

impl Breaker {
    /// A permit, or the error that keeps the breaker open.
    fn admit(&self, now: Instant) -> Result<Permit<'_>, String> {
        if !self.open.load(Ordering::Relaxed) {
            return Ok(Permit {
                breaker: self,
                probe: false,
            });
        }
        let mut state = self.lock();
        if state.probing || state.until.is_some_and(|until| now < until) {
            return Err(state.last_error.clone());
        }
        state.probing = true;
        Ok(Permit {
            breaker: self,
            probe: true,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Permit<'_> {
    fn succeeded(mut self) {
        self.probe = false;
        if self.breaker.open.load(Ordering::Relaxed) {
            let mut state = self.breaker.lock();
            self.breaker.open.store(false, Ordering::Relaxed);
            state.probing = false;
            state.until = None;
        }
    }

    fn failed(mut self, now: Instant, error: &anyhow::Error) {
        self.probe = false;
        let mut state = self.breaker.lock();
        self.breaker.open.store(true, Ordering::Relaxed);
        state.probing = false;
        state.until = Some(now + OPEN_FOR);
        state.last_error = format!("{error:#}");
    }
}

impl Drop for Permit<'_> {
    /// A call dropped before it finished (its request went away): if it was the probe, the next
    /// call probes instead.
    fn drop(&mut self) {
        if self.probe {
            self.breaker.lock().probing = false;
        }
    }
}

/// Redis failures, counted between log lines (the style of `store::outage`).
#[derive(Debug, Default)]
struct OutageLog {
    /// Set while failures have been recorded and no success has followed: the only thing the
    /// success path reads.
    down: AtomicBool,
    state: Mutex<OutageState>,
}

#[derive(Debug, Default)]
struct OutageState {
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
    fn failed(&self, address: &str, error: &StoreError, admit: bool) {
        let mut state = self.lock();
        let now = Instant::now();
        state.unreported += 1;
        state.since.get_or_insert(now);
        self.down.store(true, Ordering::Relaxed);
        if state
            .last_line
            .is_none_or(|last| now.duration_since(last) >= LOG_INTERVAL)
        {
            let meanwhile = if admit {
                "requests are admitted without limits"
            } else {
                "limited requests get 503"
            };
            tracing::warn!(
                store = "redis",
                redis = address,
                failures = state.unreported,
                error = format!("{:#}", error.0),
                "rate-limit store unavailable; {meanwhile} (logged at most every {}s)",
                LOG_INTERVAL.as_secs()
            );
            state.unreported = 0;
            state.last_line = Some(now);
            state.logged = true;
        }
    }

    fn answered(&self, address: &str) {
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
                store = "redis",
                redis = address,
                unreported_failures = state.unreported,
                outage_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "rate-limit store answering again"
            );
            state.unreported = 0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutageState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
