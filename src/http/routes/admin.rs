//! `/admin/*`: accounts ([`users`]), roles ([`roles`]) and the audit trail ([`audit`]). Every handler takes
//! [`Require`](crate::http::extract::Require) first, naming the permission it needs, so a caller
//! without it gets its 401 or 403 before anything about the request is checked.
//!
//! This file holds what both groups show: the JSON of an account and of a role, and the
//! parameters they share.

pub mod audit;
pub mod roles;
pub mod users;

use std::borrow::Cow;

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema::SchemaType};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::{Account, Permission, Role, UserId};
use crate::http::error::ApiError;
use crate::http::extract::PathParams;
use crate::http::routes::auth::UserResponse;
use crate::http::timestamp;

/// An account as the admin API shows it: the user, whether it is disabled, its last login.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": 7, "email": "grace@example.com", "username": "grace",
    "created_at": "2026-11-26T14:37:50.149054Z", "updated_at": "2026-11-27T09:12:03.000000Z",
    "email_verified": true, "is_admin": false, "roles": ["support", "user"],
    "disabled": false, "last_login_at": "2026-11-28T17:45:10.520311Z"
}))]
pub struct AdminUser {
    #[serde(flatten)]
    user: UserResponse,
    /// Whether an admin disabled the account (it cannot log in, and had every session ended).
    disabled: bool,
    /// When the account last logged in; `null` if never since roles were introduced.
    #[serde(serialize_with = "timestamp::serialize_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    last_login_at: Option<OffsetDateTime>,
}

impl From<Account> for AdminUser {
    fn from(account: Account) -> Self {
        Self {
            user: account.user.into(),
            disabled: account.disabled_at.is_some(),
            last_login_at: account.last_login_at,
        }
    }
}

/// A role: a named set of permissions.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "name": "support", "description": "Reads accounts and ends their sessions",
    "permissions": ["users:read", "sessions:revoke"], "builtin": false
}))]
pub struct RoleResponse {
    /// 2 to 64 of `a-z 0-9 _ . -`, starting with a letter.
    name: String,
    /// What the role is for (may be empty).
    description: String,
    /// What it allows, in the order the permissions are listed in `PermissionName`.
    #[schema(value_type = Vec<PermissionName>)]
    permissions: Vec<&'static str>,
    /// `admin` (every permission) and `user` (none; every account holds it) are built in: they
    /// cannot be changed or deleted.
    builtin: bool,
}

impl From<Role> for RoleResponse {
    fn from(role: Role) -> Self {
        Self {
            name: role.name.as_str().to_owned(),
            description: role.description,
            permissions: role.permissions.names(),
            builtin: role.builtin,
        }
    }
}

/// A permission's name, as roles list them (documentation: the schema is built from
/// [`Permission::ALL`], so it cannot fall behind).
pub struct PermissionName;

impl PartialSchema for PermissionName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some("Something a role allows"))
            .enum_values(Some(Permission::ALL.iter().map(|p| p.as_str())))
            .into()
    }
}

impl ToSchema for PermissionName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PermissionName")
    }
}

/// The account id of the path (`{id}`): 422 at `["path", "id"]` unless a positive integer.
fn user_id(path: &PathParams) -> Result<UserId, ApiError> {
    path.id("id").map(UserId::new)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::domain::{Permissions, RoleName, User};

    fn account(disabled: bool, last_login: bool) -> Account {
        let at = datetime!(2026-11-29 10:02:11.482113 UTC);
        Account {
            user: User {
                id: UserId::new(7),
                email: "bob@example.com".to_owned(),
                username: "bob".to_owned(),
                created_at: at,
                updated_at: at,
                email_verified_at: None,
                roles: vec![RoleName::admin(), RoleName::user()],
            },
            disabled_at: disabled.then_some(at),
            last_login_at: last_login.then_some(at),
        }
    }

    #[test]
    fn an_admin_user_is_the_user_response_with_disabled_and_last_login_at() {
        let shown = serde_json::to_value(AdminUser::from(account(true, true))).expect("JSON");
        assert_eq!(
            shown,
            json!({
                "id": 7, "email": "bob@example.com", "username": "bob",
                "created_at": "2026-11-29T10:02:11.482113Z",
                "updated_at": "2026-11-29T10:02:11.482113Z",
                "email_verified": false, "is_admin": true, "roles": ["admin", "user"],
                "disabled": true, "last_login_at": "2026-11-29T10:02:11.482113Z"
            })
        );
        let never = serde_json::to_value(AdminUser::from(account(false, false))).expect("JSON");
        assert_eq!(never["disabled"], json!(false));
        assert_eq!(never["last_login_at"], json!(null));
    }

    #[test]
    fn a_role_lists_its_permissions_in_declaration_order() {
        let role = Role {
            name: RoleName::parse("support").expect("valid"),
            description: "Help desk".to_owned(),
            permissions: [Permission::SessionsRevoke, Permission::UsersRead]
                .into_iter()
                .collect::<Permissions>(),
            builtin: false,
        };
        assert_eq!(
            serde_json::to_value(RoleResponse::from(role)).expect("JSON"),
            json!({
                "name": "support", "description": "Help desk",
                "permissions": ["users:read", "sessions:revoke"], "builtin": false
            })
        );
    }
}
