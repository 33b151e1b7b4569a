//! `/auth/email/verification` (ask for a link) and `/auth/email/verify` (the page and its post).

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::auth::ClientInfo;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{CurrentUser, JsonOrFormFields};
use crate::http::openapi::{Detail, ErrorDetail, ValidationError};
use crate::http::pages;
use crate::http::rate_limit::{self, Checked};
use crate::http::routes::recovery::accepted;
use crate::limits::{self, Rule};

/// The body of a 202 from `POST /auth/email/verification`.
pub const VERIFICATION_SENT: &str = "A verification link has been sent";

/// `POST /auth/email/verify` with JSON, or the confirmation page's form (documentation only).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct VerifyEmailRequest {
    /// The token from the verification link (`crg_ev_…`).
    #[schema(example = "crg_ev_3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    token: String,
}

/// `POST /auth/email/verification`: mails the signed-in user another verification link.
#[utoipa::path(
    post,
    operation_id = "request_email_verification",
    path = "/auth/email/verification",
    tag = "account",
    summary = "Send me a new email verification link",
    description = "Links sent earlier keep working until they expire \
        (EMAIL_VERIFICATION_TTL_SECS, 24 hours by default).",
    security(("OAuth2PasswordBearer" = []), ("bearerAuth" = [])),
    responses(
        (status = 202, description = "A link is queued", body = Detail,
            example = json!({ "detail": VERIFICATION_SENT })),
        (status = 401, description = "Missing, malformed, expired or foreign token, or the session has ended", body = ErrorDetail,
            headers(("www-authenticate" = String, description = "Bearer challenge"))),
        (status = 409, description = "The address is already verified", body = ErrorDetail,
            example = json!({ "detail": "Email already verified" })),
        (status = 503, description = "Database unavailable", body = ErrorDetail),
    )
)]
pub async fn request_verification(
    State(state): State<AppState>,
    client: ClientInfo,
    checked: Option<Extension<Checked>>,
    current: CurrentUser,
) -> Result<Response, ApiError> {
    // Nothing to send costs no mail budget.
    if current.user.email_verified_at.is_some() {
        return Err(AuthError::EmailAlreadyVerified.into());
    }
    let checked = checked.map(|Extension(checked)| checked);
    rate_limit::check(
        &state,
        checked.as_ref(),
        Rule::RecoveryAccount,
        &limits::login_key(&current.user.email),
    )
    .await?;
    state
        .auth
        .request_verification(&current.user, &client)
        .await?;
    Ok(accepted(VERIFICATION_SENT))
}

/// `GET /auth/email/verify?token=…`: the confirmation page (the token is not used up).
#[utoipa::path(
    get,
    operation_id = "verify_email_page",
    path = "/auth/email/verify",
    tag = "account",
    summary = "The email confirmation page (the link in the mail)",
    description = "A page with a \"Confirm my email\" button that posts to `POST \
        /auth/email/verify`. Opening it never uses the token up, so mail scanners that fetch \
        links do not confirm anything.",
    params(("token" = String, Query, description = "The token from the mail's link")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html",
            headers(
                ("cache-control" = String, description = "no-store"),
                ("referrer-policy" = String, description = "no-referrer"),
            )),
        (status = 400, description = "Missing, unknown, used or expired token: a page saying so", body = String, content_type = "text/html"),
        (status = 503, description = "Database unavailable: a page saying so", body = String, content_type = "text/html"),
    )
)]
pub async fn verify_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Some(token) = pages::token_param(query.as_deref()) else {
        return Ok(pages::verify_invalid());
    };
    match state.auth.check_verification_token(&token).await {
        Ok(()) => Ok(pages::verify_form(&token)),
        Err(AuthError::InvalidAccountToken) => Ok(pages::verify_invalid()),
        Err(other) => Ok(pages::failure(other.into())),
    }
}

/// `POST /auth/email/verify`: JSON `{token}` (204), or the confirmation page's form (a page).
#[utoipa::path(
    post,
    operation_id = "verify_email",
    path = "/auth/email/verify",
    tag = "account",
    summary = "Confirm an email address with a verification token",
    description = "Uses the token up and marks the account's address verified. Send JSON \
        `{\"token\"}`; the confirmation page posts the form `token` and gets HTML back.",
    request_body(content(
        (VerifyEmailRequest = "application/json"),
        (VerifyEmailRequest = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "Form post: the address is confirmed (a page saying so)", body = String, content_type = "text/html"),
        (status = 204, description = "JSON: the address is confirmed"),
        (status = 400, description = "Unknown, used or expired token", content(
            (ErrorDetail = "application/json", example = json!({ "detail": "Invalid or expired token" })),
            (String = "text/html")
        )),
        (status = 413, description = "Body over 64 KiB", body = ErrorDetail),
        (status = 422, description = "Missing or malformed token field (JSON)", body = ValidationError),
        (status = 503, description = "Database unavailable (a form post gets a page)", content(
            (ErrorDetail = "application/json"),
            (String = "text/html")
        )),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    client: ClientInfo,
    JsonOrFormFields(mut fields): JsonOrFormFields,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    if fields.is_form() {
        let token = fields.optional("token", &mut errors).unwrap_or_default();
        return match state.auth.verify_email(&token, &client).await {
            Ok(()) => Ok(pages::verify_done()),
            Err(AuthError::InvalidAccountToken) => Ok(pages::verify_invalid()),
            Err(other) => Ok(pages::failure(other.into())),
        };
    }
    let token = fields.required("token", &mut errors);
    let (Some(token), true) = (token, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    state.auth.verify_email(&token, &client).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
