//! The middleware stack: request ids, one log line per request, a timeout, a body limit, and
//! JSON bodies for the errors that layers and the router produce on their own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

use super::error::{detail_for, detail_response};
use crate::metrics::Metrics;
use crate::telemetry::{self, RequestContext};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Applies the stack to `routes` (outermost layer first).
pub fn wrap(routes: Router, request_timeout: Duration, metrics: Arc<Metrics>) -> Router {
    let stack = ServiceBuilder::new()
        .map_request(drop_unsafe_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(axum::middleware::from_fn_with_state(metrics, observe))
        .layer(axum::middleware::map_response(json_error_bodies))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT));
    routes.layer(stack)
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
    };
    telemetry::in_request(context, async move {
        let method = req.method().clone();
        let response = next.run(req).await;
        let latency = started.elapsed();
        let status = response.status().as_u16();
        tracing::info!(
            status,
            latency_ms = latency.as_secs_f64() * 1000.0,
            "request finished"
        );
        metrics.record_request(method.as_str(), &route, status, latency);
        response
    })
    .await
}

/// Gives error responses that are not JSON yet (axum's 405, tower-http's 413 and timeout) the
/// API's `{"detail": …}` body, keeping their headers (such as `Allow`).
async fn json_error_bodies<B>(response: Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
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
