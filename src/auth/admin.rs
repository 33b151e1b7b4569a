//! The admin use cases: accounts (list, read, disable, delete, end sessions), roles (list,
//! create, change, delete, grant, revoke) and the admin account ensured at start-up. Whether the
//! caller may do any of this is the HTTP layer's check (its permission guard); this layer
//! checks only what the change itself must respect (the last admin, built-in roles).
//!
//! Every change is logged at info with `actor_user_id` and `target_user_id` (ids only, never an
//! address): the audit trail to come builds on these lines.

use crate::config::AdminAccount;
use crate::domain::{Account, Permissions, Role, RoleName, UniqueField, UserId};
use crate::metrics::RevokeReason;
use crate::store::{AccountQuery, AdminGrant, Db, Refusal, StoreError};

use super::passwords::PasswordHasher;
use super::{Auth, AuthError};

/// One page of [`Auth::accounts`], newest first.
#[derive(Debug)]
pub struct AccountPage {
    /// At most the page size of accounts.
    pub accounts: Vec<Account>,
    /// The id to continue after (the last account's) when more accounts follow; `None` when
    /// this page is the last.
    pub next: Option<UserId>,
}

/// What [`ensure_admin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminBootstrap {
    /// No account had the address: it was created with the `admin` role.
    Created(UserId),
    /// The account with the address has just been given `admin` (its password is unchanged).
    Granted(UserId),
    /// The account with the address held `admin` already.
    AlreadyAdmin(UserId),
}

impl AdminBootstrap {
    /// The admin account's id.
    pub fn id(self) -> UserId {
        match self {
            Self::Created(id) | Self::Granted(id) | Self::AlreadyAdmin(id) => id,
        }
    }
}

/// A store refusal as the auth layer's error.
fn refused<T>(result: Result<T, Refusal>) -> Result<T, AuthError> {
    result.map_err(AuthError::Refused)
}

impl Auth {
    /// A page of at most `limit` accounts, newest (highest id) first: those with an id below
    /// `before` (the previous page's `next`), whose e-mail address or username contains
    /// `search` (case-insensitively; `None`: every account). Keyset paging: accounts created
    /// meanwhile have higher ids, so they never shift a later page.
    pub async fn accounts(
        &self,
        search: Option<&str>,
        before: Option<UserId>,
        limit: u32,
    ) -> Result<AccountPage, AuthError> {
        // One more than asked for says whether another page follows, without a count.
        let query = AccountQuery {
            search,
            before,
            limit: limit.saturating_add(1),
        };
        let mut accounts = self.db.accounts(&query).await?;
        let more = accounts.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        accounts.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next = if more {
            accounts.last().map(|account| account.user.id)
        } else {
            None
        };
        Ok(AccountPage { accounts, next })
    }

    /// The account with `id`; [`Refusal::UserNotFound`] if there is none.
    pub async fn account(&self, id: UserId) -> Result<Account, AuthError> {
        self.db
            .account(id)
            .await?
            .ok_or(AuthError::Refused(Refusal::UserNotFound))
    }

    /// Disables (`true`) or enables `target`. Disabling ends every session of the account at
    /// once (counted under `admin`) and is refused if it would leave no enabled admin;
    /// disabling a disabled account changes nothing. Enabling does not bring back the sessions
    /// a disable ended. The account as it is now.
    pub async fn set_disabled(
        &self,
        actor: UserId,
        target: UserId,
        disabled: bool,
    ) -> Result<Account, AuthError> {
        let (account, revoked) =
            refused(self.db.set_disabled(target, disabled, self.now()).await?)?;
        self.metrics
            .record_sessions_revoked(RevokeReason::Admin, revoked);
        tracing::info!(
            actor_user_id = actor.get(),
            target_user_id = target.get(),
            sessions_revoked = revoked,
            "{}",
            if disabled {
                "account disabled"
            } else {
                "account enabled"
            }
        );
        Ok(account)
    }

    /// Deletes `target` with its sessions and tokens; its e-mail address and username become
    /// free. Refused if it is the last enabled admin.
    pub async fn delete_account(&self, actor: UserId, target: UserId) -> Result<(), AuthError> {
        refused(self.db.delete_user(target).await?)?;
        tracing::info!(
            actor_user_id = actor.get(),
            target_user_id = target.get(),
            "account deleted"
        );
        Ok(())
    }

    /// Ends every session of `target` (counted under `admin`); [`Refusal::UserNotFound`] if
    /// there is no such account.
    pub async fn end_sessions(&self, actor: UserId, target: UserId) -> Result<(), AuthError> {
        if self.db.account(target).await?.is_none() {
            return Err(AuthError::Refused(Refusal::UserNotFound));
        }
        let revoked = self.db.revoke_all_sessions(target, self.now()).await?;
        self.metrics
            .record_sessions_revoked(RevokeReason::Admin, revoked);
        tracing::info!(
            actor_user_id = actor.get(),
            target_user_id = target.get(),
            sessions_revoked = revoked,
            "sessions ended by an admin"
        );
        Ok(())
    }

    /// Gives `target` the role named `role` (nothing changes if it holds it already). An
    /// unknown account is reported before an unknown role.
    pub async fn grant_role(
        &self,
        actor: UserId,
        target: UserId,
        role: &str,
    ) -> Result<(), AuthError> {
        let role = self.existing_role_name(target, role).await?;
        refused(self.db.grant_role(target, &role, self.now()).await?)?;
        tracing::info!(
            actor_user_id = actor.get(),
            target_user_id = target.get(),
            role = role.as_str(),
            "role granted"
        );
        Ok(())
    }

    /// Takes the role named `role` from `target` (nothing changes if it does not hold it);
    /// refused if that would leave no enabled admin. An unknown account is reported before an
    /// unknown role.
    pub async fn revoke_role(
        &self,
        actor: UserId,
        target: UserId,
        role: &str,
    ) -> Result<(), AuthError> {
        let role = self.existing_role_name(target, role).await?;
        refused(self.db.revoke_role(target, &role).await?)?;
        tracing::info!(
            actor_user_id = actor.get(),
            target_user_id = target.get(),
            role = role.as_str(),
            "role revoked"
        );
        Ok(())
    }

    /// `raw` as a role name. One that is not a valid name names no role; the store is not asked
    /// about it (it could not hold it), only whether `target` exists, which is reported first.
    async fn existing_role_name(&self, target: UserId, raw: &str) -> Result<RoleName, AuthError> {
        match RoleName::parse(raw) {
            Ok(name) => Ok(name),
            Err(_) => Err(AuthError::Refused(
                if self.db.account(target).await?.is_none() {
                    Refusal::UserNotFound
                } else {
                    Refusal::RoleNotFound
                },
            )),
        }
    }

    /// Every role with its permissions, by name.
    pub async fn roles(&self) -> Result<Vec<Role>, AuthError> {
        Ok(self.db.roles().await?)
    }

    /// Creates a custom role; [`Refusal::RoleExists`] if the name is taken (built-in names
    /// included).
    pub async fn create_role(&self, actor: UserId, role: Role) -> Result<Role, AuthError> {
        let role = Role {
            builtin: false,
            ..role
        };
        refused(self.db.create_role(&role, self.now()).await?)?;
        tracing::info!(
            actor_user_id = actor.get(),
            role = role.name.as_str(),
            permissions = ?role.permissions,
            "role created"
        );
        Ok(role)
    }

    /// Replaces the description and permissions of the custom role named `name`;
    /// [`Refusal::RoleNotFound`] for an unknown (or invalid) name, [`Refusal::BuiltinRole`] for
    /// `admin` and `user`.
    pub async fn update_role(
        &self,
        actor: UserId,
        name: &str,
        description: &str,
        permissions: Permissions,
    ) -> Result<Role, AuthError> {
        let name = RoleName::parse(name).map_err(|_| AuthError::Refused(Refusal::RoleNotFound))?;
        let role = refused(
            self.db
                .update_role(&name, description, permissions, self.now())
                .await?,
        )?;
        tracing::info!(
            actor_user_id = actor.get(),
            role = role.name.as_str(),
            permissions = ?role.permissions,
            "role changed"
        );
        Ok(role)
    }

    /// Deletes the custom role named `name` and every grant of it; [`Refusal::RoleNotFound`]
    /// for an unknown (or invalid) name, [`Refusal::BuiltinRole`] for `admin` and `user`.
    pub async fn delete_role(&self, actor: UserId, name: &str) -> Result<(), AuthError> {
        let name = RoleName::parse(name).map_err(|_| AuthError::Refused(Refusal::RoleNotFound))?;
        refused(self.db.delete_role(&name).await?)?;
        tracing::info!(
            actor_user_id = actor.get(),
            role = name.as_str(),
            "role deleted"
        );
        Ok(())
    }
}

/// Ensures the account of `admin` exists and holds `admin` (start-up with `ADMIN_*` set, and
/// `cerego create-admin`). An account with the e-mail address gets the role and keeps its
/// password; otherwise the account is created with the password (hashed off the executor),
/// its address counted as verified and no mail sent. Safe to run from several processes at
/// once: one that loses the race to create the account gives the role to the winner's.
///
/// [`AuthError::Taken`] with [`UniqueField::Username`] if the username belongs to another
/// account. A disabled account is not enabled again (a warning says so).
pub async fn ensure_admin(
    db: &Db,
    hasher: &PasswordHasher,
    admin: &AdminAccount,
    now: i64,
) -> Result<AdminBootstrap, AuthError> {
    if let Some(done) = grant_existing(db, admin, now).await? {
        return Ok(done);
    }
    let admission = hasher.admit().await?;
    let hash = hasher
        .hash(admission, admin.password.clone().into_secret())
        .await?;
    match db.insert_admin(&admin.account, &hash, now).await {
        Ok(user) => {
            tracing::info!(user_id = user.id.get(), "admin account created");
            Ok(AdminBootstrap::Created(user.id))
        }
        // Another process created it since the lookup: give it the role (it has it already).
        Err(StoreError::Conflict(UniqueField::Email)) => {
            grant_existing(db, admin, now).await?.ok_or_else(|| {
                AuthError::Unexpected(anyhow::anyhow!(
                    "the admin account's e-mail address was taken, but no account has it"
                ))
            })
        }
        // The caller says so, in its own words (a setting at start-up, a flag in the CLI).
        Err(StoreError::Conflict(UniqueField::Username)) => {
            Err(AuthError::Taken(UniqueField::Username))
        }
        Err(other) => Err(other.into()),
    }
}

/// Gives `admin` to the account with the address, if there is one; `None` if there is none.
async fn grant_existing(
    db: &Db,
    admin: &AdminAccount,
    now: i64,
) -> Result<Option<AdminBootstrap>, AuthError> {
    let done = match db.grant_admin_by_email(&admin.account.email, now).await? {
        AdminGrant::NoAccount => return Ok(None),
        AdminGrant::Granted(id) => {
            tracing::info!(
                user_id = id.get(),
                "admin role granted to the existing account"
            );
            AdminBootstrap::Granted(id)
        }
        AdminGrant::AlreadyAdmin(id) => {
            tracing::info!(user_id = id.get(), "admin account already an admin");
            AdminBootstrap::AlreadyAdmin(id)
        }
    };
    if db
        .account(done.id())
        .await?
        .is_some_and(|account| account.disabled_at.is_some())
    {
        tracing::warn!(
            user_id = done.id().get(),
            "the admin account is disabled; it stays disabled until an admin enables it"
        );
    }
    Ok(Some(done))
}
