//! SQL for authorization and the admin API: roles, their permissions, who holds them, and the
//! admin changes to accounts (disable, delete).
//!
//! **No change may leave the service without an enabled admin.** Every transaction that could
//! (revoking `admin`, disabling or deleting an account) first writes the `admin` row of `roles`
//! (a no-op update), so such transactions take turns: on PostgreSQL the row lock makes the
//! second wait until the first commits, and its count of the remaining enabled admins (a new
//! statement, so a new snapshot under READ COMMITTED) sees the first one's change; on SQLite the
//! write is the first statement and takes the one write lock. Two concurrent demotions of the
//! only two admins therefore end with one done and one refused.

use crate::domain::{Account, NewUser, Permissions, Role, RoleName, User, UserId};

use super::{Db, StoreError};

/// Why the store refused an admin change; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No account has that id.
    UserNotFound,
    /// No role has that name.
    RoleNotFound,
    /// A role with that name exists already.
    RoleExists,
    /// `admin` and `user` cannot be changed or deleted.
    BuiltinRole,
    /// The change would leave no enabled account holding `admin`.
    LastAdmin,
}

/// One page of [`Db::accounts`].
#[derive(Debug, Clone)]
pub struct AccountQuery<'a> {
    /// Case-insensitive substring of the e-mail address or the username; `None`: every account.
    pub search: Option<&'a str>,
    /// Only accounts with a smaller id than this (the keyset cursor); `None`: from the newest.
    pub before: Option<UserId>,
    /// At most this many.
    pub limit: u32,
}

/// What [`Db::grant_admin_by_email`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminGrant {
    /// No account has the address.
    NoAccount,
    /// The account held `admin` already.
    AlreadyAdmin(UserId),
    /// The account has just been given `admin`.
    Granted(UserId),
}

#[allow(unused_variables, clippy::unused_async)] // the skeleton: filled in next
impl Db {
    /// Every role with its permissions, by name.
    pub async fn roles(&self) -> Result<Vec<Role>, StoreError> {
        todo!()
    }

    /// Stores a new (custom) role; [`Refusal::RoleExists`] if the name is taken.
    pub async fn create_role(
        &self,
        role: &Role,
        now: i64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        todo!()
    }

    /// Replaces a custom role's description and permissions; the role as stored now.
    pub async fn update_role(
        &self,
        name: &RoleName,
        description: &str,
        permissions: Permissions,
        now: i64,
    ) -> Result<Result<Role, Refusal>, StoreError> {
        todo!()
    }

    /// Deletes a custom role (and, by cascade, every grant of it).
    pub async fn delete_role(&self, name: &RoleName) -> Result<Result<(), Refusal>, StoreError> {
        todo!()
    }

    /// Gives `user` the role `role` (nothing changes if it holds it already).
    pub async fn grant_role(
        &self,
        user: UserId,
        role: &RoleName,
        now: i64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        todo!()
    }

    /// Takes `role` from `user` (nothing changes if it does not hold it); refused with
    /// [`Refusal::LastAdmin`] if that leaves no enabled admin.
    pub async fn revoke_role(
        &self,
        user: UserId,
        role: &RoleName,
    ) -> Result<Result<(), Refusal>, StoreError> {
        todo!()
    }

    /// The account with `id`, as the admin API shows it.
    pub async fn account(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        todo!()
    }

    /// A page of accounts, newest (highest id) first.
    pub async fn accounts(&self, query: &AccountQuery<'_>) -> Result<Vec<Account>, StoreError> {
        todo!()
    }

    /// Disables (`true`) or enables `user`. Disabling revokes every session of the account in
    /// the same transaction and is refused with [`Refusal::LastAdmin`] if it would leave no
    /// enabled admin; disabling a disabled account changes nothing (its `disabled_at` stays).
    /// The account as stored now, and how many sessions were revoked.
    pub async fn set_disabled(
        &self,
        user: UserId,
        disabled: bool,
        now: i64,
    ) -> Result<Result<(Account, u64), Refusal>, StoreError> {
        todo!()
    }

    /// Deletes `user` with its sessions, refresh tokens, account tokens and role grants (the
    /// e-mail address and username become free); refused with [`Refusal::LastAdmin`] if it is
    /// the last enabled admin.
    pub async fn delete_user(&self, user: UserId) -> Result<Result<(), Refusal>, StoreError> {
        todo!()
    }

    /// Gives the account with `email` (case-insensitive) the `admin` role, if there is one.
    pub async fn grant_admin_by_email(
        &self,
        email: &crate::domain::Email,
        now: i64,
    ) -> Result<AdminGrant, StoreError> {
        todo!()
    }

    /// Creates an account holding `user` and `admin`, its address counted as verified (the
    /// operator vouches for it), with no verification mail. [`StoreError::Conflict`] if the
    /// e-mail address or username is taken (a replica starting at the same time may have just
    /// created it).
    pub async fn insert_admin(
        &self,
        new: &NewUser,
        hashed_password: &str,
        now: i64,
    ) -> Result<User, StoreError> {
        todo!()
    }
}
