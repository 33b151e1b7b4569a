//! The HTTP surface: routes, middleware, the OpenAPI description and the mapping of errors to
//! responses. This is the only module that knows axum.

pub mod client_ip;
pub mod cursor;
pub mod error;
pub mod extract;
mod middleware;
pub mod openapi;
pub mod pages;
pub mod rate_limit;
pub mod routes;
pub mod serve;
pub mod timestamp;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Auth;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// Shared, read-only state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The auth use cases.
    pub auth: Arc<Auth>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Whether the database answers, for `/readyz`, and the pool's state, for `/metrics`.
    pub readiness: Readiness,
    /// Rate limits and the login throttle (the same one the auth service holds).
    pub limiter: Arc<Limiter>,
    /// The JWK set and discovery document; `None` under HMAC (both routes answer 404).
    pub discovery: Option<Arc<routes::discovery::Discovery>>,
}

/// Every API route, each registered together with its OpenAPI description.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(routes::auth::signup))
        .routes(routes!(routes::auth::login))
        .routes(routes!(routes::auth::me))
        .routes(routes!(routes::sessions::refresh))
        .routes(routes!(routes::sessions::logout))
        .routes(routes!(routes::sessions::logout_all))
        .routes(routes!(routes::sessions::list))
        .routes(routes!(routes::sessions::revoke))
        .routes(routes!(routes::recovery::forgot))
        .routes(routes!(
            routes::recovery::reset_page,
            routes::recovery::reset
        ))
        .routes(routes!(routes::recovery::change))
        .routes(routes!(routes::email::request_verification))
        .routes(routes!(routes::email::verify_page, routes::email::verify))
        .routes(routes!(routes::activity::activity))
        .routes(routes!(routes::admin::users::list_users))
        .routes(routes!(
            routes::admin::users::get_user,
            routes::admin::users::update_user,
            routes::admin::users::delete_user
        ))
        .routes(routes!(routes::admin::users::end_sessions))
        .routes(routes!(
            routes::admin::roles::grant_role,
            routes::admin::roles::revoke_role
        ))
        .routes(routes!(
            routes::admin::roles::list_roles,
            routes::admin::roles::create_role
        ))
        .routes(routes!(
            routes::admin::roles::replace_role,
            routes::admin::roles::delete_role
        ))
        .routes(routes!(routes::admin::audit::list_audit_events))
        .routes(routes!(routes::discovery::jwks))
        .routes(routes!(routes::discovery::openid_configuration))
        .routes(routes!(routes::health::healthz))
        .routes(routes!(routes::health::readyz))
        .routes(routes!(routes::metrics::metrics))
}

/// The whole service: the API, its documentation and the middleware.
pub fn router(
    state: AppState,
    proxies: client_ip::Proxies,
    request_timeout: Duration,
    body_read_timeout: Duration,
) -> Router {
    let (api, mut description) = api().split_for_parts();
    openapi::add_links(&mut description);
    openapi::add_rate_limit_responses(&mut description);
    let routes = api
        .with_state(state.clone())
        .merge(routes::docs::router(description))
        .fallback(middleware::not_found);
    middleware::wrap(
        routes,
        middleware::Limits {
            request_timeout,
            body_read_timeout,
            proxies: Arc::new(proxies),
        },
        state,
    )
}
