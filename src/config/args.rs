//! Every setting declared once, with clap's derive: its variable, default, range and help text
//! side by side, so `cerego --help` documents them all and start-up checks them all.
//!
//! clap reads each variable from the environment (or a `--flag` of the same name, which wins);
//! the sibling module `parse` holds what clap does not do the way `.env` users expect (blank
//! values,
//! one-line messages). [`SettingsArgs`] becomes the typed [`Settings`] after the checks that
//! span several variables. To add a setting: a field here, its name in [`VARIABLES`], its line
//! in `.env.example` and the README's table (a test checks all four agree).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{BoolishValueParser, EnumValueParser};
use clap::{ArgAction, Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use super::parse::{
    BlankIsDefault, OptionalTime, RateSetting, base_url, bounded, ip_address, mailbox, page_url,
    path, rate, rfc3339, secret, trusted_proxies,
};
use super::{
    AdminAccount, ConfigError, DatabaseKind, DatabaseSettings, HashQueueSettings, HttpSettings,
    JwtSettings, LimitSettings, LogFormat, MailSettings, ProxyHeader, Rates, RecoverySettings,
    SessionSettings, Settings, Signing, ThrottleSettings, TrustedProxies,
};
use crate::domain::{Email, NewPassword, NewUser, Username};
use crate::limits::Rule;

/// Every environment variable cerego reads, in `--help` order (`RUST_LOG` is read by the log
/// filter itself).
pub const VARIABLES: &[&str] = &[
    "HOST",
    "PORT",
    "REQUEST_TIMEOUT_SECS",
    "HTTP_HEADER_READ_TIMEOUT_SECS",
    "HTTP_IDLE_TIMEOUT_SECS",
    "HTTP_BODY_READ_TIMEOUT_SECS",
    "HTTP_MAX_CONNECTIONS",
    "SHUTDOWN_GRACE_SECS",
    "DATABASE_URL",
    "DATABASE_MAX_CONNECTIONS",
    "DATABASE_ACQUIRE_TIMEOUT_SECS",
    "DATABASE_QUERY_TIMEOUT_SECS",
    "DATABASE_AUTO_MIGRATE",
    "DATABASE_STATEMENT_CACHE_CAPACITY",
    "JWT_SECRET_KEY",
    "JWT_ALGORITHM",
    "JWT_KEYS_DIR",
    "JWT_ACCESS_TOKEN_EXPIRE_MINUTES",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_ACCEPT_LEGACY_UNTIL",
    "REFRESH_TOKEN_GRACE_SECS",
    "SESSION_LIFETIME_SECS",
    "SESSION_IDLE_TIMEOUT_SECS",
    "SESSION_PURGE_INTERVAL_SECS",
    "BCRYPT_COST",
    "PASSWORD_HASH_QUEUE_PER_CORE",
    "PASSWORD_HASH_QUEUE_FULL_WAIT_MS",
    "RATE_LIMIT_ENABLED",
    "RATE_LIMIT_LOGIN_IP",
    "RATE_LIMIT_LOGIN_ACCOUNT",
    "RATE_LIMIT_SIGNUP_IP",
    "RATE_LIMIT_REFRESH_IP",
    "RATE_LIMIT_API_USER",
    "RATE_LIMIT_API_IP",
    "RATE_LIMIT_FAIL_OPEN",
    "REDIS_URL",
    "REDIS_TIMEOUT_MS",
    "LOGIN_BACKOFF_AFTER",
    "LOGIN_BACKOFF_MAX_SECS",
    "LOGIN_ACCOUNT_FAILURE_LIMIT",
    "LOGIN_ACCOUNT_FAILURE_WINDOW_SECS",
    "RATE_LIMIT_RECOVERY_IP",
    "RATE_LIMIT_RECOVERY_ACCOUNT",
    "TRUSTED_PROXIES",
    "TRUSTED_PROXY_HEADER",
    "PUBLIC_BASE_URL",
    "PASSWORD_RESET_URL",
    "EMAIL_VERIFICATION_URL",
    "PASSWORD_RESET_TTL_SECS",
    "EMAIL_VERIFICATION_TTL_SECS",
    "REQUIRE_EMAIL_VERIFICATION",
    "SMTP_URL",
    "SMTP_TIMEOUT_SECS",
    "MAIL_FROM",
    "MAIL_OUTBOX_DIR",
    "MAIL_RETRY_MAX_SECS",
    "ADMIN_EMAIL",
    "ADMIN_USERNAME",
    "ADMIN_PASSWORD",
    "AUDIT_RETENTION_DAYS",
    "LOG_FORMAT",
];

/// The settings as clap reads them; [`SettingsArgs::into_settings`] checks and types them.
/// Each flag is named after its variable (`PORT` ↔ `--port`).
#[derive(Debug, Clone, Args)]
pub struct SettingsArgs {
    /// Address to listen on.
    #[arg(long, env = "HOST", global = true, help_heading = "HTTP", default_value = "0.0.0.0",
          value_parser = BlankIsDefault(ip_address))]
    pub host: IpAddr,
    /// Port to listen on, 0..=65535 (0 picks a free one).
    #[arg(long, env = "PORT", global = true, help_heading = "HTTP", default_value_t = 8000,
          value_parser = bounded::<u16>(0..=65_535))]
    pub port: u16,
    /// A request running longer gets 503 {"detail": "Service unavailable"}; seconds, 1..=600.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", global = true, help_heading = "HTTP",
          default_value_t = 30, value_parser = bounded::<u64>(1..=600))]
    pub request_timeout_secs: u64,
    /// A connection must send a whole request head this long after it opened (a later request:
    /// after its first byte), or it is closed; seconds, 1..=300.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_SECS", global = true, help_heading = "HTTP",
          default_value_t = 10, value_parser = bounded::<u64>(1..=300))]
    pub http_header_read_timeout_secs: u64,
    /// A keep-alive connection idle this long between requests is closed; seconds, 1..=3600.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT_SECS", global = true, help_heading = "HTTP",
          default_value_t = 60, value_parser = bounded::<u64>(1..=3600))]
    pub http_idle_timeout_secs: u64,
    /// A request body not fully received this long after the head (and a quarter second before
    /// REQUEST_TIMEOUT_SECS at the latest) gets 408; seconds, 1..=300.
    #[arg(long, env = "HTTP_BODY_READ_TIMEOUT_SECS", global = true, help_heading = "HTTP",
          default_value_t = 10, value_parser = bounded::<u64>(1..=300))]
    pub http_body_read_timeout_secs: u64,
    /// Most connections open at once (never more than the file limit allows); past it, new
    /// ones wait in the kernel's backlog; 1..=1000000.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", global = true, help_heading = "HTTP",
          default_value_t = 10_000, value_parser = bounded::<usize>(1..=1_000_000))]
    pub http_max_connections: usize,
    /// After SIGTERM or SIGINT: stop accepting (once the connections already queued are taken),
    /// let requests in flight finish for at most this long, then close what is left and exit;
    /// seconds, 1..=3600. Keep it below the orchestrator's kill timeout.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", global = true, help_heading = "HTTP",
          default_value_t = 30, value_parser = bounded::<u64>(1..=3600))]
    pub shutdown_grace_secs: u64,

    /// postgres://user:password@host:5432/db or sqlite://path/to/file.db; unset: an
    /// embedded SQLite file at ./data/cerego.db.
    #[arg(long, env = "DATABASE_URL", global = true, help_heading = "Database",
          hide_env_values = true, value_parser = secret)]
    pub database_url: Option<SecretString>,
    /// Most connections in the pool, 1..=1000.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", global = true, help_heading = "Database",
          default_value_t = 10, value_parser = bounded::<u32>(1..=1000))]
    pub database_max_connections: u32,
    /// How long a request waits for a connection before it gets 503 {"detail": "Service
    /// unavailable"}; seconds, 1..=300.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_SECS", global = true, help_heading = "Database",
          default_value_t = 3, value_parser = bounded::<u64>(1..=300))]
    pub database_acquire_timeout_secs: u64,
    /// Longest a single query may run (PostgreSQL statement_timeout and a client-side
    /// deadline); seconds, 1..=300.
    #[arg(long, env = "DATABASE_QUERY_TIMEOUT_SECS", global = true, help_heading = "Database",
          default_value_t = 5, value_parser = bounded::<u64>(1..=300))]
    pub database_query_timeout_secs: u64,
    /// Apply pending migrations when `serve` starts: true or false.
    #[arg(long, env = "DATABASE_AUTO_MIGRATE", global = true, help_heading = "Database",
          default_value_t = true, action = ArgAction::Set,
          value_parser = BlankIsDefault(BoolishValueParser::new()))]
    pub database_auto_migrate: bool,
    /// Prepared statements cached per PostgreSQL connection, 0..=10000; 0 keeps none between
    /// uses (each use runs in a transaction that starts by dropping the connection's prepared
    /// statements), for PgBouncer in transaction mode without max_prepared_statements (before
    /// 1.21); never 0 with max_prepared_statements.
    #[arg(long, env = "DATABASE_STATEMENT_CACHE_CAPACITY", global = true,
          help_heading = "Database", default_value_t = 100,
          value_parser = bounded::<usize>(0..=10_000))]
    pub database_statement_cache_capacity: usize,

    /// The service's secret, at least 32 bytes; required with PostgreSQL. It signs access tokens
    /// under HS256/HS384/HS512, and with every algorithm keys refresh-token rotation, rate-limit
    /// key names, the mail outbox and legacy tokens. Unset with SQLite: generated once and kept
    /// beside the database file (mode 0600).
    #[arg(long, env = "JWT_SECRET_KEY", global = true, help_heading = "Access tokens",
          hide_env_values = true, value_parser = secret)]
    pub jwt_secret_key: Option<SecretString>,
    /// The one algorithm tokens are signed and verified with: HMAC with JWT_SECRET_KEY, or
    /// EdDSA (Ed25519), ES256 or RS256 with the keys in JWT_KEYS_DIR.
    #[arg(long, env = "JWT_ALGORITHM", global = true, help_heading = "Access tokens",
          default_value = "HS256", value_parser = BlankIsDefault(EnumValueParser::<JwtAlgorithm>::new()))]
    pub jwt_algorithm: JwtAlgorithm,
    /// With EdDSA, ES256 or RS256: a directory of PEM keys (PKCS#8 private, or public-only). The
    /// newest-created private key signs; every key verifies and is published at
    /// /.well-known/jwks.json. Read at start-up. `cerego keys generate` makes one.
    #[arg(long, env = "JWT_KEYS_DIR", global = true, help_heading = "Access tokens",
          value_parser = path)]
    pub jwt_keys_dir: Option<PathBuf>,
    /// Access-token lifetime; minutes, 1..=1440.
    #[arg(long, env = "JWT_ACCESS_TOKEN_EXPIRE_MINUTES", global = true,
          help_heading = "Access tokens", default_value_t = 30,
          value_parser = bounded::<u64>(1..=1440))]
    pub jwt_access_token_expire_minutes: u64,
    /// When set, written into tokens as `iss` and required on them. Unset with EdDSA, ES256 or
    /// RS256: PUBLIC_BASE_URL, the issuer the discovery document names.
    #[arg(
        long,
        env = "JWT_ISSUER",
        global = true,
        help_heading = "Access tokens"
    )]
    pub jwt_issuer: Option<String>,
    /// When set, written into tokens as `aud` and required on them.
    #[arg(
        long,
        env = "JWT_AUDIENCE",
        global = true,
        help_heading = "Access tokens"
    )]
    pub jwt_audience: Option<String>,
    /// Until this RFC 3339 time, GET /auth/me also accepts the FastAPI system's tokens:
    /// unexpired, HMAC-signed with JWT_SECRET_KEY, without `sid`. Unset: refused.
    #[arg(long, env = "JWT_ACCEPT_LEGACY_UNTIL", global = true, help_heading = "Access tokens",
          value_parser = rfc3339)]
    pub jwt_accept_legacy_until: Option<OptionalTime>,

    /// A used refresh token presented again this soon gets the same new pair; later, reuse
    /// revokes the session (0: every replay is reuse); seconds, 0..=300, less than
    /// SESSION_IDLE_TIMEOUT_SECS.
    #[arg(long, env = "REFRESH_TOKEN_GRACE_SECS", global = true, help_heading = "Sessions",
          default_value_t = 10, value_parser = bounded::<u64>(0..=300))]
    pub refresh_token_grace_secs: u64,
    /// Absolute session lifetime from login; seconds, 60..=315360000 (10 years).
    #[arg(long, env = "SESSION_LIFETIME_SECS", global = true, help_heading = "Sessions",
          default_value_t = 30 * 24 * 3600, value_parser = bounded::<u64>(60..=315_360_000))]
    pub session_lifetime_secs: u64,
    /// A session not refreshed for this long ends; seconds, 60..=315360000.
    #[arg(long, env = "SESSION_IDLE_TIMEOUT_SECS", global = true, help_heading = "Sessions",
          default_value_t = 14 * 24 * 3600, value_parser = bounded::<u64>(60..=315_360_000))]
    pub session_idle_timeout_secs: u64,
    /// How often ended sessions are deleted; seconds, 1..=86400.
    #[arg(long, env = "SESSION_PURGE_INTERVAL_SECS", global = true, help_heading = "Sessions",
          default_value_t = 3600, value_parser = bounded::<u64>(1..=86_400))]
    pub session_purge_interval_secs: u64,

    /// bcrypt work factor for new hashes, 4..=31 (existing hashes keep theirs).
    #[arg(long, env = "BCRYPT_COST", global = true, help_heading = "Passwords",
          default_value_t = 12, value_parser = bounded::<u32>(4..=31))]
    pub bcrypt_cost: u32,
    /// Logins and sign-ups that may wait per core for a hashing slot; past that, 503
    /// {"detail": "Service busy"}; 0..=1024.
    #[arg(long, env = "PASSWORD_HASH_QUEUE_PER_CORE", global = true, help_heading = "Passwords",
          default_value_t = 16, value_parser = bounded::<usize>(0..=1024))]
    pub password_hash_queue_per_core: usize,
    /// How long one that finds the queue full waits for a place before its 503;
    /// milliseconds, 0..=5000.
    #[arg(long, env = "PASSWORD_HASH_QUEUE_FULL_WAIT_MS", global = true,
          help_heading = "Passwords", default_value_t = 250,
          value_parser = bounded::<u64>(0..=5000))]
    pub password_hash_queue_full_wait_ms: u64,

    /// Every rate limit and the login throttle at once: true, or false (for load tests).
    #[arg(long, env = "RATE_LIMIT_ENABLED", global = true, help_heading = "Rate limits",
          default_value_t = true, action = ArgAction::Set,
          value_parser = BlankIsDefault(BoolishValueParser::new()))]
    pub rate_limit_enabled: bool,
    /// POST /auth/login per client IP: N/second, N/minute, N/hour, N/day (a burst of N refilled
    /// evenly over the period) or off.
    #[arg(long, env = "RATE_LIMIT_LOGIN_IP", global = true, help_heading = "Rate limits",
          default_value = "60/minute", value_parser = BlankIsDefault(rate))]
    pub rate_limit_login_ip: RateSetting,
    /// POST /auth/login per login name (email or username, case-insensitive); same syntax.
    #[arg(long, env = "RATE_LIMIT_LOGIN_ACCOUNT", global = true, help_heading = "Rate limits",
          default_value = "20/minute", value_parser = BlankIsDefault(rate))]
    pub rate_limit_login_account: RateSetting,
    /// POST /auth/signup per client IP; same syntax.
    #[arg(long, env = "RATE_LIMIT_SIGNUP_IP", global = true, help_heading = "Rate limits",
          default_value = "100/hour", value_parser = BlankIsDefault(rate))]
    pub rate_limit_signup_ip: RateSetting,
    /// POST /auth/refresh per client IP; same syntax.
    #[arg(long, env = "RATE_LIMIT_REFRESH_IP", global = true, help_heading = "Rate limits",
          default_value = "300/minute", value_parser = BlankIsDefault(rate))]
    pub rate_limit_refresh_ip: RateSetting,
    /// Every other route called with a valid access token, per user; same syntax.
    #[arg(long, env = "RATE_LIMIT_API_USER", global = true, help_heading = "Rate limits",
          default_value = "600/minute", value_parser = BlankIsDefault(rate))]
    pub rate_limit_api_user: RateSetting,
    /// Every other route called without a valid access token (except /healthz, /readyz and
    /// /metrics), per client IP; same syntax.
    #[arg(long, env = "RATE_LIMIT_API_IP", global = true, help_heading = "Rate limits",
          default_value = "300/minute", value_parser = BlankIsDefault(rate))]
    pub rate_limit_api_ip: RateSetting,
    /// With the limit store failing: true admits the request (logged and counted), false
    /// answers 503 {"detail": "Service unavailable"}.
    #[arg(long, env = "RATE_LIMIT_FAIL_OPEN", global = true, help_heading = "Rate limits",
          default_value_t = true, action = ArgAction::Set,
          value_parser = BlankIsDefault(BoolishValueParser::new()))]
    pub rate_limit_fail_open: bool,
    /// redis://[user:password@]host:port[/db] (rediss:// for TLS): every budget and counter
    /// lives there, shared by all replicas. Unset: in this process's memory.
    #[arg(long, env = "REDIS_URL", global = true, help_heading = "Rate limits",
          hide_env_values = true, value_parser = secret)]
    pub redis_url: Option<SecretString>,
    /// A Redis call taking longer counts as failed (see RATE_LIMIT_FAIL_OPEN); milliseconds,
    /// 10..=10000.
    #[arg(long, env = "REDIS_TIMEOUT_MS", global = true, help_heading = "Rate limits",
          default_value_t = 250, value_parser = bounded::<u64>(10..=10_000))]
    pub redis_timeout_ms: u64,
    /// Consecutive failed logins of one login name (e-mail or username) from one IP after which
    /// each further attempt waits a doubling delay (1 s, 2 s, 4 s ...); 0..=1000, 0 turns the
    /// backoff off.
    #[arg(long, env = "LOGIN_BACKOFF_AFTER", global = true, help_heading = "Rate limits",
          default_value_t = 5, value_parser = bounded::<u32>(0..=1000))]
    pub login_backoff_after: u32,
    /// The longest backoff delay; seconds, 1..=86400.
    #[arg(long, env = "LOGIN_BACKOFF_MAX_SECS", global = true, help_heading = "Rate limits",
          default_value_t = 900, value_parser = bounded::<u64>(1..=86_400))]
    pub login_backoff_max_secs: u64,
    /// Failed logins of one login name from all IPs together, within
    /// LOGIN_ACCOUNT_FAILURE_WINDOW_SECS of the first, after which it answers 429 until that
    /// window ends; 0..=1000000, 0 turns the cap off.
    #[arg(long, env = "LOGIN_ACCOUNT_FAILURE_LIMIT", global = true, help_heading = "Rate limits",
          default_value_t = 100, value_parser = bounded::<u32>(0..=1_000_000))]
    pub login_account_failure_limit: u32,
    /// The window of LOGIN_ACCOUNT_FAILURE_LIMIT, from the first failure; seconds, 1..=604800.
    #[arg(long, env = "LOGIN_ACCOUNT_FAILURE_WINDOW_SECS", global = true,
          help_heading = "Rate limits", default_value_t = 3600,
          value_parser = bounded::<u64>(1..=604_800))]
    pub login_account_failure_window_secs: u64,
    /// POST /auth/password/forgot and POST /auth/email/verification per client IP; same syntax.
    #[arg(long, env = "RATE_LIMIT_RECOVERY_IP", global = true, help_heading = "Rate limits",
          default_value = "100/hour", value_parser = BlankIsDefault(rate))]
    pub rate_limit_recovery_ip: RateSetting,
    /// The same two routes per e-mail address (the one in the body, or the caller's): how many
    /// recovery or verification mails one address can be sent; same syntax.
    #[arg(long, env = "RATE_LIMIT_RECOVERY_ACCOUNT", global = true, help_heading = "Rate limits",
          default_value = "3/hour", value_parser = BlankIsDefault(rate))]
    pub rate_limit_recovery_account: RateSetting,
    /// Comma-separated CIDRs (or addresses) of the reverse proxies in front of cerego. Only a
    /// request from one of them has its client IP read from Forwarded / X-Forwarded-For (the
    /// rightmost address that is not itself a trusted proxy). Empty: the TCP peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES", global = true, help_heading = "HTTP",
          default_value = "", value_parser = trusted_proxies)]
    pub trusted_proxies: TrustedProxies,
    /// The one header the trusted proxies append the client's address to; the other is ignored
    /// (a proxy passes a client's own copy of it through, so it could be forged).
    #[arg(long, env = "TRUSTED_PROXY_HEADER", global = true, help_heading = "HTTP",
          default_value = "x-forwarded-for",
          value_parser = BlankIsDefault(EnumValueParser::<ProxyHeader>::new()))]
    pub trusted_proxy_header: ProxyHeader,

    /// Where users reach cerego (http:// or https://, no query): the base of the links in mail.
    #[arg(long, env = "PUBLIC_BASE_URL", global = true, help_heading = "Account recovery",
          default_value = "http://localhost:8000", value_parser = BlankIsDefault(base_url))]
    pub public_base_url: String,
    /// The page a password-reset mail links to, with ?token=… appended (a page of your own app
    /// that posts the token to /auth/password/reset). Unset: cerego's own page,
    /// {PUBLIC_BASE_URL}/auth/password/reset.
    #[arg(long, env = "PASSWORD_RESET_URL", global = true, help_heading = "Account recovery",
          value_parser = page_url)]
    pub password_reset_url: Option<String>,
    /// The page a verification mail links to, with ?token=… appended. Unset: cerego's own page,
    /// {PUBLIC_BASE_URL}/auth/email/verify.
    #[arg(long, env = "EMAIL_VERIFICATION_URL", global = true, help_heading = "Account recovery",
          value_parser = page_url)]
    pub email_verification_url: Option<String>,
    /// How long a password-reset link works; seconds, 60..=86400.
    #[arg(long, env = "PASSWORD_RESET_TTL_SECS", global = true, help_heading = "Account recovery",
          default_value_t = 3600, value_parser = bounded::<u64>(60..=86_400))]
    pub password_reset_ttl_secs: u64,
    /// How long an e-mail verification link works; seconds, 60..=2592000 (30 days).
    #[arg(long, env = "EMAIL_VERIFICATION_TTL_SECS", global = true,
          help_heading = "Account recovery", default_value_t = 86_400,
          value_parser = bounded::<u64>(60..=2_592_000))]
    pub email_verification_ttl_secs: u64,
    /// true: a login with the right password to an account that has not confirmed its e-mail
    /// address gets 403 {"detail": "Email not verified"}.
    #[arg(long, env = "REQUIRE_EMAIL_VERIFICATION", global = true,
          help_heading = "Account recovery", default_value_t = false, action = ArgAction::Set,
          value_parser = BlankIsDefault(BoolishValueParser::new()))]
    pub require_email_verification: bool,

    /// smtp://host:port (plain), smtp://user:pass@host:587?tls=required (STARTTLS),
    /// smtps://host:465 (TLS). Unset: each message is written as an .eml file to MAIL_OUTBOX_DIR.
    #[arg(long, env = "SMTP_URL", global = true, help_heading = "Mail",
          hide_env_values = true, value_parser = secret)]
    pub smtp_url: Option<SecretString>,
    /// Longest an SMTP connection or command may take before the attempt counts as failed (and
    /// is retried later); seconds, 1..=300.
    #[arg(long, env = "SMTP_TIMEOUT_SECS", global = true, help_heading = "Mail",
          default_value_t = 10, value_parser = bounded::<u64>(1..=300))]
    pub smtp_timeout_secs: u64,
    /// The From of every message: an address, or "Name <address>".
    #[arg(long, env = "MAIL_FROM", global = true, help_heading = "Mail",
          default_value = "cerego <no-reply@localhost>", value_parser = BlankIsDefault(mailbox))]
    pub mail_from: lettre::message::Mailbox,
    /// Where messages are written as .eml files when SMTP_URL is unset.
    #[arg(
        long,
        env = "MAIL_OUTBOX_DIR",
        global = true,
        help_heading = "Mail",
        default_value = "./data/outbox/",
        value_parser = BlankIsDefault(clap::builder::PathBufValueParser::new())
    )]
    pub mail_outbox_dir: std::path::PathBuf,
    /// Failed deliveries are retried after 1 s, 2 s, 4 s … up to this long between attempts,
    /// until the message's link expires; seconds, 1..=86400.
    #[arg(long, env = "MAIL_RETRY_MAX_SECS", global = true, help_heading = "Mail",
          default_value_t = 300, value_parser = bounded::<u64>(1..=86_400))]
    pub mail_retry_max_secs: u64,

    /// With ADMIN_USERNAME and ADMIN_PASSWORD: start-up ensures this account exists and holds
    /// the admin role (created if missing; an existing account keeps its password).
    #[arg(long, env = "ADMIN_EMAIL", global = true, help_heading = "Admin")]
    pub admin_email: Option<String>,
    /// The bootstrapped admin's username (used when the account is created).
    #[arg(long, env = "ADMIN_USERNAME", global = true, help_heading = "Admin")]
    pub admin_username: Option<String>,
    /// The bootstrapped admin's password, used only when the account is created; it must pass
    /// the sign-up password policy.
    #[arg(long, env = "ADMIN_PASSWORD", global = true, help_heading = "Admin",
          hide_env_values = true, value_parser = secret)]
    pub admin_password: Option<SecretString>,

    /// Audit events older than this are deleted (with ended sessions, every
    /// SESSION_PURGE_INTERVAL_SECS; the chain stays verifiable); days, 0..=36500, 0 keeps them
    /// forever.
    #[arg(long, env = "AUDIT_RETENTION_DAYS", global = true, help_heading = "Audit",
          default_value_t = 365, value_parser = bounded::<u64>(0..=36_500))]
    pub audit_retention_days: u64,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", global = true, help_heading = "Logs", default_value = "json",
          value_parser = BlankIsDefault(EnumValueParser::<LogFormat>::new()))]
    pub log_format: LogFormat,
}

/// `JWT_ALGORITHM`'s values, spelled as the FastAPI design spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256.
    #[value(name = "HS256")]
    Hs256,
    /// HMAC with SHA-384.
    #[value(name = "HS384")]
    Hs384,
    /// HMAC with SHA-512.
    #[value(name = "HS512")]
    Hs512,
    /// Ed25519 signatures (RFC 8037), keys in `JWT_KEYS_DIR`.
    #[value(name = "EdDSA")]
    EdDsa,
    /// ECDSA on P-256 with SHA-256, keys in `JWT_KEYS_DIR`.
    #[value(name = "ES256")]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (keys of 2048 bits or more), keys in `JWT_KEYS_DIR`.
    #[value(name = "RS256")]
    Rs256,
}

impl JwtAlgorithm {
    /// The algorithm as the JWT library names it.
    pub fn algorithm(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Hs256 => jsonwebtoken::Algorithm::HS256,
            Self::Hs384 => jsonwebtoken::Algorithm::HS384,
            Self::Hs512 => jsonwebtoken::Algorithm::HS512,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }

    /// Whether tokens are signed with `JWT_SECRET_KEY` (else with the keys in `JWT_KEYS_DIR`).
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::Hs256 | Self::Hs384 | Self::Hs512)
    }
}

impl SettingsArgs {
    /// The database settings alone: all `cerego migrate` needs (no signing key).
    pub fn database(&self) -> Result<DatabaseSettings, ConfigError> {
        let url = non_blank(self.database_url.clone());
        if let Some(url) = &url {
            DatabaseKind::of(url).map_err(|reason| ConfigError {
                var: "DATABASE_URL",
                reason,
            })?;
        }
        Ok(DatabaseSettings {
            url,
            max_connections: self.database_max_connections,
            acquire_timeout: Duration::from_secs(self.database_acquire_timeout_secs),
            auto_migrate: self.database_auto_migrate,
            query_timeout: Duration::from_secs(self.database_query_timeout_secs),
            statement_cache_capacity: self.database_statement_cache_capacity,
        })
    }

    /// Every setting, after the checks that span several variables.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let database = self.database()?;
        let is_postgres = database
            .url
            .as_ref()
            .is_some_and(|url| DatabaseKind::of(url) == Ok(DatabaseKind::Postgres));
        let secret = non_blank(self.jwt_secret_key);
        match &secret {
            Some(secret) if secret.expose_secret().len() < 32 => {
                return Err(error("JWT_SECRET_KEY", "must be at least 32 bytes long"));
            }
            None if is_postgres => {
                return Err(error(
                    "JWT_SECRET_KEY",
                    "is required with a PostgreSQL DATABASE_URL (at least 32 bytes)",
                ));
            }
            _ => {}
        }
        let keys_dir = self.jwt_keys_dir.filter(|dir| !dir.as_os_str().is_empty());
        let signing = match (self.jwt_algorithm.is_hmac(), keys_dir) {
            (true, None) => Signing::Secret(self.jwt_algorithm.algorithm()),
            (true, Some(_)) => {
                return Err(error(
                    "JWT_KEYS_DIR",
                    "is only used with JWT_ALGORITHM EdDSA, ES256 or RS256 (HMAC algorithms sign with JWT_SECRET_KEY)",
                ));
            }
            (false, Some(dir)) => Signing::KeysDir {
                algorithm: self.jwt_algorithm.algorithm(),
                dir,
            },
            (false, None) => {
                return Err(error(
                    "JWT_KEYS_DIR",
                    "is required with JWT_ALGORITHM EdDSA, ES256 or RS256 (make a key with `cerego keys generate`)",
                ));
            }
        };
        if self.refresh_token_grace_secs >= self.session_idle_timeout_secs {
            return Err(error(
                "REFRESH_TOKEN_GRACE_SECS",
                "must be less than SESSION_IDLE_TIMEOUT_SECS",
            ));
        }
        let text = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        let admin = admin_account(
            text(self.admin_email),
            text(self.admin_username),
            non_blank(self.admin_password),
        )?;
        Ok(Settings {
            host: self.host,
            port: self.port,
            database,
            jwt: JwtSettings {
                secret,
                signing: signing.clone(),
                access_token_ttl: Duration::from_secs(self.jwt_access_token_expire_minutes * 60),
                // With published keys, the discovery document names an issuer, and verifiers
                // that read it (Spring, .NET, go-oidc) require tokens to carry the same `iss`.
                issuer: text(self.jwt_issuer).or_else(|| {
                    matches!(signing, Signing::KeysDir { .. })
                        .then(|| self.public_base_url.trim_end_matches('/').to_owned())
                }),
                audience: text(self.jwt_audience),
                accept_legacy_until: self.jwt_accept_legacy_until.and_then(|until| until.0),
            },
            sessions: SessionSettings {
                refresh_grace: Duration::from_secs(self.refresh_token_grace_secs),
                lifetime: Duration::from_secs(self.session_lifetime_secs),
                idle_timeout: Duration::from_secs(self.session_idle_timeout_secs),
                purge_interval: Duration::from_secs(self.session_purge_interval_secs),
            },
            bcrypt_cost: self.bcrypt_cost,
            hash_queue: HashQueueSettings {
                per_core: self.password_hash_queue_per_core,
                full_wait: Duration::from_millis(self.password_hash_queue_full_wait_ms),
            },
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            http: HttpSettings {
                header_read_timeout: Duration::from_secs(self.http_header_read_timeout_secs),
                idle_timeout: Duration::from_secs(self.http_idle_timeout_secs),
                body_read_timeout: Duration::from_secs(self.http_body_read_timeout_secs),
                max_connections: self.http_max_connections,
            },
            log_format: self.log_format,
            limits: LimitSettings {
                enabled: self.rate_limit_enabled,
                rates: {
                    let mut rates = Rates::default();
                    rates.set(Rule::LoginIp, self.rate_limit_login_ip.0);
                    rates.set(Rule::LoginAccount, self.rate_limit_login_account.0);
                    rates.set(Rule::SignupIp, self.rate_limit_signup_ip.0);
                    rates.set(Rule::RefreshIp, self.rate_limit_refresh_ip.0);
                    rates.set(Rule::ApiUser, self.rate_limit_api_user.0);
                    rates.set(Rule::ApiIp, self.rate_limit_api_ip.0);
                    rates.set(Rule::RecoveryIp, self.rate_limit_recovery_ip.0);
                    rates.set(Rule::RecoveryAccount, self.rate_limit_recovery_account.0);
                    rates
                },
                redis_url: non_blank(self.redis_url),
                redis_timeout: Duration::from_millis(self.redis_timeout_ms),
                fail_open: self.rate_limit_fail_open,
                throttle: ThrottleSettings {
                    backoff_after: self.login_backoff_after,
                    backoff_max: Duration::from_secs(self.login_backoff_max_secs),
                    account_failure_limit: self.login_account_failure_limit,
                    account_failure_window: Duration::from_secs(
                        self.login_account_failure_window_secs,
                    ),
                },
            },
            trusted_proxies: self.trusted_proxies,
            trusted_proxy_header: self.trusted_proxy_header,
            recovery: RecoverySettings {
                password_reset_url: text(self.password_reset_url)
                    .unwrap_or_else(|| format!("{}/auth/password/reset", self.public_base_url)),
                email_verification_url: text(self.email_verification_url)
                    .unwrap_or_else(|| format!("{}/auth/email/verify", self.public_base_url)),
                password_reset_ttl: Duration::from_secs(self.password_reset_ttl_secs),
                email_verification_ttl: Duration::from_secs(self.email_verification_ttl_secs),
                require_email_verification: self.require_email_verification,
            },
            mail: MailSettings {
                smtp_url: non_blank(self.smtp_url),
                smtp_timeout: Duration::from_secs(self.smtp_timeout_secs),
                from: self.mail_from,
                outbox_dir: self.mail_outbox_dir,
                retry_max: Duration::from_secs(self.mail_retry_max_secs),
            },
            admin,
            public_base_url: self.public_base_url.clone(),
            audit_retention: (self.audit_retention_days > 0)
                .then(|| Duration::from_secs(self.audit_retention_days * 86_400)),
        })
    }
}

/// `ADMIN_EMAIL`, `ADMIN_USERNAME` and `ADMIN_PASSWORD`: all three or none, each passing the
/// rule sign-up applies to it.
fn admin_account(
    email: Option<String>,
    username: Option<String>,
    password: Option<SecretString>,
) -> Result<Option<AdminAccount>, ConfigError> {
    let (email, username, password) = match (email, username, password) {
        (None, None, None) => return Ok(None),
        (Some(email), Some(username), Some(password)) => (email, username, password),
        (email, username, _) => {
            let missing = if email.is_none() {
                "ADMIN_EMAIL"
            } else if username.is_none() {
                "ADMIN_USERNAME"
            } else {
                "ADMIN_PASSWORD"
            };
            return Err(error(
                missing,
                "must be set together with the other two of ADMIN_EMAIL, ADMIN_USERNAME and ADMIN_PASSWORD",
            ));
        }
    };
    let email = Email::parse(&email)
        .map_err(|rule| error("ADMIN_EMAIL", &format!("is refused: {rule}")))?;
    let username = Username::parse(&username)
        .map_err(|rule| error("ADMIN_USERNAME", &format!("is refused: {rule}")))?;
    let password = NewPassword::parse(password, &[email.as_str(), username.as_str()])
        .map_err(|rule| error("ADMIN_PASSWORD", &format!("is refused: {rule}")))?;
    Ok(Some(AdminAccount {
        account: NewUser { email, username },
        password,
    }))
}

fn error(var: &'static str, reason: &str) -> ConfigError {
    ConfigError {
        var,
        reason: reason.to_owned(),
    }
}

fn non_blank(secret: Option<SecretString>) -> Option<SecretString> {
    secret.filter(|s| !s.expose_secret().trim().is_empty())
}
