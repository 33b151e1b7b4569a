//! Typed settings, read once from the environment (and `.env`) and validated at start-up.
//!
//! The rest of the code sees only [`Settings`] and its parts. Where each comes from (variable,
//! default, range, help text) is declared once in [`args`] for clap, so `cerego --help` lists
//! them all and a bad value stops start-up with one message naming the variable.
//! `.env.example` and the README's table document the same ones.

mod args;
mod parse;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::limits::{Rate, Rule};

pub use args::{JwtAlgorithm, SettingsArgs, VARIABLES};
pub use parse::{ParseError, parse, settings_command};

/// Where the embedded default database lives when `DATABASE_URL` is unset.
pub const DEFAULT_SQLITE_PATH: &str = "data/cerego.db";

/// All settings of a running service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on (`HOST`, default `0.0.0.0`).
    pub host: IpAddr,
    /// Port to listen on (`PORT`, default 8000; 0 picks a free port).
    pub port: u16,
    /// Database connection.
    pub database: DatabaseSettings,
    /// Access-token signing.
    pub jwt: JwtSettings,
    /// Sessions and refresh tokens.
    pub sessions: SessionSettings,
    /// bcrypt work factor for new hashes (`BCRYPT_COST`, 4..=31, default 12).
    pub bcrypt_cost: u32,
    /// Logins and sign-ups that may wait for a hashing slot before the rest get a 503.
    pub hash_queue: HashQueueSettings,
    /// Longest time a request may take before it gets a 503 (`REQUEST_TIMEOUT_SECS`, 1..=600,
    /// default 30).
    pub request_timeout: Duration,
    /// How long requests in flight may run on after a shutdown signal (`SHUTDOWN_GRACE_SECS`,
    /// 1..=3600, default 30).
    pub shutdown_grace: Duration,
    /// Connection handling: timeouts and the cap on open connections.
    pub http: HttpSettings,
    /// Log line format (`LOG_FORMAT`, default `json`).
    pub log_format: LogFormat,
    /// Rate limits, their store and the login throttle.
    pub limits: LimitSettings,
    /// Proxies whose forwarding header is believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
    /// The one header those proxies write the client's address into (`TRUSTED_PROXY_HEADER`).
    pub trusted_proxy_header: ProxyHeader,
    /// Password reset and e-mail verification: links, lifetimes, whether login needs it.
    pub recovery: RecoverySettings,
    /// How mail leaves: SMTP or files, sender address, retries.
    pub mail: MailSettings,
    /// The admin account start-up ensures (`ADMIN_EMAIL`, `ADMIN_USERNAME`, `ADMIN_PASSWORD`,
    /// all three or none).
    pub admin: Option<AdminAccount>,
    /// Where users reach the service (`PUBLIC_BASE_URL`): mail links and the discovery document.
    pub public_base_url: String,
    /// How long audit events are kept (`AUDIT_RETENTION_DAYS`, 0..=36500, default 365); `None`
    /// (0): forever.
    pub audit_retention: Option<Duration>,
}

/// An admin account to ensure at start-up: created with `password` if no account has `email`,
/// given the `admin` role if one has. The names and the password passed the sign-up rules when
/// the settings were read.
#[derive(Debug, Clone)]
pub struct AdminAccount {
    /// `ADMIN_EMAIL` and `ADMIN_USERNAME`.
    pub account: crate::domain::NewUser,
    /// `ADMIN_PASSWORD` (used only if the account is created).
    pub password: crate::domain::NewPassword,
}

/// Password reset and e-mail verification.
#[derive(Debug, Clone)]
pub struct RecoverySettings {
    /// The page a reset mail links to, `?token=…` appended (`PASSWORD_RESET_URL`, default
    /// `{PUBLIC_BASE_URL}/auth/password/reset`).
    pub password_reset_url: String,
    /// The page a verification mail links to (`EMAIL_VERIFICATION_URL`, default
    /// `{PUBLIC_BASE_URL}/auth/email/verify`).
    pub email_verification_url: String,
    /// How long a reset token works (`PASSWORD_RESET_TTL_SECS`, 60..=86400, default 3600).
    pub password_reset_ttl: Duration,
    /// How long a verification token works (`EMAIL_VERIFICATION_TTL_SECS`, 60..=2592000,
    /// default 86400).
    pub email_verification_ttl: Duration,
    /// `REQUIRE_EMAIL_VERIFICATION` (default false): logins to unverified accounts get 403.
    pub require_email_verification: bool,
}

/// Outgoing mail.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `SMTP_URL` in lettre's form; `None`: messages become `.eml` files in `outbox_dir`.
    pub smtp_url: Option<SecretString>,
    /// Longest an SMTP connection or command may take (`SMTP_TIMEOUT_SECS`, 1..=300, default 10).
    pub smtp_timeout: Duration,
    /// `MAIL_FROM` (default `cerego <no-reply@localhost>`).
    pub from: lettre::message::Mailbox,
    /// `MAIL_OUTBOX_DIR` (default `./data/outbox/`).
    pub outbox_dir: PathBuf,
    /// The longest wait between delivery attempts (`MAIL_RETRY_MAX_SECS`, 1..=86400, default 300).
    pub retry_max: Duration,
}

/// The header trusted proxies append the client's address to (`TRUSTED_PROXY_HEADER`). Only that
/// one is read: a proxy that appends to `X-Forwarded-For` passes a client's own `Forwarded`
/// through untouched, so reading both would let any client name its own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx `$proxy_add_x_forwarded_for`, HAProxy
    /// `option forwardfor`, most cloud load balancers).
    #[default]
    #[value(name = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    #[value(name = "forwarded")]
    Forwarded,
}

/// Rate limits by route class and key, where their budgets live, and the brute-force throttle
/// on logins.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// `RATE_LIMIT_ENABLED` (default true): false turns every rate limit and the login throttle
    /// off at once (for load tests).
    pub enabled: bool,
    /// Each rule's rate (`RATE_LIMIT_*`; `None` is `off`).
    pub rates: Rates,
    /// `REDIS_URL`: when set, every budget and counter lives in Redis, shared by replicas.
    pub redis_url: Option<SecretString>,
    /// Longest a call to Redis may take before it counts as failed (`REDIS_TIMEOUT_MS`).
    pub redis_timeout: Duration,
    /// `RATE_LIMIT_FAIL_OPEN` (default true): with the store failing, admit (and count) rather
    /// than answer 503.
    pub fail_open: bool,
    /// The brute-force throttle on logins.
    pub throttle: ThrottleSettings,
}

/// The rate of every [`Rule`]; `None` is `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates([Option<Rate>; Rule::ALL.len()]);

impl Rates {
    /// `rule`'s rate, `None` when it is off.
    pub fn get(&self, rule: Rule) -> Option<Rate> {
        self.0[rule as usize]
    }

    /// Sets `rule`'s rate (`None`: off).
    pub fn set(&mut self, rule: Rule, rate: Option<Rate>) {
        self.0[rule as usize] = rate;
    }
}

/// Login backoff per (account, client IP) and the failure cap per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Consecutive failures of one login name from one IP before each further attempt waits a
    /// doubling delay (`LOGIN_BACKOFF_AFTER`, 0..=1000, default 5; 0 turns the backoff off).
    pub backoff_after: u32,
    /// The longest such delay (`LOGIN_BACKOFF_MAX_SECS`, 1..=86400, default 900).
    pub backoff_max: Duration,
    /// Failures of one login name, from every IP, within the window of the first, after which
    /// it answers 429 until that window ends (`LOGIN_ACCOUNT_FAILURE_LIMIT`, 0..=1000000,
    /// default 100; 0 turns it off).
    pub account_failure_limit: u32,
    /// That window (`LOGIN_ACCOUNT_FAILURE_WINDOW_SECS`, 1..=604800, default 3600).
    pub account_failure_window: Duration,
}

/// The networks of the reverse proxies in front of the service (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Whether `ip` is one of the trusted proxies (an IPv4-mapped IPv6 address counts as the
    /// IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// How many logins and sign-ups may wait for a hashing slot, and how long a caller that finds
/// them all taken waits for a place before its 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashQueueSettings {
    /// Operations that may wait per core (`PASSWORD_HASH_QUEUE_PER_CORE`, 0..=1024, default 16).
    pub per_core: usize,
    /// How long a caller finding the queue full waits for a place
    /// (`PASSWORD_HASH_QUEUE_FULL_WAIT_MS`, 0..=5000, default 250).
    pub full_wait: Duration,
}

/// How connections are read, kept and capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// A connection must send a whole request head this long after it opened (a later request:
    /// after its first byte), or it is closed (`HTTP_HEADER_READ_TIMEOUT_SECS`, 1..=300,
    /// default 10). Between requests, [`Self::idle_timeout`] applies.
    pub header_read_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed
    /// (`HTTP_IDLE_TIMEOUT_SECS`, 1..=3600, default 60).
    pub idle_timeout: Duration,
    /// A request body not fully received this long after the head gets 408
    /// (`HTTP_BODY_READ_TIMEOUT_SECS`, 1..=300, default 10).
    pub body_read_timeout: Duration,
    /// Most connections open at once; past it new ones wait in the kernel's backlog
    /// (`HTTP_MAX_CONNECTIONS`, 1..=1000000, default 10000, and never more than the file limit
    /// allows).
    pub max_connections: usize,
}

/// Which database and how to reach it.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`; `None` means the embedded SQLite file at [`DEFAULT_SQLITE_PATH`].
    pub url: Option<SecretString>,
    /// Most connections in the pool (`DATABASE_MAX_CONNECTIONS`, 1..=1000, default 10).
    pub max_connections: u32,
    /// How long a request waits for a connection before it gets a 503
    /// (`DATABASE_ACQUIRE_TIMEOUT_SECS`, 1..=300, default 3).
    pub acquire_timeout: Duration,
    /// Run pending migrations when `serve` starts (`DATABASE_AUTO_MIGRATE`, default true).
    pub auto_migrate: bool,
    /// Longest a single query may run, enforced by the server (PostgreSQL `statement_timeout`)
    /// and by a client-side deadline on both databases (`DATABASE_QUERY_TIMEOUT_SECS`, 1..=300,
    /// default 5).
    pub query_timeout: Duration,
    /// Named prepared statements cached per PostgreSQL connection
    /// (`DATABASE_STATEMENT_CACHE_CAPACITY`, 0..=10000, default 100); 0: none kept between uses
    /// (see `Pool::with_pg`).
    pub statement_cache_capacity: usize,
}

/// Access-token settings.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// `JWT_SECRET_KEY`, at least 32 bytes. `None` is allowed only with a SQLite database: a key
    /// is then generated once and kept beside the database file.
    pub secret: Option<SecretString>,
    /// `JWT_ALGORITHM` and, for the asymmetric ones, `JWT_KEYS_DIR`.
    pub signing: Signing,
    /// `JWT_ACCESS_TOKEN_EXPIRE_MINUTES` (1..=1440, default 30).
    pub access_token_ttl: Duration,
    /// `JWT_ISSUER`: sets and requires `iss` when present.
    pub issuer: Option<String>,
    /// `JWT_AUDIENCE`: sets and requires `aud` when present.
    pub audience: Option<String>,
    /// `JWT_ACCEPT_LEGACY_UNTIL`: until then, `GET /auth/me` accepts the FastAPI system's tokens.
    pub accept_legacy_until: Option<time::OffsetDateTime>,
}

/// What signs access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// HS256, HS384 or HS512 with `JWT_SECRET_KEY` (the default, as the FastAPI system signs).
    Secret(jsonwebtoken::Algorithm),
    /// EdDSA, ES256 or RS256 with the PEM keys in `JWT_KEYS_DIR`.
    KeysDir {
        /// The algorithm.
        algorithm: jsonwebtoken::Algorithm,
        /// The directory.
        dir: PathBuf,
    },
}

impl Signing {
    /// The one algorithm tokens are signed and verified with.
    pub fn algorithm(&self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Secret(algorithm) | Self::KeysDir { algorithm, .. } => *algorithm,
        }
    }
}

/// Session lifetimes and refresh-token rotation.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// How long after its use a refresh token may be presented again and get the same
    /// successor (`REFRESH_TOKEN_GRACE_SECS`, 0..=300 and less than the idle timeout, default 10;
    /// 0 turns replays into reuse).
    pub refresh_grace: Duration,
    /// Absolute session lifetime from login (`SESSION_LIFETIME_SECS`, 60..=315360000, default
    /// 30 days).
    pub lifetime: Duration,
    /// A session not refreshed for this long ends (`SESSION_IDLE_TIMEOUT_SECS`, 60..=315360000,
    /// default 14 days).
    pub idle_timeout: Duration,
    /// How often ended sessions are deleted (`SESSION_PURGE_INTERVAL_SECS`, 1..=86400, default
    /// 3600).
    pub purge_interval: Duration,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable, coloured lines.
    Pretty,
}

/// A setting that could not be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl Settings {
    /// Reads every setting from the process environment (call `dotenvy::dotenv()` first to
    /// honour `.env`), with no command-line flags: the same declarations and checks as `cerego`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let args: SettingsArgs =
            parse(settings_command(), ["cerego"]).map_err(|err| match err {
                ParseError::Setting(err) => err,
                ParseError::Usage(err) => ConfigError {
                    var: "command line",
                    reason: err.kind().to_string(),
                },
            })?;
        args.into_settings()
    }
}

/// The two databases cerego runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite:`.
    Sqlite,
}

impl DatabaseKind {
    /// Tells the database from the URL's scheme.
    pub fn of(url: &SecretString) -> Result<Self, String> {
        let url = secrecy::ExposeSecret::expose_secret(url);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err("must start with postgres://, postgresql:// or sqlite:".to_owned())
        }
    }
}

impl DatabaseSettings {
    /// The SQLite file the embedded default uses.
    pub fn default_sqlite_path() -> PathBuf {
        PathBuf::from(DEFAULT_SQLITE_PATH)
    }
}

#[cfg(test)]
mod tests;
