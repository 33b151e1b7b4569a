//! `/auth/refresh`, `/auth/logout`, `/auth/logout-all` and `/auth/sessions`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::auth::ClientInfo;
use crate::domain::{Session, SessionId};
use crate::http::AppState;
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{CurrentUser, JsonOrFormFields};
use crate::http::openapi::{ErrorDetail, ValidationError};
use crate::http::routes::auth::{TokenResponse, token_response};
use crate::http::timestamp;

/// `POST /auth/refresh` request (documentation only).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    #[schema(
        example = "crg_rt_3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        min_length = 1
    )]
    refresh_token: String,
}

/// The OAuth2 refresh-token grant form (RFC 6749 §6), as OAuth2 clients send it.
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct RefreshForm {
    /// Optional; when present it must be `refresh_token`.
    #[schema(pattern = "^refresh_token$", nullable = false)]
    grant_type: Option<String>,
    /// The refresh token from the last login or refresh.
    #[schema(min_length = 1)]
    refresh_token: String,
}

/// One of the caller's active sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    /// Session id (the `sid` claim of its access tokens).
    id: i64,
    /// When the session began (login).
    #[serde(serialize_with = "timestamp::serialize")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-26T14:37:50.000000Z")]
    created_at: OffsetDateTime,
    /// The last login or refresh.
    #[serde(serialize_with = "timestamp::serialize")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-26T14:37:50.000000Z")]
    last_used_at: OffsetDateTime,
    /// `User-Agent` at login.
    user_agent: Option<String>,
    /// Client address at login.
    ip: Option<String>,
    /// Whether this is the session of the token making the request.
    current: bool,
}

impl SessionResponse {
    fn new(session: Session, current: SessionId) -> Self {
        Self {
            id: session.id.get(),
            created_at: session.created_at,
            last_used_at: session.last_used_at,
            user_agent: session.user_agent,
            ip: session.ip,
            current: session.id == current,
        }
    }
}

/// Rotate a refresh token.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "sessions",
    summary = "Exchange a refresh token for new tokens",
    description = "The presented token is used up and a new one returned. Presenting it again \
        within the grace window (REFRESH_TOKEN_GRACE_SECS) returns the same pair, so tabs \
        refreshing at once are not logged out; presenting it later revokes its session. \
        Send JSON `{\"refresh_token\": …}` or, as OAuth2 clients do, the form \
        `grant_type=refresh_token&refresh_token=…`.",
    request_body(content(
        (RefreshRequest = "application/json"),
        (RefreshForm = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "New access and refresh tokens", body = TokenResponse),
        (status = 401, description = "Unknown, reused or expired refresh token, or ended session", body = ErrorDetail,
            example = json!({ "detail": "Invalid refresh token" })),
        (status = 422, description = "Missing, empty or malformed refresh_token, or a grant_type other than refresh_token", body = ValidationError),
        (status = 503, description = "Database unavailable", body = ErrorDetail),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    JsonOrFormFields(mut fields): JsonOrFormFields,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let token = fields.required("refresh_token", &mut errors);
    if token.as_deref() == Some("") {
        errors.push(FieldError::field(
            "refresh_token",
            "String should have at least 1 character",
            "string_too_short",
        ));
    }
    if let Some(grant) = fields.optional("grant_type", &mut errors)
        && grant != "refresh_token"
    {
        errors.push(FieldError::field(
            "grant_type",
            "String should match pattern '^refresh_token$'",
            "string_pattern_mismatch",
        ));
    }
    let (Some(token), true) = (token, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let tokens = state.auth.refresh(&token, &client).await?;
    Ok(token_response(&tokens))
}

/// End the current session.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "sessions",
    summary = "Log out: end this session",
    security(("OAuth2PasswordBearer" = []), ("bearerAuth" = [])),
    responses(
        (status = 204, description = "The session is revoked; its access and refresh tokens stop working at once"),
        (status = 401, description = "Invalid access token", body = ErrorDetail),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    current: CurrentUser,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .logout(current.user.id, current.session, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End every session of the caller.
#[utoipa::path(
    post,
    path = "/auth/logout-all",
    tag = "sessions",
    summary = "Log out everywhere",
    security(("OAuth2PasswordBearer" = []), ("bearerAuth" = [])),
    responses(
        (status = 204, description = "Every session of the user is revoked"),
        (status = 401, description = "Invalid access token", body = ErrorDetail),
    )
)]
pub async fn logout_all(
    State(state): State<AppState>,
    client: ClientInfo,
    current: CurrentUser,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .revoke_all_sessions(current.user.id, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's active sessions.
#[utoipa::path(
    get,
    path = "/auth/sessions",
    tag = "sessions",
    summary = "List my active sessions",
    security(("OAuth2PasswordBearer" = []), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "Active sessions, oldest first", body = [SessionResponse]),
        (status = 401, description = "Invalid access token", body = ErrorDetail),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<Vec<SessionResponse>>, ApiError> {
    let rows = state.auth.sessions_of(current.user.id).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| SessionResponse::new(row, current.session))
            .collect(),
    ))
}

/// End one of the caller's sessions.
#[utoipa::path(
    delete,
    path = "/auth/sessions/{id}",
    tag = "sessions",
    summary = "End one of my sessions",
    params(("id" = i64, Path, description = "Session id")),
    security(("OAuth2PasswordBearer" = []), ("bearerAuth" = [])),
    responses(
        (status = 204, description = "The session is revoked"),
        (status = 401, description = "Invalid access token", body = ErrorDetail),
        (status = 404, description = "No such active session of yours", body = ErrorDetail,
            example = json!({ "detail": "Session not found" })),
        (status = 422, description = "The id is not an integer", body = ValidationError),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    client: ClientInfo,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::Validation(vec![FieldError {
            loc: vec!["path".to_owned(), "id".to_owned()],
            msg: "Input should be a valid integer".to_owned(),
            kind: "int_parsing".to_owned(),
        }])
    })?;
    state
        .auth
        .revoke_session(current.user.id, SessionId::new(id), &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
