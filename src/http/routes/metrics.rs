//! `GET /metrics`: the OpenMetrics 1.0 text exposition, served with its own media type (the body
//! is OpenMetrics, so calling it `text/plain; version=0.0.4` would make a Prometheus server parse
//! it as the classic format and lose the types). One format only: every Prometheus since 2.5
//! asks for OpenMetrics first, so there is nothing to negotiate.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::http::AppState;
use crate::metrics::CONTENT_TYPE;

/// Request counts and latencies by route, logins by outcome, bcrypt time, pool connections and
/// build info.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics (OpenMetrics 1.0 text)",
    responses((status = 200, description = "OpenMetrics 1.0 text exposition, ending in `# EOF`", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.metrics.render(state.readiness.pool_stats());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}
