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
//!
//! Shutdown drains, so that a rolling restart behind a load balancer fails no request:
//! 1. the connections the kernel has already queued are accepted (a balancer has sent them a
//!    request, and closing the listener would reset them), then the listener is closed, so new
//!    connections are refused and the balancer sends them to another replica;
//! 2. every open connection finishes the request it is on (answered with `Connection: close`);
//!    an idle keep-alive connection is closed, and one that was accepted but has not yet sent
//!    its first byte, or is part-way through sending a request head, is given the time to send
//!    that request (its header deadline) rather than being closed under it;
//! 3. after `SHUTDOWN_GRACE_SECS`, whatever is still open is closed, and `serve` returns.

mod io;
mod service;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
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

/// How often a draining connection that has not sent its first byte is looked at.
const DRAIN_POLL: Duration = Duration::from_millis(20);

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

/// What the serve loop tells its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Serving,
    /// Finish the request in flight, then close.
    Draining,
    /// The grace period is over: close now.
    Closing,
}

/// Serves `router` on `listener` until `shutdown` completes; then drains (see the module
/// comment) for at most `grace` and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shared = Arc::new(Shared {
        router,
        limits,
        metrics,
        header_timeouts_log: Every::new(Duration::from_secs(10)),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(Stop::Serving);
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
        let conn = Spawner {
            builder: &builder,
            shared: &shared,
            stopping: &stopping,
            open: &open,
        };
        conn.spawn(stream, peer, slot);
    }
    // Take what the kernel has queued before closing the listener, which would reset it. These
    // connections are served like the others: each may send its request and gets its answer.
    let queued = match listener.into_std() {
        Ok(listener) => {
            let mut queued = 0usize;
            while let Ok(slot) = slots.clone().try_acquire_owned() {
                let (stream, peer) = match listener.accept() {
                    Ok(accepted) => accepted,
                    // A client that gave up while queued: the next one may still be waiting.
                    Err(err)
                        if matches!(
                            err.kind(),
                            std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue;
                    }
                    // WouldBlock: the queue is empty (or the listener failed: nothing to take).
                    Err(_) => break,
                };
                let Ok(stream) = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream))
                else {
                    continue;
                };
                Spawner {
                    builder: &builder,
                    shared: &shared,
                    stopping: &stopping,
                    open: &open,
                }
                .spawn(stream, peer, slot);
                queued += 1;
            }
            queued
        }
        Err(_) => 0,
    };
    // Dropped here: new connections are refused from now on.
    let _ = stop.send(Stop::Draining);
    drop(open);
    let in_flight = limits.max_connections - slots.available_permits();
    tracing::info!(
        open_connections = in_flight,
        queued_connections_taken = queued,
        grace_secs = grace.as_secs(),
        "stopped accepting; finishing requests in flight"
    );
    if tokio::time::timeout(grace, all_closed.closed())
        .await
        .is_err()
    {
        let still_open = limits.max_connections - slots.available_permits();
        tracing::warn!(
            still_open,
            "SHUTDOWN_GRACE_SECS is over: closing the connections still open"
        );
        let _ = stop.send(Stop::Closing);
        all_closed.closed().await;
    }
}

/// Starts the task of one accepted connection.
struct Spawner<'a> {
    builder: &'a http1::Builder,
    shared: &'a Arc<Shared>,
    stopping: &'a watch::Receiver<Stop>,
    open: &'a watch::Receiver<()>,
}

impl Spawner<'_> {
    fn spawn(self, stream: TcpStream, peer: std::net::SocketAddr, slot: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::new());
        let service = ConnService {
            router: self.shared.router.clone(),
            peer,
            state: state.clone(),
        };
        let conn = self
            .builder
            .serve_connection(TokioIo::new(ConnIo::new(stream, state.clone())), service);
        self.shared.metrics.record_connections_open(1);
        let task = Connection {
            shared: self.shared.clone(),
            state,
            stopping: self.stopping.clone(),
            _open: self.open.clone(),
            _slot: slot,
        };
        tokio::spawn(task.run(conn));
    }
}

/// One connection's task: the hyper connection under its deadlines.
struct Connection {
    shared: Arc<Shared>,
    state: Arc<ConnState>,
    stopping: watch::Receiver<Stop>,
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
        // Draining: `graceful_shutdown` once the connection has a request (see
        // `awaits_request_head`).
        let mut draining = false;
        let mut shut = false;
        let closed_for = loop {
            if draining && !shut && !self.awaits_request_head() {
                shut = true;
                conn.as_mut().graceful_shutdown();
            }
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
                        // While a drained connection waits for its first byte, look often.
                        let step = if draining && !shut { DRAIN_POLL } else { step };
                        let next = Instant::now() + step;
                        let at = deadline.map_or(next, |deadline| deadline.min(next));
                        check.as_mut().reset(at.into());
                    }
                },
                changed = self.stopping.changed() => {
                    let stop = if changed.is_ok() { *self.stopping.borrow_and_update() } else { Stop::Closing };
                    match stop {
                        Stop::Serving => {}
                        Stop::Draining => {
                            draining = true;
                            self.state.close_after_request();
                            check.as_mut().reset((Instant::now() + DRAIN_POLL).into());
                        }
                        Stop::Closing => break None,
                    }
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

    /// Whether the connection is waiting for a request head it was promised: it was accepted but
    /// has not sent a byte yet, or part of a head has arrived. hyper's `graceful_shutdown`
    /// closes such a connection at once (its keep-alive state is idle until a whole head is
    /// parsed), while the client (a load balancer that connected just before the listener
    /// closed) is sending its request: closed under it, a POST could not be retried elsewhere.
    /// It keeps its header deadline instead, and is shut once the request is in.
    fn awaits_request_head(&self) -> bool {
        let (phase, _, served) = self.state.phase();
        phase == Phase::Head || (phase == Phase::Idle && !served)
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
