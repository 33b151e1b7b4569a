//! Tests of the Redis store: against the Redis on 127.0.0.1:6379 (each test under its own key
//! prefix), a private `redis-server` that is killed and restarted, a proxy to one that stops
//! forwarding without closing anything, an address that refuses connections, and a listener that
//! never answers. Without a Redis (and without `CI` set) the
//! tests that need one print a notice and pass; with `CI` set they fail.

use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::limits::memory::MemoryStore;

const SHARED_URL: &str = "redis://127.0.0.1:6379";

fn rate(quota: u32, window_secs: u32) -> Rate {
    Rate::new(NonZeroU32::new(quota).expect("non-zero"), window_secs)
}

fn throttle(after: u32, limit: u32) -> ThrottleSettings {
    ThrottleSettings {
        backoff_after: after,
        backoff_max: Duration::from_secs(900),
        account_failure_limit: limit,
        account_failure_window: Duration::from_secs(3600),
    }
}

fn secret(url: &str) -> SecretString {
    SecretString::from(url.to_owned())
}

/// A key prefix no other test (nor another run at the same time) uses.
fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{KEY_PREFIX}test:{test}:{}:{nanos}:", std::process::id())
}

/// Without the thing a test needs: a notice locally, a failure in CI.
fn missing(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} (CI is set, so this fails)"
    );
    eprintln!("notice: {what}; test skipped (set CI to make this a failure)");
}

/// A store on the shared Redis under a prefix of its own, or `None` (after the notice) when that
/// Redis does not answer.
async fn shared_store(test: &str) -> Option<RedisStore> {
    let store = RedisStore::with_prefix(
        &secret(SHARED_URL),
        Duration::from_secs(2),
        unique_prefix(test),
    )
    .expect("valid URL");
    match store.ping().await {
        Ok(()) => Some(store),
        Err(err) => {
            missing(&format!("no Redis at {SHARED_URL}: {err}"));
            None
        }
    }
}

/// A plain connection, to look at what the store wrote.
async fn inspector(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("inspector connection")
}

async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .expect("PTTL")
}

fn close(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) < Duration::from_millis(500)
}

#[test]
fn new_fails_only_on_a_malformed_url_and_connects_lazily() {
    // No runtime here: nothing may connect, or even spawn, before the first call.
    let timeout = Duration::from_millis(250);
    assert!(RedisStore::new(&secret("redis://127.0.0.1:1"), timeout).is_ok());
    assert!(RedisStore::new(&secret("rediss://cache.internal:6380/2"), timeout).is_ok());
    for bad in [
        "",
        "not a url",
        "http://127.0.0.1:6379",
        "redis://:s3cret@[::1",
    ] {
        let err = RedisStore::new(&secret(bad), timeout).expect_err(bad);
        let text = format!("{err:#}");
        assert!(text.contains("REDIS_URL"), "{text}");
        assert!(!text.contains("s3cret"), "the password leaked: {text}");
    }
    let store =
        RedisStore::new(&secret("redis://user:s3cret@127.0.0.1:1/3"), timeout).expect("valid URL");
    let debug = format!("{store:?}");
    assert!(debug.contains("127.0.0.1:1"), "{debug}");
    assert!(!debug.contains("s3cret"), "the password leaked: {debug}");
    assert!(store.manager.lock().expect("lock").manager.is_none());
}

/// The stores' futures can run on any worker thread (an axum middleware needs that).
#[test]
fn the_store_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let store =
        RedisStore::new(&secret("redis://127.0.0.1:1"), Duration::from_millis(1)).expect("url");
    let settings = throttle(5, 100);
    send(&store.gcra("k", rate(1, 1)));
    send(&store.login_attempt("p", "a", &settings));
    send(&store.clear(&[]));
    let store = crate::limits::store::Store::memory();
    send(&store.gcra("k", rate(1, 1)));
    send(&store.login_attempt("p", "a", &settings));
    send(&store.clear(&[]));
    let limiter = limiter(Some("redis://127.0.0.1:1"), true);
    let ip = std::net::IpAddr::from([192, 0, 2, 1]);
    send(&limiter.check(crate::limits::Rule::LoginIp, "k"));
    send(&limiter.login_attempt("a", ip));
    send(&limiter.login_succeeded(&["a"], ip));
}

/// A limiter with small limits on `redis_url` (memory without), failing open or not.
fn limiter(redis_url: Option<&str>, fail_open: bool) -> crate::limits::Limiter {
    use crate::limits::Rule;
    let mut rates = crate::config::Rates::default();
    rates.set(Rule::LoginIp, Some(rate(2, 60)));
    let settings = crate::config::LimitSettings {
        enabled: true,
        rates,
        redis_url: redis_url.map(secret),
        redis_timeout: Duration::from_millis(250),
        fail_open,
        throttle: throttle(1, 100),
    };
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new("sqlite"));
    crate::limits::Limiter::new(&settings, &unique_prefix("limiter").into_bytes(), metrics)
        .expect("limiter")
}

#[tokio::test]
async fn the_limiter_on_either_store_and_on_a_dead_redis() {
    use crate::limits::Rule;
    let ip = std::net::IpAddr::from([192, 0, 2, 1]);
    let mut stores = vec![limiter(None, true)];
    if shared_store("limiter").await.is_some() {
        stores.push(limiter(Some(SHARED_URL), true));
    }
    for limiter in &stores {
        let name = limiter.store_name();
        let first = limiter
            .check(Rule::LoginIp, "k")
            .await
            .expect("up")
            .expect("on");
        assert!(first.allowed && first.remaining == 1, "{name}");
        assert!(
            limiter
                .check(Rule::LoginIp, "k")
                .await
                .expect("up")
                .expect("on")
                .allowed
        );
        let refused = limiter
            .check(Rule::LoginIp, "k")
            .await
            .expect("up")
            .expect("on");
        assert!(!refused.allowed, "{name}");
        assert!(refused.retry_after > Duration::from_secs(29), "{name}");
        assert_eq!(
            limiter.check(Rule::SignupIp, "k").await.expect("up"),
            None,
            "off"
        );
        assert_eq!(
            limiter.login_attempt("ada", ip).await.expect("up"),
            Ok(()),
            "{name}"
        );
        let throttled = limiter
            .login_attempt("ada", ip)
            .await
            .expect("up")
            .expect_err("backoff");
        assert_eq!(throttled.scope, ThrottleScope::AccountIp, "{name}");
        limiter.login_succeeded(&["ada"], ip).await;
        assert_eq!(
            limiter.login_attempt("ada", ip).await.expect("up"),
            Ok(()),
            "{name}"
        );
    }
    // Redis dead: admitted without a decision, or refused.
    let open = limiter(Some("redis://127.0.0.1:1"), true);
    assert_eq!(
        open.check(Rule::LoginIp, "k").await.expect("fail open"),
        None
    );
    assert_eq!(
        open.login_attempt("ada", ip).await.expect("fail open"),
        Ok(())
    );
    open.login_succeeded(&["ada"], ip).await;
    let closed = limiter(Some("redis://127.0.0.1:1"), false);
    assert!(closed.check(Rule::LoginIp, "k").await.is_err());
    assert!(closed.login_attempt("ada", ip).await.is_err());
}

#[test]
fn script_replies_are_checked() {
    assert_eq!(
        gcra_outcome(&[1, 4, 2_000_000, 0]).expect("valid"),
        GcraOutcome {
            allowed: true,
            remaining: 4,
            reset: Duration::from_secs(2),
            retry_after: Duration::ZERO,
        }
    );
    for bad in [
        &[][..],
        &[1, 4, 2],
        &[2, 0, 0, 0],
        &[0, -1, 0, 0],
        &[0, 0, 0, -5],
    ] {
        assert!(gcra_outcome(bad).is_err(), "{bad:?}");
    }
    assert_eq!(throttle_outcome(&[0, 0]).expect("valid"), None);
    assert_eq!(
        throttle_outcome(&[2, 1_500_000]).expect("valid"),
        Some(Throttled {
            scope: ThrottleScope::Account,
            retry_after: Duration::from_millis(1_500),
        })
    );
    for bad in [&[][..], &[1, 0], &[1, -3], &[3, 5], &[0, 5], &[0, 0, 0]] {
        assert!(throttle_outcome(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_breaker_skips_redis_after_a_failure_then_lets_one_probe_through() {
    let breaker = Breaker::default();
    let t0 = Instant::now();
    breaker.admit(t0).expect("closed").succeeded();
    let err = anyhow!("connection refused");
    breaker.admit(t0).expect("closed").failed(t0, &err);
    assert_eq!(
        breaker.admit(t0 + OPEN_FOR / 2).expect_err("open"),
        "connection refused"
    );
    // Once the period is over: one probe, and no one else while it runs.
    let probe = breaker.admit(t0 + OPEN_FOR).expect("probe");
    assert!(probe.probe);
    assert!(breaker.admit(t0 + OPEN_FOR).is_err());
    // A probe that went away without an answer lets the next call probe.
    drop(probe);
    let probe = breaker.admit(t0 + OPEN_FOR).expect("next probe");
    probe.failed(t0 + OPEN_FOR, &err);
    assert!(breaker.admit(t0 + OPEN_FOR * 3 / 2).is_err());
    // A successful probe closes it.
    breaker.admit(t0 + OPEN_FOR * 2).expect("probe").succeeded();
    assert!(!breaker.open.load(Ordering::Relaxed));
    assert!(!breaker.admit(t0).expect("closed").probe);
}

#[tokio::test]
async fn redis_and_memory_give_the_same_decisions() {
    let Some(redis) = shared_store("same").await else {
        return;
    };
    let memory = MemoryStore::default();
    let hourly = rate(3, 3600);
    for key in ["a", "a", "b", "a", "a", "b", "b", "b", "c", "a"] {
        let from_redis = redis.gcra(key, hourly).await.expect("redis");
        let from_memory = memory.gcra(key, hourly);
        assert_eq!(from_redis.allowed, from_memory.allowed, "{key}");
        assert_eq!(from_redis.remaining, from_memory.remaining, "{key}");
        assert!(close(from_redis.reset, from_memory.reset), "{key}");
        assert!(
            close(from_redis.retry_after, from_memory.retry_after),
            "{key}"
        );
    }
    let settings = throttle(2, 4);
    let attempts = [
        ("p1", "acct"),
        ("p1", "acct"),
        ("p1", "acct"), // backoff: 1 s
        ("p2", "acct"),
        ("p3", "acct"), // 4 failures: the account is capped
        ("p4", "acct"),
        ("p5", "other"),
        ("p1", "acct"), // both refuse: the cap's wait is the longer
    ];
    let mut decisions = Vec::new();
    for (pair, account) in attempts {
        let from_redis = redis
            .login_attempt(pair, account, &settings)
            .await
            .expect("redis");
        let from_memory = memory.login_attempt(pair, account, &settings);
        assert_eq!(
            from_redis.map(|t| t.scope),
            from_memory.map(|t| t.scope),
            "{pair} {account}"
        );
        if let (Some(r), Some(m)) = (from_redis, from_memory) {
            assert!(close(r.retry_after, m.retry_after), "{r:?} {m:?}");
        }
        decisions.push(from_redis.map(|t| t.scope));
    }
    use ThrottleScope::{Account, AccountIp};
    assert_eq!(
        decisions,
        [
            None,
            None,
            Some(AccountIp),
            None,
            None,
            Some(Account),
            None,
            Some(Account)
        ]
    );
    // A success clears the pair and the account, in both.
    let keys = ["p1".to_owned(), "acct".to_owned()];
    redis.clear(&keys).await.expect("redis");
    memory.clear(&keys);
    for _ in 0..3 {
        let from_redis = redis.login_attempt("p1", "acct", &settings).await;
        let from_memory = memory.login_attempt("p1", "acct", &settings);
        assert_eq!(
            from_redis.expect("redis").map(|t| t.scope),
            from_memory.map(|t| t.scope)
        );
    }
    redis.clear(&[]).await.expect("nothing to clear");
}

#[tokio::test]
async fn waits_are_honoured_on_the_server_clock_and_every_key_expires() {
    let Some(store) = shared_store("waits").await else {
        return;
    };
    let mut conn = inspector(SHARED_URL).await;
    let per_second = rate(2, 1);
    assert!(store.gcra("k", per_second).await.expect("first").allowed);
    assert!(store.gcra("k", per_second).await.expect("second").allowed);
    let refused = store.gcra("k", per_second).await.expect("third");
    assert!(!refused.allowed);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(500)
    );
    let ttl = pttl(&mut conn, &store.key("k")).await;
    assert!((1..=1_000).contains(&ttl), "PTTL {ttl}");
    tokio::time::sleep(refused.retry_after + Duration::from_millis(5)).await;
    assert!(
        store
            .gcra("k", per_second)
            .await
            .expect("after the wait")
            .allowed
    );

    let settings = ThrottleSettings {
        account_failure_window: Duration::from_secs(60),
        ..throttle(1, 10)
    };
    assert_eq!(
        store
            .login_attempt("pair", "acct", &settings)
            .await
            .expect("first"),
        None
    );
    let throttled = store
        .login_attempt("pair", "acct", &settings)
        .await
        .expect("second")
        .expect("backoff");
    assert_eq!(throttled.scope, ThrottleScope::AccountIp);
    assert!(throttled.retry_after <= Duration::from_secs(1));
    // Pair: the next wait (1 s) and a window; account: the rest of its window.
    let pair_ttl = pttl(&mut conn, &store.key("pair")).await;
    assert!(
        (59_000..=61_000).contains(&pair_ttl),
        "pair PTTL {pair_ttl}"
    );
    let account_ttl = pttl(&mut conn, &store.key("acct")).await;
    assert!(
        (58_000..=60_000).contains(&account_ttl),
        "account PTTL {account_ttl}"
    );
    tokio::time::sleep(throttled.retry_after + Duration::from_millis(5)).await;
    assert_eq!(
        store
            .login_attempt("pair", "acct", &settings)
            .await
            .expect("third"),
        None
    );
    store
        .clear(&["pair".to_owned(), "acct".to_owned()])
        .await
        .expect("clear");
    assert_eq!(pttl(&mut conn, &store.key("pair")).await, -2, "deleted");
    assert_eq!(pttl(&mut conn, &store.key("acct")).await, -2, "deleted");
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast_and_keeps_failing_fast() {
    let timeout = Duration::from_millis(250);
    let store = RedisStore::new(&secret("redis://:s3cret@127.0.0.1:1"), timeout).expect("url");
    let started = Instant::now();
    let err = store
        .gcra("k", rate(1, 1))
        .await
        .expect_err("nothing listens");
    assert!(
        started.elapsed() < timeout + Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let text = format!("{err}");
    assert!(
        text.contains("127.0.0.1:1") && !text.contains("s3cret"),
        "{text}"
    );
    store.outage(&err, true);
    // Redis is not asked again within the breaker's period: no connection attempts at all.
    let started = Instant::now();
    for _ in 0..100 {
        let err = store.gcra("k", rate(1, 1)).await.expect_err("still down");
        assert!(format!("{err}").contains("not asked"), "{err}");
        store.outage(&err, true);
    }
    let err = store
        .login_attempt("p", "a", &throttle(5, 100))
        .await
        .expect_err("down");
    assert!(format!("{err}").contains("not asked"), "{err}");
    assert!(store.clear(&["p".to_owned()]).await.is_err());
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(store.outage.snapshot().unreported, 100);
}

#[tokio::test]
async fn a_silent_redis_costs_the_timeout_once_per_period() {
    // Accepts connections and never answers: every call waits for the timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(200);
    let store =
        RedisStore::new(&secret(&format!("redis://127.0.0.1:{port}")), timeout).expect("url");
    let started = Instant::now();
    assert!(store.gcra("k", rate(1, 1)).await.is_err());
    let first = started.elapsed();
    assert!(
        first >= timeout - Duration::from_millis(20) && first < timeout * 3,
        "{first:?}"
    );
    let started = Instant::now();
    for _ in 0..50 {
        assert!(store.gcra("k", rate(1, 1)).await.is_err());
    }
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // After the period one call probes (and waits), the others meanwhile do not.
    tokio::time::sleep(OPEN_FOR).await;
    let probe = async {
        let started = Instant::now();
        let result = store.gcra("k", rate(1, 1)).await;
        (result.is_err(), started.elapsed())
    };
    let other = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let result = store.gcra("k", rate(1, 1)).await;
        (result.expect_err("skipped").to_string(), started.elapsed())
    };
    let ((probe_failed, probe_took), (other_err, other_took)) = tokio::join!(probe, other);
    assert!(probe_failed);
    assert!(
        probe_took >= timeout - Duration::from_millis(20),
        "{probe_took:?}"
    );
    assert!(other_err.contains("not asked"), "{other_err}");
    assert!(other_took < Duration::from_millis(100), "{other_took:?}");
    holder.abort();
}

/// A `redis-server` of this test's own, on a port it picked.
struct PrivateRedis {
    port: u16,
    /// `requirepass`, if any.
    password: Option<&'static str>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on a free port; `None` (after the notice) without a `redis-server` binary.
    async fn start() -> Option<Self> {
        Self::start_with(None).await
    }

    async fn start_with(password: Option<&'static str>) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = Self {
            port,
            password,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        match server.spawn() {
            Ok(()) => {}
            Err(err) => {
                missing(&format!("cannot start redis-server: {err}"));
                return None;
            }
        }
        server.wait_ready().await;
        Some(server)
    }

    fn url(&self) -> String {
        match self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(password) = self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn restart(&mut self) {
        self.spawn().expect("redis-server ran before");
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).expect("url");
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn a_restarted_redis_is_used_again_even_after_script_flush() {
    let Some(mut server) = PrivateRedis::start().await else {
        return;
    };
    let store = RedisStore::new(&secret(&server.url()), Duration::from_millis(250)).expect("url");
    let quota = rate(5, 3600);
    assert_eq!(store.gcra("k", quota).await.expect("up").remaining, 4);
    assert_eq!(store.gcra("k", quota).await.expect("up").remaining, 3);
    assert_eq!(
        store
            .login_attempt("p", "a", &throttle(5, 100))
            .await
            .expect("up"),
        None
    );

    // Restarted between two calls: the broken connection is replaced within the call, the
    // scripts are loaded again, and only the budget is lost.
    server.kill();
    server.restart().await;
    assert_eq!(
        store.gcra("k", quota).await.expect("restarted").remaining,
        4
    );

    // Down: calls fail, then are skipped.
    server.kill();
    let started = Instant::now();
    assert!(store.gcra("k", quota).await.is_err());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let err = store.gcra("k", quota).await.expect_err("skipped");
    assert!(err.to_string().contains("not asked"), "{err}");

    // Back: the first probe after the breaker's period finds it.
    server.restart().await;
    let back = Instant::now();
    let outcome = loop {
        match store.gcra("k", quota).await {
            Ok(outcome) => break outcome,
            Err(_) => {
                assert!(back.elapsed() < OPEN_FOR * 3, "not recovered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(
        back.elapsed() <= OPEN_FOR + Duration::from_secs(1),
        "{:?}",
        back.elapsed()
    );
    assert_eq!(outcome.remaining, 4);

    // The scripts flushed: EVALSHA falls back to EVAL, no call fails.
    let mut conn = inspector(&server.url()).await;
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut conn)
        .await
        .expect("SCRIPT FLUSH");
    assert_eq!(store.gcra("k", quota).await.expect("flushed").remaining, 3);
    assert_eq!(
        store
            .login_attempt("p", "a", &throttle(5, 100))
            .await
            .expect("flushed"),
        None
    );
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut conn)
        .await
        .expect("SCRIPT FLUSH");
    assert_eq!(
        store
            .login_attempt("p", "a", &throttle(5, 100))
            .await
            .expect("flushed"),
        None
    );
    // Every key the store wrote expires.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in keys {
        assert!(key.starts_with(KEY_PREFIX), "{key}");
        assert!(pttl(&mut conn, &key).await > 0, "{key} has no expiry");
    }
}

/// The GCRA script with its clock set to `now`.
async fn gcra_at(store: &RedisStore, key: &str, rate: Rate, now: u64) -> GcraOutcome {
    let gcra = Gcra::new(rate);
    let mut invocation = gcra_script().prepare_invoke();
    invocation
        .key(store.key(key))
        .arg(gcra.interval_us)
        .arg(gcra.tolerance_us)
        .arg(now);
    let reply: Vec<i64> = store.call(&Op::Script(invocation)).await.expect("redis");
    gcra_outcome(&reply).expect("reply")
}

/// The login script with its clock set to `now`.
async fn login_at(
    store: &RedisStore,
    pair: &str,
    account: &str,
    params: Params,
    now: u64,
) -> Option<Throttled> {
    let mut invocation = login_script().prepare_invoke();
    invocation
        .key(store.key(pair))
        .key(store.key(account))
        .arg(params.after)
        .arg(params.max_secs)
        .arg(params.limit)
        .arg(params.window_us)
        .arg(now);
    let reply: Vec<i64> = store.call(&Op::Script(invocation)).await.expect("redis");
    throttle_outcome(&reply).expect("reply")
}

#[tokio::test]
async fn the_scripts_repeat_the_rust_arithmetic_exactly() {
    const S: u64 = 1_000_000;
    let Some(store) = shared_store("exact").await else {
        return;
    };
    let memory = MemoryStore::default();
    // xorshift: a fixed, varied sequence.
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let rates = [
        rate(3, 1),
        rate(5, 60),
        rate(7, 60),
        rate(1, 3600),
        rate(100, 1),
    ];
    let throttles = [
        ThrottleSettings {
            backoff_max: Duration::from_secs(8),
            account_failure_window: Duration::from_secs(30),
            ..throttle(2, 5)
        },
        throttle(0, 3),
        throttle(3, 0),
        ThrottleSettings {
            account_failure_window: Duration::from_secs(5),
            ..throttle(1, 1)
        },
    ];
    // Microseconds since the epoch, as the server's clock gives: large numbers in Lua's doubles.
    let mut now = 1_764_000_000 * S;
    let mut last = Instant::now();
    let (mut allowed, mut refused) = (0, 0);
    for step in 0..600 {
        // The clock moves at least as fast as the real one, so nothing expires in Redis (on its
        // real clock) that this test's clock still has alive.
        let gap = match next(4) {
            0 => 0,
            1 => next(50_000),
            2 => next(3 * S),
            _ => next(40 * S),
        };
        now += gap + u64::try_from(last.elapsed().as_micros()).unwrap_or(0);
        last = Instant::now();
        if next(2) == 0 {
            let index = next(rates.len() as u64) as usize;
            let key = format!("g{index}-{}", next(3));
            let from_redis = gcra_at(&store, &key, rates[index], now).await;
            let from_memory = memory.gcra_at(&key, rates[index], now);
            assert_eq!(from_redis, from_memory, "step {step}: {key} at {now}");
            if from_redis.allowed {
                allowed += 1;
            } else {
                refused += 1;
            }
        } else {
            let index = next(throttles.len() as u64) as usize;
            let params = Params::new(&throttles[index]);
            let (pair, account) = (
                format!("p{index}-{}", next(3)),
                format!("a{index}-{}", next(2)),
            );
            if next(12) == 0 {
                let keys = [pair.clone(), account.clone()];
                store.clear(&keys).await.expect("clear");
                memory.clear(&keys);
            }
            let from_redis = login_at(&store, &pair, &account, params, now).await;
            let from_memory = memory.login_attempt_at(&pair, &account, params, now).err();
            assert_eq!(
                from_redis, from_memory,
                "step {step}: {pair} {account} at {now}"
            );
            if from_redis.is_none() {
                allowed += 1;
            } else {
                refused += 1;
            }
        }
    }
    assert!(
        allowed > 100 && refused > 100,
        "{allowed} allowed, {refused} refused"
    );
}

/// Log lines, as the service's subscriber would write them, captured.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
    }
}

#[tokio::test]
async fn an_outage_is_logged_once_with_its_end_and_never_the_password() {
    let Some(mut server) = PrivateRedis::start_with(Some("s3cret-pw")).await else {
        return;
    };
    let captured = Captured::default();
    // Every level of every crate (the Redis client's own lines too).
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let store = RedisStore::new(&secret(&server.url()), Duration::from_millis(250)).expect("url");
    assert!(store.gcra("k", rate(5, 60)).await.expect("up").allowed);
    server.kill();
    for _ in 0..20 {
        // What the limiter does with each failure.
        let err = store.gcra("k", rate(5, 60)).await.expect_err("down");
        store.outage(&err, true);
    }
    server.restart().await;
    let back = Instant::now();
    while store.gcra("k", rate(5, 60)).await.is_err() {
        assert!(back.elapsed() < OPEN_FOR * 3, "not recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.gcra("k", rate(5, 60)).await.is_ok());

    let text = captured.text();
    assert!(!text.contains("s3cret-pw"), "the password leaked:\n{text}");
    let unavailable: Vec<_> = text
        .lines()
        .filter(|line| line.contains("rate-limit store unavailable"))
        .collect();
    assert_eq!(unavailable.len(), 1, "{text}");
    assert!(unavailable[0].contains("WARN"), "{text}");
    let address = format!("redis=\"127.0.0.1:{}\"", server.port);
    assert!(unavailable[0].contains(&address), "{text}");
    assert!(
        unavailable[0].contains("error=\"Redis at 127.0.0.1:"),
        "{text}"
    );
    assert!(unavailable[0].contains("requests are admitted"), "{text}");
    let answering: Vec<_> = text
        .lines()
        .filter(|line| line.contains("rate-limit store answering again"))
        .collect();
    assert_eq!(answering.len(), 1, "{text}");
    assert!(answering[0].contains("unreported_failures=19"), "{text}");
}

/// A TCP proxy to `127.0.0.1:<upstream>` that can "black-hole": every connection open then stops
/// forwarding, without being closed, forever (as when the server's host dies or the network
/// splits); connections accepted while black-holed are held and never forwarded. After
/// [`BlackHoleProxy::resume`] new connections are forwarded again, the old ones stay dead.
struct BlackHoleProxy {
    port: u16,
    black_hole: tokio::sync::watch::Sender<bool>,
    /// Connections accepted so far.
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHoleProxy {
    async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (black_hole, watch) = tokio::sync::watch::channel(false);
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut watch = watch.clone();
                connections.spawn(async move {
                    if !*watch.borrow_and_update() {
                        let mut server = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                            .await
                            .expect("upstream");
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                            _ = watch.wait_for(|&black_hole| black_hole) => {}
                        }
                        // Dead from here on, and never closed (until the test ends).
                        std::future::pending::<()>().await;
                        drop(server);
                    }
                    std::future::pending::<()>().await;
                    drop(client);
                });
            }
        });
        Self {
            port,
            black_hole,
            accepted,
            task,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn black_hole(&self) {
        self.black_hole.send_replace(true);
    }

    fn resume(&self) {
        self.black_hole.send_replace(false);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for BlackHoleProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection's task.
        self.task.abort();
    }
}

#[tokio::test]
async fn a_redis_that_vanishes_without_closing_is_left_for_a_new_connection() {
    let Some(server) = PrivateRedis::start().await else {
        return;
    };
    let proxy = BlackHoleProxy::start(server.port).await;
    let timeout = Duration::from_millis(250);
    let store = RedisStore::new(&secret(&proxy.url()), timeout).expect("url");
    let quota = rate(10, 3600);
    assert_eq!(store.gcra("k", quota).await.expect("up").remaining, 9);
    assert_eq!(proxy.accepted(), 1);

    // Vanished: the call fails after the timeout, and the breaker opens.
    proxy.black_hole();
    let started = Instant::now();
    assert!(store.gcra("k", quota).await.is_err());
    let took = started.elapsed();
    assert!(
        took >= timeout - Duration::from_millis(20) && took < timeout * 2,
        "{took:?}"
    );
    let err = store.gcra("k", quota).await.expect_err("skipped");
    assert!(err.to_string().contains("not asked"), "{err}");

    // Still gone: the probe tries a new connection (which the dead network holds, unanswered).
    tokio::time::sleep(OPEN_FOR).await;
    let started = Instant::now();
    assert!(store.gcra("k", quota).await.is_err());
    assert!(started.elapsed() < timeout * 2, "{:?}", started.elapsed());
    let before = proxy.accepted();
    assert!(before >= 2, "the probe did not connect afresh");

    // Back for new connections (the old ones stay dead): the next probe finds it.
    proxy.resume();
    let back = Instant::now();
    let outcome = loop {
        match store.gcra("k", quota).await {
            Ok(outcome) => break outcome,
            Err(_) => {
                assert!(
                    back.elapsed() < Duration::from_secs(5),
                    "not recovered: {} connections",
                    proxy.accepted()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(
        back.elapsed() <= OPEN_FOR + timeout + Duration::from_millis(500),
        "{:?}",
        back.elapsed()
    );
    assert_eq!(outcome.remaining, 8, "the same Redis, its budget kept");
    // (Usually two: the thrown-away manager's own background reconnect, which its failed
    // connection attempt started, may land once forwarding is back; it is dropped unused.)
    let after = proxy.accepted();
    assert!(after > before, "{before} {after}");
    // And it stays on the new connection.
    for remaining in (0..8).rev() {
        assert_eq!(
            store.gcra("k", quota).await.expect("up").remaining,
            remaining
        );
    }
    assert_eq!(proxy.accepted(), after);
}
