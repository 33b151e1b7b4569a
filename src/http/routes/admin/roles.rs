//! `/admin/roles` (list, create, replace, delete) and `/admin/users/{id}/roles/{role}` (grant,
//! revoke).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa::ToSchema;

use super::{PermissionName, RoleResponse, user_id};
use crate::auth::ClientInfo;
use crate::domain::{Permission, Permissions, ROLE_DESCRIPTION_MAX_LEN, Role, RoleName};
use crate::http::AppState;
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{Fields, JsonFields, PathParams, Require, RolesRead, RolesWrite, check};
use crate::http::openapi::{ErrorDetail, ValidationError};

/// `POST /admin/roles` body (documentation; the handler reads the fields itself).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct CreateRoleRequest {
    /// 2 to 64 of `a-z 0-9 _ . -`, starting with a letter; not `admin` or `user`.
    #[schema(
        example = "support",
        min_length = 2,
        max_length = 64,
        pattern = r"^[a-z][a-z0-9_.-]{1,63}$"
    )]
    name: String,
    /// What the role is for; default empty.
    #[schema(example = "Reads accounts and ends their sessions", max_length = 500)]
    description: Option<String>,
    /// What the role allows (repeats are merged).
    #[schema(value_type = Vec<PermissionName>, example = json!(["users:read", "sessions:revoke"]))]
    permissions: Vec<String>,
}

/// `PUT /admin/roles/{name}` body (documentation; the handler reads the fields itself).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the request body for OpenAPI only")]
struct ReplaceRoleRequest {
    /// What the role is for; absent: empty.
    #[schema(example = "Reads accounts", max_length = 500)]
    description: Option<String>,
    /// What the role allows from now on (repeats are merged).
    #[schema(value_type = Vec<PermissionName>, example = json!(["users:read"]))]
    permissions: Vec<String>,
}

/// The message of an unknown permission: pydantic's for an enum, listing every permission.
fn unknown_permission_message() -> String {
    let names: Vec<String> = Permission::ALL
        .iter()
        .map(|p| format!("'{}'", p.as_str()))
        .collect();
    match names.split_last() {
        Some((last, [])) => format!("Input should be {last}"),
        Some((last, rest)) => format!("Input should be {} or {last}", rest.join(", ")),
        None => "Input should be a permission".to_owned(),
    }
}

/// The `description` and `permissions` fields both bodies have; `errors` gets what is wrong.
fn description_and_permissions(
    fields: &mut Fields,
    errors: &mut Vec<FieldError>,
) -> (Option<String>, Option<Permissions>) {
    let description = match fields.optional("description", errors) {
        Some(text) if text.chars().count() > ROLE_DESCRIPTION_MAX_LEN => {
            errors.push(FieldError::field(
                "description",
                format!("String should have at most {ROLE_DESCRIPTION_MAX_LEN} characters"),
                "string_too_long",
            ));
            None
        }
        text => Some(text.unwrap_or_default()),
    };
    let permissions = fields
        .required_strings("permissions", errors)
        .and_then(|names| {
            let parsed: Option<Permissions> =
                names.iter().map(|name| Permission::parse(name)).collect();
            if parsed.is_none() {
                errors.push(FieldError::field(
                    "permissions",
                    unknown_permission_message(),
                    "enum",
                ));
            }
            parsed
        });
    (description, permissions)
}

/// List roles.
#[utoipa::path(
    get,
    path = "/admin/roles",
    tag = "admin",
    summary = "List roles",
    description = "Requires `roles:read`. Every role with its permissions, by name.",
    security(("OAuth2PasswordBearer" = ["roles:read"]), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "Every role, by name", body = [RoleResponse]),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `roles:read`", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
    )
)]
pub async fn list_roles(
    Require(_caller): Require<RolesRead>,
    State(state): State<AppState>,
) -> Result<Json<Vec<RoleResponse>>, ApiError> {
    let roles = state.auth.roles().await?;
    Ok(Json(roles.into_iter().map(RoleResponse::from).collect()))
}

/// Create a role.
#[utoipa::path(
    post,
    path = "/admin/roles",
    tag = "admin",
    summary = "Create a role",
    description = "Requires `roles:write`.",
    request_body(content = CreateRoleRequest, content_type = "application/json"),
    security(("OAuth2PasswordBearer" = ["roles:write"]), ("bearerAuth" = [])),
    responses(
        (status = 201, description = "The role", body = RoleResponse),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `roles:write`, or the change concerns permissions the caller does not hold (a role it lacks, an account that holds more)", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
        (status = 409, description = "A role has this name (`admin` and `user` included)", body = ErrorDetail,
            example = json!({ "detail": "Role already exists" })),
        (status = 413, description = "Body over 64 KiB", body = ErrorDetail),
        (status = 422, description = "A bad name, a description over 500 characters, or an unknown permission", body = ValidationError),
    )
)]
pub async fn create_role(
    Require(caller): Require<RolesWrite>,
    State(state): State<AppState>,
    client: ClientInfo,
    JsonFields(mut fields): JsonFields,
) -> Result<(StatusCode, Json<RoleResponse>), ApiError> {
    let mut errors = Vec::new();
    let name = fields
        .required("name", &mut errors)
        .and_then(|raw| check("name", RoleName::parse(&raw), &mut errors));
    let (description, permissions) = description_and_permissions(&mut fields, &mut errors);
    let (Some(name), Some(description), Some(permissions), true) =
        (name, description, permissions, errors.is_empty())
    else {
        return Err(ApiError::Validation(errors));
    };
    let role = Role {
        name,
        description,
        permissions,
        builtin: false,
    };
    let role = state
        .auth
        .create_role(caller.actor(), role, &client)
        .await?;
    Ok((StatusCode::CREATED, Json(role.into())))
}

/// Replace a role's description and permissions.
#[utoipa::path(
    put,
    path = "/admin/roles/{name}",
    tag = "admin",
    summary = "Replace a role's description and permissions",
    description = "Requires `roles:write`. The holders of the role have the new permissions from \
        their next request on.",
    params(("name" = String, Path, description = "The role's name")),
    request_body(content = ReplaceRoleRequest, content_type = "application/json"),
    security(("OAuth2PasswordBearer" = ["roles:write"]), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "The role as it is now", body = RoleResponse),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `roles:write`, or the change concerns permissions the caller does not hold (a role it lacks, an account that holds more)", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
        (status = 404, description = "No role has this name", body = ErrorDetail,
            example = json!({ "detail": "Role not found" })),
        (status = 409, description = "`admin` and `user` are built in", body = ErrorDetail,
            example = json!({ "detail": "Built-in roles cannot be changed" })),
        (status = 413, description = "Body over 64 KiB", body = ErrorDetail),
        (status = 422, description = "A description over 500 characters, an unknown permission, or a name that is not UTF-8", body = ValidationError),
    )
)]
pub async fn replace_role(
    Require(caller): Require<RolesWrite>,
    State(state): State<AppState>,
    client: ClientInfo,
    path: PathParams,
    JsonFields(mut fields): JsonFields,
) -> Result<Json<RoleResponse>, ApiError> {
    let name = path.text("name")?;
    let mut errors = Vec::new();
    let (description, permissions) = description_and_permissions(&mut fields, &mut errors);
    let (Some(description), Some(permissions), true) =
        (description, permissions, errors.is_empty())
    else {
        return Err(ApiError::Validation(errors));
    };
    let role = state
        .auth
        .update_role(caller.actor(), name, &description, permissions, &client)
        .await?;
    Ok(Json(role.into()))
}

/// Delete a role.
#[utoipa::path(
    delete,
    path = "/admin/roles/{name}",
    tag = "admin",
    summary = "Delete a role",
    description = "Requires `roles:write`. Its holders lose it (and what it allowed) from their \
        next request on.",
    params(("name" = String, Path, description = "The role's name")),
    security(("OAuth2PasswordBearer" = ["roles:write"]), ("bearerAuth" = [])),
    responses(
        (status = 204, description = "The role is deleted"),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `roles:write`, or the change concerns permissions the caller does not hold (a role it lacks, an account that holds more)", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
        (status = 404, description = "No role has this name", body = ErrorDetail,
            example = json!({ "detail": "Role not found" })),
        (status = 409, description = "`admin` and `user` are built in", body = ErrorDetail,
            example = json!({ "detail": "Built-in roles cannot be changed" })),
        (status = 422, description = "The name is percent-encoded bytes that are not UTF-8", body = ValidationError),
    )
)]
pub async fn delete_role(
    Require(caller): Require<RolesWrite>,
    State(state): State<AppState>,
    client: ClientInfo,
    path: PathParams,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .delete_role(caller.actor(), path.text("name")?, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give an account a role.
#[utoipa::path(
    put,
    path = "/admin/users/{id}/roles/{role}",
    tag = "admin",
    summary = "Give an account a role",
    description = "Requires `roles:write`. Idempotent; the account has what the role allows from \
        its next request on.",
    params(
        ("id" = i64, Path, description = "The account's id", minimum = 1),
        ("role" = String, Path, description = "The role's name"),
    ),
    security(("OAuth2PasswordBearer" = ["roles:write"]), ("bearerAuth" = [])),
    responses(
        (status = 204, description = "The account holds the role"),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `roles:write`, or the change concerns permissions the caller does not hold (a role it lacks, an account that holds more)", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
        (status = 404, description = "No account has this id (`User not found`, checked first), or no role has this name (`Role not found`)", body = ErrorDetail,
            example = json!({ "detail": "Role not found" })),
        (status = 422, description = "The id is not a positive integer, or the role's name is not UTF-8", body = ValidationError),
    )
)]
pub async fn grant_role(
    Require(caller): Require<RolesWrite>,
    State(state): State<AppState>,
    client: ClientInfo,
    path: PathParams,
) -> Result<StatusCode, ApiError> {
    let id = user_id(&path)?;
    state
        .auth
        .grant_role(caller.actor(), id, path.text("role")?, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Take a role from an account.
#[utoipa::path(
    delete,
    path = "/admin/users/{id}/roles/{role}",
    tag = "admin",
    summary = "Take a role from an account",
    description = "Requires `roles:write`. Idempotent; the account loses what the role allowed \
        from its next request on. Taking `admin` from the last enabled admin is refused.",
    params(
        ("id" = i64, Path, description = "The account's id", minimum = 1),
        ("role" = String, Path, description = "The role's name"),
    ),
    security(("OAuth2PasswordBearer" = ["roles:write"]), ("bearerAuth" = [])),
    responses(
        (status = 204, description = "The account does not hold the role"),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `roles:write`, or the change concerns permissions the caller does not hold (a role it lacks, an account that holds more)", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
        (status = 404, description = "No account has this id (`User not found`, checked first), or no role has this name (`Role not found`)", body = ErrorDetail,
            example = json!({ "detail": "User not found" })),
        (status = 409, description = "Taking `admin` from the last enabled admin", body = ErrorDetail,
            example = json!({ "detail": "Cannot remove the last admin" })),
        (status = 422, description = "The id is not a positive integer, or the role's name is not UTF-8", body = ValidationError),
    )
)]
pub async fn revoke_role(
    Require(caller): Require<RolesWrite>,
    State(state): State<AppState>,
    client: ClientInfo,
    path: PathParams,
) -> Result<StatusCode, ApiError> {
    let id = user_id(&path)?;
    state
        .auth
        .revoke_role(caller.actor(), id, path.text("role")?, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{FieldRule, RoleNameError};

    #[test]
    fn an_unknown_permission_is_described_as_pydantic_describes_an_enum() {
        assert_eq!(
            unknown_permission_message(),
            "Input should be 'users:read', 'users:write', 'users:delete', 'sessions:revoke', \
             'roles:read', 'roles:write' or 'audit:read'"
        );
    }

    #[test]
    fn role_names_are_checked_with_the_domain_rule() {
        let mut errors = Vec::new();
        assert!(check("name", RoleName::parse("Bad"), &mut errors).is_none());
        assert_eq!(errors[0].loc, ["body", "name"]);
        assert_eq!(errors[0].kind, RoleNameError::Pattern.code());
    }
}
