//! The OpenAPI 3.1 description: document-level parts (info, security schemes, shared error
//! schemas) and the links between operations. Paths come from the `#[utoipa::path]` attributes on
//! the handlers, collected by the same `OpenApiRouter` that serves them, so the two cannot drift;
//! the links are added to the assembled description by [`add_links`], since they join operations
//! of different route files.

use serde::Serialize;
use serde_json::json;
use utoipa::openapi::link::{Link, LinkBuilder};
use utoipa::openapi::security::{
    Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme,
};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::domain::Permission;
use crate::http::routes::admin::PermissionName;
use crate::http::routes::admin::audit::{AuditEventName, AuditOutcome};

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

/// `{"detail": "<message>"}` on a success that has nothing else to say (a 202).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "detail": "A verification link has been sent" }))]
pub struct Detail {
    /// A sentence for people.
    pub detail: String,
}

/// One failing field of a 422.
#[derive(Serialize, ToSchema)]
pub struct ValidationIssue {
    /// `["body"]`, `["body", "<field>"]`, `["query", "<parameter>"]` or
    /// `["path", "<parameter>"]`.
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
        description = "Sign-up, login and current user, and sessions: a login opens a session \
            whose short-lived access token (a JWT) is renewed with a single-use refresh token \
            (`POST /auth/refresh`, rotated on every use); sessions can be listed, ended one by one \
            or all at once (logout). Account recovery: password reset and email verification by \
            single-use links sent by mail, and password change. Administration (`/admin`): \
            accounts, roles and the audit trail, each operation requiring one permission that the \
            caller's roles must grant at the time of the request (the token's `roles` claim is \
            not trusted). Security events (logins, password and session changes, admin actions) \
            are recorded in a tamper-evident audit trail; each user can list their own. \
            Errors are FastAPI-shaped: `{\"detail\": \"…\"}`, or for invalid input a 422 \
            listing every failing field.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "auth", description = "Accounts and access tokens"),
        (name = "sessions", description = "Refresh-token rotation, logout and session management"),
        (name = "account", description = "Password reset, email verification, password change \
            and the account's security events"),
        (name = "admin", description = "Accounts, roles and the audit trail; each operation requires the \
            permission its OAuth2 scope names"),
        (name = "discovery", description = "Public signing keys and the discovery document, for services \
            that verify cerego's tokens themselves (EdDSA, ES256 or RS256 only)"),
        (name = "operations", description = "Health, readiness and metrics")
    ),
    components(schemas(
        Detail,
        ErrorDetail,
        ValidationError,
        ValidationIssue,
        PermissionName,
        AuditEventName,
        AuditOutcome
    )),
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
                [Flow::Password(Password::new(
                    "/auth/login",
                    permission_scopes(),
                ))],
                "Log in with a username or email and a password. The scopes are the permissions \
                 the admin operations require; what a token may do is decided by its user's \
                 roles at each request, so a requested `scope` is ignored.",
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

/// The permissions as OAuth2 scopes, each with what it allows.
fn permission_scopes() -> Scopes {
    Scopes::from_iter(Permission::ALL.iter().map(|p| (p.as_str(), allows(*p))))
}

/// What `permission` allows, for the scope's description.
fn allows(permission: Permission) -> &'static str {
    match permission {
        Permission::UsersRead => "List and read accounts",
        Permission::UsersWrite => "Disable and enable accounts",
        Permission::UsersDelete => "Delete accounts",
        Permission::SessionsRevoke => "End every session of an account",
        Permission::RolesRead => "List roles",
        Permission::RolesWrite => "Create, change and delete roles; grant and revoke them",
        Permission::AuditRead => "Read the audit trail",
    }
}

/// The bearer header a link passes on: the access token of the response it follows.
const BEARER_FROM_RESPONSE: &str = "Bearer {$response.body#/access_token}";

/// Declares how the operations chain (OpenAPI links): sign-up's input logs in; a token pair's
/// access token calls the authenticated operations and its refresh token refreshes. Clients and
/// stateful testers (schemathesis) follow them. A link can only fill parameters and bodies, so the
/// access token travels as an explicit `header.Authorization` parameter.
pub fn add_links(openapi: &mut utoipa::openapi::OpenApi) {
    let login_link = LinkBuilder::new()
        .operation_id("login")
        .request_body(Some(json!({
            "username": "$request.body#/username",
            "password": "$request.body#/password",
        })))
        .description("Log in with the account just created")
        .build();
    add_link(openapi, "/auth/signup", "201", "Login", login_link);
    for path in ["/auth/login", "/auth/refresh"] {
        for (name, link) in token_pair_links() {
            add_link(openapi, path, "200", name, link);
        }
    }
}

/// What a response carrying a token pair leads to.
fn token_pair_links() -> [(&'static str, Link); 6] {
    let authed = |operation: &str, description: &str| {
        LinkBuilder::new()
            .operation_id(operation)
            .parameter("header.Authorization", BEARER_FROM_RESPONSE)
            .description(description)
            .build()
    };
    [
        ("Me", authed("me", "The user the access token belongs to")),
        ("Sessions", authed("list", "The sessions of that user")),
        (
            "Activity",
            authed("activity", "The security events of that user's account"),
        ),
        (
            "Logout",
            authed("logout", "End the session the token belongs to"),
        ),
        (
            "LogoutAll",
            authed("logout_all", "End every session of that user"),
        ),
        (
            "Refresh",
            LinkBuilder::new()
                .operation_id("refresh")
                .request_body(Some(
                    json!({ "refresh_token": "$response.body#/refresh_token" }),
                ))
                .description("Exchange the refresh token for a new pair")
                .build(),
        ),
    ]
}

/// Routes no rate limit applies to (see `rate_limit::ROUTES`).
const UNLIMITED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Documents the answers every rate-limited operation can give: 429 with `Retry-After` (a rate
/// limit, or on login the brute-force throttle) and, when the limit store is down and
/// `RATE_LIMIT_FAIL_OPEN` is false, 503. Added here rather than on each handler, because every
/// operation but the probes is limited.
pub fn add_rate_limit_responses(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

    let header = |kind: Type, description: &str| {
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(kind)))
            .description(Some(description))
            .build()
    };
    let content = |example: serde_json::Value| {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorDetail")))
            .example(Some(example))
            .build()
    };
    for (path, item) in &mut openapi.paths.paths {
        if UNLIMITED.contains(&path.as_str()) {
            continue;
        }
        let login = path == "/auth/login";
        let change = path == "/auth/password/change";
        let operations = [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.patch.as_mut(),
            item.delete.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            let description = if login {
                "Too many requests from this client IP or for this login name (`Too many \
                 requests`), or too many failed logins for this account (`Too many failed login \
                 attempts`, the same answer for unknown accounts); wait `Retry-After` seconds"
            } else if change {
                "Too many requests (`Too many requests`), or too many wrong passwords for this \
                 account (`Too many failed login attempts`: the login throttle); wait \
                 `Retry-After` seconds"
            } else {
                "Too many requests: this rate limit's budget is spent; wait `Retry-After` seconds"
            };
            let too_many = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    content(json!({ "detail": "Too many requests" })),
                )
                .header(
                    "retry-after",
                    header(Type::Integer, "Seconds to wait, at least 1"),
                )
                .header(
                    "ratelimit-policy",
                    header(
                        Type::String,
                        "The rate limits of this operation, e.g. `\"login_ip\";q=60;w=60` \
                         (draft-ietf-httpapi-ratelimit-headers; also on its other answers)",
                    ),
                )
                .header(
                    "ratelimit",
                    header(
                        Type::String,
                        "What is left of each, e.g. `\"login_ip\";r=0;t=42`",
                    ),
                )
                .build();
            operation
                .responses
                .responses
                .insert("429".to_owned(), too_many.into());
            operation
                .responses
                .responses
                .entry("503".to_owned())
                .or_insert_with(|| {
                    ResponseBuilder::new()
                        .description(
                            "Service unavailable (the database, or the rate-limit store with \
                             RATE_LIMIT_FAIL_OPEN=false, is not answering)",
                        )
                        .content(
                            "application/json",
                            content(json!({ "detail": "Service unavailable" })),
                        )
                        .build()
                        .into()
                });
        }
    }
}

/// Adds `link` to the `status` response of the POST or GET operation at `path`, if both exist
/// (a description without the operation simply has no link to it).
fn add_link(
    openapi: &mut utoipa::openapi::OpenApi,
    path: &str,
    status: &str,
    name: &str,
    link: Link,
) {
    let Some(item) = openapi.paths.paths.get_mut(path) else {
        return;
    };
    let Some(operation) = item.post.as_mut().or(item.get.as_mut()) else {
        return;
    };
    if let Some(utoipa::openapi::RefOr::T(response)) = operation.responses.responses.get_mut(status)
    {
        response.links.insert(name.to_owned(), link.into());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::domain::Permission;

    fn description() -> Value {
        let (_, description) = crate::http::api().split_for_parts();
        serde_json::to_value(&description).expect("the description is JSON")
    }

    #[test]
    fn every_admin_operation_requires_one_permission_and_documents_401_and_403() {
        let spec = description();
        let mut operations = 0;
        for (path, item) in spec["paths"].as_object().expect("paths") {
            if !path.starts_with("/admin") {
                continue;
            }
            for (method, operation) in item.as_object().expect("an item") {
                operations += 1;
                let at = format!("{method} {path}");
                assert_eq!(operation["tags"], serde_json::json!(["admin"]), "{at}");
                let scopes = &operation["security"][0]["OAuth2PasswordBearer"];
                let [scope] = scopes.as_array().expect("scopes").as_slice() else {
                    panic!("{at} names one scope: {scopes}");
                };
                let scope = scope.as_str().expect("a string");
                assert!(Permission::parse(scope).is_some(), "{at}: {scope}");
                let description = operation["description"].as_str().unwrap_or("");
                assert!(
                    description.starts_with(&format!("Requires `{scope}`")),
                    "{at}: {description}"
                );
                for status in ["401", "403"] {
                    assert!(operation["responses"][status].is_object(), "{at} {status}");
                }
            }
        }
        assert_eq!(operations, 12);
    }

    #[test]
    fn the_password_flow_offers_every_permission_as_a_scope() {
        let spec = description();
        let scopes = &spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]
            ["scopes"];
        let mut names: Vec<&str> = scopes
            .as_object()
            .expect("scopes")
            .keys()
            .map(String::as_str)
            .collect();
        let all: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        names.sort_unstable();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "(utoipa keeps scopes sorted by name)");
        let enumerated = &spec["components"]["schemas"]["PermissionName"]["enum"];
        assert_eq!(enumerated, &serde_json::json!(all));
    }
}
