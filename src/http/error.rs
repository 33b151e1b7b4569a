//! [`ApiError`]: every error the API returns, mapped to its status and FastAPI-shaped body here
//! and nowhere else.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::auth::AuthError;
use crate::auth::tokens::TokenRejection;
use crate::domain::{FieldRule, UniqueField};
use crate::store::Refusal;

/// The body of a 401 from login: the same for an unknown account and a wrong password.
pub const BAD_LOGIN: &str = "Incorrect username or password";
/// The body of a 401 from an authenticated route, whatever was wrong with the token.
pub const BAD_TOKEN: &str = "Could not validate credentials";
/// The body of a 401 from `/auth/refresh`, whatever was wrong with the refresh token.
pub const BAD_REFRESH: &str = "Invalid refresh token";

/// The body of a 400 for a password-reset or verification token that is unknown, used or expired.
pub const BAD_ACCOUNT_TOKEN: &str = "Invalid or expired token";

/// The body of a 403 from a route whose permission the caller's roles do not grant.
pub const NOT_ENOUGH_PERMISSIONS: &str = "Not enough permissions";

/// The body of a 429 from a rate limit.
pub const TOO_MANY_REQUESTS: &str = "Too many requests";
/// The body of a 429 from the login throttle (the same for known and unknown accounts).
pub const TOO_MANY_FAILED_LOGINS: &str = "Too many failed login attempts";

/// `WWW-Authenticate` when no credentials were sent (RFC 6750 §3.1: then no error code), and on
/// the 401s of login and refresh.
pub const CHALLENGE: &str = "Bearer";
/// `WWW-Authenticate` for a genuine access token past its `exp`: the client should refresh.
pub const CHALLENGE_EXPIRED: &str =
    r#"Bearer error="invalid_token", error_description="The access token expired""#;
/// `WWW-Authenticate` for a malformed, forged or otherwise refused access token.
pub const CHALLENGE_INVALID: &str =
    r#"Bearer error="invalid_token", error_description="The access token is invalid""#;
/// `WWW-Authenticate` for a genuine access token whose session is over (or whose user is gone):
/// refreshing will not help, the user must log in again.
pub const CHALLENGE_SESSION_ENDED: &str =
    r#"Bearer error="invalid_token", error_description="The session has ended""#;

/// One entry of a 422 body, as FastAPI (pydantic) writes it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// Where the bad value is: `["body"]`, `["body", "<field>"]`, `["query", "<parameter>"]`
    /// or `["path", "<parameter>"]`.
    pub loc: Vec<String>,
    /// A sentence for people.
    pub msg: String,
    /// A code for programs.
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    /// An error about one body field.
    pub fn field(name: &str, msg: impl Into<String>, kind: &str) -> Self {
        Self::at("body", name, msg, kind)
    }

    /// An error about one query-string parameter.
    pub fn query(name: &str, msg: impl Into<String>, kind: &str) -> Self {
        Self::at("query", name, msg, kind)
    }

    /// An error about one parameter of the path (`{id}`).
    pub fn path(name: &str, msg: impl Into<String>, kind: &str) -> Self {
        Self::at("path", name, msg, kind)
    }

    fn at(place: &str, name: &str, msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: vec![place.to_owned(), name.to_owned()],
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }

    /// A domain rule that `name` broke.
    pub fn rule(name: &str, rule: &impl FieldRule) -> Self {
        Self::field(name, rule.to_string(), rule.code())
    }

    /// An error about the body as a whole (malformed JSON, wrong content type).
    pub fn body(msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: vec!["body".to_owned()],
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: the request's fields, each with what is wrong.
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    /// 401 with its `detail` and its `WWW-Authenticate` challenge (one of the `CHALLENGE*`).
    #[error("unauthorized")]
    Unauthorized {
        /// The body's `detail`.
        detail: &'static str,
        /// The `WWW-Authenticate` value.
        challenge: &'static str,
    },
    /// 400 with its `detail`.
    #[error("bad request")]
    BadRequest(&'static str),
    /// 403 with its `detail`.
    #[error("forbidden")]
    Forbidden(&'static str),
    /// 404.
    #[error("not found")]
    NotFound(&'static str),
    /// 409.
    #[error("conflict")]
    Conflict(&'static str),
    /// 413: the body is over the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 429 `Too many requests` with `Retry-After`: a rate limit's budget is spent.
    #[error("rate limited")]
    TooManyRequests {
        /// Until the request would fit.
        retry_after: Duration,
    },
    /// 429 `Too many failed login attempts` with `Retry-After`: the login throttle refused the
    /// attempt before any password check.
    #[error("login throttled")]
    LoginThrottled {
        /// Until an attempt is allowed again.
        retry_after: Duration,
    },
    /// 503 with `Retry-After`: too many password hashes are waiting.
    #[error("service busy")]
    Busy,
    /// 503: the database is not answering.
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 500: logged in full, never described to the client.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::InvalidCredentials => Self::unauthorized(BAD_LOGIN),
            AuthError::InvalidToken(why) => Self::Unauthorized {
                detail: BAD_TOKEN,
                challenge: match why {
                    TokenRejection::Expired => CHALLENGE_EXPIRED,
                    TokenRejection::Invalid => CHALLENGE_INVALID,
                    TokenRejection::SessionEnded => CHALLENGE_SESSION_ENDED,
                },
            },
            AuthError::InvalidRefreshToken => Self::unauthorized(BAD_REFRESH),
            AuthError::SessionNotFound => Self::NotFound("Session not found"),
            AuthError::InvalidAccountToken => Self::BadRequest(BAD_ACCOUNT_TOKEN),
            AuthError::EmailNotVerified => Self::Forbidden("Email not verified"),
            AuthError::EmailAlreadyVerified => Self::Conflict("Email already verified"),
            AuthError::WrongCurrentPassword => Self::BadRequest("Current password is incorrect"),
            AuthError::PasswordRefused(rule) => {
                Self::Validation(vec![FieldError::rule("new_password", &rule)])
            }
            AuthError::Forbidden => Self::Forbidden(NOT_ENOUGH_PERMISSIONS),
            AuthError::AccountDisabled => Self::Forbidden("Account disabled"),
            // Only start-up and `create-admin` ask for it; never an HTTP request.
            err @ AuthError::UnverifiedAdminAddress => Self::Unexpected(err.into()),
            AuthError::Refused(Refusal::UserNotFound) => Self::NotFound("User not found"),
            AuthError::Refused(Refusal::RoleNotFound) => Self::NotFound("Role not found"),
            AuthError::Refused(Refusal::RoleExists) => Self::Conflict("Role already exists"),
            AuthError::Refused(Refusal::BuiltinRole) => {
                Self::Conflict("Built-in roles cannot be changed")
            }
            AuthError::Refused(Refusal::LastAdmin) => {
                Self::Conflict("Cannot remove the last admin")
            }
            AuthError::Taken(UniqueField::Email) => Self::Conflict("Email already registered"),
            AuthError::Taken(UniqueField::Username) => Self::Conflict("Username already taken"),
            AuthError::Unavailable(source) => Self::Unavailable(source),
            AuthError::Busy => Self::Busy,
            AuthError::Throttled(retry_after) => Self::LoginThrottled { retry_after },
            AuthError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}

impl ApiError {
    /// Whether this is a 401.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Unauthorized { .. })
    }

    /// 401 with `detail` and the plain `Bearer` challenge.
    pub fn unauthorized(detail: &'static str) -> Self {
        Self::Unauthorized {
            detail,
            challenge: CHALLENGE,
        }
    }
}

/// The `detail` FastAPI gives for a bare status (used for 404, 405 and errors from middleware).
pub fn detail_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
        StatusCode::PAYLOAD_TOO_LARGE => "Request body too large",
        other => other.canonical_reason().unwrap_or("Error"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Validation(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "detail": errors })),
            )
                .into_response(),
            Self::Unauthorized { detail, challenge } => {
                let mut response = detail_response(StatusCode::UNAUTHORIZED, detail);
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
                response
            }
            Self::BadRequest(detail) => detail_response(StatusCode::BAD_REQUEST, detail),
            Self::Forbidden(detail) => detail_response(StatusCode::FORBIDDEN, detail),
            Self::NotFound(detail) => detail_response(StatusCode::NOT_FOUND, detail),
            Self::Conflict(detail) => detail_response(StatusCode::CONFLICT, detail),
            Self::PayloadTooLarge => plain(StatusCode::PAYLOAD_TOO_LARGE),
            Self::TooManyRequests { retry_after } => too_many(TOO_MANY_REQUESTS, retry_after),
            Self::LoginThrottled { retry_after } => too_many(TOO_MANY_FAILED_LOGINS, retry_after),
            Self::Busy => {
                let mut response = detail_response(StatusCode::SERVICE_UNAVAILABLE, "Service busy");
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            Self::Unavailable(source) => {
                // The store logs an outage once per interval; a line per request would flood.
                tracing::debug!(error = format!("{source:#}"), "database unavailable");
                plain(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::Unexpected(source) => {
                tracing::error!(error = format!("{source:#}"), "request failed");
                plain(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

fn too_many(detail: &str, wait: Duration) -> Response {
    let mut response = detail_response(StatusCode::TOO_MANY_REQUESTS, detail);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, super::rate_limit::retry_after(wait));
    response
}

fn plain(status: StatusCode) -> Response {
    detail_response(status, detail_for(status))
}

/// `{"detail": "<detail>"}` with `status`.
pub fn detail_response(status: StatusCode, detail: &str) -> Response {
    (status, Json(json!({ "detail": detail }))).into_response()
}
