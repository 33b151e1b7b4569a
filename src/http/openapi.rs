//! The OpenAPI 3.1 description: document-level parts (info, security schemes, shared error
//! schemas). Paths come from the `#[utoipa::path]` attributes on the handlers, collected by the
//! same `OpenApiRouter` that serves them, so the two cannot drift.

use serde::Serialize;
use utoipa::openapi::security::{
    Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme,
};
use utoipa::{Modify, OpenApi, ToSchema};

/// The security scheme Swagger UI's "Authorize" uses: the OAuth2 password form on `/auth/login`
/// (named as FastAPI names it, so generated clients keep their names).
pub const OAUTH2: &str = "OAuth2PasswordBearer";
/// A plain bearer token, for clients that already hold one.
pub const BEARER: &str = "bearerAuth";

/// `{"detail": "<message>"}`: every non-422 error.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "detail": "Could not validate credentials" }))]
pub struct ErrorDetail {
    /// A sentence for people.
    pub detail: String,
}

/// One failing field of a 422.
#[derive(Serialize, ToSchema)]
pub struct ValidationIssue {
    /// `["body"]` or `["body", "<field>"]`.
    pub loc: Vec<String>,
    /// A sentence for people.
    pub msg: String,
    /// A machine code: `missing`, `string_type`, `value_error.email`, … (see docs/api.md).
    #[serde(rename = "type")]
    pub kind: String,
}

/// 422: every failing field.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "detail": [
    { "loc": ["body", "email"], "msg": "value is not a valid email address: it must have exactly one @-sign", "type": "value_error.email" },
    { "loc": ["body", "password"], "msg": "This password is too common", "type": "value_error.password_common" }
] }))]
pub struct ValidationError {
    /// One entry per failing field.
    pub detail: Vec<ValidationIssue>,
}

/// Document-level parts of the description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cerego",
        description = "Sign-up, login and current user. Errors are FastAPI-shaped: \
            `{\"detail\": \"…\"}`, or for invalid input a 422 listing every failing field.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "auth", description = "Accounts and access tokens"),
        (name = "sessions", description = "Refresh-token rotation, logout and session management"),
        (name = "operations", description = "Health, readiness and metrics")
    ),
    components(schemas(ErrorDetail, ValidationError, ValidationIssue)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            OAUTH2,
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::Password(Password::new("/auth/login", Scopes::new()))],
                "Log in with a username or email and a password.",
            )),
        );
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
