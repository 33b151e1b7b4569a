//! SQL for `sessions` and `refresh_tokens`.
//!
//! **Lock order: a session row before its refresh tokens.** Every transaction that locks both
//! takes the session first. PostgreSQL deletes parents before children (the purge's `DELETE
//! FROM sessions` locks each session, then its tokens through `ON DELETE CASCADE`, and so will
//! any future delete of a user), so rotation does the same: its first statement updates the
//! session that the presented token belongs to, and only then does it touch the token. Before,
//! rotation locked the token first and the session second, the purge the other way round, and
//! the two deadlocked (40P01, seen as a 503) when a purge met a refresh of a session that had
//! just ended. Now a transaction holding a token's lock always holds its session's lock too, so
//! whichever of the two reaches the session first runs to the end and the other waits for it.
//! Statements that lock sessions only (logout, revocation) cannot take part in a cycle with it.
//!
//! Rotation's statements and their order are in [`super::rotation`].

use sqlx::{Connection, FromRow};

use super::audit::{AuditEntry, AuditSql};
use super::inline::Declined;
use super::rotation::SessionSql;
use super::users::UserRow;
use super::{Db, StoreError, dispatch};
use crate::domain::{Permission, Permissions, RoleName, Session, SessionId, User, UserId};

/// A new session and the refresh token issued with it.
#[derive(Debug)]
pub struct NewSession<'a> {
    /// Whose session.
    pub user: UserId,
    /// Now, in Unix seconds.
    pub now: i64,
    /// Absolute end, in Unix seconds.
    pub expires_at: i64,
    /// The client's `User-Agent`, cut to 512 bytes.
    pub user_agent: Option<&'a str>,
    /// The client's address.
    pub ip: Option<&'a str>,
    /// The password hash the login verified: the session is opened only if the account still
    /// has it (see [`Db::create_session`]).
    pub verified_hash: &'a str,
}

/// A refresh token as stored: its hash and the access token minted with it.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// SHA-256 of the refresh token.
    pub hash: [u8; 32],
    /// `jti` of the access token issued with it.
    pub jti: String,
    /// `iat` of that access token (Unix seconds).
    pub issued_at: i64,
}

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Rotation {
    /// It was current: it is now used, and the successor is stored.
    Rotated {
        /// The session's user.
        user: UserId,
        /// The session.
        session: SessionId,
        /// The session's absolute end.
        expires_at: i64,
        /// The user's roles now (for the access token's claim).
        roles: Vec<RoleName>,
    },
    /// It was used moments ago (within the grace window): here is its successor again.
    Replayed {
        /// The session's user.
        user: UserId,
        /// The session.
        session: SessionId,
        /// The session's absolute end.
        expires_at: i64,
        /// The access token minted with the successor.
        jti: String,
        /// Its `iat`.
        issued_at: i64,
        /// The user's roles now (for the access token's claim).
        roles: Vec<RoleName>,
    },
    /// It was used long ago: its session has just been revoked.
    Reused {
        /// The session's user.
        user: UserId,
        /// The revoked session.
        session: SessionId,
    },
    /// Unknown, or its session is revoked, expired or idle too long.
    Invalid,
}

/// One row of [`Db::user_in_session`]: the user, and one of its roles with one of that role's
/// permissions (either `NULL` when there is none).
#[derive(FromRow)]
struct GrantRow {
    #[sqlx(flatten)]
    user: UserRow,
    role_name: Option<String>,
    permission: Option<String>,
}

/// The rows of [`Db::user_in_session`] put together.
#[derive(Default)]
struct Grants {
    user: Option<UserRow>,
    roles: Vec<RoleName>,
    permissions: Permissions,
}

impl Grants {
    fn add(&mut self, role: Option<String>, permission: Option<&str>) {
        if let Some(role) = role
            && self.roles.last().is_none_or(|last| last.as_str() != role)
        {
            self.roles.push(RoleName::from_stored(role));
        }
        if let Some(permission) = permission.and_then(Permission::parse) {
            self.permissions = self.permissions.with(permission);
        }
    }

    fn into_parts(mut self) -> Option<(User, Permissions)> {
        let mut user = User::from(self.user?);
        self.roles.sort();
        self.roles.dedup();
        user.roles = self.roles;
        Some((user, self.permissions))
    }
}

/// A session row as `active_sessions` reads it.
#[derive(Debug, FromRow)]
struct SessionRow {
    id: i64,
    created_at: i64,
    last_used_at: i64,
    user_agent: Option<String>,
    ip: Option<String>,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        let at = |unix| {
            time::OffsetDateTime::from_unix_timestamp(unix)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        };
        Self {
            id: SessionId::new(row.id),
            created_at: at(row.created_at),
            last_used_at: at(row.last_used_at),
            user_agent: row.user_agent,
            ip: row.ip,
        }
    }
}

impl Db {
    /// Stores a session and its first refresh token, and the account's `last_login_at`, in one
    /// transaction, if the account's password is still the one the login verified and it is
    /// not disabled; `None` (nothing stored) if a password reset or change, or a disable, came
    /// in between.
    ///
    /// Without that condition a login whose bcrypt check ran while the owner reset the password
    /// would open its session just after the reset revoked every session, and keep it (and
    /// likewise a login racing an admin's disable). The first statement updates the user row
    /// under that condition: on PostgreSQL it locks the row, so a reset, change or disable
    /// (whose transactions update the user row before they revoke sessions) either waits for
    /// this transaction and then revokes the new session, or commits first, and this update,
    /// re-reading the row, matches nothing. Logins of one account take turns on that lock for
    /// the few statements below (an exclusive lock from the start: a share lock upgraded later
    /// would deadlock two logins of one account). On SQLite the update is the transaction's
    /// first statement, so it takes the one write lock before it reads.
    ///
    /// `audit` (the login's event) is written with the session's id in its details.
    pub async fn create_session(
        &self,
        new: &NewSession<'_>,
        token: &TokenRecord,
        audit: &AuditEntry,
    ) -> Result<Option<SessionId>, StoreError> {
        const LOGIN: &str = "UPDATE users SET last_login_at = $2 \
            WHERE id = $1 AND hashed_password = $3 AND disabled_at IS NULL";
        const SESSION: &str = "INSERT INTO sessions \
            (user_id, created_at, last_used_at, expires_at, user_agent, ip) \
            VALUES ($1, $2, $2, $3, $4, $5) RETURNING id";
        let at = super::users::now_micros();
        let id: Option<i64> = dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let found = sqlx::query(LOGIN)
                .bind(new.user.get())
                .bind(at)
                .bind(new.verified_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if found != 1 {
                tx.rollback().await?;
                return Ok(None);
            }
            let id: i64 = sqlx::query_scalar(SESSION)
                .bind(new.user.get())
                .bind(new.now)
                .bind(new.expires_at)
                .bind(new.user_agent)
                .bind(new.ip)
                .fetch_one(&mut *tx)
                .await?;
            tx.insert_token(id, token).await?;
            tx.append(audit, None, &[("session_id", id.into())]).await?;
            tx.commit().await?;
            Ok(Some(id))
        })?;
        Ok(id.map(SessionId::new))
    }

    /// The user of an access token and what the user's roles allow, if its session is still
    /// active and the account is not disabled: one query for all of it, so authorization costs
    /// no extra round trip. The roles and their permissions come as joined rows (one per role
    /// and permission; one row with nulls for an account without roles), which PostgreSQL
    /// answers with index lookups alone: measured against the same query with correlated
    /// `string_agg` subqueries, whose aggregates and hash join cost a third of the session
    /// check's throughput, the rows cost about half as much.
    pub async fn user_in_session(
        &self,
        user: UserId,
        session: SessionId,
        now: i64,
        idle_cutoff: i64,
    ) -> Result<Option<(User, Permissions)>, StoreError> {
        const SQL: &str = concat!(
            "SELECT users.id, users.email, users.username, users.created_at, users.updated_at, ",
            "users.email_verified_at, ur.role_name, rp.permission ",
            "FROM users JOIN sessions s ON s.user_id = users.id ",
            "LEFT JOIN user_roles ur ON ur.user_id = users.id ",
            "LEFT JOIN role_permissions rp ON rp.role_name = ur.role_name ",
            "WHERE users.id = $1 AND s.id = $2 AND s.revoked_at IS NULL ",
            "AND s.expires_at > $3 AND s.last_used_at > $4 AND users.disabled_at IS NULL"
        );
        if let Db::Sqlite(_, Some(inline)) = self {
            let read = inline.read(|conn| {
                let mut query = conn.prepare_cached(SQL)?;
                let mut rows = query.query((user.get(), session.get(), now, idle_cutoff))?;
                let mut grants = Grants::default();
                while let Some(row) = rows.next()? {
                    if grants.user.is_none() {
                        grants.user = Some(UserRow {
                            id: row.get(0)?,
                            email: row.get(1)?,
                            username: row.get(2)?,
                            created_at: row.get(3)?,
                            updated_at: row.get(4)?,
                            email_verified_at: row.get(5)?,
                            roles: None,
                        });
                    }
                    grants.add(row.get(6)?, row.get::<_, Option<String>>(7)?.as_deref());
                }
                Ok(grants)
            });
            match read {
                Ok(grants) => return Ok(grants.into_parts()),
                Err(Declined::UsePool) => {}
                Err(Declined::Failed(err)) => {
                    return Err(StoreError::Unexpected(
                        anyhow::Error::new(err).context("database query failed"),
                    ));
                }
            }
        }
        let rows = dispatch!(self, conn => sqlx::query_as::<_, GrantRow>(SQL)
            .bind(user.get())
            .bind(session.get())
            .bind(now)
            .bind(idle_cutoff)
            .fetch_all(conn)
            .await)?;
        let mut grants = Grants::default();
        for row in rows {
            grants.add(row.role_name, row.permission.as_deref());
            grants.user.get_or_insert(row.user);
        }
        Ok(grants.into_parts())
    }

    /// Revokes one of `user`'s sessions, with the `audit` event (the session's id in its
    /// details); `false` (nothing written) if there is no such active session of theirs.
    pub async fn revoke_session(
        &self,
        user: UserId,
        session: SessionId,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE sessions SET revoked_at = $1 \
            WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL";
        Ok(dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let done = sqlx::query(SQL)
                .bind(now)
                .bind(session.get())
                .bind(user.get())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            tx.append(audit, None, &[("session_id", session.get().into())]).await?;
            tx.commit().await?;
            Ok(true)
        })?)
    }

    /// Revokes every session of `user`, with the `audit` event (the count in its details);
    /// returns how many were active.
    pub async fn revoke_all_sessions(
        &self,
        user: UserId,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        const SQL: &str =
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL";
        Ok(dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let revoked = sqlx::query(SQL)
                .bind(now)
                .bind(user.get())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.append(audit, None, &[("sessions_revoked", revoked.into())]).await?;
            tx.commit().await?;
            Ok(revoked)
        })?)
    }

    /// `user`'s active sessions, oldest first.
    pub async fn active_sessions(
        &self,
        user: UserId,
        now: i64,
        idle_cutoff: i64,
    ) -> Result<Vec<Session>, StoreError> {
        const SQL: &str = "SELECT id, created_at, last_used_at, user_agent, ip FROM sessions \
            WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_used_at > $3 \
            ORDER BY id";
        let rows = dispatch!(self, conn => sqlx::query_as::<_, SessionRow>(SQL)
            .bind(user.get())
            .bind(now)
            .bind(idle_cutoff)
            .fetch_all(conn)
            .await)?;
        Ok(rows.into_iter().map(Session::from).collect())
    }

    /// Deletes sessions (and, by cascade, their refresh tokens) that can never be used again.
    /// Each session is locked before its tokens, in the order of the module's rule.
    pub async fn purge_sessions(&self, now: i64, idle_cutoff: i64) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM sessions \
            WHERE revoked_at IS NOT NULL OR expires_at <= $1 OR last_used_at <= $2";
        Ok(dispatch!(self, conn => sqlx::query(SQL)
            .bind(now)
            .bind(idle_cutoff)
            .execute(conn)
            .await
            .map(|done| done.rows_affected()))?)
    }
}
