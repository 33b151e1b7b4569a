//! Opening pools and running the embedded migrations.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::Db;
use crate::config::{DatabaseKind, DatabaseSettings};

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Builds the pool `settings` describe. Connections open lazily, so a database that is down at
/// start-up gives 503s (and readiness failures) instead of a crash, and recovers by itself.
///
/// Returns the pool and, for a SQLite file, the file's path (the generated JWT key lives beside it).
pub fn connect(settings: &DatabaseSettings) -> anyhow::Result<(Db, Option<PathBuf>)> {
    match &settings.url {
        Some(url) if DatabaseKind::of(url) == Ok(DatabaseKind::Postgres) => {
            let options = PgConnectOptions::from_str(url.expose_secret())
                .context("DATABASE_URL is not a valid PostgreSQL URL")?
                // A query stuck behind a lock must not hold a request forever.
                .options([("statement_timeout", "10s")]);
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(settings.acquire_timeout)
                .test_before_acquire(false)
                .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta)))
                .connect_lazy_with(options);
            Ok((Db::Postgres(pool), None))
        }
        Some(url) => {
            let options = SqliteConnectOptions::from_str(url.expose_secret())
                .context("DATABASE_URL is not a valid SQLite URL")?;
            let path = sqlite_file(&options);
            Ok((sqlite_pool(options, settings)?, path))
        }
        None => {
            let path = DatabaseSettings::default_sqlite_path();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let options = SqliteConnectOptions::new().filename(&path);
            Ok((sqlite_pool(options, settings)?, Some(path)))
        }
    }
}

fn sqlite_pool(options: SqliteConnectOptions, settings: &DatabaseSettings) -> anyhow::Result<Db> {
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(settings.acquire_timeout)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta)))
        .connect_lazy_with(options);
    Ok(Db::Sqlite(pool))
}

/// A connection idle for longer than this is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// sqlx pings every connection it hands out by default: a full round trip to the database before
/// each query, which on `/auth/me` cost about 15 % of throughput. A connection that was used
/// within the last second is known to be alive (sqlx also pings it when it is returned, and
/// closes it if that fails), so only connections that sat idle are tested, as HikariCP does.
async fn ping_if_idle<C: Connection>(
    conn: &mut C,
    meta: PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    if meta.idle_for >= PING_AFTER_IDLE {
        conn.ping().await?;
    }
    Ok(true)
}

fn sqlite_file(options: &SqliteConnectOptions) -> Option<PathBuf> {
    let path: &Path = options.get_filename();
    let name = path.to_string_lossy();
    (!name.is_empty() && name != ":memory:" && !name.starts_with("file:")).then(|| path.to_owned())
}

/// Applies the migrations embedded for `db`'s database that have not run yet.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    match db {
        Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        Db::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
    }
    .with_context(|| format!("running {} migrations failed", db.kind()))
}
