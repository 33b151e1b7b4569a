//! `/admin/users`: list, read, disable or enable, and delete accounts, end their sessions, grant
//! and revoke their roles.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::{AdminUser, user_id};
use crate::auth::ClientInfo;
use crate::domain::UserId;
use crate::http::AppState;
use crate::http::cursor;
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{
    JsonFields, PathParams, QueryParams, Require, SessionsRevoke, UsersDelete, UsersRead,
    UsersWrite,
};
use crate::http::openapi::{ErrorDetail, ValidationError};

/// Accounts per page unless `limit` says otherwise.
const DEFAULT_LIMIT: i64 = 50;
/// Most accounts per page.
const MAX_LIMIT: i64 = 100;
/// Longest search text (the longest e-mail address).
const MAX_SEARCH: usize = 254;

/// One page of accounts.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    /// Newest first.
    items: Vec<AdminUser>,
    /// Pass as `cursor` for the next page; `null` when this page is the last.
    #[schema(example = "MjQx")]
    next_cursor: Option<String>,
}

/// The query of `GET /admin/users` (documentation; [`ListQuery::parse`] reads it).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "describes the query parameters for OpenAPI only")]
struct ListParams {
    /// Only accounts whose email or username contains this (case-insensitive); blank: every
    /// account.
    #[param(max_length = 254)]
    q: Option<String>,
    /// Accounts per page.
    #[param(minimum = 1, maximum = 100, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (opaque); absent or empty: the first page.
    cursor: Option<String>,
}

/// `GET /admin/users`'s query, checked.
#[derive(Debug, PartialEq, Eq)]
struct ListQuery {
    search: Option<String>,
    limit: u32,
    before: Option<UserId>,
}

impl ListQuery {
    /// Every bad parameter is listed, each at `["query", "<name>"]`.
    fn parse(query: &QueryParams) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let search = query
            .text("q", MAX_SEARCH, &mut errors)
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_owned);
        let limit = query.int("limit", DEFAULT_LIMIT, 1..=MAX_LIMIT, &mut errors);
        let before = cursor::param(query, &mut errors).map(UserId::new);
        match (limit.and_then(|l| u32::try_from(l).ok()), errors.is_empty()) {
            (Some(limit), true) => Ok(Self {
                search,
                limit,
                before,
            }),
            _ => Err(errors),
        }
    }
}

/// List accounts.
#[utoipa::path(
    get,
    path = "/admin/users",
    tag = "admin",
    summary = "List accounts",
    description = "Requires `users:read`. Newest first, a page at a time: pass `next_cursor` as \
        `cursor` for the next (keyset paging, so accounts created meanwhile never shift a page).",
    params(ListParams),
    security(("OAuth2PasswordBearer" = ["users:read"]), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "A page of accounts", body = UserPage),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `users:read`", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
        (status = 422, description = "`q` over 254 characters, `limit` not an integer from 1 to 100, or a `cursor` this service did not make", body = ValidationError),
    )
)]
pub async fn list_users(
    Require(_caller): Require<UsersRead>,
    State(state): State<AppState>,
    query: QueryParams,
) -> Result<Json<UserPage>, ApiError> {
    let query = ListQuery::parse(&query).map_err(ApiError::Validation)?;
    let page = state
        .auth
        .accounts(query.search.as_deref(), query.before, query.limit)
        .await?;
    Ok(Json(UserPage {
        items: page.accounts.into_iter().map(AdminUser::from).collect(),
        next_cursor: page.next.map(|last| cursor::encode(last.get())),
    }))
}

/// Read an account.
#[utoipa::path(
    get,
    path = "/admin/users/{id}",
    tag = "admin",
    summary = "Read an account",
    description = "Requires `users:read`.",
    params(("id" = i64, Path, description = "The account's id", minimum = 1)),
    security(("OAuth2PasswordBearer" = ["users:read"]), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "The account", body = AdminUser),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `users:read`", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
        (status = 404, description = "No account has this id", body = ErrorDetail,
            example = json!({ "detail": "User not found" })),
        (status = 422, description = "The id is not a positive integer", body = ValidationError),
    )
)]
pub async fn get_user(
    Require(_caller): Require<UsersRead>,
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Json<AdminUser>, ApiError> {
    let id = user_id(&path)?;
    Ok(Json(state.auth.account(id).await?.into()))
}

/// `PATCH /admin/users/{id}` body (documentation; the handler reads the fields itself).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct UpdateUserRequest {
    /// `true` disables the account and ends every session at once; `false` enables it again
    /// (the ended sessions stay ended). Absent: nothing changes.
    disabled: Option<bool>,
}

/// Disable or enable an account.
#[utoipa::path(
    patch,
    path = "/admin/users/{id}",
    tag = "admin",
    summary = "Disable or enable an account",
    description = "Requires `users:write`. Disabling ends every session of the account at once \
        (its access tokens answer 401 on their next request); its login with the right password \
        then answers 403 `Account disabled`. Disabling a disabled account changes nothing.",
    params(("id" = i64, Path, description = "The account's id", minimum = 1)),
    request_body(content = UpdateUserRequest, content_type = "application/json"),
    security(("OAuth2PasswordBearer" = ["users:write"]), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "The account as it is now", body = AdminUser),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `users:write`, or the change concerns permissions the caller does not hold (a role it lacks, an account that holds more)", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
        (status = 404, description = "No account has this id", body = ErrorDetail,
            example = json!({ "detail": "User not found" })),
        (status = 409, description = "Disabling the last enabled admin", body = ErrorDetail,
            example = json!({ "detail": "Cannot remove the last admin" })),
        (status = 413, description = "Body over 64 KiB", body = ErrorDetail),
        (status = 422, description = "The id is not a positive integer, or `disabled` is not a boolean", body = ValidationError),
    )
)]
pub async fn update_user(
    Require(caller): Require<UsersWrite>,
    State(state): State<AppState>,
    client: ClientInfo,
    path: PathParams,
    JsonFields(mut fields): JsonFields,
) -> Result<Json<AdminUser>, ApiError> {
    let mut errors = Vec::new();
    // A bad id is listed with the body's errors, as FastAPI lists them together.
    let id = match user_id(&path) {
        Ok(id) => Some(id),
        Err(ApiError::Validation(found)) => {
            errors.extend(found);
            None
        }
        Err(other) => return Err(other),
    };
    let disabled = fields.optional_bool("disabled", &mut errors);
    let (Some(id), true) = (id, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let account = match disabled {
        Some(disabled) => {
            state
                .auth
                .set_disabled(caller.actor(), id, disabled, &client)
                .await?
        }
        None => state.auth.account(id).await?,
    };
    Ok(Json(account.into()))
}

/// Delete an account.
#[utoipa::path(
    delete,
    path = "/admin/users/{id}",
    tag = "admin",
    summary = "Delete an account",
    description = "Requires `users:delete`. The account, its sessions and tokens are gone; its \
        email and username become free.",
    params(("id" = i64, Path, description = "The account's id", minimum = 1)),
    security(("OAuth2PasswordBearer" = ["users:delete"]), ("bearerAuth" = [])),
    responses(
        (status = 204, description = "The account is deleted"),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `users:delete`, or the change concerns permissions the caller does not hold (a role it lacks, an account that holds more)", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
        (status = 404, description = "No account has this id", body = ErrorDetail,
            example = json!({ "detail": "User not found" })),
        (status = 409, description = "Deleting the last enabled admin", body = ErrorDetail,
            example = json!({ "detail": "Cannot remove the last admin" })),
        (status = 422, description = "The id is not a positive integer", body = ValidationError),
    )
)]
pub async fn delete_user(
    Require(caller): Require<UsersDelete>,
    State(state): State<AppState>,
    client: ClientInfo,
    path: PathParams,
) -> Result<StatusCode, ApiError> {
    let id = user_id(&path)?;
    state
        .auth
        .delete_account(caller.actor(), id, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End every session of an account.
#[utoipa::path(
    delete,
    path = "/admin/users/{id}/sessions",
    tag = "admin",
    summary = "End every session of an account",
    description = "Requires `sessions:revoke`. The account's access and refresh tokens stop \
        working at once; it can log in again.",
    params(("id" = i64, Path, description = "The account's id", minimum = 1)),
    security(("OAuth2PasswordBearer" = ["sessions:revoke"]), ("bearerAuth" = [])),
    responses(
        (status = 204, description = "Every session of the account is ended"),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `sessions:revoke`, or the change concerns permissions the caller does not hold (a role it lacks, an account that holds more)", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
        (status = 404, description = "No account has this id", body = ErrorDetail,
            example = json!({ "detail": "User not found" })),
        (status = 422, description = "The id is not a positive integer", body = ValidationError),
    )
)]
pub async fn end_sessions(
    Require(caller): Require<SessionsRevoke>,
    State(state): State<AppState>,
    client: ClientInfo,
    path: PathParams,
) -> Result<StatusCode, ApiError> {
    let id = user_id(&path)?;
    state.auth.end_sessions(caller.actor(), id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests;
