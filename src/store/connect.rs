//! Opening pools and running the embedded migrations.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::inline::InlineReads;
use super::{Db, dispatch, pool};
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
            let pool = pool::build(options, max_size(settings), settings.acquire_timeout)?;
            Ok((Db::Postgres(pool), None))
        }
        Some(url) => {
            let options = SqliteConnectOptions::from_str(url.expose_secret())
                .context("DATABASE_URL is not a valid SQLite URL")?;
            let path = sqlite_file(&options);
            Ok((sqlite_pool(options, path.clone(), settings)?, path))
        }
        None => {
            let path = DatabaseSettings::default_sqlite_path();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let options = SqliteConnectOptions::new().filename(&path);
            Ok((
                sqlite_pool(options, Some(path.clone()), settings)?,
                Some(path),
            ))
        }
    }
}

/// The pool for a SQLite database, with inline reads if it is the file at `path`.
fn sqlite_pool(
    options: SqliteConnectOptions,
    path: Option<PathBuf>,
    settings: &DatabaseSettings,
) -> anyhow::Result<Db> {
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(settings.acquire_timeout)
        .foreign_keys(true);
    let pool = pool::build(options, max_size(settings), settings.acquire_timeout)?;
    let inline = path.map(|path| Arc::new(InlineReads::new(path)));
    Ok(Db::Sqlite(pool, inline))
}

fn max_size(settings: &DatabaseSettings) -> usize {
    usize::try_from(settings.max_connections).unwrap_or(usize::MAX)
}

fn sqlite_file(options: &SqliteConnectOptions) -> Option<PathBuf> {
    let path: &Path = options.get_filename();
    let name = path.to_string_lossy();
    (!name.is_empty() && name != ":memory:" && !name.starts_with("file:")).then(|| path.to_owned())
}

/// What one run of the migrations did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// Migrations this run applied.
    pub applied: usize,
    /// Migrations the database had before this run.
    pub already_applied: usize,
}

/// Applies the migrations embedded for `db`'s database that have not run yet, and says how many.
pub async fn migrate(db: &Db) -> anyhow::Result<Migrated> {
    let migrations = match db {
        Db::Postgres(_) => &POSTGRES_MIGRATIONS,
        Db::Sqlite(..) => &SQLITE_MIGRATIONS,
    };
    let table = &migrations.table_name;
    dispatch!(db, conn => {
        // The count before and after, on the same connection, around the migrator's own run.
        conn.ensure_migrations_table(table).await?;
        let before = conn.list_applied_migrations(table).await?.len();
        migrations.run(&mut *conn).await?;
        let after = conn.list_applied_migrations(table).await?.len();
        Ok(Migrated { applied: after.saturating_sub(before), already_applied: before })
    })
    .with_context(|| format!("running {} migrations failed", db.kind()))
}
