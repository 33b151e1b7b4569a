//! SQL for the `users` table.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::{Db, StoreError, dispatch};
use crate::domain::{Email, RoleName, UniqueField, User, UserId, Username, roles_from_list};

/// Reads which unique index refused a row: PostgreSQL names the constraint, SQLite names the
/// index in its message.
pub(super) fn violated_field(err: &sqlx::Error) -> Option<UniqueField> {
    let db = err.as_database_error()?;
    if !db.is_unique_violation() {
        return None;
    }
    let name = db.constraint().unwrap_or_else(|| db.message());
    if name.contains("email") {
        Some(UniqueField::Email)
    } else if name.contains("username") {
        Some(UniqueField::Username)
    } else {
        None
    }
}

/// What login needs of an account: its id, the names it logs in with, and its password hash.
pub struct StoredCredentials {
    /// The account.
    pub user_id: UserId,
    /// Its e-mail address.
    pub email: String,
    /// Its username.
    pub username: String,
    /// bcrypt hash (`$2a$`, `$2b$` or `$2y$`).
    pub hashed_password: String,
    /// Whether the address is confirmed (`email_verified_at` is set).
    pub email_verified: bool,
    /// Whether an admin disabled the account.
    pub disabled: bool,
    /// The account's roles (for the access token's claim).
    pub roles: Vec<RoleName>,
}

impl std::fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// An account as the `users` table holds it: the one row type every query that returns a
/// user reads into (its columns are `user_columns!`).
#[derive(FromRow)]
pub(super) struct UserRow {
    pub(super) id: i64,
    pub(super) email: String,
    pub(super) username: String,
    pub(super) created_at: OffsetDateTime,
    pub(super) updated_at: OffsetDateTime,
    pub(super) email_verified_at: Option<OffsetDateTime>,
    /// The account's role names separated by `,` (`user_roles!`); absent from a `RETURNING`
    /// of an insert, whose caller knows the roles it granted.
    #[sqlx(default)]
    pub(super) roles: Option<String>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: UserId::new(row.id),
            email: row.email,
            username: row.username,
            created_at: row.created_at,
            updated_at: row.updated_at,
            email_verified_at: row.email_verified_at,
            roles: roles_from_list(row.roles.as_deref()),
        }
    }
}

#[derive(FromRow)]
struct CredentialsRow {
    id: i64,
    email: String,
    username: String,
    hashed_password: String,
    email_verified: bool,
    disabled: bool,
    roles: Option<String>,
}

impl From<CredentialsRow> for StoredCredentials {
    fn from(r: CredentialsRow) -> Self {
        Self {
            user_id: UserId::new(r.id),
            email: r.email,
            username: r.username,
            hashed_password: r.hashed_password,
            email_verified: r.email_verified,
            disabled: r.disabled,
            roles: roles_from_list(r.roles.as_deref()),
        }
    }
}

/// The `SELECT … FROM users` of a [`CredentialsRow`], for `concat!`.
macro_rules! credential_columns {
    () => {
        concat!(
            "SELECT id, email, username, hashed_password, ",
            "email_verified_at IS NOT NULL AS email_verified, ",
            "disabled_at IS NOT NULL AS disabled, ",
            user_roles!(),
            " AS roles FROM users"
        )
    };
}

/// The columns a [`UserRow`] reads from `users`, spliced into queries with `concat!` (SQL text
/// stays static). The table must be named `users` in the query (no alias).
macro_rules! user_columns {
    () => {
        concat!(
            "users.id, users.email, users.username, users.created_at, users.updated_at, ",
            "users.email_verified_at, ",
            user_roles!(),
            " AS roles"
        )
    };
}
pub(super) use user_columns;

/// The role names of the `users` row in the query, separated by `,` (`NULL` for none), as one
/// correlated subquery: `string_agg` exists on PostgreSQL and on SQLite from 3.44.
macro_rules! user_roles {
    () => {
        "(SELECT string_agg(ur.role_name, ',') FROM user_roles ur WHERE ur.user_id = users.id)"
    };
}
pub(super) use user_roles;

impl Db {
    /// The user with `id`, if it exists.
    pub async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
        let row = dispatch!(self, conn => sqlx::query_as::<_, UserRow>(SQL)
            .bind(id.get())
            .fetch_optional(conn)
            .await)?;
        Ok(row.map(User::from))
    }

    /// Login credentials for the account with this e-mail address (case-insensitive).
    pub async fn credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        const SQL: &str = concat!(credential_columns!(), " WHERE lower(email) = lower($1)");
        self.credentials(SQL, email.as_str()).await
    }

    /// Credentials of the account whose stored e-mail address is `email` as written
    /// (case-insensitive), without the sign-up rules' normalisation: for subjects of tokens the
    /// FastAPI system minted, which name its rows as they were stored.
    pub async fn credentials_by_stored_email(
        &self,
        email: &str,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        const SQL: &str = concat!(credential_columns!(), " WHERE lower(email) = lower($1)");
        self.credentials(SQL, email).await
    }

    /// Login credentials for the account with this username (case-insensitive).
    pub async fn credentials_by_username(
        &self,
        username: &str,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        const SQL: &str = concat!(credential_columns!(), " WHERE lower(username) = lower($1)");
        self.credentials(SQL, username).await
    }

    /// Credentials of the account with `id` (for a password change).
    pub async fn credentials_by_id(
        &self,
        id: UserId,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        const SQL: &str = concat!(credential_columns!(), " WHERE id = $1");
        let row = dispatch!(self, conn => sqlx::query_as::<_, CredentialsRow>(SQL)
            .bind(id.get())
            .fetch_optional(conn)
            .await)?;
        Ok(row.map(StoredCredentials::from))
    }

    async fn credentials(
        &self,
        sql: &'static str,
        key: &str,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        let row = dispatch!(self, conn => sqlx::query_as::<_, CredentialsRow>(sql)
            .bind(key)
            .fetch_optional(conn)
            .await)?;
        Ok(row.map(StoredCredentials::from))
    }

    /// Which of `email` and `username` another account already holds (e-mail checked first).
    pub async fn taken(
        &self,
        email: &Email,
        username: &Username,
    ) -> Result<Option<UniqueField>, StoreError> {
        const SQL: &str = "SELECT lower(email) = lower($1) FROM users \
                           WHERE lower(email) = lower($1) OR lower(username) = lower($2)";
        let hits: Vec<bool> = dispatch!(self, conn => sqlx::query_scalar(SQL)
            .bind(email.as_str())
            .bind(username.as_str())
            .fetch_all(conn)
            .await)?;
        Ok(match (hits.contains(&true), hits.is_empty()) {
            (true, _) => Some(UniqueField::Email),
            (false, false) => Some(UniqueField::Username),
            (false, true) => None,
        })
    }
}

/// Now, cut to microseconds: PostgreSQL keeps no more, so both databases return the same value.
pub(super) fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

/// Stored e-mail addresses that are not in today's canonical form (see [`Email`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EmailAudit {
    /// Rows whose address has another canonical form (beyond ASCII case, which `lower()`
    /// already matches): login by the address as typed now does not find them.
    pub changed: Vec<UserId>,
    /// Rows whose address is no longer accepted at all (invisible characters, mixed scripts…).
    pub refused: Vec<UserId>,
}

impl Db {
    /// Which stored addresses no longer normalise to themselves. Nothing is rewritten: an
    /// operator decides what to do with each account.
    pub async fn audit_emails(&self) -> Result<EmailAudit, StoreError> {
        const SQL: &str = "SELECT id, email FROM users ORDER BY id";
        let rows: Vec<(i64, String)> = dispatch!(self, conn => sqlx::query_as(SQL)
            .fetch_all(conn)
            .await)?;
        let mut audit = EmailAudit::default();
        for (id, stored) in rows {
            match Email::parse(&stored) {
                Ok(email) if email.as_str() == stored.to_ascii_lowercase() => {}
                Ok(_) => audit.changed.push(UserId::new(id)),
                Err(_) => audit.refused.push(UserId::new(id)),
            }
        }
        Ok(audit)
    }

    /// Logs the [`Db::audit_emails`] findings for `cerego migrate`: counts and user ids,
    /// never the addresses themselves.
    pub async fn report_unnormalised_emails(&self) -> Result<(), StoreError> {
        let audit = self.audit_emails().await?;
        if audit.changed.is_empty() && audit.refused.is_empty() {
            tracing::info!("every stored email address is in canonical form");
            return Ok(());
        }
        let ids = |list: &[UserId]| list.iter().map(|id| id.get()).collect::<Vec<_>>();
        tracing::warn!(
            changed = audit.changed.len(),
            changed_user_ids = ?ids(&audit.changed),
            refused = audit.refused.len(),
            refused_user_ids = ?ids(&audit.refused),
            "stored email addresses not in canonical form (NFKC, case folding, IDNA A-labels); \
             they were not rewritten: logins by the canonical address do not find the changed \
             ones, and the refused ones cannot log in by email"
        );
        Ok(())
    }
}
