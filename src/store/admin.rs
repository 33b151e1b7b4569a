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

use sqlx::{Connection, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use time::OffsetDateTime;

use super::audit::{AuditEntry, AuditSql};
use super::users::{UserRow, now_micros, user_columns, user_roles};
use super::{Db, StoreError, dispatch};
use crate::domain::{
    Account, Email, NewUser, Permission, Permissions, Role, RoleName, User, UserId,
};

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
    /// The account has never proved it receives mail at the address, so nothing was granted:
    /// anyone can sign up with an address an operator will later name.
    Unverified(UserId),
}

/// An account row as the admin API reads it.
#[derive(FromRow)]
struct AccountRow {
    #[sqlx(flatten)]
    user: UserRow,
    disabled_at: Option<OffsetDateTime>,
    last_login_at: Option<OffsetDateTime>,
}

impl From<AccountRow> for Account {
    fn from(row: AccountRow) -> Self {
        Self {
            user: row.user.into(),
            disabled_at: row.disabled_at,
            last_login_at: row.last_login_at,
        }
    }
}

/// The columns of an [`AccountRow`], for `concat!`.
macro_rules! account_columns {
    () => {
        concat!(user_columns!(), ", users.disabled_at, users.last_login_at")
    };
}

/// A role row with its permissions (names separated by `,`).
#[derive(FromRow)]
struct RoleRow {
    name: String,
    description: String,
    builtin: bool,
    permissions: Option<String>,
}

impl From<RoleRow> for Role {
    fn from(row: RoleRow) -> Self {
        Self {
            name: RoleName::from_stored(row.name),
            description: row.description,
            permissions: Permissions::from_list(row.permissions.as_deref().unwrap_or("")),
            builtin: row.builtin,
        }
    }
}

/// The `SELECT` of a [`RoleRow`], for `concat!`.
macro_rules! role_select {
    () => {
        concat!(
            "SELECT r.name, r.description, r.builtin, ",
            "(SELECT string_agg(rp.permission, ',') FROM role_permissions rp ",
            "WHERE rp.role_name = r.name) AS permissions FROM roles r"
        )
    };
}

impl Db {
    /// Every role with its permissions, by name.
    pub async fn roles(&self) -> Result<Vec<Role>, StoreError> {
        const SQL: &str = concat!(role_select!(), " ORDER BY r.name");
        let rows = dispatch!(self, conn => sqlx::query_as::<_, RoleRow>(SQL)
            .fetch_all(conn)
            .await)?;
        Ok(rows.into_iter().map(Role::from).collect())
    }

    /// Stores a new (custom) role; [`Refusal::RoleExists`] if the name is taken (by a built-in
    /// role too).
    pub async fn create_role(
        &self,
        role: &Role,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<Result<(), Refusal>, StoreError> {
        const SQL: &str = "INSERT INTO roles (name, description, builtin, created_at, updated_at) \
            VALUES ($1, $2, FALSE, $3, $3) ON CONFLICT (name) DO NOTHING RETURNING name";
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let created: Option<String> = sqlx::query_scalar(SQL)
                .bind(role.name.as_str())
                .bind(role.description.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if created.is_none() {
                tx.rollback().await?;
                return Ok(Err(Refusal::RoleExists));
            }
            tx.insert_permissions(role.name.as_str(), role.permissions).await?;
            tx.append(audit, None, &[]).await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    /// Replaces a custom role's description and permissions; the role as stored now.
    pub async fn update_role(
        &self,
        name: &RoleName,
        description: &str,
        permissions: Permissions,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<Result<Role, Refusal>, StoreError> {
        const SQL: &str = "UPDATE roles SET description = $2, updated_at = $3 \
            WHERE name = $1 AND NOT builtin";
        const CLEAR: &str = "DELETE FROM role_permissions WHERE role_name = $1";
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let updated = sqlx::query(SQL)
                .bind(name.as_str())
                .bind(description)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated != 1 {
                let refusal = tx.why_unchangeable(name.as_str()).await?;
                tx.rollback().await?;
                return Ok(Err(refusal));
            }
            // Read under the row lock just taken: what this change replaced, not what a
            // concurrent one had.
            let previous = tx.role(name.as_str()).await?.map(|role| role.permissions.names());
            sqlx::query(CLEAR).bind(name.as_str()).execute(&mut *tx).await?;
            tx.insert_permissions(name.as_str(), permissions).await?;
            let role = tx.role(name.as_str()).await?;
            let extra = [
                ("permissions", role.as_ref().map(|role| role.permissions.names()).into()),
                ("previous_permissions", previous.into()),
            ];
            tx.append(audit, None, &extra).await?;
            tx.commit().await?;
            Ok(role.ok_or(Refusal::RoleNotFound))
        })
    }

    /// Deletes a custom role (and, by cascade, its permissions and every grant of it).
    pub async fn delete_role(
        &self,
        name: &RoleName,
        audit: &AuditEntry,
    ) -> Result<Result<(), Refusal>, StoreError> {
        // The row is locked (a no-op update) before its permissions are read, so the event
        // names the permissions the role had when it went, not before a concurrent change.
        const LOCK: &str =
            "UPDATE roles SET updated_at = updated_at WHERE name = $1 AND NOT builtin";
        const SQL: &str = "DELETE FROM roles WHERE name = $1 AND NOT builtin";
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let locked = sqlx::query(LOCK)
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if locked != 1 {
                let refusal = tx.why_unchangeable(name.as_str()).await?;
                tx.rollback().await?;
                return Ok(Err(refusal));
            }
            let permissions = tx.role(name.as_str()).await?.map(|role| role.permissions.names());
            sqlx::query(SQL).bind(name.as_str()).execute(&mut *tx).await?;
            tx.append(audit, None, &[("permissions", permissions.into())]).await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    /// Gives `user` the role `role` (nothing changes if it holds it already).
    pub async fn grant_role(
        &self,
        user: UserId,
        role: &RoleName,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<Result<(), Refusal>, StoreError> {
        // `WHERE` before `ON CONFLICT`: SQLite needs it to parse an upsert from a `SELECT`.
        const SQL: &str = "INSERT INTO user_roles (user_id, role_name, granted_at) \
            SELECT u.id, r.name, $3 FROM users u, roles r WHERE u.id = $1 AND r.name = $2 \
            ON CONFLICT (user_id, role_name) DO NOTHING";
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let granted = sqlx::query(SQL)
                .bind(user.get())
                .bind(role.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await;
            let granted = match granted {
                Ok(done) => done.rows_affected(),
                // The user or the role was deleted between the insert's read and its foreign
                // key check: say which, as a grant that ran a moment later would.
                Err(err)
                    if err
                        .as_database_error()
                        .is_some_and(|db| db.is_foreign_key_violation()) =>
                {
                    tx.rollback().await?;
                    let missing = conn.missing(user.get(), role.as_str()).await?;
                    return Ok(Err(missing.unwrap_or(Refusal::UserNotFound)));
                }
                Err(err) => return Err(err),
            };
            let outcome = if granted == 1 {
                tx.append(audit, None, &[]).await?;
                Ok(())
            } else {
                tx.missing(user.get(), role.as_str()).await?.map_or(Ok(()), Err)
            };
            tx.commit().await?;
            Ok(outcome)
        })
    }

    /// Takes `role` from `user` (nothing changes if it does not hold it); refused with
    /// [`Refusal::LastAdmin`] if that leaves no enabled admin.
    pub async fn revoke_role(
        &self,
        user: UserId,
        role: &RoleName,
        audit: &AuditEntry,
    ) -> Result<Result<(), Refusal>, StoreError> {
        const SQL: &str = "DELETE FROM user_roles WHERE user_id = $1 AND role_name = $2";
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            tx.lock_admins().await?;
            if let Some(refusal) = tx.missing(user.get(), role.as_str()).await? {
                tx.rollback().await?;
                return Ok(Err(refusal));
            }
            if role.is_admin() && tx.is_last_admin(user.get()).await? {
                tx.rollback().await?;
                return Ok(Err(Refusal::LastAdmin));
            }
            let revoked = sqlx::query(SQL)
                .bind(user.get())
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if revoked == 1 {
                tx.append(audit, None, &[]).await?;
            }
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    /// The account with `id`, as the admin API shows it.
    pub async fn account(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        let row = dispatch!(self, conn => conn.account(id.get()).await)?;
        Ok(row.map(Account::from))
    }

    /// A page of accounts, newest (highest id) first.
    pub async fn accounts(&self, query: &AccountQuery<'_>) -> Result<Vec<Account>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            account_columns!(),
            " FROM users WHERE ($1 IS NULL OR users.id < $1) AND ($2 IS NULL ",
            r"OR lower(users.email) LIKE $2 ESCAPE '\' ",
            r"OR lower(users.username) LIKE $2 ESCAPE '\') ",
            "ORDER BY users.id DESC LIMIT $3"
        );
        // Folded here rather than by the database's `lower()`, which on SQLite folds ASCII only:
        // stored addresses are in canonical form (case-folded) already, usernames are ASCII, and
        // `lower()` on the columns covers rows adopted from the FastAPI system.
        let pattern = query
            .search
            .map(|q| format!("%{}%", escape_like(&q.to_lowercase())));
        let before = query.before.map(UserId::get);
        let limit = i64::from(query.limit);
        let rows = dispatch!(self, conn => sqlx::query_as::<_, AccountRow>(SQL)
            .bind(before)
            .bind(pattern.as_deref())
            .bind(limit)
            .fetch_all(conn)
            .await)?;
        Ok(rows.into_iter().map(Account::from).collect())
    }

    /// Disables (`true`) or enables `user`. Disabling revokes every session of the account in
    /// the same transaction (its password-reset links stop working too: a reset needs an
    /// enabled account), and is refused with [`Refusal::LastAdmin`] if it would leave no
    /// enabled admin; disabling a disabled account changes nothing (its `disabled_at` stays).
    /// The account as stored now, and how many sessions were revoked.
    pub async fn set_disabled(
        &self,
        user: UserId,
        disabled: bool,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<Result<(Account, u64), Refusal>, StoreError> {
        const DISABLE: &str = "UPDATE users SET disabled_at = $2, updated_at = $2 \
            WHERE id = $1 AND disabled_at IS NULL";
        const ENABLE: &str = "UPDATE users SET disabled_at = NULL, updated_at = $2 \
            WHERE id = $1 AND disabled_at IS NOT NULL";
        const REVOKE: &str =
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL";
        let at = now_micros();
        let row = dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            tx.lock_admins().await?;
            if disabled && tx.is_last_admin(user.get()).await? {
                tx.rollback().await?;
                return Ok(Err(Refusal::LastAdmin));
            }
            let changed = sqlx::query(if disabled { DISABLE } else { ENABLE })
                .bind(user.get())
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let revoked = if disabled {
                sqlx::query(REVOKE)
                    .bind(now)
                    .bind(user.get())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            } else {
                0
            };
            let Some(account) = tx.account(user.get()).await? else {
                tx.rollback().await?;
                return Ok(Err(Refusal::UserNotFound));
            };
            if changed == 1 {
                let extra = if disabled {
                    vec![("sessions_revoked", revoked.into())]
                } else {
                    Vec::new()
                };
                tx.append(audit, None, &extra).await?;
            }
            tx.commit().await?;
            Ok(Ok((account, revoked)))
        })?;
        Ok(row.map(|(account, revoked)| (Account::from(account), revoked)))
    }

    /// Deletes `user` with its sessions, refresh tokens, account tokens (and their queued mail)
    /// and role grants, by cascade: the e-mail address and username become free. Refused with
    /// [`Refusal::LastAdmin`] if it is the last enabled admin.
    pub async fn delete_user(
        &self,
        user: UserId,
        audit: &AuditEntry,
    ) -> Result<Result<(), Refusal>, StoreError> {
        const SQL: &str = "DELETE FROM users WHERE id = $1";
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            tx.lock_admins().await?;
            if tx.is_last_admin(user.get()).await? {
                tx.rollback().await?;
                return Ok(Err(Refusal::LastAdmin));
            }
            let deleted = sqlx::query(SQL)
                .bind(user.get())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted != 1 {
                tx.rollback().await?;
                return Ok(Err(Refusal::UserNotFound));
            }
            tx.append(audit, None, &[]).await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    /// Gives the account with `email` (case-insensitive) the `admin` role, if there is one
    /// and its address is verified.
    pub async fn grant_admin_by_email(
        &self,
        email: &Email,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<AdminGrant, StoreError> {
        const GRANT: &str = "INSERT INTO user_roles (user_id, role_name, granted_at) \
            SELECT id, 'admin', $2 FROM users \
            WHERE lower(email) = lower($1) AND email_verified_at IS NOT NULL \
            ON CONFLICT (user_id, role_name) DO NOTHING RETURNING user_id";
        const FIND: &str = concat!(
            "SELECT id, EXISTS (SELECT 1 FROM user_roles ur ",
            "WHERE ur.user_id = users.id AND ur.role_name = 'admin') ",
            "FROM users WHERE lower(email) = lower($1)"
        );
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let granted: Option<i64> = sqlx::query_scalar(GRANT)
                .bind(email.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match granted {
                Some(id) => {
                    tx.append(audit, Some(id), &[("created", false.into())]).await?;
                    AdminGrant::Granted(UserId::new(id))
                }
                None => {
                    let found: Option<(i64, bool)> = sqlx::query_as(FIND)
                        .bind(email.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    match found {
                        None => AdminGrant::NoAccount,
                        Some((id, true)) => AdminGrant::AlreadyAdmin(UserId::new(id)),
                        Some((id, false)) => AdminGrant::Unverified(UserId::new(id)),
                    }
                }
            };
            tx.commit().await?;
            Ok(outcome)
        })
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
        audit: &AuditEntry,
    ) -> Result<User, StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO users (email, username, hashed_password, created_at, updated_at, ",
            "email_verified_at) VALUES ($1, $2, $3, $4, $4, $4) RETURNING ",
            "id, email, username, created_at, updated_at, email_verified_at"
        );
        const GRANT: &str = "INSERT INTO user_roles (user_id, role_name, granted_at) \
            VALUES ($1, 'user', $2), ($1, 'admin', $2)";
        let at = now_micros();
        let row = dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let row = sqlx::query_as::<_, UserRow>(SQL)
                .bind(new.email.as_str())
                .bind(new.username.as_str())
                .bind(hashed_password)
                .bind(at)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(GRANT).bind(row.id).bind(now).execute(&mut *tx).await?;
            tx.append(audit, Some(row.id), &[("created", true.into())]).await?;
            tx.commit().await?;
            Ok(row)
        })?;
        let mut user = User::from(row);
        user.roles = vec![RoleName::admin(), RoleName::user()];
        Ok(user)
    }
}

/// `text` with the `LIKE` wildcards `%` and `_` (and the escape character `\`) escaped.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The statements the transactions above share, each written once for both databases.
trait AdminSql {
    /// Writes the `admin` row of `roles` (a no-op update): the turn every change that could
    /// remove an admin takes first (see the module comment).
    async fn lock_admins(&mut self) -> Result<(), sqlx::Error>;
    /// Whether `user` is an enabled admin and no other enabled account is.
    async fn is_last_admin(&mut self, user: i64) -> Result<bool, sqlx::Error>;
    /// Which of `user` and `role` does not exist (the user first), if either.
    async fn missing(&mut self, user: i64, role: &str) -> Result<Option<Refusal>, sqlx::Error>;
    /// Why the role `name` could not be changed: built in, or not there.
    async fn why_unchangeable(&mut self, name: &str) -> Result<Refusal, sqlx::Error>;
    /// Stores `permissions` for the role `name`.
    async fn insert_permissions(
        &mut self,
        name: &str,
        permissions: Permissions,
    ) -> Result<(), sqlx::Error>;
    /// The role `name`, if it exists.
    async fn role(&mut self, name: &str) -> Result<Option<Role>, sqlx::Error>;
    /// The account `user`, if it exists.
    async fn account(&mut self, user: i64) -> Result<Option<AccountRow>, sqlx::Error>;
}

impl<C> AdminSql for C
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    for<'q> i64: Encode<'q, C::Database> + Decode<'q, C::Database> + Type<C::Database>,
    for<'q> bool: Decode<'q, C::Database> + Type<C::Database>,
    for<'q> &'q str: Encode<'q, C::Database> + Type<C::Database>,
    for<'r> AccountRow: FromRow<'r, <C::Database as Database>::Row>,
    for<'r> RoleRow: FromRow<'r, <C::Database as Database>::Row>,
    usize: sqlx::ColumnIndex<<C::Database as Database>::Row>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
{
    async fn lock_admins(&mut self) -> Result<(), sqlx::Error> {
        const SQL: &str = "UPDATE roles SET updated_at = updated_at WHERE name = 'admin'";
        sqlx::query(SQL).execute(self).await.map(drop)
    }

    async fn is_last_admin(&mut self, user: i64) -> Result<bool, sqlx::Error> {
        const SQL: &str = "SELECT \
            (SELECT count(*) FROM user_roles ur JOIN users u ON u.id = ur.user_id \
             WHERE ur.role_name = 'admin' AND u.disabled_at IS NULL AND u.id = $1), \
            (SELECT count(*) FROM user_roles ur JOIN users u ON u.id = ur.user_id \
             WHERE ur.role_name = 'admin' AND u.disabled_at IS NULL AND u.id <> $1)";
        let (target, others): (i64, i64) = sqlx::query_as(SQL).bind(user).fetch_one(self).await?;
        Ok(target > 0 && others == 0)
    }

    async fn missing(&mut self, user: i64, role: &str) -> Result<Option<Refusal>, sqlx::Error> {
        const SQL: &str = "SELECT \
            (SELECT count(*) FROM users WHERE id = $1), \
            (SELECT count(*) FROM roles WHERE name = $2)";
        let (users, roles): (i64, i64) = sqlx::query_as(SQL)
            .bind(user)
            .bind(role)
            .fetch_one(self)
            .await?;
        Ok(if users == 0 {
            Some(Refusal::UserNotFound)
        } else if roles == 0 {
            Some(Refusal::RoleNotFound)
        } else {
            None
        })
    }

    async fn why_unchangeable(&mut self, name: &str) -> Result<Refusal, sqlx::Error> {
        const SQL: &str = "SELECT builtin FROM roles WHERE name = $1";
        let builtin: Option<bool> = sqlx::query_scalar(SQL)
            .bind(name)
            .fetch_optional(self)
            .await?;
        Ok(match builtin {
            Some(true) => Refusal::BuiltinRole,
            // Not built in, yet not changed: it was deleted in between.
            Some(false) | None => Refusal::RoleNotFound,
        })
    }

    async fn insert_permissions(
        &mut self,
        name: &str,
        permissions: Permissions,
    ) -> Result<(), sqlx::Error> {
        const SQL: &str = "INSERT INTO role_permissions (role_name, permission) VALUES ($1, $2)";
        for permission in permissions.iter() {
            sqlx::query(SQL)
                .bind(name)
                .bind(Permission::as_str(permission))
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }

    async fn role(&mut self, name: &str) -> Result<Option<Role>, sqlx::Error> {
        const SQL: &str = concat!(role_select!(), " WHERE r.name = $1");
        let row = sqlx::query_as::<_, RoleRow>(SQL)
            .bind(name)
            .fetch_optional(self)
            .await?;
        Ok(row.map(Role::from))
    }

    async fn account(&mut self, user: i64) -> Result<Option<AccountRow>, sqlx::Error> {
        const SQL: &str = concat!(
            "SELECT ",
            account_columns!(),
            " FROM users WHERE users.id = $1"
        );
        sqlx::query_as::<_, AccountRow>(SQL)
            .bind(user)
            .fetch_optional(self)
            .await
    }
}

#[cfg(test)]
mod tests;
