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
use super::pool::{Deadlines, Pool};
use super::{Db, StoreError};
use crate::config::{DatabaseKind, DatabaseSettings};

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Builds the pool `settings` describe. Connections open lazily, so a database that is down at
/// start-up gives 503s (and readiness failures) instead of a crash, and recovers by itself.
///
/// Every query is bounded by `settings.query_timeout` twice: PostgreSQL cancels a statement
/// that runs longer (`statement_timeout`: a query stuck behind a lock must not hold a request
/// forever, and the connection stays usable), and the pool gives up on a use that gets no answer
/// at all (a frozen server never runs its own timeout; see [`super::pool`]).
///
/// Returns the pool and, for a SQLite file, the file's path (the generated JWT key lives beside it).
pub fn connect(settings: &DatabaseSettings) -> anyhow::Result<(Db, Option<PathBuf>)> {
    open(settings, true)
}

/// [`connect`] to a database that must exist already: a SQLite file that is not there is an
/// error rather than a new empty database (for commands that only read, such as `audit
/// verify`, where a mistyped path must not leave a file behind).
pub fn connect_existing(settings: &DatabaseSettings) -> anyhow::Result<Db> {
    open(settings, false).map(|(db, _)| db)
}

fn open(settings: &DatabaseSettings, create: bool) -> anyhow::Result<(Db, Option<PathBuf>)> {
    match &settings.url {
        Some(url) if DatabaseKind::of(url) == Ok(DatabaseKind::Postgres) => {
            let statement_timeout = format!("{}ms", settings.query_timeout.as_millis());
            // A request dropped in the middle of a transaction (a client that hung up, the
            // request timeout) leaves its connection idle in that transaction until the pool
            // next uses it, holding its locks, the audit chain's head among them, which every
            // audited write waits for. The server ends such a session once it has been idle
            // for longer than any request's use of a connection can be.
            let idle_in_transaction = format!(
                "{}ms",
                (settings.query_timeout + super::pool::DEADLINE_GRACE).as_millis()
            );
            let options = PgConnectOptions::from_str(url.expose_secret())
                .context("DATABASE_URL is not a valid PostgreSQL URL")?
                .options([
                    ("statement_timeout", statement_timeout),
                    ("idle_in_transaction_session_timeout", idle_in_transaction),
                ])
                // 0: every statement is parsed again on each use, and every use runs in a
                // transaction that starts by dropping the connection's prepared statements (see
                // `Pool::with_pg`), which PgBouncer's transaction pooling can carry without
                // max_prepared_statements.
                .statement_cache_capacity(settings.statement_cache_capacity);
            let pool = Pool::build(options, max_size(settings), deadlines(settings), "postgres")?
                .pinning_statements(settings.statement_cache_capacity == 0);
            Ok((Db::Postgres(pool), None))
        }
        Some(url) => {
            let options = SqliteConnectOptions::from_str(url.expose_secret())
                .context("DATABASE_URL is not a valid SQLite URL")?;
            let path = sqlite_file(&options);
            Ok((sqlite_pool(options, path.clone(), settings, create)?, path))
        }
        None => {
            let path = DatabaseSettings::default_sqlite_path();
            if let Some(dir) = path.parent().filter(|_| create) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let options = SqliteConnectOptions::new().filename(&path);
            Ok((
                sqlite_pool(options, Some(path.clone()), settings, create)?,
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
    create: bool,
) -> anyhow::Result<Db> {
    let options = options
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        // SQLite gives up waiting for a lock before the pool's query deadline would cut the
        // connection off: the query then fails cleanly and the connection stays usable.
        .busy_timeout(settings.acquire_timeout.min(settings.query_timeout))
        .foreign_keys(true);
    let pool = Pool::build(options, max_size(settings), deadlines(settings), "sqlite")?;
    let inline = path.map(|path| Arc::new(InlineReads::new(path)));
    Ok(Db::Sqlite(pool, inline))
}

fn deadlines(settings: &DatabaseSettings) -> Deadlines {
    Deadlines {
        acquire: settings.acquire_timeout,
        query: settings.query_timeout,
    }
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

/// Runs `$migrations` on `$conn`, counting the applied ones before and after on the same
/// connection (a macro: the migrator's bounds differ per driver).
///
/// The whole of it holds the migrator's lock (on PostgreSQL a session advisory lock; a no-op on
/// SQLite, whose write lock serialises migrations anyway). The migrator takes the same lock
/// itself, but only inside `run`: creating the bookkeeping table before that, unlocked, let two
/// replicas starting on a fresh PostgreSQL database race on `CREATE TABLE IF NOT EXISTS`, and
/// one died with a duplicate key in `pg_type`. Advisory locks nest within a session, so `run`'s
/// own lock and unlock leave this one held.
macro_rules! run_counted {
    ($migrations:expr, $conn:expr) => {{
        let table = &$migrations.table_name;
        $conn.lock().await?;
        let counted = async {
            $conn.ensure_migrations_table(table).await?;
            let before = $conn.list_applied_migrations(table).await?.len();
            $migrations.run(&mut *$conn).await?;
            let after = $conn.list_applied_migrations(table).await?.len();
            Ok::<_, sqlx::migrate::MigrateError>(Migrated {
                applied: after.saturating_sub(before),
                already_applied: before,
            })
        }
        .await;
        // Unlocked on failure too; the connection is closed after in any case (see `migrate`).
        let unlocked = $conn.unlock().await;
        let counted = counted?;
        unlocked?;
        Ok(counted)
    }};
}

/// Applies the migrations embedded for `db`'s database that have not run yet, and says how
/// many, without the query timeout: building an index on a large table may rightly take longer
/// than any request's query.
pub async fn migrate(db: &Db) -> anyhow::Result<Migrated> {
    let ran: Result<Migrated, StoreError> = match db {
        Db::Postgres(pool) => {
            // Closed after, so that no request inherits the lifted statement timeout.
            pool.with_conn_unbounded(true, async |conn: &mut sqlx::PgConnection| {
                sqlx::query("SET statement_timeout = 0")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("SET idle_in_transaction_session_timeout = 0")
                    .execute(&mut *conn)
                    .await?;
                run_counted!(POSTGRES_MIGRATIONS, conn)
            })
            .await
        }
        Db::Sqlite(pool, _) => {
            pool.with_conn_unbounded(false, async |conn: &mut sqlx::SqliteConnection| {
                run_counted!(SQLITE_MIGRATIONS, conn)
            })
            .await
        }
    };
    ran.with_context(|| format!("running {} migrations failed", db.kind()))
}
