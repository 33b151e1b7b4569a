//! Domain types: values that are valid by construction.
//!
//! Every type here has a private field and a `parse` constructor, so code that holds an
//! [`Email`], a [`Username`] or a [`NewPassword`] never re-checks it. Nothing in this module
//! knows about HTTP or SQL.

mod audit;
mod email;
pub mod password;
mod role;
mod user;
mod username;

pub use audit::{AuditEvent, Outcome};
pub use email::{Email, EmailError};
pub use password::{NewPassword, PasswordError, is_common_password};
pub use role::{
    Permission, Permissions, ROLE_DESCRIPTION_MAX_LEN, Role, RoleName, RoleNameError,
    roles_from_list,
};
pub use user::{Account, NewUser, Session, SessionId, UniqueField, User, UserId};
pub use username::{Username, UsernameError};

/// A rule a field broke, in the words a client can show and a machine code it can branch on.
///
/// The codes follow pydantic's names where pydantic has one (`string_too_short`,
/// `value_error.email`), so clients written for the FastAPI design keep matching them.
pub trait FieldRule: std::fmt::Display {
    /// Machine-readable code, sent as the `type` of a 422 entry.
    fn code(&self) -> &'static str;
}
