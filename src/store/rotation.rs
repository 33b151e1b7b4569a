//! Refresh-token rotation: its cases, each a statement written once for both databases.
//!
//! Rotation, replay and revocation are decided inside one transaction, which takes its locks in
//! the order [`super::sessions`] sets: the session, then its tokens. Its first statement locks
//! and touches the active session the token belongs to (on SQLite it takes the write lock, so
//! the transaction never has to upgrade from reading to writing); a concurrent refresh of the
//! same token waits for the winner's commit and then finds the token used, which makes it a
//! replay. The token is then used with a compare-and-swap `UPDATE`. The session is updated with
//! `revoked_at IS NULL` in its condition, so a revocation and a refresh cannot both win.
//!
//! The cases: the token was current (rotated: the successor is stored), used within the grace
//! window (replayed: the successor stored then is returned again), used earlier (reused: the
//! session is revoked), or unknown, or its session has ended (invalid: nothing changes).

use sqlx::{Connection, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::audit::{AuditEntry, AuditSql};
use super::sessions::{Rotation, TokenRecord};
use super::{Db, StoreError, dispatch};
use crate::domain::{SessionId, UserId, roles_from_list};

impl Db {
    /// Presents the refresh token hashed as `presented`: rotates it to `successor`, replays the
    /// successor within `grace` seconds of its use, or revokes the session on a later reuse.
    /// A token whose session has ended (or that is unknown) is [`Rotation::Invalid`]. A reuse
    /// writes `reuse` (its target the session's owner, the session's id in its details) with
    /// the revocation; a rotation writes no event.
    pub async fn rotate_refresh_token(
        &self,
        presented: &[u8; 32],
        successor: &TokenRecord,
        idle_cutoff: i64,
        grace: i64,
        reuse: &AuditEntry,
    ) -> Result<Rotation, StoreError> {
        let now = successor.issued_at;
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let Some(session) = tx.lock_session(presented, now, idle_cutoff).await? else {
                tx.rollback().await?;
                return Ok(Rotation::Invalid);
            };
            let rotation = if tx.use_token(presented, now).await? {
                tx.insert_token(session.id, successor).await?;
                session.rotated()
            } else {
                match tx.used_at(presented).await? {
                    Some(used_at) if grace > 0 && now - used_at <= grace => {
                        tx.replay(&session, &successor.hash).await?
                    }
                    Some(_) => {
                        tx.revoke(session.id, now).await?;
                        tx.append(reuse, Some(session.user), &[("session_id", session.id.into())])
                            .await?;
                        Rotation::Reused {
                            user: UserId::new(session.user),
                            session: SessionId::new(session.id),
                        }
                    }
                    None => Rotation::Invalid,
                }
            };
            tx.commit().await?;
            Ok(rotation)
        })
    }
}

/// The session a presented token belongs to, locked and touched by [`SessionSql::lock_session`].
pub(super) struct LockedSession {
    id: i64,
    user: i64,
    expires_at: i64,
    /// The user's role names separated by `,` (for the access token's `roles` claim).
    roles: Option<String>,
}

impl LockedSession {
    fn rotated(&self) -> Rotation {
        Rotation::Rotated {
            user: UserId::new(self.user),
            session: SessionId::new(self.id),
            expires_at: self.expires_at,
            roles: roles_from_list(self.roles.as_deref()),
        }
    }
}

/// The statements of a rotation, each written once for both databases (any connection whose
/// driver binds and reads the column types used here; the bounds say so once, on the impl).
pub(super) trait SessionSql {
    /// Stores `token` as the current refresh token of `session`: at login and at each rotation.
    async fn insert_token(&mut self, session: i64, token: &TokenRecord) -> Result<(), sqlx::Error>;
    /// Locks and touches the active session that `presented` belongs to (see the lock order in
    /// the module comment); `None` if the token is unknown or its session has ended.
    async fn lock_session(
        &mut self,
        presented: &[u8; 32],
        now: i64,
        idle_cutoff: i64,
    ) -> Result<Option<LockedSession>, sqlx::Error>;
    /// Marks `presented` used if it was not yet: whether this call did.
    async fn use_token(&mut self, presented: &[u8; 32], now: i64) -> Result<bool, sqlx::Error>;
    /// When `presented` was used, if it exists and was.
    async fn used_at(&mut self, presented: &[u8; 32]) -> Result<Option<i64>, sqlx::Error>;
    /// The successor `successor` already issued in `session`, as a replay; `Invalid` if none.
    async fn replay(
        &mut self,
        session: &LockedSession,
        successor: &[u8; 32],
    ) -> Result<Rotation, sqlx::Error>;
    /// Revokes `session`.
    async fn revoke(&mut self, session: i64, now: i64) -> Result<(), sqlx::Error>;
}

impl<C> SessionSql for C
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    for<'q> i64: Encode<'q, C::Database> + Decode<'q, C::Database> + Type<C::Database>,
    for<'q> &'q [u8]: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> &'q str: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> String: Decode<'q, C::Database> + Type<C::Database>,
    for<'q> Option<String>: Decode<'q, C::Database> + Type<C::Database>,
    usize: sqlx::ColumnIndex<<C::Database as Database>::Row>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
{
    async fn insert_token(&mut self, session: i64, token: &TokenRecord) -> Result<(), sqlx::Error> {
        const SQL: &str = "INSERT INTO refresh_tokens \
            (session_id, token_hash, access_jti, issued_at) VALUES ($1, $2, $3, $4)";
        sqlx::query(SQL)
            .bind(session)
            .bind(&token.hash[..])
            .bind(token.jti.as_str())
            .bind(token.issued_at)
            .execute(self)
            .await
            .map(drop)
    }

    async fn lock_session(
        &mut self,
        presented: &[u8; 32],
        now: i64,
        idle_cutoff: i64,
    ) -> Result<Option<LockedSession>, sqlx::Error> {
        const SQL: &str = "UPDATE sessions SET last_used_at = $1 \
            WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $2) \
            AND revoked_at IS NULL AND expires_at > $1 AND last_used_at > $3 \
            RETURNING id, user_id, expires_at, \
            (SELECT string_agg(ur.role_name, ',') FROM user_roles ur WHERE ur.user_id = sessions.user_id)";
        let row: Option<(i64, i64, i64, Option<String>)> = sqlx::query_as(SQL)
            .bind(now)
            .bind(&presented[..])
            .bind(idle_cutoff)
            .fetch_optional(self)
            .await?;
        Ok(row.map(|(id, user, expires_at, roles)| LockedSession {
            id,
            user,
            expires_at,
            roles,
        }))
    }

    async fn use_token(&mut self, presented: &[u8; 32], now: i64) -> Result<bool, sqlx::Error> {
        const SQL: &str = "UPDATE refresh_tokens SET used_at = $1 \
            WHERE token_hash = $2 AND used_at IS NULL RETURNING session_id";
        let won: Option<i64> = sqlx::query_scalar(SQL)
            .bind(now)
            .bind(&presented[..])
            .fetch_optional(self)
            .await?;
        Ok(won.is_some())
    }

    async fn used_at(&mut self, presented: &[u8; 32]) -> Result<Option<i64>, sqlx::Error> {
        const SQL: &str = "SELECT used_at FROM refresh_tokens WHERE token_hash = $1";
        let used: Option<Option<i64>> = sqlx::query_scalar(SQL)
            .bind(&presented[..])
            .fetch_optional(self)
            .await?;
        Ok(used.flatten())
    }

    async fn replay(
        &mut self,
        session: &LockedSession,
        successor: &[u8; 32],
    ) -> Result<Rotation, sqlx::Error> {
        const SQL: &str = "SELECT access_jti, issued_at FROM refresh_tokens \
            WHERE token_hash = $1 AND session_id = $2";
        let issued: Option<(String, i64)> = sqlx::query_as(SQL)
            .bind(&successor[..])
            .bind(session.id)
            .fetch_optional(self)
            .await?;
        Ok(match issued {
            Some((jti, issued_at)) => Rotation::Replayed {
                user: UserId::new(session.user),
                session: SessionId::new(session.id),
                expires_at: session.expires_at,
                jti,
                issued_at,
                roles: roles_from_list(session.roles.as_deref()),
            },
            None => Rotation::Invalid,
        })
    }

    async fn revoke(&mut self, session: i64, now: i64) -> Result<(), sqlx::Error> {
        const SQL: &str =
            "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL";
        sqlx::query(SQL)
            .bind(now)
            .bind(session)
            .execute(self)
            .await
            .map(drop)
    }
}
