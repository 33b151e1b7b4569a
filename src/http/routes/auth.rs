//! `/auth/signup`, `/auth/login` and `/auth/me`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::LoginName;
use crate::domain::{Email, NewPassword, NewUser, User, Username};
use crate::http::AppState;
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{CurrentUser, JsonFields, JsonOrFormFields, check};

/// A user as the API shows it: never a password or a hash.
#[derive(Debug, Serialize)]
pub struct UserResponse {
    id: i64,
    email: String,
    username: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        Self {
            id: user.id.get(),
            email: user.email,
            username: user.username,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// The OAuth2 token response.
#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
}

/// `POST /auth/signup`: 201 with the new user, 409 for a taken e-mail or username, 422 listing
/// every bad field.
pub async fn signup(
    State(state): State<AppState>,
    JsonFields(mut fields): JsonFields,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    let mut errors = Vec::new();
    let raw_email = fields.required("email", &mut errors);
    let raw_username = fields.required("username", &mut errors);
    let raw_password = fields
        .required("password", &mut errors)
        .map(SecretString::from);

    let email = raw_email
        .as_deref()
        .and_then(|e| check("email", Email::parse(e), &mut errors));
    let username = raw_username
        .as_deref()
        .and_then(|u| check("username", Username::parse(u), &mut errors));
    let identities: Vec<&str> = [raw_email.as_deref(), raw_username.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let password = raw_password
        .and_then(|p| check("password", NewPassword::parse(p, &identities), &mut errors));

    let (Some(email), Some(username), Some(password), true) =
        (email, username, password, errors.is_empty())
    else {
        return Err(ApiError::Validation(errors));
    };
    let user = state
        .auth
        .signup(NewUser { email, username }, password)
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// `POST /auth/login`: JSON `{email|username, password}` or the OAuth2 password-grant form.
pub async fn login(
    State(state): State<AppState>,
    JsonOrFormFields(mut fields): JsonOrFormFields,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let name = if fields.has("email") {
        fields.required("email", &mut errors).map(LoginName::Email)
    } else if fields.has("username") {
        fields
            .required("username", &mut errors)
            .map(LoginName::UsernameOrEmail)
    } else {
        errors.push(FieldError::field(
            "username",
            "Field required: send username or email",
            "missing",
        ));
        None
    };
    let password = fields
        .required("password", &mut errors)
        .map(SecretString::from);
    if let Some(grant) = fields.optional("grant_type", &mut errors)
        && grant != "password"
    {
        errors.push(FieldError::field(
            "grant_type",
            "String should match pattern '^password$'",
            "string_pattern_mismatch",
        ));
    }
    let (Some(name), Some(password), true) = (name, password, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let token = state.auth.login(name, password).await?;
    let body = TokenResponse {
        access_token: token.token.expose_secret(),
        token_type: "bearer",
        expires_in: token.expires_in,
    };
    let mut response = Json(body).into_response();
    // RFC 6749 §5.1: responses carrying tokens must not be cached.
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// `GET /auth/me`: the token's user.
pub async fn me(CurrentUser(user): CurrentUser) -> Json<UserResponse> {
    Json(user.into())
}
