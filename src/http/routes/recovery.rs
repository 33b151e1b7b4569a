//! `/auth/password/forgot`, `/auth/password/reset` (the page and its post) and
//! `/auth/password/change`.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use secrecy::SecretString;
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::auth::ClientInfo;
use crate::domain::Email;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{CurrentUser, JsonFields, JsonOrFormFields, check};
use crate::http::openapi::{Detail, ErrorDetail, ValidationError};
use crate::http::pages;
use crate::http::rate_limit::{self, Checked};
use crate::limits::{self, Rule};

/// The body of every 202 from `POST /auth/password/forgot`, known address or not.
pub const FORGOT_ACCEPTED: &str = "If an account exists for that email, a reset link has been sent";

/// `POST /auth/password/forgot` request (documentation only).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct ForgotPasswordRequest {
    /// The account's email address.
    #[schema(example = "ada@example.com", format = Email, max_length = 254)]
    email: String,
}

/// `POST /auth/password/reset` with JSON (documentation only).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct ResetPasswordRequest {
    /// The token from the reset link (`crg_pr_…`).
    #[schema(example = "crg_pr_3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    token: String,
    /// The new password: the sign-up policy applies (at least 8 characters, at most 72 bytes,
    /// not common, not the username or email).
    #[schema(example = "correct horse battery", format = Password)]
    new_password: String,
}

/// `POST /auth/password/reset` from the reset page's form (documentation only).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct ResetPasswordForm {
    /// The token from the reset link.
    token: String,
    /// The new password.
    #[schema(format = Password)]
    new_password: String,
    /// The new password again; it must match.
    #[schema(format = Password)]
    confirm_password: String,
}

/// `POST /auth/password/change` request (documentation only).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct ChangePasswordRequest {
    /// The password the account has now.
    #[schema(format = Password)]
    current_password: String,
    /// The new password: the sign-up policy applies.
    #[schema(example = "correct horse battery", format = Password)]
    new_password: String,
}

/// `{"detail": …}` with `status`.
pub fn accepted(detail: &str) -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "detail": detail }))).into_response()
}

/// `POST /auth/password/forgot`: 202 for every well-formed address, known or not.
#[utoipa::path(
    post,
    operation_id = "forgot_password",
    path = "/auth/password/forgot",
    tag = "account",
    summary = "Ask for a password reset link",
    description = "Mails a single-use link to reset the password, valid for \
        PASSWORD_RESET_TTL_SECS (1 hour by default), if an account has this address; asking \
        again invalidates the earlier link. The answer is the same whether or not an account \
        exists, and comes at once: the mail is queued, not sent inline.",
    request_body(content = ForgotPasswordRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted (the same answer for every well-formed address)", body = Detail,
            example = json!({ "detail": FORGOT_ACCEPTED })),
        (status = 413, description = "Body over 64 KiB", body = ErrorDetail),
        (status = 422, description = "Missing or malformed email (as at sign-up)", body = ValidationError),
        (status = 503, description = "Database unavailable", body = ErrorDetail,
            example = json!({ "detail": "Service unavailable" })),
    )
)]
pub async fn forgot(
    State(state): State<AppState>,
    client: ClientInfo,
    checked: Option<Extension<Checked>>,
    JsonFields(mut fields): JsonFields,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let email = fields
        .required("email", &mut errors)
        .and_then(|raw| check("email", Email::parse(&raw), &mut errors));
    let (Some(email), true) = (email, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let checked = checked.map(|Extension(checked)| checked);
    rate_limit::check(
        &state,
        checked.as_ref(),
        Rule::RecoveryAccount,
        &limits::login_key(email.as_str()),
    )
    .await?;
    state.auth.forgot_password(&email, &client).await?;
    Ok(accepted(FORGOT_ACCEPTED))
}

/// `GET /auth/password/reset?token=…`: the reset form (the token is not used up).
#[utoipa::path(
    get,
    operation_id = "reset_password_page",
    path = "/auth/password/reset",
    tag = "account",
    summary = "The password reset page (the link in the mail)",
    description = "A small HTML form (new password twice) that posts to `POST \
        /auth/password/reset`. Opening it never uses the token up, so mail scanners that \
        fetch links do no harm.",
    params(("token" = String, Query, description = "The token from the mail's link")),
    responses(
        (status = 200, description = "The form", body = String, content_type = "text/html",
            headers(
                ("cache-control" = String, description = "no-store"),
                ("referrer-policy" = String, description = "no-referrer"),
            )),
        (status = 400, description = "Missing, unknown, used or expired token: a page saying so", body = String, content_type = "text/html"),
        (status = 503, description = "Database unavailable: a page saying so", body = String, content_type = "text/html"),
    )
)]
pub async fn reset_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Some(token) = pages::token_param(query.as_deref()) else {
        return Ok(pages::reset_invalid());
    };
    match state.auth.check_reset_token(&token).await {
        Ok(()) => Ok(pages::reset_form(StatusCode::OK, &token, None)),
        Err(AuthError::InvalidAccountToken) => Ok(pages::reset_invalid()),
        Err(other) => Ok(pages::failure(other.into())),
    }
}

/// `POST /auth/password/reset`: JSON `{token, new_password}` (204), or the reset page's form
/// (answered with a page).
#[utoipa::path(
    post,
    operation_id = "reset_password",
    path = "/auth/password/reset",
    tag = "account",
    summary = "Set a new password with a reset token",
    description = "Uses the token up, sets the password, counts the email as verified, ends \
        every session of the account, clears its login throttle and mails a notice. Send JSON \
        `{\"token\", \"new_password\"}`; the reset page posts the form `token`, \
        `new_password`, `confirm_password` and gets HTML back.",
    request_body(content(
        (ResetPasswordRequest = "application/json"),
        (ResetPasswordForm = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "Form post: the password is changed (a page saying so)", body = String, content_type = "text/html"),
        (status = 204, description = "JSON: the password is changed"),
        (status = 400, description = "Unknown, used or expired token", content(
            (ErrorDetail = "application/json", example = json!({ "detail": "Invalid or expired token" })),
            (String = "text/html")
        )),
        (status = 413, description = "Body over 64 KiB", body = ErrorDetail),
        (status = 422, description = "Missing or malformed fields, or a new password the policy refuses (at `new_password`); a form post whose passwords differ or are refused gets the form again", content(
            (ValidationError = "application/json"),
            (String = "text/html")
        )),
        (status = 503, description = "Database unavailable, or password hashing saturated (a form post gets a page)", content(
            (ErrorDetail = "application/json"),
            (String = "text/html")
        )),
    )
)]
pub async fn reset(
    State(state): State<AppState>,
    client: ClientInfo,
    JsonOrFormFields(mut fields): JsonOrFormFields,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    if fields.is_form() {
        let token = fields.optional("token", &mut errors).unwrap_or_default();
        let new = fields
            .optional("new_password", &mut errors)
            .unwrap_or_default();
        let confirm = fields
            .optional("confirm_password", &mut errors)
            .unwrap_or_default();
        // The link first: a form shown again for a link that no longer works would only fail
        // once more.
        match state.auth.check_reset_token(&token).await {
            Ok(()) => {}
            Err(AuthError::InvalidAccountToken) => return Ok(pages::reset_invalid()),
            Err(other) => return Ok(pages::failure(other.into())),
        }
        if new != confirm {
            return Ok(pages::reset_form(
                StatusCode::UNPROCESSABLE_ENTITY,
                &token,
                Some(pages::MISMATCH),
            ));
        }
        return match state
            .auth
            .reset_password(&token, SecretString::from(new), &client)
            .await
        {
            Ok(()) => Ok(pages::reset_done()),
            Err(AuthError::InvalidAccountToken) => Ok(pages::reset_invalid()),
            Err(AuthError::PasswordRefused(rule)) => Ok(pages::reset_form(
                StatusCode::UNPROCESSABLE_ENTITY,
                &token,
                Some(pages::password_message(rule)),
            )),
            Err(other) => Ok(pages::failure(other.into())),
        };
    }
    let token = fields.required("token", &mut errors);
    let new = fields
        .required("new_password", &mut errors)
        .map(SecretString::from);
    let (Some(token), Some(new), true) = (token, new, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    state.auth.reset_password(&token, new, &client).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /auth/password/change`: the signed-in user sets a new password.
#[utoipa::path(
    post,
    operation_id = "change_password",
    path = "/auth/password/change",
    tag = "account",
    summary = "Change my password",
    description = "Needs the current password (checked through the login throttle). Every \
        other session of the account ends; this one stays. A notice is mailed.",
    security(("OAuth2PasswordBearer" = []), ("bearerAuth" = [])),
    request_body(content = ChangePasswordRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "The password is changed"),
        (status = 400, description = "The current password is wrong", body = ErrorDetail,
            example = json!({ "detail": "Current password is incorrect" })),
        (status = 401, description = "Missing, malformed, expired or foreign token, or the session has ended", body = ErrorDetail,
            headers(("www-authenticate" = String, description = "Bearer challenge"))),
        (status = 413, description = "Body over 64 KiB", body = ErrorDetail),
        (status = 422, description = "Missing or malformed fields, or a new password the policy refuses (at `new_password`)", body = ValidationError),
        (status = 503, description = "Database unavailable, or password hashing saturated", body = ErrorDetail),
    )
)]
pub async fn change(
    State(state): State<AppState>,
    client: ClientInfo,
    current: CurrentUser,
    JsonFields(mut fields): JsonFields,
) -> Result<StatusCode, ApiError> {
    let mut errors = Vec::new();
    let old = fields
        .required("current_password", &mut errors)
        .map(SecretString::from);
    let new = fields
        .required("new_password", &mut errors)
        .map(SecretString::from);
    let (Some(old), Some(new), true) = (old, new, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    state
        .auth
        .change_password(&current.user, current.session, old, new, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
