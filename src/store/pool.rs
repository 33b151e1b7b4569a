//! The connection pool: deadpool holding sqlx connections.
//!
//! sqlx's own pool sends a ping (a full round trip) when it hands a connection out and again
//! when it takes one back. On `/auth/me`, whose only database work is one indexed read, those
//! two extra round trips cost more than the query. This pool, like HikariCP or
//! deadpool-postgres's "fast" recycling, trusts a connection whose last use ended cleanly and
//! recently, and checks it otherwise:
//!
//! - every use is marked *settled* only when it completed without error; a use that failed, or
//!   was cancelled half-way (a request timeout, a client that hung up), leaves the connection
//!   unsettled, and it is pinged before anyone uses it again. sqlx connections recover from a
//!   cancelled operation on the next round trip (a PostgreSQL connection drains what is left of
//!   the exchange, a dropped transaction's `ROLLBACK` is sent), and a ping that fails drops the
//!   connection;
//! - a connection idle for [`PING_AFTER_IDLE`] or more is pinged, so one the server or a
//!   firewall closed meanwhile is replaced instead of failing a request;
//! - a connection older than [`MAX_LIFETIME`] is closed and replaced, and idle ones are closed
//!   after [`IDLE_TIMEOUT`] (see [`super::Db::close_idle`]), as sqlx's pool did.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use sqlx::{ConnectOptions, Connection};

/// A connection idle for longer than this is pinged before it is handed out.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);
/// Connections are replaced after this long, so none lives forever (failovers, leaks).
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Idle connections are closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A pool of `C` connections.
pub type Pool<C> = managed::Pool<Manager<C>>;

/// Opens and checks `C` connections for [`Pool`].
#[derive(Debug)]
pub struct Manager<C: Connection> {
    options: C::Options,
}

impl<C: Connection> Manager<C> {
    /// A manager opening connections with `options`.
    pub fn new(options: C::Options) -> Self {
        Self { options }
    }
}

/// A pooled connection and whether its last use completed.
#[derive(Debug)]
pub struct Conn<C> {
    raw: C,
    settled: bool,
}

impl<C: Connection> managed::Manager for Manager<C> {
    type Type = Conn<C>;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<Conn<C>, sqlx::Error> {
        let raw = self.options.connect().await?;
        Ok(Conn { raw, settled: true })
    }

    async fn recycle(&self, conn: &mut Conn<C>, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if metrics.age() >= MAX_LIFETIME {
            return Err(RecycleError::message(
                "connection reached its maximum lifetime",
            ));
        }
        if !conn.settled || metrics.last_used() >= PING_AFTER_IDLE {
            conn.raw.ping().await?;
            conn.settled = true;
        }
        Ok(())
    }
}

/// A pool of at most `max_size` connections opened with `options`; waiting for a free one,
/// opening one and checking one each give up after `timeout`.
pub fn build<C: Connection>(
    options: C::Options,
    max_size: usize,
    timeout: Duration,
) -> anyhow::Result<Pool<C>> {
    Ok(Pool::builder(Manager::new(options))
        .max_size(max_size)
        // The connection used last is handed out first: under light load the same few stay
        // warm (no idle pings) and the rest go idle long enough to be closed.
        .queue_mode(managed::QueueMode::Lifo)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()?)
}

/// Runs `body` on a connection from `pool`. The connection counts as settled only if `body`
/// succeeds.
pub async fn with_conn<C, T, F>(pool: &Pool<C>, body: F) -> Result<T, sqlx::Error>
where
    C: Connection,
    F: AsyncFnOnce(&mut C) -> Result<T, sqlx::Error>,
{
    let mut conn = pool.get().await.map_err(pool_error)?;
    conn.settled = false;
    let out = body(&mut conn.raw).await;
    conn.settled = out.is_ok();
    out
}

/// Closes `pool`: idle connections say goodbye to the server now, the ones in use are dropped
/// when they come back.
pub async fn close<C: Connection>(pool: &Pool<C>) {
    close_idle(pool, true).await;
    pool.close();
}

/// Closes `pool`'s connections that have been idle for [`IDLE_TIMEOUT`] (all idle ones when
/// `all`), telling the server goodbye.
pub async fn close_idle<C: Connection>(pool: &Pool<C>, all: bool) {
    let removed = pool.retain(|_, metrics| !all && metrics.last_used() < IDLE_TIMEOUT);
    for conn in removed.removed {
        // A connection that cannot say goodbye is dropped all the same.
        let _ = conn.raw.close().await;
    }
}

fn pool_error(err: managed::PoolError<sqlx::Error>) -> sqlx::Error {
    match err {
        managed::PoolError::Backend(err) => err,
        managed::PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
        managed::PoolError::Closed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Configuration(other.to_string().into()),
    }
}
