//! The middleware stack: request ids, one log line per request (or per request the client
//! abandoned), a timeout, a body limit and deadline, and JSON bodies for the errors that layers
//! and the router produce on their own.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

use super::AppState;
use super::client_ip::{ClientIp, Proxies, resolve_client_ip};
use super::error::{detail_for, detail_response};
use super::rate_limit;
use crate::metrics::Metrics;
use crate::telemetry::{self, RequestContext};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

pub(super) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The settings the stack enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `REQUEST_TIMEOUT_SECS`.
    pub request_timeout: Duration,
    /// `HTTP_BODY_READ_TIMEOUT_SECS`.
    pub body_read_timeout: Duration,
    /// `TRUSTED_PROXIES` and `TRUSTED_PROXY_HEADER`.
    pub proxies: Arc<Proxies>,
}

/// Applies the stack to `routes` (outermost layer first).
pub fn wrap(routes: Router, limits: Limits, state: AppState) -> Router {
    let Limits {
        request_timeout,
        body_read_timeout,
        proxies,
    } = limits;
    let stack = ServiceBuilder::new()
        .map_request(drop_unsafe_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(axum::middleware::from_fn_with_state(
            proxies,
            resolve_client_ip,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            observe,
        ))
        .layer(axum::middleware::map_response(json_error_bodies))
        .layer(axum::middleware::from_fn(refuse_oversized_head))
        .layer(axum::middleware::from_fn_with_state(
            // A quarter second before the request's own deadline at the latest: a trickled body
            // gets its 408 (and the connection is closed) rather than the request timeout's 503,
            // which would win a tie.
            body_read_timeout.min(request_timeout.saturating_sub(Duration::from_millis(250))),
            body_deadline,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        // Inside `observe`, so a 429 is logged and counted like any answer, and inside the
        // timeout, so a slow limit store is bounded by the request's deadline as well as its own.
        .layer(axum::middleware::from_fn_with_state(
            state,
            rate_limit::limit,
        ))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT));
    routes.layer(stack)
}

/// 431 for a request whose head (request line and header fields, counted as sent) is over
/// [`MAX_HEAD_BYTES`](super::serve::MAX_HEAD_BYTES): hyper's own check is only approximate.
async fn refuse_oversized_head(req: Request, next: Next) -> Response {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 11;
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if line + fields > super::serve::MAX_HEAD_BYTES {
        let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        return detail_response(status, detail_for(status));
    }
    next.run(req).await
}

/// A client's `x-request-id` is echoed and logged only if it is short and plain; otherwise a
/// fresh one replaces it, so nobody can inject text into the logs through it.
fn drop_unsafe_request_id(mut req: Request) -> Request {
    let safe = req.headers().get(&REQUEST_ID).is_some_and(|v| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    if !safe {
        req.headers_mut().remove(&REQUEST_ID);
    }
    req
}

/// Gives the request's log lines its id, method and route template (never the raw URI, whose
/// query string could carry a secret), then logs its outcome in one line and counts it.
async fn observe(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let context = RequestContext {
        request_id: req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned(),
        method: req.method().as_str().to_owned(),
        route: route.clone(),
        client_ip: req
            .extensions()
            .get::<ClientIp>()
            .map_or_else(String::new, |ip| ip.0.to_string()),
    };
    telemetry::in_request(context, async move {
        let method = req.method().clone();
        let mut abandoned = Abandoned {
            metrics: &metrics,
            method: method.as_str(),
            route: &route,
            answered: false,
        };
        let response = next.run(req).await;
        abandoned.answered = true;
        let latency = started.elapsed();
        let status = response.status().as_u16();
        tracing::info!(status, latency_ms = millis(latency), "request finished");
        metrics.record_request(method.as_str(), &route, status, latency);
        response
    })
    .await
}

/// `took` in milliseconds with at most three decimals (whole microseconds), so the log shows
/// `0.412` rather than the float noise of `0.41200000000000003`.
fn millis(took: Duration) -> f64 {
    // Microseconds fit an f64 exactly for any latency a request can have (< 2^53 µs).
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX) as f64;
    micros / 1000.0
}

/// Counts and logs a request whose future is dropped before it produced a response: hyper drops
/// it when the client closes the connection, so the work it started is abandoned (item 1 of the
/// hardening issue: such requests were in no metric).
struct Abandoned<'a> {
    metrics: &'a Metrics,
    method: &'a str,
    route: &'a str,
    answered: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.metrics
                .record_request_cancelled(self.method, self.route);
            tracing::info!("request cancelled: the client went away before the response");
        }
    }
}

/// Gives the request body a deadline of `timeout` from the end of the head; a body still not
/// received by then fails to read, and the request is answered 408 `{"detail": "Request
/// Timeout"}` (and the connection closed) whatever the handler made of the read error.
async fn body_deadline(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let deadline = tokio::time::Instant::now() + timeout;
    let req = req.map(|body| {
        Body::new(DeadlineBody {
            body,
            deadline,
            sleep: None,
            expired: expired.clone(),
        })
    });
    let response = next.run(req).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    let mut response = detail_response(
        StatusCode::REQUEST_TIMEOUT,
        detail_for(StatusCode::REQUEST_TIMEOUT),
    );
    // The rest of the body may still be on its way: this connection cannot carry another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails with [`BodyTimedOut`] once its deadline passes, and says so in
/// `expired`. The timer is armed on the first read, so bodies nobody reads cost no timer.
struct DeadlineBody {
    body: Body,
    deadline: tokio::time::Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: Arc<AtomicBool>,
}

/// The error a [`DeadlineBody`] read fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        // The body first: what has already arrived is never refused, however late it is read.
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        this.expired.store(true, Ordering::Release);
        Poll::Ready(Some(Err(BodyTimedOut.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Gives error responses that are not JSON yet (axum's 405, tower-http's 413 and timeout) the
/// API's `{"detail": …}` body, keeping their headers (such as `Allow`). The HTML pages of the
/// recovery flows answer their errors in HTML on purpose (a person reads them): those are kept.
async fn json_error_bodies<B>(response: Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let status = response.status();
    let ours = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || ours {
        return response.map(axum::body::Body::new);
    }
    let (mut parts, _) = response.into_parts();
    let (json_parts, body) = detail_response(status, detail_for(status)).into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        json_parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    Response::from_parts(parts, body)
}

/// Unknown paths: 404 `{"detail": "Not Found"}`, as FastAPI answers.
pub async fn not_found() -> impl IntoResponse {
    detail_response(StatusCode::NOT_FOUND, detail_for(StatusCode::NOT_FOUND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_logged_in_milliseconds_without_float_noise() {
        // 0.412 ms computed as seconds * 1000 prints as 0.41200000000000003.
        let took = Duration::from_nanos(412_345);
        assert_eq!(millis(took).to_string(), "0.412");
        assert_eq!(millis(Duration::from_millis(2001)).to_string(), "2001");
        assert_eq!(
            millis(Duration::from_micros(30_000_001)).to_string(),
            "30000.001"
        );
    }
}
