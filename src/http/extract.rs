//! Extractors that turn requests into fields and users, rejecting with [`ApiError`] so every
//! rejection has the API's shape (axum's own rejections are plain text).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use super::AppState;
use super::client_ip::ClientIp;
use super::error::{ApiError, BAD_TOKEN, FieldError, NOT_ENOUGH_PERMISSIONS};
use super::rate_limit::VerifiedToken;
use crate::auth::{AuthError, ClientInfo};
use crate::domain::{FieldRule, Permission, Permissions, SessionId, User};

mod params;

pub use params::{NOT_AN_INTEGER, PathParams, QueryParams};

/// The fields of a request body, read from a JSON object or, where allowed, a form.
///
/// Its `Debug` names the fields and never shows a value: the body holds passwords and tokens.
#[derive(Default)]
pub struct Fields {
    values: HashMap<String, Value>,
    /// Whether they came from an `application/x-www-form-urlencoded` form (a page posting,
    /// which is answered with a page).
    form: bool,
}

impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.values.keys().map(String::as_str).collect();
        // Sorted, so the output does not depend on the map's order.
        names.sort_unstable();
        f.debug_tuple("Fields").field(&names).finish()
    }
}

/// A JSON object body (`Content-Type: application/json`).
#[derive(Debug)]
pub struct JsonFields(pub Fields);

/// A JSON object body, or an `application/x-www-form-urlencoded` form (as OAuth2 clients send
/// the password and refresh-token grants).
#[derive(Debug)]
pub struct JsonOrFormFields(pub Fields);

impl<S: Send + Sync> FromRequest<S> for JsonFields {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_fields(req, state, false).await.map(Self)
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonOrFormFields {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_fields(req, state, true).await.map(Self)
    }
}

async fn read_fields<S: Send + Sync>(
    req: Request,
    state: &S,
    allow_form: bool,
) -> Result<Fields, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let is_json = content_type == "application/json"
        || (content_type.starts_with("application/") && content_type.ends_with("+json"));
    let is_form = allow_form && content_type == "application/x-www-form-urlencoded";
    if !is_json && !is_form {
        let expected = if allow_form {
            "application/json or application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        return Err(ApiError::Validation(vec![FieldError::body(
            format!("Content-Type must be {expected}"),
            "content_type",
        )]));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::Validation(vec![FieldError::body(
                "The request body could not be read",
                "body_unreadable",
            )])
        }
    })?;
    if is_form {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|_| {
            ApiError::Validation(vec![FieldError::body(
                "The form could not be parsed",
                "form_invalid",
            )])
        })?;
        return Ok(Fields {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
            form: true,
        });
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(Fields {
            values: map.into_iter().collect(),
            form: false,
        }),
        Ok(_) => Err(ApiError::Validation(vec![FieldError::body(
            "Input should be a valid dictionary or object",
            "model_attributes_type",
        )])),
        Err(err) => Err(ApiError::Validation(vec![FieldError::body(
            describe(&err),
            "json_invalid",
        )])),
    }
}

/// A description of a JSON syntax error that never echoes the input (it may hold a password).
fn describe(err: &serde_json::Error) -> String {
    let what = match err.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Syntax => "invalid syntax",
        serde_json::error::Category::Data => "invalid data",
        serde_json::error::Category::Io => "unreadable input",
    };
    format!(
        "JSON decode error: {what} at line {}, column {}",
        err.line(),
        err.column()
    )
}

impl Fields {
    /// Whether the client sent `name` at all.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Whether the body was an `application/x-www-form-urlencoded` form rather than JSON.
    pub fn is_form(&self) -> bool {
        self.form
    }

    /// A required string field; records `missing` or `string_type` in `errors` otherwise.
    pub fn required(&mut self, name: &str, errors: &mut Vec<FieldError>) -> Option<String> {
        match self.values.remove(name) {
            None => {
                errors.push(FieldError::field(name, "Field required", "missing"));
                None
            }
            Some(value) => Self::string(name, value, errors),
        }
    }

    /// An optional string field; `null` counts as absent. Handlers read every documented field,
    /// even one they end up not using, so a present value of the wrong type is still a 422.
    pub fn optional(&mut self, name: &str, errors: &mut Vec<FieldError>) -> Option<String> {
        match self.values.remove(name) {
            None | Some(Value::Null) => None,
            Some(value) => Self::string(name, value, errors),
        }
    }

    /// An optional boolean field (`true` or `false`, nothing else); `null` counts as absent.
    pub fn optional_bool(&mut self, name: &str, errors: &mut Vec<FieldError>) -> Option<bool> {
        match self.values.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(value)) => Some(value),
            Some(_) => {
                errors.push(FieldError::field(
                    name,
                    "Input should be a valid boolean",
                    "bool_type",
                ));
                None
            }
        }
    }

    /// A required list of strings; records `missing`, `list_type` or `string_type` (at the
    /// list) in `errors` otherwise.
    pub fn required_strings(
        &mut self,
        name: &str,
        errors: &mut Vec<FieldError>,
    ) -> Option<Vec<String>> {
        let items = match self.values.remove(name) {
            None => {
                errors.push(FieldError::field(name, "Field required", "missing"));
                return None;
            }
            Some(Value::Array(items)) => items,
            Some(_) => {
                errors.push(FieldError::field(
                    name,
                    "Input should be a valid list",
                    "list_type",
                ));
                return None;
            }
        };
        let strings: Option<Vec<String>> = items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect();
        if strings.is_none() {
            errors.push(FieldError::field(
                name,
                "Input should be a valid string",
                "string_type",
            ));
        }
        strings
    }

    fn string(name: &str, value: Value, errors: &mut Vec<FieldError>) -> Option<String> {
        match value {
            Value::String(s) => Some(s),
            _ => {
                errors.push(FieldError::field(
                    name,
                    "Input should be a valid string",
                    "string_type",
                ));
                None
            }
        }
    }
}

/// Parses a field's raw value into a domain type, recording the broken rule in `errors`.
pub fn check<T, E: FieldRule>(
    name: &str,
    parsed: Result<T, E>,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    parsed
        .map_err(|rule| errors.push(FieldError::rule(name, &rule)))
        .ok()
}

/// The client as sessions and the audit trail record it: its address (as the rate limiter sees
/// it, from [`ClientIp`]), `User-Agent` and `x-request-id` (as echoed to it). Never refuses.
impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let text = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Self {
            // Any bytes a client sends (obs-text included) are kept, as text: an odd agent is
            // worth recording, not dropping.
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            ip: parts.extensions.get::<ClientIp>().map(|ip| ip.0),
            request_id: text(super::middleware::REQUEST_ID.as_str()),
        })
    }
}

/// The user and session the request's `Authorization: Bearer` token speaks for, if that session
/// is still active; 401 otherwise.
#[derive(Debug)]
pub struct CurrentUser {
    /// The token's user.
    pub user: User,
    /// The token's session.
    pub session: SessionId,
    /// What the user's roles allow now (read with the session, never from the token).
    pub permissions: Permissions,
}

impl CurrentUser {
    /// The caller as the admin use cases see it: its id and what its roles allow now.
    pub fn actor(&self) -> crate::auth::admin::Actor {
        crate::auth::admin::Actor {
            id: self.user.id,
            permissions: self.permissions,
        }
    }
}

impl<S> FromRequestParts<S> for CurrentUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)
            // No credentials: the plain `Bearer` challenge, no error code (RFC 6750 §3.1).
            .ok_or(ApiError::unauthorized(BAD_TOKEN))?;
        let state = AppState::from_ref(state);
        // The rate-limit layer may have verified this very header already.
        let found = match parts.extensions.get::<VerifiedToken>() {
            Some(VerifiedToken(claims)) => state.auth.authenticate_claims(*claims).await?,
            None => state.auth.authenticate(token).await?,
        };
        Ok(Self {
            user: found.user,
            session: found.session,
            permissions: found.permissions,
        })
    }
}

/// The caller of `GET /auth/me`: the user of an active session, as [`CurrentUser`] finds it, or,
/// until `JWT_ACCEPT_LEGACY_UNTIL`, the user a token of the FastAPI system names (no session;
/// see [`crate::auth::tokens::TokenKeys::verify_legacy`]). A token that is neither gets the
/// refusal [`CurrentUser`] would give.
#[derive(Debug)]
pub struct MeCaller(pub User);

impl<S> FromRequestParts<S> for MeCaller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let refused = match CurrentUser::from_request_parts(parts, state).await {
            Ok(current) => return Ok(Self(current.user)),
            Err(refused) => refused,
        };
        let app = AppState::from_ref(state);
        let Some(token) = bearer_token(&parts.headers)
            .filter(|_| app.auth.accepts_legacy_tokens() && refused.is_unauthorized())
        else {
            return Err(refused);
        };
        match app.auth.authenticate_legacy(token).await {
            Ok(user) => Ok(Self(user)),
            // Not a legacy token either: the refusal a cerego token gets.
            Err(AuthError::InvalidToken(_)) => Err(refused),
            Err(err) => Err(err.into()),
        }
    }
}

/// The caller of a route that needs a permission: `Require<UsersRead>` in a handler's
/// signature states what the route needs. It authenticates exactly as [`CurrentUser`] does
/// (the same 401s and challenges), then checks the permissions the caller's roles grant *now*
/// (read in the session query, never taken from the token): 403 `Not enough permissions`
/// without it. Put it first among a handler's extractors, so an outsider gets its 401 or 403
/// before any 422 or 404 says anything about the request.
///
/// ```ignore
/// async fn list_users(Require(caller): Require<UsersRead>, query: QueryParams) { /* … */ }
/// ```
#[derive(Debug)]
pub struct Require<P: Permit>(pub P::Caller);

/// A permission a route can [`Require`]: one marker type per [`Permission`].
pub trait Permit {
    /// The permission.
    const PERMISSION: Permission;
    /// Always [`CurrentUser`]. Named through the marker so that [`Require`] has one field (and
    /// reads `Require(caller)` in a pattern) while still being a distinct type per permission.
    type Caller;
}

/// Declares a marker type for each permission.
macro_rules! permits {
    ($($marker:ident,)*) => {
        $(
            #[doc = concat!("Marker for [`Permission::", stringify!($marker), "`], for [`Require`].")]
            #[derive(Debug)]
            pub struct $marker;

            impl Permit for $marker {
                const PERMISSION: Permission = Permission::$marker;
                type Caller = CurrentUser;
            }
        )*
    };
}

permits! {
    UsersRead,
    UsersWrite,
    UsersDelete,
    SessionsRevoke,
    RolesRead,
    RolesWrite,
    AuditRead,
}

impl<S, P> FromRequestParts<S> for Require<P>
where
    AppState: FromRef<S>,
    S: Send + Sync,
    P: Permit<Caller = CurrentUser>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = CurrentUser::from_request_parts(parts, state).await?;
        if !caller.permissions.contains(P::PERMISSION) {
            tracing::info!(
                user_id = caller.user.id.get(),
                permission = P::PERMISSION.as_str(),
                "permission refused"
            );
            return Err(ApiError::Forbidden(NOT_ENOUGH_PERMISSIONS));
        }
        Ok(Self(caller))
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_fields_names_them_and_never_shows_a_value() {
        let fields = Fields {
            values: HashMap::from([
                ("username".to_owned(), Value::from("ada")),
                ("password".to_owned(), Value::from("hunter2-secret-pass")),
                (
                    "nested".to_owned(),
                    serde_json::json!({ "token": "crg_rt_abc" }),
                ),
            ]),
            form: false,
        };
        let shown = format!("{fields:?} {fields:#?}");
        assert!(
            shown.contains("password") && shown.contains("username"),
            "{shown}"
        );
        for value in ["hunter2-secret-pass", "ada\"", "crg_rt_abc"] {
            assert!(!shown.contains(value), "{value} shown in {shown}");
        }
        let wrapped = format!("{:?}", JsonOrFormFields(fields));
        assert!(!wrapped.contains("hunter2-secret-pass"), "{wrapped}");
    }

    fn body(json: Value) -> Fields {
        let Value::Object(map) = json else {
            panic!("an object")
        };
        Fields {
            values: map.into_iter().collect(),
            form: false,
        }
    }

    #[test]
    fn booleans_are_strict_and_null_is_absent() {
        let mut errors = Vec::new();
        let mut fields = body(serde_json::json!({ "a": true, "b": null, "c": "true", "d": 1 }));
        assert_eq!(fields.optional_bool("a", &mut errors), Some(true));
        assert_eq!(fields.optional_bool("b", &mut errors), None);
        assert_eq!(fields.optional_bool("z", &mut errors), None);
        assert!(errors.is_empty());
        assert_eq!(fields.optional_bool("c", &mut errors), None);
        assert_eq!(fields.optional_bool("d", &mut errors), None);
        let kinds: Vec<&str> = errors.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["bool_type", "bool_type"]);
    }

    #[test]
    fn string_lists_report_missing_not_a_list_and_not_strings() {
        let mut fields = body(serde_json::json!({
            "ok": ["a", "b"], "empty": [], "one": "a", "mixed": ["a", 1]
        }));
        let mut errors = Vec::new();
        assert_eq!(
            fields.required_strings("ok", &mut errors),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(fields.required_strings("empty", &mut errors), Some(vec![]));
        assert!(errors.is_empty());
        for name in ["one", "mixed", "absent"] {
            assert_eq!(fields.required_strings(name, &mut errors), None);
        }
        let kinds: Vec<(String, &str)> = errors
            .iter()
            .map(|e| (e.loc.join("."), e.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("body.one".to_owned(), "list_type"),
                ("body.mixed".to_owned(), "string_type"),
                ("body.absent".to_owned(), "missing"),
            ]
        );
    }
}
