//! The HTTP surface: routes, middleware and the mapping of errors to responses. This is the only
//! module that knows axum.

pub mod error;
pub mod extract;
mod middleware;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

use crate::auth::Auth;

/// Shared, read-only state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The auth use cases.
    pub auth: Arc<Auth>,
    /// How long `/readyz` waits for the database.
    pub ready_timeout: Duration,
}

/// The whole API with its middleware.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let routes = Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/auth/signup", post(routes::auth::signup))
        .route("/auth/login", post(routes::auth::login))
        .route("/auth/me", get(routes::auth::me))
        .fallback(middleware::not_found)
        .with_state(state);
    middleware::wrap(routes, request_timeout)
}
