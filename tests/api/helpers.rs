//! Spawning the real app on a random port with its own fresh database, and talking HTTP to it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Once};
use std::time::Duration;

use cerego::app::App;
use cerego::auth::clock::ManualClock;
use cerego::config::{
    DatabaseSettings, JwtSettings, LimitSettings, LogFormat, Rates, SessionSettings, Settings,
    ThrottleSettings,
};
use cerego::limits::{Rate, Rule};
use reqwest::header::HeaderMap;
use reqwest::{Client, Response};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The signing key every test app uses, so tests can mint their own tokens.
pub const TEST_SECRET: &str = "test-secret-key-with-at-least-32-bytes!";
/// A password that passes the policy.
pub const GOOD_PASSWORD: &str = "correct horse battery staple";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates, for each `async fn name(backend: Backend)`, the tests `name::sqlite` and
/// `name::postgres`. The PostgreSQL half runs when `TEST_DATABASE_URL` is set.
#[macro_export]
macro_rules! db_tests {
    ($($(#[$meta:meta])* async fn $name:ident($backend:ident: $ty:ty) $body:block)*) => {$(
        $(#[$meta])*
        async fn $name($backend: $ty) $body

        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::helpers::postgres_url().is_some() {
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            }
        }
    )*};
}

/// `TEST_DATABASE_URL`, or `None` (with a notice) when the PostgreSQL half is skipped; with `CI`
/// set, a missing `TEST_DATABASE_URL` fails the test instead (and an unreachable server fails in
/// [`TestDb::create`]).
pub fn postgres_url() -> Option<String> {
    static NOTICE: Once = Once::new();
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        // In CI the PostgreSQL half is part of what a green run claims: never skip it there.
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "CI is set but TEST_DATABASE_URL is not: the PostgreSQL half must run in CI"
        );
        NOTICE.call_once(|| {
            eprintln!("SKIPPED: PostgreSQL half (set TEST_DATABASE_URL to run it)");
        });
    }
    url
}

fn init_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty()) {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("debug,sqlx=info,hyper=info")
                .with_test_writer()
                .try_init();
        }
    });
}

/// Runs `$body` with `$conn` bound to a new connection to the test database (of either kind).
macro_rules! with_connection {
    ($db:expr, $conn:ident => $body:expr) => {
        match $db {
            TestDb::Sqlite { .. } => {
                let mut $conn = sqlx::SqliteConnection::connect(&$db.url())
                    .await
                    .expect("connect");
                $body
            }
            TestDb::Postgres { url, .. } => {
                let mut $conn = sqlx::PgConnection::connect(url).await.expect("connect");
                $body
            }
        }
    };
}

/// A fresh, empty database that is deleted when dropped.
pub enum TestDb {
    Sqlite {
        dir: tempfile::TempDir,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite {
                dir: tempfile::tempdir().expect("temporary directory"),
            },
            Backend::Postgres => {
                let admin_url = postgres_url().expect("TEST_DATABASE_URL is set");
                let name = format!("cerego_test_{}", random_hex(8));
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|err| {
                        panic!("TEST_DATABASE_URL is set but PostgreSQL cannot be reached: {err}")
                    });
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let url = with_database(&admin_url, &name);
                Self::Postgres {
                    admin_url,
                    name,
                    url,
                }
            }
        }
    }

    pub fn url(&self) -> String {
        match self {
            Self::Sqlite { dir } => format!("sqlite://{}", dir.path().join("cerego.db").display()),
            Self::Postgres { url, .. } => url.clone(),
        }
    }

    /// Runs one SQL statement with parameters against the test database, outside the app.
    pub async fn execute(&self, sql: &'static str, args: &[&str]) {
        with_connection!(self, conn => {
            let mut query = sqlx::query(sql);
            for arg in args {
                query = query.bind(*arg);
            }
            query.execute(&mut conn).await.expect("sql");
        })
    }

    /// A count (or any integer) that `sql` selects from the test database.
    pub async fn scalar(&self, sql: &'static str) -> i64 {
        with_connection!(self, conn => {
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("row")
        })
    }

    /// The stored password hash of the account with `email`.
    pub async fn stored_hash(&self, email: &str) -> String {
        const SQL: &str = "SELECT hashed_password FROM users WHERE email = $1";
        with_connection!(self, conn => {
            sqlx::query_scalar(SQL).bind(email).fetch_one(&mut conn).await.expect("row")
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Self::Postgres {
            admin_url, name, ..
        } = self
        {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside a Tokio runtime that may be shutting down: use a thread of its own.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await?;
                    admin.close().await
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("could not drop test database {}", self.name_hint());
            }
        }
    }
}

impl TestDb {
    fn name_hint(&self) -> &str {
        match self {
            Self::Postgres { name, .. } => name,
            Self::Sqlite { .. } => "sqlite",
        }
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{host_part}/{name}?{query}"),
        None => format!("{host_part}/{name}"),
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("randomness");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Settings for a test app on `url`: port 0, the test key, the cheapest bcrypt cost.
pub fn test_settings(url: &str) -> Settings {
    Settings {
        host: [127, 0, 0, 1].into(),
        port: 0,
        database: DatabaseSettings {
            url: Some(SecretString::from(url.to_owned())),
            max_connections: 5,
            acquire_timeout: Duration::from_secs(2),
            auto_migrate: true,
            query_timeout: Duration::from_secs(5),
            statement_cache_capacity: 100,
        },
        jwt: JwtSettings {
            secret: Some(SecretString::from(TEST_SECRET)),
            signing: cerego::config::Signing::Secret(jsonwebtoken::Algorithm::HS256),
            access_token_ttl: Duration::from_secs(30 * 60),
            issuer: None,
            audience: None,
            accept_legacy_until: None,
        },
        sessions: SessionSettings {
            refresh_grace: Duration::from_secs(10),
            lifetime: Duration::from_secs(30 * 24 * 3600),
            idle_timeout: Duration::from_secs(14 * 24 * 3600),
            purge_interval: Duration::from_secs(3600),
        },
        bcrypt_cost: 4,
        hash_queue: cerego::config::HashQueueSettings {
            per_core: 16,
            full_wait: std::time::Duration::from_millis(250),
        },
        request_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(30),
        http: cerego::config::HttpSettings {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        },
        log_format: LogFormat::Json,
        limits: default_limits(),
        trusted_proxies: cerego::config::TrustedProxies::default(),
        trusted_proxy_header: cerego::config::ProxyHeader::default(),
        recovery: cerego::config::RecoverySettings {
            password_reset_url: "http://localhost:8000/auth/password/reset".to_owned(),
            email_verification_url: "http://localhost:8000/auth/email/verify".to_owned(),
            password_reset_ttl: Duration::from_secs(3600),
            email_verification_ttl: Duration::from_secs(86_400),
            require_email_verification: false,
        },
        mail: cerego::config::MailSettings {
            smtp_url: None,
            smtp_timeout: Duration::from_secs(10),
            from: "cerego <no-reply@localhost>".parse().expect("mailbox"),
            // Replaced by a directory of the app's own when it starts (see `start`).
            outbox_dir: shared_outbox_dir(),
            retry_max: Duration::from_secs(1),
        },
        admin: None,
        public_base_url: "http://localhost:8000".to_owned(),
        audit_retention: Some(Duration::from_secs(365 * 86_400)),
    }
}

/// The outbox directory `test_settings` names; an app started with it writes its `.eml` files
/// to a temporary directory of its own instead, removed with the app.
fn shared_outbox_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("cerego-test-outbox")
}

/// The documented defaults of the rate limits and the login throttle (README, `.env.example`),
/// in memory.
pub fn default_limits() -> LimitSettings {
    let mut rates = Rates::default();
    for (rule, rate) in [
        (Rule::LoginIp, "60/minute"),
        (Rule::LoginAccount, "20/minute"),
        (Rule::SignupIp, "100/hour"),
        (Rule::RefreshIp, "300/minute"),
        (Rule::ApiUser, "600/minute"),
        (Rule::ApiIp, "300/minute"),
        (Rule::RecoveryIp, "100/hour"),
        (Rule::RecoveryAccount, "3/hour"),
    ] {
        rates.set(rule, Rate::parse(rate).expect("a valid rate"));
    }
    LimitSettings {
        enabled: true,
        rates,
        redis_url: None,
        redis_timeout: Duration::from_millis(250),
        fail_open: true,
        throttle: ThrottleSettings {
            backoff_after: 5,
            backoff_max: Duration::from_secs(900),
            account_failure_limit: 100,
            account_failure_window: Duration::from_secs(3600),
        },
    }
}

/// A running app and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    /// The auth service's clock, when the app was started with [`spawn_app_with_clock`].
    clock: Option<Arc<ManualClock>>,
    /// Where the app writes mail without SMTP (unless the test chose a directory itself).
    _outbox: Option<tempfile::TempDir>,
}

/// Starts the app on a fresh database of `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Starts the app on a fresh database of `backend`, with `tweak` applied to its settings.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::create(backend).await;
    let mut settings = test_settings(&db.url());
    tweak(&mut settings);
    spawn_on(db, settings).await
}

/// Starts the app on a fresh database of `backend`, with `tweak` applied to its settings and a
/// clock that stands still until [`TestApp::advance_clock`] moves it.
pub async fn spawn_app_with_clock(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::create(backend).await;
    let mut settings = test_settings(&db.url());
    tweak(&mut settings);
    start(db, settings, Some(Arc::new(ManualClock::starting_now()))).await
}

/// Starts the app with `settings` (whose database is `db`).
pub async fn spawn_on(db: TestDb, settings: Settings) -> TestApp {
    start(db, settings, None).await
}

async fn start(db: TestDb, mut settings: Settings, clock: Option<Arc<ManualClock>>) -> TestApp {
    init_logs();
    // Every sign-up queues a verification mail: without SMTP each app writes its files to a
    // directory of its own, removed with it, so test runs leave no mail behind.
    let outbox = (settings.mail.outbox_dir == shared_outbox_dir()).then(|| {
        let dir = tempfile::tempdir().expect("outbox directory");
        settings.mail.outbox_dir = dir.path().to_owned();
        dir
    });
    let app = match &clock {
        Some(clock) => App::build_with_clock(settings, clock.clone()).await,
        None => App::build(settings).await,
    }
    .expect("app builds");
    let addr: SocketAddr = app.local_addr().expect("bound");
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stop.await;
    }));
    TestApp {
        address: format!("http://{addr}"),
        client: Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client"),
        db,
        shutdown: Some(shutdown),
        server: Some(server),
        clock,
        _outbox: outbox,
    }
}

impl TestApp {
    /// Moves the app's clock forward by `by`; the app must come from [`spawn_app_with_clock`].
    pub fn advance_clock(&self, by: Duration) {
        self.clock
            .as_ref()
            .expect("spawned with spawn_app_with_clock")
            .advance(by);
    }

    /// The app's clock now, as seconds since 1970 (the system's time for a system clock).
    pub fn clock_now(&self) -> i64 {
        use cerego::auth::clock::Clock;
        match &self.clock {
            Some(clock) => clock.unix_now(),
            None => time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn signup(&self, email: &str, username: &str, password: &str) -> Response {
        let body = json!({ "email": email, "username": username, "password": password });
        self.post_json("/auth/signup", &body).await
    }

    /// Signs up `username` with `<username>@example.com` and [`GOOD_PASSWORD`]; returns the user.
    pub async fn create_user(&self, username: &str) -> Value {
        let response = self
            .signup(&format!("{username}@example.com"), username, GOOD_PASSWORD)
            .await;
        assert_eq!(response.status(), 201, "sign-up of {username}");
        response.json().await.expect("json")
    }

    pub async fn login_json(&self, body: &Value) -> Response {
        self.post_json("/auth/login", body).await
    }

    pub async fn login_form(&self, form: &[(&str, &str)]) -> Response {
        self.client
            .post(self.url("/auth/login"))
            .form(form)
            .send()
            .await
            .expect("request")
    }

    /// Logs `username` in with [`GOOD_PASSWORD`] and returns the access token.
    pub async fn token_for(&self, username: &str) -> String {
        self.login_pair(username).await.0
    }

    /// Logs `username` in with [`GOOD_PASSWORD`]; returns the access and refresh tokens.
    pub async fn login_pair(&self, username: &str) -> (String, String) {
        let response = self
            .login_json(&json!({ "username": username, "password": GOOD_PASSWORD }))
            .await;
        assert_eq!(response.status(), 200, "login of {username}");
        let body: Value = response.json().await.expect("json");
        let field = |name: &str| body[name].as_str().expect(name).to_owned();
        (field("access_token"), field("refresh_token"))
    }

    /// `POST /auth/refresh` with `refresh_token`.
    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/auth/refresh", &json!({ "refresh_token": refresh_token }))
            .await
    }

    /// A POST with a bearer token and no body.
    pub async fn post_authed(&self, path: &str, token: &str) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn me(&self, token: &str) -> Response {
        self.client
            .get(self.url("/auth/me"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// Triggers graceful shutdown and waits for the server to stop.
    pub async fn shut_down(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(server) => server.await.expect("server task"),
            None => Ok(()),
        }
    }

    /// Shuts the app down and hands back its database, to start another app on it (a restart).
    pub async fn shut_down_keeping_db(mut self) -> TestDb {
        self.shut_down().await.expect("clean shutdown");
        self.db
    }

    /// Triggers graceful shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts a `{"detail": "<detail>"}` response with `status`.
pub async fn assert_detail(response: Response, status: u16, detail: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("json body");
    assert_eq!(body, json!({ "detail": detail }));
}

/// Asserts a 422 and returns its `detail` entries as `(field, type)` pairs.
pub async fn validation_errors(response: Response) -> Vec<(String, String)> {
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json body");
    body["detail"]
        .as_array()
        .expect("detail is a list")
        .iter()
        .map(|entry| {
            let loc: Vec<&str> = entry["loc"]
                .as_array()
                .expect("loc")
                .iter()
                .map(|p| p.as_str().expect("loc part"))
                .collect();
            assert!(matches!(loc[0], "body" | "path"), "{loc:?}");
            assert!(entry["msg"].as_str().is_some_and(|m| !m.is_empty()));
            (
                loc.get(1).copied().unwrap_or("").to_owned(),
                entry["type"].as_str().expect("type").to_owned(),
            )
        })
        .collect()
}

/// Asserts that `value` is a timestamp in the API's one format: RFC 3339 in UTC with exactly six
/// fractional digits and `Z` (`2026-11-26T14:37:50.149054Z`); returns it parsed.
pub fn assert_api_timestamp(value: &Value) -> time::OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"));
    let shape: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    assert_eq!(shape, "dddd-dd-ddTdd:dd:dd.ddddddZ", "{text}");
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|err| panic!("{text}: {err}"))
}

/// `quota` requests per `secs` seconds, any window (the settings spell only whole seconds,
/// minutes, hours and days). A test that counts requests uses an hour or so, so that nothing
/// refills while a loaded machine sends the burst; a recovery test a window of seconds, waited
/// out by `Retry-After`.
pub fn every(quota: u32, secs: u32) -> Option<Rate> {
    Some(Rate::new(NonZeroU32::new(quota).expect("a quota"), secs))
}

/// Turns every rule and the login throttle off, then sets the rules in `rules`: a test of one
/// rule sees only that rule's decisions.
pub fn only_limits(settings: &mut Settings, rules: &[(Rule, Option<Rate>)]) {
    settings.limits.enabled = true;
    settings.limits.rates = Rates::default();
    for (rule, rate) in rules {
        settings.limits.rates.set(*rule, *rate);
    }
    settings.limits.throttle.backoff_after = 0;
    settings.limits.throttle.account_failure_limit = 0;
}

/// What the `RateLimit-Policy` and `RateLimit` fields say of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleState {
    /// Quota (`q`, the burst).
    pub q: u64,
    /// Window in seconds (`w`).
    pub w: u64,
    /// Remaining after this request (`r`).
    pub r: u64,
    /// Seconds until the bucket is full again (`t`).
    pub t: u64,
}

/// Parses a structured-field list of `"name";key=integer;…` items (every line of the field,
/// joined as a recipient must), panicking at anything else.
fn limit_items(headers: &HeaderMap, field: &str) -> Vec<(String, BTreeMap<String, u64>)> {
    let joined = headers
        .get_all(field)
        .iter()
        .map(|v| {
            v.to_str()
                .unwrap_or_else(|_| panic!("{field} is not ASCII"))
        })
        .collect::<Vec<_>>()
        .join(",");
    if joined.trim().is_empty() {
        return Vec::new();
    }
    joined
        .split(',')
        .map(|item| {
            let item = item.trim();
            let mut parts = item.split(';');
            let name = parts
                .next()
                .and_then(|n| n.strip_prefix('"')?.strip_suffix('"'))
                .unwrap_or_else(|| {
                    panic!("{field}: the item {item:?} does not start with a quoted name")
                });
            let params = parts
                .map(|param| {
                    let (key, value) = param.split_once('=').unwrap_or_else(|| {
                        panic!("{field}: {param:?} in {item:?} is not key=value")
                    });
                    let value = value.parse().unwrap_or_else(|_| {
                        panic!("{field}: {param:?} in {item:?} is not an integer")
                    });
                    (key.to_owned(), value)
                })
                .collect();
            (name.to_owned(), params)
        })
        .collect()
}

/// The rules an answer reports in `RateLimit-Policy` and `RateLimit`, in order. Both fields name
/// the same rules in the same order, each policy with `q` and `w`, each state with `r` and `t`.
pub fn rate_limits(headers: &HeaderMap) -> Vec<(String, RuleState)> {
    let policies = limit_items(headers, "ratelimit-policy");
    let states = limit_items(headers, "ratelimit");
    let names = |items: &[(String, BTreeMap<String, u64>)]| {
        items.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        names(&policies),
        names(&states),
        "RateLimit-Policy and RateLimit name the same rules: {headers:?}"
    );
    policies
        .into_iter()
        .zip(states)
        .map(|((name, policy), (_, state))| {
            let param = |items: &BTreeMap<String, u64>, key: &str| {
                *items
                    .get(key)
                    .unwrap_or_else(|| panic!("{name}: no {key} in {headers:?}"))
            };
            let state = RuleState {
                q: param(&policy, "q"),
                w: param(&policy, "w"),
                r: param(&state, "r"),
                t: param(&state, "t"),
            };
            assert!(
                state.r < state.q,
                "{name}: r below q after a request: {state:?}"
            );
            assert!(state.t <= state.w, "{name}: t within the window: {state:?}");
            (name, state)
        })
        .collect()
}

/// The names of the rules an answer reports.
pub fn rule_names(headers: &HeaderMap) -> Vec<String> {
    rate_limits(headers).into_iter().map(|(n, _)| n).collect()
}

/// The state an answer reports for `rule`; panics when it reports none.
pub fn rule_state(headers: &HeaderMap, rule: &str) -> RuleState {
    rate_limits(headers)
        .into_iter()
        .find_map(|(n, state)| (n == rule).then_some(state))
        .unwrap_or_else(|| panic!("no {rule} item in {headers:?}"))
}

/// Asserts an answer without any rate-limit field.
pub fn assert_no_rate_limit_fields(headers: &HeaderMap, what: &str) {
    for field in ["ratelimit", "ratelimit-policy", "retry-after"] {
        assert!(
            headers.get(field).is_none(),
            "{what}: unexpected {field}: {headers:?}"
        );
    }
}

/// `Retry-After` as whole seconds, or `None`; panics at anything but a non-negative integer.
pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get("retry-after").map(|v| {
        let text = v.to_str().expect("ASCII");
        text.parse()
            .unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {text:?}"))
    })
}

/// Asserts a refusal: 429, `{"detail": detail}`, `Retry-After` of at least one second; returns
/// the `Retry-After` and the rules the answer reports.
pub async fn assert_refused(response: Response, detail: &str) -> (u64, Vec<(String, RuleState)>) {
    let headers = response.headers().clone();
    let retry = retry_after(&headers).unwrap_or_else(|| panic!("no Retry-After: {headers:?}"));
    assert!(retry >= 1, "Retry-After {retry}");
    let limits = rate_limits(&headers);
    assert_detail(response, 429, detail).await;
    (retry, limits)
}

/// The value of `series` (a metric name with its labels, as `/metrics` prints it) in `text`; 0
/// when absent (a labelled counter appears at its first increment).
pub fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

/// The sum of every series of the metric `name` (all its label sets) in `text`.
pub fn metric_total_in(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once("} ")?.1
            } else {
                rest.strip_prefix(' ')?
            };
            Some(value.trim().parse::<f64>().expect("a number"))
        })
        .sum()
}

/// The value of `series` on the `/metrics` of the server at `address` (`http://…`).
pub async fn metric_at(client: &Client, address: &str, series: &str) -> f64 {
    let text = client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    metric_in(&text, series)
}

impl TestApp {
    /// The value of `series` on this app's `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        metric_at(&self.client, &self.address, series).await
    }

    /// The sum of every series of the metric `name` on this app's `/metrics`.
    pub async fn metric_total(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("text");
        metric_total_in(&text, name)
    }

    /// `POST /auth/login` with `body` and the extra `headers` (say, `X-Forwarded-For`).
    pub async fn login_with_headers(&self, headers: &[(&str, &str)], body: &Value) -> Response {
        let mut request = self.client.post(self.url("/auth/login")).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request")
    }

    /// `GET path` with the bearer `token`.
    pub async fn get_authed(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }
}

/// A series of the hashing metrics: `verify` or `hash` operations counted.
pub fn hash_count(operation: &str) -> String {
    format!("cerego_password_hash_duration_seconds_count{{operation=\"{operation}\"}}")
}

/// The series of 429s of `rule`.
pub fn limited_series(rule: &str) -> String {
    format!("cerego_rate_limited_total{{rule=\"{rule}\"}}")
}

impl TestDb {
    /// Every row `sql` selects, read as `T`, from the test database (of either kind).
    pub async fn fetch_all<T>(&self, sql: &'static str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        with_connection!(self, conn => {
            sqlx::query_as::<_, T>(sql).fetch_all(&mut conn).await.expect("rows")
        })
    }

    /// Runs `sql` (statements without parameters, written by the test) on the test database.
    pub async fn run_sql(&self, sql: &str) {
        with_connection!(self, conn => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|err| panic!("{sql}: {err}"));
        })
    }
}

impl TestApp {
    /// The app's clock now, in Unix microseconds (the system's time for a system clock).
    pub fn clock_now_micros(&self) -> i64 {
        use cerego::auth::clock::Clock;
        let now = match &self.clock {
            Some(clock) => clock.now(),
            None => time::OffsetDateTime::now_utc(),
        };
        i64::try_from(now.unix_timestamp_nanos() / 1_000).expect("in range")
    }
}

/// Whether `requirement` (a tool, a service) is met. Without it a test is skipped with a notice,
/// except with `CI` set, where it fails: a test whose subject did not run must not pass in CI.
pub fn required(met: bool, requirement: &str) -> bool {
    if !met {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "CI is set but {requirement} is missing: this test must run in CI"
        );
        eprintln!("SKIPPED: {requirement} is missing");
    }
    met
}

/// Whether a Redis answers `PING` at `address`.
pub fn redis_answers(address: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(
        &address.parse().expect("address"),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
