//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::AppState;
use crate::http::error::ApiError;

/// `GET /healthz`: 200 while the process runs and serves HTTP.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the database answers a query, else 503.
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let db = state.auth.db();
    match tokio::time::timeout(state.ready_timeout, db.ping()).await {
        Ok(Ok(())) => Ok((
            StatusCode::OK,
            Json(json!({ "status": "ready", "database": db.kind() })),
        )
            .into_response()),
        Ok(Err(err)) => Err(ApiError::Unavailable(err.into())),
        Err(_) => Err(ApiError::Unavailable(anyhow::anyhow!(
            "database did not answer within {:?}",
            state.ready_timeout
        ))),
    }
}
