//! Query-string and path parameters, read so that a bad one is a FastAPI-shaped 422 at
//! `["query", "<name>"]` or `["path", "<name>"]` (axum's own rejections are plain text).

use std::collections::HashMap;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use crate::http::error::{ApiError, FieldError};

/// What pydantic says of a value that is not an integer.
pub const NOT_AN_INTEGER: &str =
    "Input should be a valid integer, unable to parse string as an integer";

/// The parameters of the query string, percent-decoded; of a repeated one the last value (as
/// FastAPI takes a single-valued parameter). Parameters no route reads are ignored.
#[derive(Debug, Default)]
pub struct QueryParams(HashMap<String, String>);

impl QueryParams {
    /// The parameters of `query` (the part of the URI after `?`).
    pub fn parse(query: &str) -> Self {
        Self(
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The integer parameter `name` within `range`, `default` when absent; records
    /// `int_parsing`, `greater_than_equal` or `less_than_equal` in `errors` otherwise (an
    /// empty value is not an integer).
    pub fn int(
        &self,
        name: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
        errors: &mut Vec<FieldError>,
    ) -> Option<i64> {
        if self.0.contains_key(name) {
            self.optional_int(name, range, errors)
        } else {
            Some(default)
        }
    }

    /// The integer parameter `name` within `range` if present; `None` when absent or, with
    /// `int_parsing`, `greater_than_equal` or `less_than_equal` recorded in `errors`, when bad
    /// (an empty value is not an integer).
    pub fn optional_int(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
        errors: &mut Vec<FieldError>,
    ) -> Option<i64> {
        let raw = self.0.get(name)?;
        let Ok(value) = raw.trim().parse::<i64>() else {
            errors.push(FieldError::query(name, NOT_AN_INTEGER, "int_parsing"));
            return None;
        };
        if value < *range.start() {
            errors.push(FieldError::query(
                name,
                format!("Input should be greater than or equal to {}", range.start()),
                "greater_than_equal",
            ));
            return None;
        }
        if value > *range.end() {
            errors.push(FieldError::query(
                name,
                format!("Input should be less than or equal to {}", range.end()),
                "less_than_equal",
            ));
            return None;
        }
        Some(value)
    }

    /// The text parameter `name` if present, at most `max_chars` characters; records
    /// `string_too_long` in `errors` otherwise.
    pub fn text(&self, name: &str, max_chars: usize, errors: &mut Vec<FieldError>) -> Option<&str> {
        let value = self.0.get(name)?;
        if value.chars().count() > max_chars {
            errors.push(FieldError::query(
                name,
                format!("String should have at most {max_chars} characters"),
                "string_too_long",
            ));
            return None;
        }
        Some(value)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::parse(parts.uri.query().unwrap_or("")))
    }
}

/// The parameters of the route's path (`{id}`, `{name}`), percent-decoded; 422 at `["path"]`
/// for one that is not UTF-8 (axum's own rejection is plain text).
#[derive(Debug)]
pub struct PathParams(Vec<(String, String)>);

impl PathParams {
    /// The parameter `name` as a positive integer (a database id); 422 `int_parsing` at
    /// `["path", "<name>"]` otherwise.
    pub fn id(&self, name: &str) -> Result<i64, ApiError> {
        self.text(name)?
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| {
                ApiError::Validation(vec![FieldError::path(name, NOT_AN_INTEGER, "int_parsing")])
            })
    }

    /// The parameter `name` as given.
    pub fn text(&self, name: &str) -> Result<&str, ApiError> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .ok_or_else(|| {
                // The route declares its parameters; a handler asking for another is a bug.
                ApiError::Unexpected(anyhow::anyhow!("the route has no path parameter {name}"))
            })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PathParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => Ok(Self(
                params
                    .iter()
                    .map(|(key, value)| (key.to_owned(), value.to_owned()))
                    .collect(),
            )),
            // axum does not say which parameter it was.
            Err(RawPathParamsRejection::InvalidUtf8InPathParam(_)) => {
                Err(ApiError::Validation(vec![FieldError {
                    loc: vec!["path".to_owned()],
                    msg: "Input should be a valid string, unable to parse raw data as a unicode \
                          string"
                        .to_owned(),
                    kind: "string_unicode".to_owned(),
                }]))
            }
            Err(other) => Err(ApiError::Unexpected(anyhow::anyhow!(
                "path parameters unreadable: {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_are_positive_integers_or_a_422_at_the_parameter() {
        let path = |id: &str| PathParams(vec![("id".to_owned(), id.to_owned())]);
        assert_eq!(path("42").id("id").expect("an id"), 42);
        for bad in ["0", "-1", "abc", "1.0", "", "99999999999999999999"] {
            match path(bad).id("id") {
                Err(ApiError::Validation(errors)) => {
                    assert_eq!(errors[0].loc, ["path", "id"], "{bad}");
                    assert_eq!(errors[0].kind, "int_parsing", "{bad}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
