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
//! request a failure. A connection that merely stops answering (the host died, the network
//! split, the server froze: nothing closes it, and the client does not count a timeout as a
//! broken connection) is thrown away after a call times out or fails on I/O, so the next call
//! (the breaker's probe) connects afresh instead of waiting on it until the kernel gives up.
//! TCP keepalive ([`KEEPALIVE`]) finds such a connection while it is idle. Outages are logged
//! once per [`outage::INTERVAL`] with a count, and their end once; the URL (which may hold a
//! password) is never logged, only its host and port.
//!
//! Needs Redis 4 or newer (`HSET` with several fields). The scripts write after reading `TIME`,
//! which needs effects replication: the default from Redis 5, asked for by the scripts themselves
//! on Redis 4 (`redis.replicate_commands`, a no-op later). Not Redis Cluster: the login script's
//! two keys, and the keys a success clears, are in different slots.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::io::tcp::socket2::TcpKeepalive;
use redis::{FromRedisValue, RedisResult, Script, ScriptInvocation};
use secrecy::{ExposeSecret as _, SecretString};

use super::gcra::{Gcra, micros};
use super::rate::Rate;
use super::store::{GcraOutcome, StoreError};
use super::throttle::Params;
use super::{ThrottleScope, Throttled};
use crate::config::ThrottleSettings;
use crate::outage::{self, OutageLog};

/// The prefix of every key this service writes.
pub const KEY_PREFIX: &str = "cerego:";

/// How long Redis is left alone after a failure before one call probes it.
pub const OPEN_FOR: Duration = Duration::from_secs(1);

/// TCP keepalive on the connection: an idle connection whose peer vanished is found dead within
/// about 25 s (first probe after 10 s idle, then every 5 s, given up after 3 unanswered), not
/// the hours of the system's default.
const KEEPALIVE: TcpKeepalive = TcpKeepalive::new()
    .with_time(Duration::from_secs(10))
    .with_interval(Duration::from_secs(5))
    .with_retries(3);

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
    /// The connection manager in use: made on first use (it needs the runtime); reconnects by
    /// itself when it finds its connection closed, and is thrown away when a call on it times
    /// out or fails on I/O (see [`RedisStore::call`]).
    manager: Mutex<ManagerSlot>,
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
        let info = client.get_connection_info().clone().set_tcp_settings(
            // No Nagle: calls from concurrent requests share the connection, and a small
            // write held back until the previous one is acknowledged (up to 40 ms with
            // delayed ACKs) would sit in every limited request's latency.
            TcpSettings::default()
                .set_nodelay(true)
                .set_keepalive(KEEPALIVE),
        );
        let client = redis::Client::open(info)
            .map_err(|err| anyhow!("REDIS_URL is not a usable Redis URL: {err}"))?;
        Ok(Self {
            client,
            manager: Mutex::default(),
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
    /// in the last [`outage::INTERVAL`], else counted for the next line.
    pub fn outage(&self, err: &StoreError, admit: bool) {
        let Some(failures) = self.outage.failed() else {
            return;
        };
        let meanwhile = if admit {
            "requests are admitted without limits"
        } else {
            "limited requests get 503"
        };
        tracing::warn!(
            store = "redis",
            redis = self.address,
            failures,
            error = format!("{:#}", err.0),
            "rate-limit store unavailable; {meanwhile} (logged at most every {}s)",
            outage::INTERVAL.as_secs()
        );
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
    ///
    /// A call that times out or fails on I/O throws its manager away, so the next call connects
    /// afresh: the client reconnects by itself only when it sees its connection closed, and a
    /// timeout (a server that vanished without closing anything) is not that.
    async fn call<T: FromRedisValue>(&self, op: &Op<'_>) -> Result<T, StoreError> {
        let permit = self.breaker.admit(Instant::now()).map_err(|last| {
            StoreError(anyhow!(
                "Redis at {} not asked: it failed less than {} ms ago ({last})",
                self.address,
                OPEN_FOR.as_millis()
            ))
        })?;
        let (generation, mut conn) = self.manager().map_err(StoreError)?;
        let attempt = async {
            match op.run(&mut conn).await {
                // A timeout is not retried: the connection would not answer the retry either.
                Err(err) if broken(&err) && !err.is_timeout() => op.run(&mut conn).await,
                other => other,
            }
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                if broken(&err) {
                    self.discard(generation);
                }
                // The client's error repeats its cause in its own message: its text says it all.
                Err(anyhow!("Redis at {}: {err}", self.address))
            }
            Err(_) => {
                self.discard(generation);
                Err(anyhow!(
                    "Redis at {} did not answer within {} ms",
                    self.address,
                    self.timeout.as_millis()
                ))
            }
        };
        match result {
            Ok(value) => {
                permit.succeeded();
                if let Some(back) = self.outage.answered() {
                    tracing::info!(
                        store = "redis",
                        redis = self.address,
                        unreported_failures = back.unreported_failures,
                        outage_ms = outage::millis(back.outage),
                        "rate-limit store answering again"
                    );
                }
                Ok(value)
            }
            Err(err) => {
                permit.failed(Instant::now(), &err);
                Err(StoreError(err))
            }
        }
    }

    /// The connection manager in use and its generation; made if there is none (on first use,
    /// or after [`Self::discard`]). It spawns a task, so it needs the runtime.
    fn manager(&self) -> anyhow::Result<(u64, ConnectionManager)> {
        let mut slot = self.manager.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(manager) = &slot.manager {
            return Ok((slot.generation, manager.clone()));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // One connection attempt per call: the breaker paces the attempts, not the manager.
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .context("setting up the Redis connection")?;
        slot.generation += 1;
        slot.manager = Some(manager.clone());
        Ok((slot.generation, manager))
    }

    /// Throws away the manager of `generation` (its connection is dropped once the calls still
    /// on it end), unless another call did already: the next call makes a new one. Calls that
    /// failed on an older manager leave a newer one alone.
    fn discard(&self, generation: u64) {
        let mut slot = self.manager.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.generation == generation {
            slot.manager = None;
        }
    }
}

/// The connection manager in use, and how many have been made.
#[derive(Default)]
struct ManagerSlot {
    generation: u64,
    manager: Option<ConnectionManager>,
}

/// Whether `err` says the connection is broken or unanswering (not a reply of the server's).
fn broken(err: &redis::RedisError) -> bool {
    err.is_io_error() || err.is_unrecoverable_error()
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

#[cfg(test)]
mod tests;
