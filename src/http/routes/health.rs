//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::openapi::ErrorDetail;

/// `GET /healthz`: 200 while the process runs and serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process is serving", example = json!({ "status": "ok" })))
)]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the database answers a query, else 503.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    responses(
        (status = 200, description = "The database answers", example = json!({ "status": "ready", "database": "postgres" })),
        (status = 503, description = "The database does not answer", body = ErrorDetail,
            example = json!({ "detail": "Service unavailable" })),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let database = state
        .readiness
        .check()
        .await
        .map_err(ApiError::Unavailable)?;
    Ok((
        StatusCode::OK,
        Json(json!({ "status": "ready", "database": database })),
    )
        .into_response())
}
