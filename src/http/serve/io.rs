//! What one connection knows about itself, and the socket wrapper that keeps it up to date.
//!
//! [`ConnState`] says whether the connection waits for a request, is reading a request head or
//! is serving a request, and since when: the serve loop closes it when a phase lasts too long.
//! [`ConnIo`] sits between hyper and the socket. Reading, it moves the phase from idle to "head"
//! on the first byte and notes whether the head carries both `Content-Length` and
//! `Transfer-Encoding` (hyper drops the former without a word, so the service could not tell).
//! Writing, it gives hyper's own error responses (400, 414, 431 for heads it cannot parse,
//! written with an empty body) the API's `{"detail": …}` body: those are the only bodiless 4xx
//! on the wire, since every response of the service itself has a JSON body.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::http::error::detail_for;

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the first byte of a request (since it opened, or since its last response).
    Idle,
    /// Some of a request head has arrived, not all of it.
    Head,
    /// A request is with the service, or its response is being written.
    Busy,
}

#[derive(Debug)]
struct Activity {
    phase: Phase,
    since: Instant,
    served: bool,
}

/// The shared state of one connection.
#[derive(Debug)]
pub(super) struct ConnState {
    activity: Mutex<Activity>,
    both_lengths: AtomicBool,
    closing: AtomicBool,
}

impl ConnState {
    pub(super) fn new() -> Self {
        Self {
            activity: Mutex::new(Activity {
                phase: Phase::Idle,
                since: Instant::now(),
                served: false,
            }),
            both_lengths: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }
    }

    /// The server is draining: this connection closes after its current request.
    pub(super) fn close_after_request(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Whether [`Self::close_after_request`] was called.
    pub(super) fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        // A panic while holding this lock cannot leave it inconsistent: every write is one store.
        self.activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current phase, since when, and whether a request was served before.
    pub(super) fn phase(&self) -> (Phase, Instant, bool) {
        let a = self.activity();
        (a.phase, a.since, a.served)
    }

    /// The service took a request.
    pub(super) fn begin_request(&self) {
        let mut a = self.activity();
        a.phase = Phase::Busy;
        a.served = true;
    }

    /// The response was written (or abandoned): the connection waits for the next request.
    pub(super) fn end_request(&self) {
        let mut a = self.activity();
        a.phase = Phase::Idle;
        a.since = Instant::now();
    }

    /// Whether the head just parsed had both `Content-Length` and `Transfer-Encoding`.
    pub(super) fn take_both_lengths(&self) -> bool {
        self.both_lengths.swap(false, Ordering::AcqRel)
    }

    /// Bytes arrived; returns whether they start a new request head.
    fn on_bytes(&self) -> bool {
        let mut a = self.activity();
        if a.phase == Phase::Idle {
            a.phase = Phase::Head;
            a.since = Instant::now();
            true
        } else {
            false
        }
    }

    fn busy(&self) -> bool {
        self.activity().phase == Phase::Busy
    }
}

/// Finds the `Content-Length` and `Transfer-Encoding` lines of a request head as it streams in,
/// keeping only the first bytes of the current line. Requests pipelined behind another one are
/// not scanned (hyper then still lets `Transfer-Encoding` win and closes the connection).
#[derive(Debug, Default)]
struct HeadScan {
    active: bool,
    line: [u8; 20],
    len: usize,
    seen_line: bool,
    content_length: bool,
    transfer_encoding: bool,
}

impl HeadScan {
    fn start() -> Self {
        Self {
            active: true,
            ..Self::default()
        }
    }

    /// Feeds bytes; returns `Some(both)` when the head ends.
    fn feed(&mut self, bytes: &[u8]) -> Option<bool> {
        for &byte in bytes {
            if !self.active {
                return None;
            }
            if byte != b'\n' {
                if self.len < self.line.len() {
                    self.line[self.len] = byte.to_ascii_lowercase();
                    self.len += 1;
                }
                continue;
            }
            let line = &self.line[..self.len];
            let blank = line.is_empty() || line == b"\r";
            self.len = 0;
            if blank {
                // Empty lines before the request line are tolerated by hyper; after it, the
                // first empty line ends the head.
                if self.seen_line {
                    self.active = false;
                    return Some(self.content_length && self.transfer_encoding);
                }
                continue;
            }
            self.seen_line = true;
            self.content_length |= line.starts_with(b"content-length:");
            self.transfer_encoding |= line.starts_with(b"transfer-encoding:");
        }
        None
    }
}

/// The socket of one connection, as hyper sees it (see the module comment).
#[derive(Debug)]
pub(super) struct ConnIo {
    stream: TcpStream,
    state: std::sync::Arc<ConnState>,
    scan: HeadScan,
    /// A rewritten error response not yet written, and how much of it is.
    pending: Vec<u8>,
    written: usize,
    /// Set once an error was rewritten: closing then lingers (see `poll_shutdown`).
    linger: Option<Linger>,
}

/// Reading and discarding what a refused client still sends, for a while, after the error
/// response: closing a socket with unread data makes the kernel reset the connection, and the
/// client may then never read the error (nginx's "lingering close").
#[derive(Debug)]
struct Linger {
    shut_down: bool,
    drained: usize,
    until: Pin<Box<tokio::time::Sleep>>,
}

/// How long, and how many bytes, a refused client's leftover request is read and discarded.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

impl ConnIo {
    pub(super) fn new(stream: TcpStream, state: std::sync::Arc<ConnState>) -> Self {
        Self {
            stream,
            state,
            scan: HeadScan::default(),
            pending: Vec::new(),
            written: 0,
            linger: None,
        }
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.stream).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() {
            if this.state.on_bytes() {
                this.scan = HeadScan::start();
            }
            if this.scan.feed(fresh) == Some(true) {
                this.state.both_lengths.store(true, Ordering::Release);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        // hyper writes a whole head in one call (the wrapper is not vectored, so hyper flattens
        // its buffers); its own error responses are written while no request is being served.
        if !this.state.busy()
            && let Some(rewritten) = with_json_body(buf)
        {
            this.pending = rewritten;
            this.written = 0;
            this.linger = Some(Linger {
                shut_down: false,
                drained: 0,
                until: Box::pin(tokio::time::sleep(LINGER)),
            });
            // Started now and finished by the flush or shutdown that hyper always follows with.
            if let Poll::Ready(Err(err)) = this.poll_pending(cx) {
                return Poll::Ready(Err(err));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let Some(linger) = &mut this.linger else {
            return Pin::new(&mut this.stream).poll_shutdown(cx);
        };
        if !linger.shut_down {
            ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            linger.shut_down = true;
        }
        let mut scratch = [0u8; 8192];
        while linger.drained < LINGER_BYTES && linger.until.as_mut().poll(cx).is_pending() {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    linger.drained += buf.filled().len();
                }
                // The client closed its side, or reset: nothing more to wait for.
                Poll::Ready(_) => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// If `buf` is exactly a 4xx response head with `content-length: 0` (hyper's answer to a head it
/// could not parse), the same response with a JSON body and `connection: close`.
fn with_json_body(buf: &[u8]) -> Option<Vec<u8>> {
    let is_4xx_head =
        buf.starts_with(b"HTTP/1.") && buf.get(9) == Some(&b'4') && buf.ends_with(b"\r\n\r\n");
    if !is_4xx_head {
        return None;
    }
    let head = std::str::from_utf8(&buf[..buf.len() - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = StatusCode::from_bytes(status_line.get(9..12)?.as_bytes()).ok()?;
    let mut bodiless = false;
    let mut kept = String::new();
    for line in lines {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("content-length") {
            bodiless |= line[name.len()..].trim_start_matches(':').trim() == "0";
        } else if !name.eq_ignore_ascii_case("connection") {
            kept.push_str(line);
            kept.push_str("\r\n");
        }
    }
    if !bodiless {
        return None;
    }
    let body = serde_json::json!({ "detail": detail_for(status) }).to_string();
    let response = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{kept}\r\n{body}",
        body.len()
    );
    Some(response.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bodiless_431_gets_a_json_body() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 29 Nov 2026 03:00:00 GMT\r\n\r\n";
        let rewritten = String::from_utf8(with_json_body(head).expect("rewritten")).expect("utf-8");
        let (head, body) = rewritten.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ncontent-type: application/json\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        assert!(head.contains("\r\ndate: "));
        assert_eq!(body, r#"{"detail":"Request Header Fields Too Large"}"#);
    }

    #[test]
    fn responses_with_a_body_or_not_4xx_are_left_alone() {
        assert!(with_json_body(b"HTTP/1.1 404 Not Found\r\ncontent-length: 22\r\n\r\n").is_none());
        assert!(with_json_body(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(
            with_json_body(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{").is_none()
        );
    }

    #[test]
    fn the_scan_sees_both_lengths_across_reads_and_only_in_the_head() {
        let mut scan = HeadScan::start();
        assert_eq!(scan.feed(b"\r\nPOST / HTTP/1.1\r\nContent-Len"), None);
        assert_eq!(scan.feed(b"gth: 3\r\nTRANSFER-ENCODING: chunked\r\n"), None);
        assert_eq!(scan.feed(b"\r\n0\r\n\r\n"), Some(true));

        let mut scan = HeadScan::start();
        let body_lines =
            b"POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(scan.feed(body_lines), Some(false));
    }
}
