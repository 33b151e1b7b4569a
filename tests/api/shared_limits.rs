//! Budgets in Redis: two real `cerego` processes share one budget; a Redis that dies mid-test
//! fails open (still serving, counted) or closed (503) as configured, and limits come back with
//! it.
//!
//! The shared-budget test uses the Redis on 127.0.0.1:6379 (`.ci/run` starts one), in a key space
//! of its own: store keys are HMACs keyed by the token-signing secret, and each test uses a fresh
//! secret. The outage tests start a private `redis-server` on a free port and kill it. Without
//! Redis these tests are skipped with a notice, except under `CI`, where they fail.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::faults::Cerego;
use crate::helpers::{
    assert_detail, assert_no_rate_limit_fields, assert_refused, metric_at, random_hex,
    redis_answers, required, rule_names, rule_state,
};

const SHARED_REDIS: &str = "127.0.0.1:6379";

/// A `redis-server` of this test's own, on a port of its own, with nothing saved to disk.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on a free port, or `None` (skipped) when `redis-server` is not installed.
    fn start() -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !required(installed, "redis-server") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self { port, child: None };
        redis.restart();
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_answers(&address) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {address}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: gone at once, with every budget it held.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A SQLite database file in a directory of the test's own, for every process of the test.
fn shared_database() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("cerego.db").display());
    (dir, url)
}

/// A token-signing secret no other test uses: a key space of the test's own in Redis.
fn fresh_secret() -> String {
    format!("shared-limits-{}", random_hex(16))
}

async fn get(client: &reqwest::Client, server: &Cerego, path: &str) -> reqwest::Response {
    client
        .get(format!("{}{path}", server.address))
        .send()
        .await
        .expect("request")
}

async fn login(client: &reqwest::Client, server: &Cerego, name: &str) -> reqwest::Response {
    client
        .post(format!("{}/auth/login", server.address))
        .json(&json!({ "username": name, "password": "not the password" }))
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_budget_through_redis() {
    if !required(redis_answers(SHARED_REDIS), "a Redis on 127.0.0.1:6379") {
        return;
    }
    let (_dir, url) = shared_database();
    let secret = fresh_secret();
    let configure = |secret: String| {
        move |cmd: &mut Command| {
            cmd.env("JWT_SECRET_KEY", secret)
                .env("REDIS_URL", format!("redis://{SHARED_REDIS}"))
                .env("RATE_LIMIT_API_IP", "4/hour")
                .env("RATE_LIMIT_LOGIN_ACCOUNT", "4/hour")
                .env("LOGIN_BACKOFF_AFTER", "3");
        }
    };
    let a = Cerego::start_with(&url, configure(secret.clone()));
    let b = Cerego::start_with(&url, configure(secret));
    let client = reqwest::Client::new();

    for (server, r) in [(&a, 3), (&b, 2), (&a, 1), (&b, 0)] {
        let response = get(&client, server, "/openapi.json").await;
        assert_eq!(response.status(), 200);
        let state = rule_state(response.headers(), "api_ip");
        assert_eq!(
            (state.q, state.w, state.r),
            (4, 3600, r),
            "one budget for both: {state:?}"
        );
    }
    for server in [&a, &b] {
        let (retry, _) = assert_refused(
            get(&client, server, "/openapi.json").await,
            "Too many requests",
        )
        .await;
        assert!(
            (870..=900).contains(&retry),
            "one request refills in 15 minutes: {retry}"
        );
    }

    // The login name's budget and the backoff are shared too.
    for (server, r) in [(&a, 3), (&b, 2), (&a, 1)] {
        let response = login(&client, server, "ghost").await;
        assert_eq!(rule_state(response.headers(), "login_account").r, r);
        assert_detail(response, 401, "Incorrect username or password").await;
    }
    let (retry, _) = assert_refused(
        login(&client, &b, "ghost").await,
        "Too many failed login attempts",
    )
    .await;
    assert_eq!(retry, 1);
    assert_refused(login(&client, &a, "GHOST").await, "Too many requests").await;

    // A deployment with another secret has a key space of its own in the same Redis.
    let (_other_dir, other_url) = shared_database();
    let other = Cerego::start_with(&other_url, configure(fresh_secret()));
    let response = get(&client, &other, "/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(rule_state(response.headers(), "api_ip").r, 3);
}

/// Sends `/openapi.json` until an answer reports `api_ip` again (Redis is back and reconnected);
/// returns that answer's remaining budget.
async fn until_limited_again(client: &reqwest::Client, server: &Cerego) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = get(client, server, "/openapi.json").await;
        if response.status() == 200 && rule_names(response.headers()) == ["api_ip"] {
            return rule_state(response.headers(), "api_ip").r;
        }
        assert!(
            Instant::now() < deadline,
            "limits did not come back with Redis: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_open_and_limits_come_back_with_redis() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let (_dir, url) = shared_database();
    let secret = fresh_secret();
    let server = Cerego::start_with(&url, |cmd| {
        cmd.env("JWT_SECRET_KEY", secret)
            .env("REDIS_URL", redis.url())
            .env("REDIS_TIMEOUT_MS", "200")
            .env("RATE_LIMIT_API_IP", "3/hour");
    });
    let client = reqwest::Client::new();
    for r in [2, 1, 0] {
        let response = get(&client, &server, "/openapi.json").await;
        assert_eq!(rule_state(response.headers(), "api_ip").r, r);
    }
    assert_refused(
        get(&client, &server, "/openapi.json").await,
        "Too many requests",
    )
    .await;

    redis.kill();
    for _ in 0..10 {
        let response = get(&client, &server, "/openapi.json").await;
        assert_no_rate_limit_fields(response.headers(), "admitted without a store");
        assert_eq!(response.status(), 200, "fail-open keeps serving");
    }
    let login = login(&client, &server, "ada").await;
    assert_no_rate_limit_fields(login.headers(), "a login admitted without a store");
    assert_detail(login, 401, "Incorrect username or password").await;
    let admitted = r#"cerego_rate_limit_store_errors_total{store="redis",action="admitted"}"#;
    let errors = metric_at(&client, &server.address, admitted).await;
    assert!(
        errors >= 10.0,
        "every admitted request was counted: {errors}"
    );
    // Logged, not once per failed request. Only the store's lines count (by their field or
    // message): a loaded machine may add others (a slow statement, say).
    let warnings = server
        .logs
        .lock()
        .expect("logs")
        .iter()
        .filter(|l| matches!(l["level"].as_str(), Some("WARN" | "ERROR")))
        .filter(|l| {
            l["store"] == "redis"
                || l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("rate-limit") || m.contains("Redis"))
        })
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} store warnings for {errors} failures"
    );

    // Restarted empty: the budgets were lost, the requests never were.
    redis.restart();
    assert_eq!(until_limited_again(&client, &server).await, 2);
    for r in [1, 0] {
        let response = get(&client, &server, "/openapi.json").await;
        assert_eq!(rule_state(response.headers(), "api_ip").r, r);
    }
    assert_refused(
        get(&client, &server, "/openapi.json").await,
        "Too many requests",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_open_off_a_redis_outage_answers_503_but_not_the_probes() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let (_dir, url) = shared_database();
    let secret = fresh_secret();
    let server = Cerego::start_with(&url, |cmd| {
        cmd.env("JWT_SECRET_KEY", secret)
            .env("REDIS_URL", redis.url())
            .env("REDIS_TIMEOUT_MS", "200")
            .env("RATE_LIMIT_FAIL_OPEN", "false");
    });
    let client = reqwest::Client::new();
    assert_eq!(get(&client, &server, "/openapi.json").await.status(), 200);

    redis.kill();
    assert_detail(
        get(&client, &server, "/openapi.json").await,
        503,
        "Service unavailable",
    )
    .await;
    assert_detail(
        login(&client, &server, "ada").await,
        503,
        "Service unavailable",
    )
    .await;
    let signup = client
        .post(format!("{}/auth/signup", server.address))
        .json(&json!({ "email": "ada@example.com", "username": "ada", "password": crate::helpers::GOOD_PASSWORD }))
        .send()
        .await
        .expect("signup");
    assert_detail(signup, 503, "Service unavailable").await;
    for path in ["/healthz", "/metrics"] {
        assert_eq!(
            get(&client, &server, path).await.status(),
            200,
            "{path} is never limited"
        );
    }
    let refused = r#"cerego_rate_limit_store_errors_total{store="redis",action="refused"}"#;
    assert!(metric_at(&client, &server.address, refused).await >= 3.0);

    redis.restart();
    assert_eq!(
        until_limited_again(&client, &server).await,
        299,
        "the default 300/minute, fresh"
    );
    let signup = client
        .post(format!("{}/auth/signup", server.address))
        .json(&json!({ "email": "ada@example.com", "username": "ada", "password": crate::helpers::GOOD_PASSWORD }))
        .send()
        .await
        .expect("signup");
    assert_eq!(
        signup.status(),
        201,
        "nothing was created by the refused sign-up"
    );
}
