//! Extractors that turn requests into fields and users, rejecting with [`ApiError`] so every
//! rejection has the API's shape (axum's own rejections are plain text).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, BAD_TOKEN, FieldError};
use super::rate_limit::VerifiedToken;
use crate::domain::{FieldRule, Permissions, SessionId, User};

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
}
