//! Persistence: one [`Db`] over PostgreSQL or SQLite, with the same SQL text for both.
//!
//! Both databases accept `$n` placeholders and `RETURNING`, so each query is written once and
//! [`dispatch!`] runs it on whichever pool is configured. Callers see [`StoreError`], never a
//! driver error: unique violations become [`StoreError::Conflict`], a database that cannot be
//! reached, or does not answer within the deadlines of [`pool`], becomes
//! [`StoreError::Unavailable`], whose cause is for the log only.

mod account_tokens;
mod admin;
mod audit;
mod connect;
mod inline;
mod outbox;
mod pool;
mod rotation;
mod sessions;
mod users;

pub use account_tokens::{
    NewAccountToken, PasswordChange, PasswordReset, TokenOwner, TokenPurpose,
};
pub use admin::{AccountQuery, AdminGrant, Refusal};
pub use audit::{
    AuditEntry, AuditQuery, AuditRecord, ChainBreak, ChainReport, Details, GENESIS_HASH, Purge,
    canonical_details, rfc3339_micros, unix_micros,
};
pub use connect::{connect, connect_existing, migrate};
pub use sessions::{NewSession, Rotation, TokenRecord};
pub use users::StoredCredentials;

use std::sync::Arc;

use crate::domain::UniqueField;

use sqlx::{PgConnection, SqliteConnection};

use inline::InlineReads;
use pool::Pool;

/// A connection pool to the configured database.
#[derive(Clone)]
pub enum Db {
    /// Production database.
    Postgres(Pool<PgConnection>),
    /// Embedded default and tests; for a database file, with connections for reads on the
    /// calling thread (see [`inline`]).
    Sqlite(Pool<SqliteConnection>, Option<Arc<InlineReads>>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Db").field(&self.kind()).finish()
    }
}

/// Runs `$body` (an expression giving a `Result<_, sqlx::Error>`, in which `?` may be used)
/// with `$conn` bound to a connection from whichever pool `$db` holds, within the pool's
/// deadlines, and gives its result as `Result<_, StoreError>`.
/// The body is compiled once per database, so the same query text is checked against both
/// drivers' types.
macro_rules! dispatch {
    ($db:expr, $conn:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Postgres(pool) => {
                pool.with_pg(async |$conn: &mut sqlx::PgConnection| $body)
                    .await
            }
            $crate::store::Db::Sqlite(pool, _) => {
                pool.with_conn(async |$conn: &mut sqlx::SqliteConnection| $body)
                    .await
            }
        }
    };
}
pub(crate) use dispatch;

/// What went wrong in the store, in the store's words.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the row.
    #[error("{0:?} is already taken")]
    Conflict(UniqueField),
    /// The database could not be reached or did not answer in time (down, frozen, restarting,
    /// pool exhausted). The cause is for the log; callers only learn "not now".
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a bug or corrupt data.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if is_unavailable(&err) {
            return Self::Unavailable(anyhow::Error::new(err));
        }
        if let Some(field) = users::violated_field(&err) {
            return Self::Conflict(field);
        }
        Self::Unexpected(anyhow::Error::new(err).context("database query failed"))
    }
}

/// Whether `err` means "the database is not answering" rather than "this query is wrong".
fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                // Classes that mean "not now" rather than "wrong query": 08 connection,
                // 28 authorization, 3D no such database, 40 rollback (serialization, deadlock),
                // 53 resources, 55 object state (e.g. ALLOW_CONNECTIONS false, lock timeout),
                // 57 operator intervention (shutdown, statement_timeout), 58 system I/O.
                const CLASSES: [&str; 8] = ["08", "28", "3D", "40", "53", "55", "57", "58"];
                CLASSES.iter().any(|class| pg.code().starts_with(class))
            } else {
                // SQLite's primary codes 5 (BUSY) and 6 (LOCKED), after busy_timeout ran out.
                db.code()
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(|code| matches!(code & 0xff, 5 | 6))
            }
        }
        _ => false,
    }
}

impl Db {
    /// Answers `Ok` when the database executes a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, conn => sqlx::query("SELECT 1").execute(conn).await.map(drop))?;
        Ok(())
    }

    /// Closes the pool: idle connections say goodbye to the server now, connections still in
    /// use are closed when they come back.
    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(pool, inline) => {
                if let Some(inline) = inline {
                    inline.close();
                }
                pool.close().await;
            }
        }
    }

    /// Closes connections idle for longer than [`pool::IDLE_TIMEOUT`].
    pub async fn close_idle(&self) {
        match self {
            Self::Postgres(pool) => pool.close_idle(false).await,
            Self::Sqlite(pool, _) => pool.close_idle(false).await,
        }
    }

    /// Open and idle connections in the pool, for metrics.
    pub fn pool_stats(&self) -> (u32, usize) {
        let status = match self {
            Self::Postgres(pool) => pool.status(),
            Self::Sqlite(pool, _) => pool.status(),
        };
        (
            u32::try_from(status.size).unwrap_or(u32::MAX),
            status.available,
        )
    }

    /// Which database this is, for logs and readiness.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(..) => "sqlite",
        }
    }
}

/// A fresh SQLite database in a temporary directory, migrated, for the store's unit tests (the
/// directory goes when the first value is dropped).
#[cfg(test)]
pub(crate) async fn test_database() -> (tempfile::TempDir, Db) {
    use secrecy::SecretString;
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("cerego.db").display());
    let settings = crate::config::DatabaseSettings {
        url: Some(SecretString::from(url)),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(3),
        auto_migrate: true,
        query_timeout: Duration::from_secs(5),
        statement_cache_capacity: 100,
    };
    let (db, _) = connect(&settings).expect("a pool");
    migrate(&db).await.expect("migrations");
    (dir, db)
}

/// An audit entry for the store's unit tests (what it records is the audit module's tests').
#[cfg(test)]
pub(crate) fn test_audit() -> AuditEntry {
    AuditEntry::new(
        crate::domain::AuditEvent::UserSignedUp,
        crate::domain::Outcome::Success,
    )
}

/// Opens a session for `user` at `now` (a day long), as a login that verified `verified_hash`
/// would, with a refresh token hashed as `[byte; 32]`; `None` if the store refused it.
#[cfg(test)]
pub(crate) async fn test_session(
    db: &Db,
    user: crate::domain::UserId,
    verified_hash: &str,
    byte: u8,
    now: i64,
) -> Option<crate::domain::SessionId> {
    let new = NewSession {
        user,
        now,
        expires_at: now + 86_400,
        user_agent: None,
        ip: None,
        verified_hash,
    };
    let record = TokenRecord {
        hash: [byte; 32],
        jti: format!("jti-{byte}"),
        issued_at: now,
    };
    db.create_session(&new, &record, &crate::store::test_audit())
        .await
        .expect("ran")
}
