//! The connection pool: deadpool holding sqlx connections, with a deadline on every use.
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
//!
//! Every use is bounded, because a frozen database (its processes stopped, a network partition
//! that drops packets) does not refuse anything: the socket just stays silent, and without a
//! deadline a request waits as long as the freeze lasts. So:
//!
//! - getting a connection (waiting for a free one, then pinging or opening one) has one deadline,
//!   the acquire timeout, over all of it: deadpool's own timeouts apply to each step, and a
//!   request that met several silent idle connections in a row used to wait for each ping in
//!   turn. A ping or an open cut off by a deadline drops that connection (deadpool discards an
//!   object whose recycling did not finish), so a hung connection is never handed out again;
//! - the use itself has the query deadline: the server's `statement_timeout` plus
//!   [`DEADLINE_GRACE`], so that on a database that merely runs slowly the server cancels the
//!   statement first (the connection stays usable) and the client's deadline only fires when
//!   the server cannot answer at all. A use cut off by it is taken out of the pool and dropped
//!   rather than pinged later: its exchange is half-done on a connection nobody can vouch for.
//!
//! A request's wait for one use is therefore at most acquire timeout + query timeout +
//! [`DEADLINE_GRACE`]; it then gets 503. Failures of that kind are logged once per interval by
//! [`OutageLog`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use deadpool::managed::{self, Metrics, Object, RecycleError, RecycleResult};
use sqlx::{ConnectOptions, Connection};

use super::StoreError;
use crate::outage::{self, OutageLog};

/// A connection idle for longer than this is pinged before it is handed out.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);
/// Connections are replaced after this long, so none lives forever (failovers, leaks).
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Idle connections are closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How much longer than the query timeout the client waits for a use, so that the server's own
/// `statement_timeout` fires first whenever the server is running at all.
pub const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// How long the parts of one use may take.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Getting a connection: waiting, pinging, opening.
    pub acquire: Duration,
    /// Running the use's statements (the query timeout; [`DEADLINE_GRACE`] is added).
    pub query: Duration,
}

/// A pool of `C` connections whose every use is bounded by its [`Deadlines`].
pub struct Pool<C: Connection> {
    inner: managed::Pool<Manager<C>>,
    deadlines: Deadlines,
    database: &'static str,
    outage: Arc<OutageLog>,
    /// PostgreSQL without a statement cache: every use runs in a transaction (see
    /// [`Pool::with_pg`]).
    pin_statements: bool,
}

impl<C: Connection> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            deadlines: self.deadlines,
            database: self.database,
            outage: self.outage.clone(),
            pin_statements: self.pin_statements,
        }
    }
}

/// Opens and checks `C` connections for [`Pool`].
#[derive(Debug)]
pub struct Manager<C: Connection> {
    options: C::Options,
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

impl<C: Connection> Pool<C> {
    /// A pool of at most `max_size` connections to `database` (its name, for logs) opened with
    /// `options`.
    pub fn build(
        options: C::Options,
        max_size: usize,
        deadlines: Deadlines,
        database: &'static str,
    ) -> anyhow::Result<Self> {
        let inner = managed::Pool::builder(Manager { options })
            .max_size(max_size)
            // The connection used last is handed out first: under light load the same few stay
            // warm (no idle pings) and the rest go idle long enough to be closed.
            .queue_mode(managed::QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(deadlines.acquire))
            .create_timeout(Some(deadlines.acquire))
            .recycle_timeout(Some(deadlines.acquire))
            .build()?;
        Ok(Self {
            inner,
            deadlines,
            database,
            outage: Arc::new(OutageLog::default()),
            pin_statements: false,
        })
    }

    /// With `pin`, every [`Pool::with_pg`] use runs inside a transaction.
    pub fn pinning_statements(mut self, pin: bool) -> Self {
        self.pin_statements = pin;
        self
    }

    /// Runs `body` on a connection, within the [`Deadlines`]. The connection counts as settled
    /// only if `body` succeeds; one whose `body` ran out of time is dropped.
    pub async fn with_conn<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut C) -> Result<T, sqlx::Error>,
    {
        let out = self.use_conn(body).await;
        let database = self.database;
        match &out {
            Err(StoreError::Unavailable(err)) => {
                if let Some(failures) = self.outage.failed() {
                    tracing::warn!(
                        database,
                        failures,
                        error = format!("{err:#}"),
                        "database unavailable; requests get 503 (logged at most every {}s)",
                        outage::INTERVAL.as_secs()
                    );
                }
            }
            _ => {
                if let Some(back) = self.outage.answered() {
                    tracing::info!(
                        database,
                        unreported_failures = back.unreported_failures,
                        outage_ms = outage::millis(back.outage),
                        "database answering again"
                    );
                }
            }
        }
        out
    }

    async fn use_conn<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut C) -> Result<T, sqlx::Error>,
    {
        let mut conn = self.acquire().await?;
        conn.settled = false;
        let deadline = self.deadlines.query + DEADLINE_GRACE;
        match tokio::time::timeout(deadline, body(&mut conn.raw)).await {
            Ok(out) => {
                conn.settled = out.is_ok();
                Ok(out?)
            }
            Err(_) => {
                // Not back into the pool: dropping the connection closes its socket, and the
                // server rolls back whatever it had open once it runs again.
                drop(Object::take(conn));
                Err(StoreError::Unavailable(anyhow!(
                    "the {} database did not answer within {deadline:?}",
                    self.database
                )))
            }
        }
    }

    /// Runs `body` on a connection without the query deadline: for migrations, which may
    /// rightly run longer than any request's query. With `close_after` the connection is closed
    /// afterwards instead of going back to the pool, for a `body` that changed session settings
    /// no request should inherit. (SQLite keeps it: an in-memory database lives only as long as
    /// one of its connections.)
    pub async fn with_conn_unbounded<T, F>(
        &self,
        close_after: bool,
        body: F,
    ) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut C) -> Result<T, sqlx::Error>,
    {
        let mut conn = self.acquire().await?;
        conn.settled = false;
        let out = body(&mut conn.raw).await;
        conn.settled = out.is_ok();
        if close_after {
            // A connection that cannot say goodbye is dropped all the same.
            let _ = Object::take(conn).raw.close().await;
        }
        Ok(out?)
    }

    async fn acquire(&self) -> Result<Object<Manager<C>>, StoreError> {
        match tokio::time::timeout(self.deadlines.acquire, self.inner.get()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(managed::PoolError::Backend(err))) => Err(err.into()),
            Ok(Err(managed::PoolError::Closed)) => Err(StoreError::Unavailable(anyhow!(
                "the connection pool is closed"
            ))),
            Ok(Err(managed::PoolError::Timeout(_))) | Err(_) => {
                Err(StoreError::Unavailable(anyhow!(
                    "no {} connection within {:?}",
                    self.database,
                    self.deadlines.acquire
                )))
            }
            Ok(Err(other)) => Err(StoreError::Unexpected(
                anyhow::Error::new(other).context("connection pool failed"),
            )),
        }
    }

    /// Open connections and idle ones.
    pub fn status(&self) -> managed::Status {
        self.inner.status()
    }

    /// Closes the pool: idle connections say goodbye to the server now, the ones in use are
    /// dropped when they come back.
    pub async fn close(&self) {
        self.close_idle(true).await;
        self.inner.close();
    }

    /// Closes the connections that have been idle for [`IDLE_TIMEOUT`] (all idle ones when
    /// `all`), telling the server goodbye.
    pub async fn close_idle(&self, all: bool) {
        let removed = self
            .inner
            .retain(|_, metrics| !all && metrics.last_used() < IDLE_TIMEOUT);
        for conn in removed.removed {
            // A connection that cannot say goodbye is dropped all the same.
            let _ = conn.raw.close().await;
        }
    }
}

impl Pool<sqlx::PgConnection> {
    /// [`Pool::with_conn`] for PostgreSQL. With pinned statements (no statement cache, for a
    /// transaction-pooling PgBouncer without `max_prepared_statements`), `body` runs inside a
    /// transaction of its own: sqlx parses an unnamed statement and binds it in two exchanges,
    /// and only an open transaction keeps the pooler from handing the second to another server
    /// connection, which never saw the first. A transaction `body` begins itself becomes a
    /// savepoint inside it.
    pub async fn with_pg<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, sqlx::Error>,
    {
        if !self.pin_statements {
            return self.with_conn(body).await;
        }
        self.with_conn(async |conn: &mut sqlx::PgConnection| {
            let mut tx = sqlx::Connection::begin(conn).await?;
            let out = body(&mut tx).await?;
            tx.commit().await?;
            Ok(out)
        })
        .await
    }
}
