//! Short SQLite reads run on the calling thread.
//!
//! sqlx gives every SQLite connection a thread of its own and sends each query there over a
//! channel, so a read costs two thread wake-ups on top of the query. For the read behind every
//! authenticated request (the session check of [`super::Db::user_in_session`]) that hand-off
//! cost more than the query itself: an indexed lookup in pages SQLite already holds takes a few
//! microseconds. Such reads run here instead, on read-only connections kept for the purpose,
//! in the task that asks.
//!
//! What keeps this from stalling the async runtime:
//! - the connections never wait for a lock (`busy_timeout` 0): in WAL mode a reader does not wait
//!   for writers, and in the rare cases where SQLite still answers `SQLITE_BUSY` (recovery after a
//!   crash, another process holding an exclusive lock) the read is handed back to the pool,
//!   which waits on its own threads, as every other query does;
//! - a read that finds no usable connection (the file cannot be opened read-only) is also handed
//!   back to the pool, with a warning;
//! - only single-row lookups by primary key belong here; anything that writes, scans or runs
//!   in a transaction goes through the pool.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, ErrorCode, OpenFlags};

/// Idle connections kept; there are rarely more than one per runtime worker in use at once.
const KEEP_IDLE: usize = 8;

/// Read-only connections to one SQLite file, used on the calling thread.
#[derive(Debug)]
pub struct InlineReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Why a read was not answered here.
#[derive(Debug)]
pub enum Declined {
    /// The read should go through the pool instead (busy database, no connection).
    UsePool,
    /// The query failed for another reason: the pool would fail the same way.
    Failed(rusqlite::Error),
}

impl InlineReads {
    /// Reads from the SQLite file at `path`, which the pool has created and migrated.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on one of the connections, on this thread.
    pub fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, Declined> {
        let conn = match self.take() {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(%err, "cannot open a read-only SQLite connection; reading through the pool");
                return Err(Declined::UsePool);
            }
        };
        let result = read(&conn);
        self.give_back(conn);
        result.map_err(|err| match err.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Declined::UsePool,
            _ => Declined::Failed(err),
        })
    }

    /// Closes the idle connections.
    pub fn close(&self) {
        self.lock().clear();
    }

    fn take(&self) -> rusqlite::Result<Connection> {
        if let Some(conn) = self.lock().pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::ZERO)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.lock();
        if idle.len() < KEEP_IDLE {
            idle.push(conn);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The list stays valid even if a holder panicked: it is only pushed to and popped from.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("inline.db");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY); \
             INSERT INTO t VALUES (7);",
        )
        .expect("schema");
        (dir, path)
    }

    fn select(conn: &Connection) -> rusqlite::Result<i64> {
        conn.query_row("SELECT id FROM t", [], |row| row.get(0))
    }

    #[test]
    fn reads_reuse_one_connection() {
        let (_dir, path) = database();
        let reads = InlineReads::new(path);
        assert_eq!(reads.read(select).expect("read"), 7);
        assert_eq!(reads.read(select).expect("read"), 7);
        assert_eq!(reads.lock().len(), 1);
    }

    #[test]
    fn a_locked_database_is_left_to_the_pool_without_waiting_here() {
        let (_dir, path) = database();
        let locker = Connection::open(&path).expect("open");
        // An exclusive-mode connection keeps its lock after the transaction, until it closes.
        locker
            .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT;")
            .expect("lock");
        let reads = InlineReads::new(path);

        assert!(matches!(reads.read(select), Err(Declined::UsePool)));

        drop(locker);
        assert_eq!(reads.read(select).expect("read"), 7);
    }

    #[test]
    fn other_failures_are_reported() {
        let (_dir, path) = database();
        let reads = InlineReads::new(path);
        let failed =
            reads.read(|conn| conn.query_row("SELECT nope FROM t", [], |row| row.get::<_, i64>(0)));
        assert!(matches!(failed, Err(Declined::Failed(_))));
        assert!(matches!(
            reads.read(|conn| conn.execute("INSERT INTO t VALUES (8)", [])),
            Err(Declined::Failed(_))
        ));
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_left_to_the_pool() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let reads = InlineReads::new(dir.path().join("missing.db"));
        assert!(matches!(reads.read(select), Err(Declined::UsePool)));
    }
}
