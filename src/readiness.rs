//! Readiness: whether the service can answer requests that need its database, and the state of
//! the connection pool for `/metrics`. The HTTP layer asks this, never the store itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::store::Db;

/// Answers "can this instance serve?" for `/readyz` and load balancers.
#[derive(Debug, Clone)]
pub struct Readiness {
    db: Db,
    timeout: Duration,
    draining: Arc<AtomicBool>,
}

impl Readiness {
    /// Readiness of `db`, which must answer within `timeout`.
    pub fn new(db: Db, timeout: Duration) -> Self {
        Self {
            db,
            timeout,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on the instance is shutting down: not ready, whatever the database says.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The database's kind (`sqlite` or `postgres`) when it answers a trivial query in time;
    /// otherwise why not.
    pub async fn check(&self) -> anyhow::Result<&'static str> {
        anyhow::ensure!(
            !self.draining.load(Ordering::Acquire),
            "shutting down (SIGTERM): finishing requests in flight"
        );
        tokio::time::timeout(self.timeout, self.db.ping())
            .await
            .with_context(|| format!("database did not answer within {:?}", self.timeout))?
            .context("database unavailable")?;
        Ok(self.db.kind())
    }

    /// Open and idle connections in the pool.
    pub fn pool_stats(&self) -> (u32, usize) {
        self.db.pool_stats()
    }
}
