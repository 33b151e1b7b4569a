//! Serving connections: the accept loop, each connection's deadlines, the cap on open
//! connections and graceful shutdown. Replaces `axum::serve`, which has no timeouts and no cap
//! (the hardening issue's item 2: idle and slowloris sockets stayed open until the process ran
//! out of file descriptors and nobody was served).
//!
//! - A new connection must send a whole request head within `HTTP_HEADER_READ_TIMEOUT_SECS` of
//!   opening; a later request within that time of its first byte. hyper's own
//!   `header_read_timeout` is not used: it runs from the end of the previous response, so it
//!   would also be the keep-alive idle limit and `HTTP_IDLE_TIMEOUT_SECS` could not be longer.
//! - A keep-alive connection that sends nothing for `HTTP_IDLE_TIMEOUT_SECS` after a response
//!   is closed. A connection serving a request has no deadline here (`REQUEST_TIMEOUT_SECS` and
//!   `HTTP_BODY_READ_TIMEOUT_SECS` bound it in the middleware).
//! - At `HTTP_MAX_CONNECTIONS` open connections the loop stops accepting, so new ones wait in
//!   the kernel's listen backlog until a connection closes (the timeouts above guarantee one
//!   does); the cap is lowered to fit the open-file limit, which is raised to its hard limit.

mod io;
mod service;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use self::io::{ConnIo, ConnState, Phase};
use self::service::ConnService;
use crate::config::HttpSettings;
use crate::metrics::{CloseReason, Metrics};

/// File descriptors kept free for everything but client connections: the listener, the
/// runtime, stdio, the signing-key file and slack; the database pool is added on top.
const RESERVED_FILES: u64 = 64;

/// Largest request head (request line and header fields); a larger one gets 431. hyper's
/// default (408 KiB) would let 10,000 slow connections pin 4 GiB of buffers; a bearer token and
/// the usual headers take under 2 KiB. hyper checks its read buffer against this only after a
/// read, and the buffer grows in doubling steps, so a head that arrives in large reads can pass
/// hyper at up to twice this; the middleware then refuses it at exactly this size.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header fields in a request; more get 431.
const MAX_HEADERS: usize = 100;

/// Deadlines and the cap that the serve loop applies to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// See [`HttpSettings::header_read_timeout`].
    pub header_read_timeout: Duration,
    /// See [`HttpSettings::idle_timeout`].
    pub idle_timeout: Duration,
    /// Most connections open at once, already fitted to the open-file limit.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// Raises the soft open-file limit to the hard limit, and lowers `HTTP_MAX_CONNECTIONS` (with
    /// a warning) if it would leave no room for the database pool (`db_connections`: each one
    /// can hold up to three files on SQLite) and the service's own files.
    pub fn fitted(http: &HttpSettings, db_connections: u32) -> Self {
        let files = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(files) => Some(files),
            // A hard limit of "unlimited" cannot be the soft one: keep what we have.
            Err(_) => rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft),
        };
        let mut max_connections = http.max_connections;
        if let Some(files) = files {
            let room = files
                .saturating_sub(RESERVED_FILES + 3 * u64::from(db_connections))
                .max(1);
            if u64::try_from(max_connections).unwrap_or(u64::MAX) > room {
                max_connections = usize::try_from(room).unwrap_or(usize::MAX);
                tracing::warn!(
                    requested = http.max_connections,
                    max_connections,
                    open_file_limit = files,
                    "HTTP_MAX_CONNECTIONS lowered to fit the open-file limit"
                );
            }
        }
        Self {
            header_read_timeout: http.header_read_timeout,
            idle_timeout: http.idle_timeout,
            max_connections,
        }
    }
}

/// What every connection task shares.
struct Shared {
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    header_timeouts_log: Every,
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, lets every
/// request in flight finish and returns once all connections are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shared = Arc::new(Shared {
        router,
        limits,
        metrics,
        header_timeouts_log: Every::new(Duration::from_secs(10)),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let (all_closed, open) = watch::channel(());
    let (cap_log, accept_error_log) = (
        Every::new(Duration::from_secs(60)),
        Every::new(Duration::from_secs(10)),
    );
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                shared.metrics.record_connection_limit_reached();
                if let Some(times) = cap_log.ready() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        times_since_last_line = times + 1,
                        "connection limit reached: new connections wait in the listen backlog"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of files or memory: back off instead of spinning on the error.
                    if accept_error_log.ready().is_some() {
                        tracing::error!(error = %err, "cannot accept connections");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::new());
        let service = ConnService {
            router: shared.router.clone(),
            peer,
            state: state.clone(),
        };
        let conn =
            builder.serve_connection(TokioIo::new(ConnIo::new(stream, state.clone())), service);
        shared.metrics.record_connections_open(1);
        let task = Connection {
            shared: shared.clone(),
            state,
            stopping: stopping.clone(),
            _open: open.clone(),
            _slot: slot,
        };
        tokio::spawn(task.run(conn));
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    all_closed.closed().await;
}

/// One connection's task: the hyper connection under its deadlines.
struct Connection {
    shared: Arc<Shared>,
    state: Arc<ConnState>,
    stopping: watch::Receiver<bool>,
    /// Held until the connection closes: shutdown waits for every one to be dropped.
    _open: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Connection {
    // In `Drop`, so a connection whose task panicked is not counted as open forever.
    fn drop(&mut self) {
        self.shared.metrics.record_connections_open(-1);
    }
}

impl Connection {
    async fn run(mut self, conn: http1::Connection<TokioIo<ConnIo>, ConnService>) {
        let metrics = self.shared.metrics.clone();
        tokio::pin!(conn);
        // The deadlines are checked by one timer, not re-armed at every phase change (that cost
        // two wake-ups and two timer-wheel updates per request). Every deadline lies at least
        // `step` after the start of its phase, so a check at most `step` after the previous one
        // is never late: a phase that began after a check ends no earlier than that check plus
        // `step`, and one the check saw is re-armed at its own deadline.
        let step = self
            .shared
            .limits
            .header_read_timeout
            .min(self.shared.limits.idle_timeout);
        let check = tokio::time::sleep(step);
        tokio::pin!(check);
        let mut shutting_down = false;
        let closed_for = loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    break None;
                }
                () = check.as_mut() => match self.overdue() {
                    Ok(reason) => break Some(reason),
                    Err(deadline) => {
                        let next = Instant::now() + step;
                        let at = deadline.map_or(next, |deadline| deadline.min(next));
                        check.as_mut().reset(at.into());
                    }
                },
                _ = self.stopping.changed(), if !shutting_down => {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        match closed_for {
            Some(CloseReason::HeaderTimeout) => {
                metrics.record_connection_closed(CloseReason::HeaderTimeout);
                if let Some(more) = self.shared.header_timeouts_log.ready() {
                    tracing::info!(
                        closed = more + 1,
                        "closed connections that sent no whole request head within HTTP_HEADER_READ_TIMEOUT_SECS"
                    );
                }
            }
            Some(CloseReason::IdleTimeout) => {
                metrics.record_connection_closed(CloseReason::IdleTimeout);
                tracing::debug!("closed a keep-alive connection idle for HTTP_IDLE_TIMEOUT_SECS");
            }
            None => {}
        }
    }

    /// The reason to close the connection now, or its next deadline (none while serving).
    fn overdue(&self) -> Result<CloseReason, Option<Instant>> {
        let limits = self.shared.limits;
        let (phase, since, served) = self.state.phase();
        let (deadline, reason) = match phase {
            Phase::Idle if served => (since + limits.idle_timeout, CloseReason::IdleTimeout),
            Phase::Idle | Phase::Head => (
                since + limits.header_read_timeout,
                CloseReason::HeaderTimeout,
            ),
            // Serving: no deadline until the response is written.
            Phase::Busy => return Err(None),
        };
        if Instant::now() >= deadline {
            Ok(reason)
        } else {
            Err(Some(deadline))
        }
    }
}

/// Lets a log line through at most once per period, counting the ones held back, so an attack
/// cannot flood the log (one line per connection would).
struct Every {
    period: Duration,
    last: Mutex<Option<(Instant, u64)>>,
}

impl Every {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: Mutex::new(None),
        }
    }

    /// `Some(held back since the last line)` if a line may be logged now.
    fn ready(&self) -> Option<u64> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, held)) = last.as_mut()
            && at.elapsed() < self.period
        {
            *held += 1;
            return None;
        }
        let held = last.map_or(0, |(_, held)| held);
        *last = Some((Instant::now(), 0));
        Some(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_fitted_below_the_raised_file_limit() {
        let http = HttpSettings {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 1_000_000,
        };

        // Start from a soft limit below the hard one (lowering needs no privilege).
        let (_, hard) = rlimit::Resource::NOFILE.get().expect("the file limits");
        rlimit::Resource::NOFILE
            .set(hard.min(1024), hard)
            .expect("lower the soft limit");

        let limits = ConnectionLimits::fitted(&http, 10);

        let (soft, hard) = rlimit::Resource::NOFILE.get().expect("the file limits");
        assert!(
            soft == hard || hard == rlimit::INFINITY,
            "soft {soft}, hard {hard}"
        );
        let room = soft.saturating_sub(RESERVED_FILES + 30).max(1);
        let expected = room.min(1_000_000);
        assert_eq!(
            u64::try_from(limits.max_connections).expect("fits"),
            expected
        );
    }
}
