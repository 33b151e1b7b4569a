//! Typed settings, read once from the environment (and `.env`) and validated at start-up.
//!
//! Every variable has the name the API contract gives it; a bad value stops start-up with one
//! message naming the variable. `.env.example` documents each one with its default.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

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
    /// Longest time a request may take before it gets a 503 (`REQUEST_TIMEOUT_SECS`, default 30).
    pub request_timeout: Duration,
    /// Connection handling: timeouts and the cap on open connections.
    pub http: HttpSettings,
    /// Log line format (`LOG_FORMAT`, default `json`).
    pub log_format: LogFormat,
}

/// How many logins and sign-ups may wait for a hashing slot, and how long a caller that finds
/// them all taken waits for a place before its 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashQueueSettings {
    /// Operations that may wait per core (`PASSWORD_HASH_QUEUE_PER_CORE`, default 16).
    pub per_core: usize,
    /// How long a caller finding the queue full waits for a place
    /// (`PASSWORD_HASH_QUEUE_FULL_WAIT_MS`, 0..=5000, default 250).
    pub full_wait: Duration,
}

/// How connections are read, kept and capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// A connection that has not sent a whole request head this long after it opened (or after
    /// its previous response) is closed (`HTTP_HEADER_READ_TIMEOUT_SECS`, 1..=300, default 10).
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
    /// Most connections in the pool (`DATABASE_MAX_CONNECTIONS`, default 10).
    pub max_connections: u32,
    /// How long a request waits for a connection before it gets a 503
    /// (`DATABASE_ACQUIRE_TIMEOUT_SECS`, default 3).
    pub acquire_timeout: Duration,
    /// Run pending migrations when `serve` starts (`DATABASE_AUTO_MIGRATE`, default true).
    pub auto_migrate: bool,
    /// Longest a single query may run, enforced by the server (PostgreSQL `statement_timeout`)
    /// and by a client-side deadline on both databases (`DATABASE_QUERY_TIMEOUT_SECS`, 1..=300,
    /// default 5).
    pub query_timeout: Duration,
}

/// Access-token settings.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// `JWT_SECRET_KEY`, at least 32 bytes. `None` is allowed only with a SQLite database: a key
    /// is then generated once and kept beside the database file.
    pub secret: Option<SecretString>,
    /// `JWT_ALGORITHM`: HS256 (default), HS384 or HS512.
    pub algorithm: jsonwebtoken::Algorithm,
    /// `JWT_ACCESS_TOKEN_EXPIRE_MINUTES` (default 30).
    pub access_token_ttl: Duration,
    /// `JWT_ISSUER`: sets and requires `iss` when present.
    pub issuer: Option<String>,
    /// `JWT_AUDIENCE`: sets and requires `aud` when present.
    pub audience: Option<String>,
}

/// Session lifetimes and refresh-token rotation.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// How long after its use a refresh token may be presented again and get the same
    /// successor (`REFRESH_TOKEN_GRACE_SECS`, default 10; 0 turns replays into reuse).
    pub refresh_grace: Duration,
    /// Absolute session lifetime from login (`SESSION_LIFETIME_SECS`, default 30 days).
    pub lifetime: Duration,
    /// A session not refreshed for this long ends (`SESSION_IDLE_TIMEOUT_SECS`, default 14 days).
    pub idle_timeout: Duration,
    /// How often ended sessions are deleted (`SESSION_PURGE_INTERVAL_SECS`, default 3600).
    pub purge_interval: Duration,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Reads the process environment (call `dotenvy::dotenv()` first to honour `.env`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can supply their own environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let url = env.get("DATABASE_URL").map(SecretString::from);
        let is_postgres = url
            .as_ref()
            .is_some_and(|u| DatabaseKind::of(u) == Ok(DatabaseKind::Postgres));
        if let Some(u) = &url {
            DatabaseKind::of(u).map_err(|reason| ConfigError {
                var: "DATABASE_URL",
                reason,
            })?;
        }
        let secret = env.get("JWT_SECRET_KEY");
        match &secret {
            Some(s) if s.len() < 32 => {
                return Err(env.error("JWT_SECRET_KEY", "must be at least 32 bytes long"));
            }
            None if is_postgres => {
                return Err(env.error(
                    "JWT_SECRET_KEY",
                    "is required with a PostgreSQL DATABASE_URL (at least 32 bytes)",
                ));
            }
            _ => {}
        }
        let algorithm = match env.get("JWT_ALGORITHM").as_deref() {
            None | Some("HS256") => jsonwebtoken::Algorithm::HS256,
            Some("HS384") => jsonwebtoken::Algorithm::HS384,
            Some("HS512") => jsonwebtoken::Algorithm::HS512,
            Some(_) => return Err(env.error("JWT_ALGORITHM", "must be HS256, HS384 or HS512")),
        };
        let expire_minutes: u64 = env.parse("JWT_ACCESS_TOKEN_EXPIRE_MINUTES", 30)?;
        if !(1..=24 * 60).contains(&expire_minutes) {
            return Err(env.error(
                "JWT_ACCESS_TOKEN_EXPIRE_MINUTES",
                "must be between 1 and 1440",
            ));
        }
        let bcrypt_cost: u32 = env.parse("BCRYPT_COST", 12)?;
        if !(4..=31).contains(&bcrypt_cost) {
            return Err(env.error("BCRYPT_COST", "must be between 4 and 31"));
        }
        let full_wait_ms: u64 = env.parse("PASSWORD_HASH_QUEUE_FULL_WAIT_MS", 250)?;
        if full_wait_ms > 5_000 {
            return Err(env.error(
                "PASSWORD_HASH_QUEUE_FULL_WAIT_MS",
                "must be at most 5000 (a rejection should come quickly)",
            ));
        }
        let max_connections: u32 = env.parse("DATABASE_MAX_CONNECTIONS", 10)?;
        if max_connections == 0 {
            return Err(env.error("DATABASE_MAX_CONNECTIONS", "must be at least 1"));
        }
        let acquire_secs: u64 = env.parse("DATABASE_ACQUIRE_TIMEOUT_SECS", 3)?;
        let timeout_secs: u64 = env.parse("REQUEST_TIMEOUT_SECS", 30)?;
        if acquire_secs == 0 || timeout_secs == 0 {
            let var = if acquire_secs == 0 {
                "DATABASE_ACQUIRE_TIMEOUT_SECS"
            } else {
                "REQUEST_TIMEOUT_SECS"
            };
            return Err(env.error(var, "must be at least 1"));
        }
        let secs = |var: &'static str, default: u64, min: u64| -> Result<Duration, ConfigError> {
            let value: u64 = env.parse(var, default)?;
            if value < min {
                return Err(env.error(var, &format!("must be at least {min}")));
            }
            Ok(Duration::from_secs(value))
        };
        let secs_in = |var: &'static str,
                       default: u64,
                       min: u64,
                       max: u64|
         -> Result<Duration, ConfigError> {
            let value: u64 = env.parse(var, default)?;
            if !(min..=max).contains(&value) {
                return Err(env.error(var, &format!("must be between {min} and {max}")));
            }
            Ok(Duration::from_secs(value))
        };
        let sessions = SessionSettings {
            refresh_grace: secs("REFRESH_TOKEN_GRACE_SECS", 10, 0)?,
            lifetime: secs("SESSION_LIFETIME_SECS", 30 * 24 * 3600, 1)?,
            idle_timeout: secs("SESSION_IDLE_TIMEOUT_SECS", 14 * 24 * 3600, 1)?,
            purge_interval: secs("SESSION_PURGE_INTERVAL_SECS", 3600, 1)?,
        };
        let log_format = match env.get("LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(_) => return Err(env.error("LOG_FORMAT", "must be json or pretty")),
        };
        Ok(Self {
            host: env.parse("HOST", IpAddr::from([0, 0, 0, 0]))?,
            port: env.parse("PORT", 8000)?,
            database: DatabaseSettings {
                url,
                max_connections,
                acquire_timeout: Duration::from_secs(acquire_secs),
                auto_migrate: env.parse_bool("DATABASE_AUTO_MIGRATE", true)?,
                query_timeout: secs_in("DATABASE_QUERY_TIMEOUT_SECS", 5, 1, 300)?,
            },
            jwt: JwtSettings {
                secret: secret.map(SecretString::from),
                algorithm,
                access_token_ttl: Duration::from_secs(expire_minutes * 60),
                issuer: env.get("JWT_ISSUER"),
                audience: env.get("JWT_AUDIENCE"),
            },
            sessions,
            bcrypt_cost,
            hash_queue: HashQueueSettings {
                per_core: env.parse("PASSWORD_HASH_QUEUE_PER_CORE", 16)?,
                full_wait: Duration::from_millis(full_wait_ms),
            },
            request_timeout: Duration::from_secs(timeout_secs),
            http: HttpSettings {
                header_read_timeout: secs_in("HTTP_HEADER_READ_TIMEOUT_SECS", 10, 1, 300)?,
                idle_timeout: secs_in("HTTP_IDLE_TIMEOUT_SECS", 60, 1, 3600)?,
                body_read_timeout: secs_in("HTTP_BODY_READ_TIMEOUT_SECS", 10, 1, 300)?,
                max_connections: {
                    let max: usize = env.parse("HTTP_MAX_CONNECTIONS", 10_000)?;
                    if !(1..=1_000_000).contains(&max) {
                        return Err(
                            env.error("HTTP_MAX_CONNECTIONS", "must be between 1 and 1000000")
                        );
                    }
                    max
                },
            },
            log_format,
        })
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

/// A view of the environment that turns bad values into [`ConfigError`]s.
struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    /// The variable's value; empty counts as unset, as in most `.env` tooling.
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    fn error(&self, var: &'static str, reason: &str) -> ConfigError {
        ConfigError {
            var,
            reason: reason.to_owned(),
        }
    }

    fn parse<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|_| ConfigError {
                var,
                reason: format!("{raw:?} is not a valid value"),
            }),
        }
    }

    fn parse_bool(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self
            .get(var)
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError {
                var,
                reason: format!("{other:?} is not true or false"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_serve_the_embedded_database_on_port_8000() {
        let s = settings(&[]).expect("defaults are valid");
        assert_eq!(s.port, 8000);
        assert_eq!(s.host.to_string(), "0.0.0.0");
        assert!(s.database.url.is_none());
        assert!(s.jwt.secret.is_none());
        assert_eq!(s.jwt.algorithm, jsonwebtoken::Algorithm::HS256);
        assert_eq!(s.jwt.access_token_ttl, Duration::from_secs(1800));
        assert_eq!(s.bcrypt_cost, 12);
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(s.database.auto_migrate);
    }

    #[test]
    fn postgres_requires_a_secret_key() {
        let err = settings(&[("DATABASE_URL", "postgres://localhost/cerego")]).expect_err("no key");
        assert_eq!(err.var, "JWT_SECRET_KEY");
        let key = "k".repeat(32);
        assert!(
            settings(&[
                ("DATABASE_URL", "postgres://localhost/cerego"),
                ("JWT_SECRET_KEY", &key)
            ])
            .is_ok()
        );
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases = [
            ("JWT_SECRET_KEY", "too-short"),
            ("JWT_ALGORITHM", "none"),
            ("JWT_ALGORITHM", "RS256"),
            ("JWT_ACCESS_TOKEN_EXPIRE_MINUTES", "0"),
            ("BCRYPT_COST", "3"),
            ("BCRYPT_COST", "twelve"),
            ("PASSWORD_HASH_QUEUE_PER_CORE", "-1"),
            ("PASSWORD_HASH_QUEUE_FULL_WAIT_MS", "-1"),
            ("PASSWORD_HASH_QUEUE_FULL_WAIT_MS", "5001"),
            ("PORT", "70000"),
            ("HOST", "not-an-ip"),
            ("LOG_FORMAT", "xml"),
            ("DATABASE_URL", "mysql://localhost/x"),
            ("DATABASE_AUTO_MIGRATE", "maybe"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("REQUEST_TIMEOUT_SECS", "0"),
            ("SESSION_LIFETIME_SECS", "0"),
            ("REFRESH_TOKEN_GRACE_SECS", "soon"),
        ];
        for (var, value) in cases {
            let err = settings(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn the_secret_is_never_in_debug_output() {
        let key = "super-secret-key-that-is-long-enough-1234";
        let s = settings(&[("JWT_SECRET_KEY", key)]).expect("valid");
        assert!(!format!("{s:?}").contains(key));
    }
}
