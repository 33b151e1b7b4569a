//! The admin use cases: accounts (list, read, disable, delete, end sessions), roles (list,
//! create, change, delete, grant, revoke) and the admin account ensured at start-up. Whether the
//! caller may do any of this is the HTTP layer's check (its permission guard); this layer
//! checks only what the change itself must respect (the last admin, built-in roles).
//!
//! Every change is recorded in the audit trail, in the change's transaction: actor, target,
//! the client, and what changed (ids and role names, never an address).

use crate::config::AdminAccount;
use crate::domain::{Account, Permissions, Role, RoleName, UniqueField, UserId};
use crate::metrics::RevokeReason;
use crate::store::{AccountQuery, AdminGrant, Db, Refusal, StoreError};

use super::passwords::PasswordHasher;
use super::{Auth, AuthError, ClientInfo};
use crate::domain::{AuditEvent, Outcome};
use crate::metrics::Metrics;

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

/// Who makes an admin change: the caller and what its roles allow now.
///
/// **Nobody acts above their own permissions.** A caller may grant, revoke, create, change or
/// delete only a role whose permissions it holds itself, and may disable, delete, end the
/// sessions of or change the roles of only an account whose permissions it holds itself
/// (its own included); anything else is [`AuthError::Forbidden`]. Without this rule
/// `roles:write` would be `admin` in all but name (its holder could grant itself `admin`), and
/// `users:write` could lock every admin out.
#[derive(Debug, Clone, Copy)]
pub struct Actor {
    /// The caller.
    pub id: UserId,
    /// What the caller's roles allow (read with its session).
    pub permissions: Permissions,
}

impl Actor {
    /// Refused unless the caller holds every permission in `permissions`.
    fn covers(self, permissions: Permissions) -> Result<(), AuthError> {
        if permissions.is_subset_of(self.permissions) {
            Ok(())
        } else {
            tracing::info!(
                actor_user_id = self.id.get(),
                "admin change refused: it concerns permissions the caller does not hold"
            );
            Err(AuthError::Forbidden)
        }
    }
}

/// What the roles named `held` allow, according to `roles`.
fn permissions_of(roles: &[Role], held: &[RoleName]) -> Permissions {
    roles
        .iter()
        .filter(|role| held.contains(&role.name))
        .fold(Permissions::NONE, |all, role| {
            role.permissions.iter().fold(all, Permissions::with)
        })
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
        actor: Actor,
        target: UserId,
        disabled: bool,
        client: &ClientInfo,
    ) -> Result<Account, AuthError> {
        self.may_act_on(actor, target).await?;
        let event = if disabled {
            AuditEvent::UserDisabled
        } else {
            AuditEvent::UserEnabled
        };
        let audit = self.success(client, event).by(actor.id).on(target);
        let (account, revoked) = refused(
            self.db
                .set_disabled(target, disabled, self.now(), &audit)
                .await?,
        )?;
        self.audited([&audit]);
        self.metrics
            .record_sessions_revoked(RevokeReason::Admin, revoked);
        tracing::info!(
            actor_user_id = actor.id.get(),
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
    pub async fn delete_account(
        &self,
        actor: Actor,
        target: UserId,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.may_act_on(actor, target).await?;
        let audit = self
            .success(client, AuditEvent::UserDeleted)
            .by(actor.id)
            .on(target);
        refused(self.db.delete_user(target, &audit).await?)?;
        self.audited([&audit]);
        tracing::info!(
            actor_user_id = actor.id.get(),
            target_user_id = target.get(),
            "account deleted"
        );
        Ok(())
    }

    /// Ends every session of `target` (counted under `admin`); [`Refusal::UserNotFound`] if
    /// there is no such account.
    pub async fn end_sessions(
        &self,
        actor: Actor,
        target: UserId,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.may_act_on(actor, target).await?;
        let audit = self
            .success(client, AuditEvent::SessionRevoked)
            .by(actor.id)
            .on(target);
        let revoked = self
            .db
            .revoke_all_sessions(target, self.now(), &audit)
            .await?;
        self.audited([&audit]);
        self.metrics
            .record_sessions_revoked(RevokeReason::Admin, revoked);
        tracing::info!(
            actor_user_id = actor.id.get(),
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
        actor: Actor,
        target: UserId,
        role: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let role = self.existing_role_name(target, role).await?;
        self.may_grant(actor, target, &role).await?;
        let audit = self
            .success(client, AuditEvent::RoleGranted)
            .by(actor.id)
            .on(target)
            .with("role", role.as_str());
        refused(
            self.db
                .grant_role(target, &role, self.now(), &audit)
                .await?,
        )?;
        self.audited([&audit]);
        tracing::info!(
            actor_user_id = actor.id.get(),
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
        actor: Actor,
        target: UserId,
        role: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let role = self.existing_role_name(target, role).await?;
        self.may_grant(actor, target, &role).await?;
        let audit = self
            .success(client, AuditEvent::RoleRevoked)
            .by(actor.id)
            .on(target)
            .with("role", role.as_str());
        refused(self.db.revoke_role(target, &role, &audit).await?)?;
        self.audited([&audit]);
        tracing::info!(
            actor_user_id = actor.id.get(),
            target_user_id = target.get(),
            role = role.as_str(),
            "role revoked"
        );
        Ok(())
    }

    /// Refused unless `target` exists, `actor` may act on it ([`Self::may_act_on`]), `role`
    /// exists and `actor` holds every permission of it (see [`Actor`]).
    async fn may_grant(
        &self,
        actor: Actor,
        target: UserId,
        role: &RoleName,
    ) -> Result<(), AuthError> {
        let roles = self.may_act_on(actor, target).await?;
        let granted = roles
            .iter()
            .find(|stored| stored.name == *role)
            .ok_or(AuthError::Refused(Refusal::RoleNotFound))?;
        actor.covers(granted.permissions)
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

    /// Refused unless `target` exists ([`Refusal::UserNotFound`]) and `actor` holds every
    /// permission `target`'s roles allow ([`AuthError::Forbidden`]; see [`Actor`]).
    /// Every role as stored, for a caller that needs them next.
    async fn may_act_on(&self, actor: Actor, target: UserId) -> Result<Vec<Role>, AuthError> {
        let account = self
            .db
            .account(target)
            .await?
            .ok_or(AuthError::Refused(Refusal::UserNotFound))?;
        let roles = self.db.roles().await?;
        if actor.id != target {
            actor.covers(permissions_of(&roles, &account.user.roles))?;
        }
        Ok(roles)
    }

    /// The role named `name` as stored; [`Refusal::RoleNotFound`] if there is none.
    async fn stored_role(&self, name: &RoleName) -> Result<Role, AuthError> {
        self.db
            .roles()
            .await?
            .into_iter()
            .find(|role| role.name == *name)
            .ok_or(AuthError::Refused(Refusal::RoleNotFound))
    }

    /// Every role with its permissions, by name.
    pub async fn roles(&self) -> Result<Vec<Role>, AuthError> {
        Ok(self.db.roles().await?)
    }

    /// Creates a custom role; [`Refusal::RoleExists`] if the name is taken (built-in names
    /// included).
    pub async fn create_role(
        &self,
        actor: Actor,
        role: Role,
        client: &ClientInfo,
    ) -> Result<Role, AuthError> {
        let role = Role {
            builtin: false,
            ..role
        };
        actor.covers(role.permissions)?;
        let audit = self
            .success(client, AuditEvent::RoleCreated)
            .by(actor.id)
            .with("role", role.name.as_str())
            .with("permissions", role.permissions.names());
        refused(self.db.create_role(&role, self.now(), &audit).await?)?;
        self.audited([&audit]);
        tracing::info!(
            actor_user_id = actor.id.get(),
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
        actor: Actor,
        name: &str,
        description: &str,
        permissions: Permissions,
        client: &ClientInfo,
    ) -> Result<Role, AuthError> {
        let name = RoleName::parse(name).map_err(|_| AuthError::Refused(Refusal::RoleNotFound))?;
        let stored = self.stored_role(&name).await?;
        if !stored.builtin {
            actor.covers(stored.permissions)?;
            actor.covers(permissions)?;
        }
        let audit = self
            .success(client, AuditEvent::RoleUpdated)
            .by(actor.id)
            .with("role", name.as_str());
        let role = refused(
            self.db
                .update_role(&name, description, permissions, self.now(), &audit)
                .await?,
        )?;
        self.audited([&audit]);
        tracing::info!(
            actor_user_id = actor.id.get(),
            role = role.name.as_str(),
            permissions = ?role.permissions,
            "role changed"
        );
        Ok(role)
    }

    /// Deletes the custom role named `name` and every grant of it; [`Refusal::RoleNotFound`]
    /// for an unknown (or invalid) name, [`Refusal::BuiltinRole`] for `admin` and `user`.
    pub async fn delete_role(
        &self,
        actor: Actor,
        name: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let name = RoleName::parse(name).map_err(|_| AuthError::Refused(Refusal::RoleNotFound))?;
        let stored = self.stored_role(&name).await?;
        if !stored.builtin {
            actor.covers(stored.permissions)?;
        }
        let audit = self
            .success(client, AuditEvent::RoleDeleted)
            .by(actor.id)
            .with("role", name.as_str());
        refused(self.db.delete_role(&name, &audit).await?)?;
        self.audited([&audit]);
        tracing::info!(
            actor_user_id = actor.id.get(),
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
/// account; [`AuthError::UnverifiedAdminAddress`] if an account has the address but never
/// proved it receives mail there (anyone may sign up with the address an operator names
/// later: promoting it would hand the service to them). A disabled account is not enabled
/// again (a warning says so).
///
/// Audit: `admin.bootstrapped` (no actor, the account as target; `created` and `source`,
/// `environment` or `command`, in its details) when the account was created or given `admin`.
pub async fn ensure_admin(
    db: &Db,
    hasher: &PasswordHasher,
    admin: &AdminAccount,
    now: i64,
    source: BootstrapSource,
    metrics: &Metrics,
) -> Result<AdminBootstrap, AuthError> {
    let audit = ClientInfo::default()
        .audit(AuditEvent::AdminBootstrapped, Outcome::Success)
        .with("source", source.as_str());
    let done = ensure(db, hasher, admin, now, &audit).await;
    if done.is_ok() {
        super::audit::written(metrics, [&audit]);
    }
    done
}

/// Where [`ensure_admin`] was asked from, for its audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapSource {
    /// `ADMIN_EMAIL`, `ADMIN_USERNAME` and `ADMIN_PASSWORD` at start-up.
    Environment,
    /// `cerego create-admin`.
    Command,
}

impl BootstrapSource {
    /// `environment` or `command`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "environment",
            Self::Command => "command",
        }
    }
}

async fn ensure(
    db: &Db,
    hasher: &PasswordHasher,
    admin: &AdminAccount,
    now: i64,
    audit: &crate::store::AuditEntry,
) -> Result<AdminBootstrap, AuthError> {
    if let Some(done) = grant_existing(db, admin, now, audit).await? {
        return Ok(done);
    }
    let admission = hasher.admit().await?;
    let hash = hasher
        .hash(admission, admin.password.clone().into_secret())
        .await?;
    match db.insert_admin(&admin.account, &hash, now, audit).await {
        Ok(user) => {
            tracing::info!(user_id = user.id.get(), "admin account created");
            Ok(AdminBootstrap::Created(user.id))
        }
        // Another process created the account since the lookup (give it the role: it has it
        // already), or the username is another account's. Which index refused the row does not
        // tell: with both taken, SQLite names the one created last, the username's. So the
        // address decides: an account that has it now is the other process's.
        Err(StoreError::Conflict(_)) => match grant_existing(db, admin, now, audit).await? {
            Some(done) => Ok(done),
            // The caller says so, in its own words (a setting at start-up, a flag in the CLI).
            None => Err(AuthError::Taken(UniqueField::Username)),
        },
        Err(other) => Err(other.into()),
    }
}

/// Gives `admin` to the account with the address, if there is one; `None` if there is none.
async fn grant_existing(
    db: &Db,
    admin: &AdminAccount,
    now: i64,
    audit: &crate::store::AuditEntry,
) -> Result<Option<AdminBootstrap>, AuthError> {
    let done = match db
        .grant_admin_by_email(&admin.account.email, now, audit)
        .await?
    {
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
        AdminGrant::Unverified(id) => {
            tracing::error!(
                user_id = id.get(),
                "the admin address belongs to an account whose address is not verified; \
                 it was not made an admin"
            );
            return Err(AuthError::UnverifiedAdminAddress);
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
