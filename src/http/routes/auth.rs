//! `/auth/signup`, `/auth/login` and `/auth/me`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use axum::Extension;

use crate::auth::{ClientInfo, LoginName, Tokens};
use crate::domain::{Email, NewPassword, NewUser, User, Username};
use crate::http::AppState;
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{JsonFields, JsonOrFormFields, MeCaller, check};
use crate::http::openapi::{ErrorDetail, ValidationError};
use crate::http::rate_limit::{self, Checked};
use crate::http::timestamp;
use crate::limits::{self, Rule};

/// A user as the API shows it: never a password or a hash.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": 1, "email": "ada@example.com", "username": "ada",
    "created_at": "2026-11-26T14:37:50.149054Z", "updated_at": "2026-11-26T14:37:50.149054Z",
    "email_verified": false, "is_admin": false, "roles": ["user"]
}))]
pub struct UserResponse {
    id: i64,
    email: String,
    username: String,
    #[serde(serialize_with = "timestamp::serialize")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(serialize_with = "timestamp::serialize")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: OffsetDateTime,
    /// Whether the account has confirmed its address (a verification link, or a password
    /// reset, was used).
    email_verified: bool,
    /// Whether the account holds the built-in `admin` role.
    is_admin: bool,
    /// The account's roles, sorted by name (as they are now: read with the session, not from
    /// the access token).
    roles: Vec<String>,
}

/// Sign-up request (documentation; the handler reads fields itself to report every bad one).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct SignupRequest {
    /// A valid address, at most 254 characters; stored in canonical form (NFKC with case
    /// folding, the domain as IDNA A-labels), which is also what makes it unique. Invisible,
    /// bidirectional-control and mixed-script addresses are refused.
    #[schema(example = "ada@example.com", format = Email, max_length = 254)]
    email: String,
    /// 3 to 32 of `A-Z a-z 0-9 _ . -`, starting with a letter or digit; unique case-insensitively.
    #[schema(
        example = "ada",
        min_length = 3,
        max_length = 32,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$"
    )]
    username: String,
    /// At least 8 characters, at most 72 bytes of UTF-8, not a common password, not the
    /// username or email.
    #[schema(example = "correct horse battery", format = Password, min_length = 8)]
    password: String,
}

/// Login with JSON: `email` or `username` (which may also hold the email), and the password.
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct LoginRequest {
    /// The account's email (give this or `username`).
    #[schema(example = "ada@example.com")]
    email: Option<String>,
    /// The account's username or email (give this or `email`).
    username: Option<String>,
    #[schema(example = "correct horse battery", format = Password)]
    password: String,
}

/// The OAuth2 password grant form (what Swagger UI's "Authorize" sends).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct LoginForm {
    /// Optional; when present it must be `password`.
    #[schema(pattern = "^password$", nullable = false)]
    grant_type: Option<String>,
    /// Username or email.
    username: String,
    #[schema(format = Password)]
    password: String,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        let is_admin = user.is_admin();
        Self {
            id: user.id.get(),
            email: user.email,
            username: user.username,
            created_at: user.created_at,
            updated_at: user.updated_at,
            email_verified: user.email_verified_at.is_some(),
            is_admin,
            roles: user
                .roles
                .iter()
                .map(|role| role.as_str().to_owned())
                .collect(),
        }
    }
}

/// The OAuth2 token response.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse<'a> {
    /// A JWT for `Authorization: Bearer`.
    #[schema(value_type = String, example = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.…")]
    access_token: &'a str,
    /// Always `bearer`.
    #[schema(example = "bearer")]
    token_type: &'static str,
    /// Seconds until the token expires.
    #[schema(example = 1800)]
    expires_in: u64,
    /// Opaque token for `POST /auth/refresh`; it changes at every refresh.
    #[schema(value_type = String, example = "crg_rt_3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    refresh_token: &'a str,
    /// Seconds the refresh token stays usable if unused.
    #[schema(example = 1_209_600)]
    refresh_expires_in: u64,
}

/// The token response for `tokens`, uncacheable (RFC 6749 §5.1).
pub fn token_response(tokens: &Tokens) -> Response {
    let body = TokenResponse {
        access_token: tokens.access.token.expose_secret(),
        token_type: "bearer",
        expires_in: tokens.access.expires_in,
        refresh_token: tokens.refresh.expose(),
        refresh_expires_in: tokens.refresh_expires_in,
    };
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /auth/signup`: 201 with the new user, 409 for a taken e-mail or username, 422 listing
/// every bad field.
#[utoipa::path(
    post,
    path = "/auth/signup",
    tag = "auth",
    summary = "Create an account",
    request_body(content = SignupRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Account created; a verification link is mailed to its address", body = UserResponse),
        (status = 409, description = "Email already registered, or Username already taken", body = ErrorDetail,
            example = json!({ "detail": "Email already registered" })),
        (status = 413, description = "Body over 64 KiB", body = ErrorDetail),
        (status = 422, description = "Invalid input: every failing field is listed", body = ValidationError),
        (status = 503, description = "Database unavailable", body = ErrorDetail,
            example = json!({ "detail": "Service unavailable" })),
    )
)]
pub async fn signup(
    State(state): State<AppState>,
    client: ClientInfo,
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
        .signup(NewUser { email, username }, password, &client)
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// `POST /auth/login`: JSON `{email|username, password}` or the OAuth2 password-grant form.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    summary = "Log in and get an access token",
    request_body(content(
        (LoginRequest = "application/json"),
        (LoginForm = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "Access and refresh tokens", body = TokenResponse,
            headers(("cache-control" = String, description = "no-store"))),
        (status = 401, description = "Unknown account or wrong password (one answer for both)", body = ErrorDetail,
            headers(("www-authenticate" = String, description = "Bearer")),
            example = json!({ "detail": "Incorrect username or password" })),
        (status = 403, description = "The right password, but REQUIRE_EMAIL_VERIFICATION is on and the account's email is not verified yet", body = ErrorDetail,
            example = json!({ "detail": "Email not verified" })),
        (status = 422, description = "Missing or malformed fields", body = ValidationError),
        (status = 503, description = "Database unavailable", body = ErrorDetail,
            example = json!({ "detail": "Service unavailable" })),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    checked: Option<Extension<Checked>>,
    JsonOrFormFields(mut fields): JsonOrFormFields,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    // Both are read, so a present one of the wrong type is a 422 even when the other is used;
    // `null` counts as absent, as the schema's optional fields allow.
    let email = fields.optional("email", &mut errors);
    let username = fields.optional("username", &mut errors);
    let name = match (email, username) {
        (Some(email), _) => Some(LoginName::Email(email)),
        (None, Some(name)) => Some(LoginName::UsernameOrEmail(name)),
        (None, None) => {
            if errors.is_empty() {
                errors.push(FieldError::field(
                    "username",
                    "Field required: send username or email",
                    "missing",
                ));
            }
            None
        }
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
    // The login name's own budget, now that the body says which account it is.
    let checked = checked.map(|Extension(checked)| checked);
    rate_limit::check(
        &state,
        checked.as_ref(),
        Rule::LoginAccount,
        &limits::login_key(name.as_str()),
    )
    .await?;
    let tokens = state.auth.login(name, password, &client).await?;
    Ok(token_response(&tokens))
}

/// `GET /auth/me`: the token's user.
#[utoipa::path(
    get,
    path = "/auth/me",
    tag = "auth",
    summary = "The current user",
    security(("OAuth2PasswordBearer" = []), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "The token's user", body = UserResponse),
        (status = 401, description = "Missing, malformed, expired or foreign token, or the session has ended", body = ErrorDetail,
            headers(("www-authenticate" = String, description = "`Bearer` without a token; else `Bearer error=\"invalid_token\", error_description=\"…\"` saying whether the token expired (refresh), its session ended, or it is invalid")),
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 503, description = "Database unavailable", body = ErrorDetail,
            example = json!({ "detail": "Service unavailable" })),
    )
)]
pub async fn me(MeCaller(user): MeCaller) -> Json<UserResponse> {
    Json(user.into())
}
