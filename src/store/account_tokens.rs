//! SQL for `account_tokens` (password-reset and e-mail verification tokens) and the account
//! changes they make, each in one transaction with the mail it queues.
//!
//! A token is used up by deleting its row with a compare-and-swap `DELETE … RETURNING`: of two
//! requests presenting the same token at once, exactly one gets its row back. Deleting a token
//! drops its unsent mail too (`mail_outbox.token_id … ON DELETE CASCADE`).
//!
//! **Lock order: a user row before its tokens** (and its sessions). On PostgreSQL every
//! transaction here that touches both locks the user row first: deleting a user (an admin's
//! `DELETE /admin/users/{id}`) locks it and then, by cascade, its tokens and sessions, so a reset
//! or a verification that locked its token first and then waited for the user row would
//! deadlock with it.
//!
//! Every transaction here starts with a write, so on SQLite it takes the write lock at once and
//! never has to upgrade from reading to writing (which could fail with `SQLITE_BUSY`). None locks
//! a session before touching a refresh token: they only update `sessions` rows (see the lock
//! order in [`super::sessions`]).

use sqlx::{Connection, Database, Decode, Encode, Executor, IntoArguments, Type};
use time::OffsetDateTime;

use super::audit::{AuditEntry, AuditSql};
use super::outbox::OutboxSql;
use super::users::{UserRow, now_micros};
use super::{Db, StoreError, dispatch};
use crate::domain::{NewUser, RoleName, SessionId, User, UserId};
use crate::mail::QueuedMail;

/// What an account token is for: the `purpose` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// A `crg_pr_` token: sets a new password.
    PasswordReset,
    /// A `crg_ev_` token: confirms the account's e-mail address.
    EmailVerification,
}

impl TokenPurpose {
    /// The value of the `purpose` column.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
        }
    }
}

/// A token to store: only its hash, what it is for and how long it works.
#[derive(Clone)]
pub struct NewAccountToken {
    /// What it is for.
    pub purpose: TokenPurpose,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// Now (Unix seconds).
    pub created_at: i64,
    /// When it stops working (Unix seconds).
    pub expires_at: i64,
}

impl std::fmt::Debug for NewAccountToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccountToken")
            .field("purpose", &self.purpose)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The account a valid token belongs to, as the mail and the password policy need it.
pub struct TokenOwner {
    /// The account.
    pub user_id: UserId,
    /// Its stored e-mail address.
    pub email: String,
    /// Its username.
    pub username: String,
}

impl std::fmt::Debug for TokenOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenOwner")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// A password reset to carry out: the token presented, the new hash and the notice.
pub struct PasswordReset<'a> {
    /// SHA-256 of the presented `crg_pr_` token.
    pub token_hash: &'a [u8; 32],
    /// The account the token belonged to when it was looked at (the reset is refused if the
    /// token that is used up belongs to anyone else).
    pub user: UserId,
    /// The new bcrypt hash.
    pub hashed_password: &'a str,
    /// Now (Unix seconds): the token must expire after this; sessions are revoked at this time.
    pub now: i64,
    /// The "your password was changed" notice.
    pub notice: &'a QueuedMail,
}

/// A password change to carry out (the current password was verified against `old_hash`).
pub struct PasswordChange<'a> {
    /// The account.
    pub user: UserId,
    /// The session that made the change: it stays, every other one is revoked.
    pub keep: SessionId,
    /// The hash the current password was verified against; the change applies only if it is
    /// still the stored one.
    pub old_hash: &'a str,
    /// The new bcrypt hash.
    pub hashed_password: &'a str,
    /// Now (Unix seconds).
    pub now: i64,
    /// The "your password was changed" notice.
    pub notice: &'a QueuedMail,
}

impl Db {
    /// On PostgreSQL, the statement that locks a user row (by id) first, before any of its
    /// tokens (see the lock order in the module comment); SQLite's write lock does it anyway.
    fn lock_user_first(&self) -> Option<&'static str> {
        match self {
            Db::Postgres(_) => Some("SELECT id FROM users WHERE id = $1 FOR UPDATE"),
            Db::Sqlite(..) => None,
        }
    }

    /// Stores a new account with its first verification token and the mail carrying it, and
    /// the `audit` events (their target the new account), in one transaction. A concurrent
    /// sign-up that took the e-mail or username first makes this return
    /// [`StoreError::Conflict`] (and nothing is stored).
    pub async fn insert_user(
        &self,
        new: &NewUser,
        hashed_password: &str,
        verification: &NewAccountToken,
        mail: &QueuedMail,
        audit: &[AuditEntry],
    ) -> Result<User, StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO users (email, username, hashed_password, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, $4) RETURNING ",
            "id, email, username, created_at, updated_at, email_verified_at"
        );
        const GRANT_USER: &str =
            "INSERT INTO user_roles (user_id, role_name, granted_at) VALUES ($1, 'user', $2)";
        let now = now_micros();
        let row = dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let row = sqlx::query_as::<_, UserRow>(SQL)
                .bind(new.email.as_str())
                .bind(new.username.as_str())
                .bind(hashed_password)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            let token = tx.insert_account_token(row.id, verification).await?;
            tx.enqueue_mail(mail, Some(token)).await?;
            sqlx::query(GRANT_USER)
                .bind(row.id)
                .bind(now.unix_timestamp())
                .execute(&mut *tx)
                .await?;
            for entry in audit {
                tx.append(entry, Some(row.id), &[]).await?;
            }
            tx.commit().await?;
            Ok(row)
        })?;
        let mut user = User::from(row);
        user.roles = vec![RoleName::user()];
        Ok(user)
    }

    /// Replaces `user`'s password-reset tokens with `token` and queues `mail` (its link), with
    /// the `audit` event, in one transaction: an earlier token stops working, and its mail, if still unsent, is dropped.
    ///
    /// Two requests at once must not both leave a token behind. On PostgreSQL the transaction
    /// first locks the user row, so the second waits for the first and then deletes its token
    /// (under READ COMMITTED its `DELETE` would otherwise not see a token inserted by a
    /// transaction that commits after the `DELETE` began). On SQLite the `DELETE` is the first
    /// statement and takes the one write lock, so it already sees every earlier commit.
    pub async fn issue_password_reset(
        &self,
        user: UserId,
        token: &NewAccountToken,
        mail: &QueuedMail,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        const ENABLED: &str = "SELECT count(*) FROM users WHERE id = $1 AND disabled_at IS NULL";
        let lock = self.lock_user_first();
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            if let Some(lock) = lock {
                sqlx::query(lock).bind(user.get()).execute(&mut *tx).await?;
            }
            tx.delete_account_tokens(user.get(), TokenPurpose::PasswordReset).await?;
            // A disabled account gets no link (the caller checked, but a disable may have
            // committed since; the lock above, or SQLite's write lock, keeps it from now on).
            let enabled: i64 = sqlx::query_scalar(ENABLED)
                .bind(user.get())
                .fetch_one(&mut *tx)
                .await?;
            if enabled == 0 {
                tx.rollback().await?;
                return Ok(());
            }
            let id = tx.insert_account_token(user.get(), token).await?;
            tx.enqueue_mail(mail, Some(id)).await?;
            tx.append(audit, None, &[]).await?;
            tx.commit().await
        })
    }

    /// Stores another verification token for `user` and queues `mail` (its link), with the
    /// `audit` event, in one transaction; earlier verification tokens keep working. `false` (nothing stored) if the
    /// address is already verified.
    pub async fn issue_email_verification(
        &self,
        user: UserId,
        token: &NewAccountToken,
        mail: &QueuedMail,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let Some(id) = tx.insert_verification_if_unverified(user.get(), token).await? else {
                tx.rollback().await?;
                return Ok(false);
            };
            tx.enqueue_mail(mail, Some(id)).await?;
            tx.append(audit, None, &[]).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// The account an unexpired token of `purpose` hashed as `hash` belongs to, without using
    /// the token up.
    pub async fn account_token_owner(
        &self,
        hash: &[u8; 32],
        purpose: TokenPurpose,
        now: i64,
    ) -> Result<Option<TokenOwner>, StoreError> {
        const SQL: &str = "SELECT u.id, u.email, u.username FROM account_tokens t \
            JOIN users u ON u.id = t.user_id \
            WHERE t.token_hash = $1 AND t.purpose = $2 AND t.expires_at > $3";
        let row: Option<(i64, String, String)> = dispatch!(self, conn => sqlx::query_as(SQL)
            .bind(&hash[..])
            .bind(purpose.name())
            .bind(now)
            .fetch_optional(conn)
            .await)?;
        Ok(row.map(|(id, email, username)| TokenOwner {
            user_id: UserId::new(id),
            email,
            username,
        }))
    }

    /// Uses up the reset token and sets the new password, in one transaction: the address
    /// counts as verified, the account's other reset tokens are deleted, every session is
    /// revoked and the notice is queued. `None` (nothing changed) if the token is unknown,
    /// expired, already used (a concurrent reset won) or not `reset.user`'s; otherwise how many
    /// sessions were revoked.
    pub async fn reset_password(
        &self,
        reset: &PasswordReset<'_>,
        audit: &AuditEntry,
    ) -> Result<Option<u64>, StoreError> {
        const PASSWORD: &str = "UPDATE users SET hashed_password = $1, updated_at = $2, \
            email_verified_at = COALESCE(email_verified_at, $2) \
            WHERE id = $3 AND disabled_at IS NULL";
        let at = now_micros();
        let user = reset.user.get();
        let lock = self.lock_user_first();
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            if let Some(lock) = lock {
                sqlx::query(lock).bind(user).execute(&mut *tx).await?;
            }
            let owner = tx
                .consume_account_token(reset.token_hash, TokenPurpose::PasswordReset, reset.now)
                .await?;
            if owner != Some(user) {
                tx.rollback().await?;
                return Ok(None);
            }
            let changed = sqlx::query(PASSWORD)
                .bind(reset.hashed_password)
                .bind(at)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed != 1 {
                // Disabled since the link was sent: the link no longer works.
                tx.rollback().await?;
                return Ok(None);
            }
            tx.delete_account_tokens(user, TokenPurpose::PasswordReset).await?;
            let revoked = tx.revoke_sessions(user, None, reset.now).await?;
            tx.enqueue_mail(reset.notice, None).await?;
            tx.append(audit, None, &[("sessions_revoked", revoked.into())]).await?;
            tx.commit().await?;
            Ok(Some(revoked))
        })
    }

    /// Uses up the verification token and marks its account's address verified (if it was
    /// not, with the `audit` event, its target the token's owner), in one transaction. `None` if the token is unknown, expired or already used.
    pub async fn verify_email(
        &self,
        hash: &[u8; 32],
        now: i64,
        audit: &AuditEntry,
    ) -> Result<Option<UserId>, StoreError> {
        const VERIFIED: &str = "UPDATE users SET email_verified_at = $1, updated_at = $1 \
            WHERE id = $2 AND email_verified_at IS NULL";
        const LOCK_OWNER: &str = "SELECT u.id FROM users u JOIN account_tokens t ON t.user_id = u.id \
            WHERE t.token_hash = $1 FOR UPDATE OF u";
        let at = now_micros();
        let lock = matches!(self, Db::Postgres(_));
        let user = dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            if lock {
                sqlx::query(LOCK_OWNER).bind(&hash[..]).execute(&mut *tx).await?;
            }
            let Some(user) = tx
                .consume_account_token(hash, TokenPurpose::EmailVerification, now)
                .await?
            else {
                tx.rollback().await?;
                return Ok(None);
            };
            let verified = sqlx::query(VERIFIED)
                .bind(at)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if verified == 1 {
                tx.append(audit, Some(user), &[]).await?;
            }
            tx.commit().await?;
            Ok(Some(user))
        })?;
        Ok(user.map(UserId::new))
    }

    /// Sets a new password after the current one was verified, with the `audit` event, in one
    /// transaction: every other
    /// session is revoked, outstanding reset tokens are deleted and the notice is queued.
    /// `None` (nothing changed) if the stored hash is no longer `change.old_hash` (a concurrent
    /// change or reset came first); otherwise how many sessions were revoked.
    pub async fn change_password(
        &self,
        change: &PasswordChange<'_>,
        audit: &AuditEntry,
    ) -> Result<Option<u64>, StoreError> {
        const PASSWORD: &str = "UPDATE users SET hashed_password = $1, updated_at = $2 \
            WHERE id = $3 AND hashed_password = $4";
        let at = now_micros();
        let user = change.user.get();
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            let changed = sqlx::query(PASSWORD)
                .bind(change.hashed_password)
                .bind(at)
                .bind(user)
                .bind(change.old_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed != 1 {
                tx.rollback().await?;
                return Ok(None);
            }
            tx.delete_account_tokens(user, TokenPurpose::PasswordReset).await?;
            let revoked = tx.revoke_sessions(user, Some(change.keep.get()), change.now).await?;
            tx.enqueue_mail(change.notice, None).await?;
            tx.append(audit, None, &[("sessions_revoked", revoked.into())]).await?;
            tx.commit().await?;
            Ok(Some(revoked))
        })
    }

    /// Deletes expired account tokens (and, by cascade, any of their mail still queued);
    /// returns how many.
    pub async fn purge_account_tokens(&self, now: i64) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM account_tokens WHERE expires_at <= $1";
        Ok(dispatch!(self, conn => sqlx::query(SQL)
            .bind(now)
            .execute(conn)
            .await
            .map(|done| done.rows_affected()))?)
    }
}

/// The statements of the transactions above, each written once for both databases (any
/// connection whose driver binds and reads the column types used here).
trait AccountTokenSql {
    /// Stores `token` for `user`; its id.
    async fn insert_account_token(
        &mut self,
        user: i64,
        token: &NewAccountToken,
    ) -> Result<i64, sqlx::Error>;
    /// Stores `token` for `user` if the user's address is not verified yet; its id, or `None`.
    async fn insert_verification_if_unverified(
        &mut self,
        user: i64,
        token: &NewAccountToken,
    ) -> Result<Option<i64>, sqlx::Error>;
    /// Deletes every token of `purpose` of `user`.
    async fn delete_account_tokens(
        &mut self,
        user: i64,
        purpose: TokenPurpose,
    ) -> Result<(), sqlx::Error>;
    /// Uses up the unexpired token of `purpose` hashed as `hash` (compare-and-swap: of two
    /// concurrent calls one gets the owner, the other `None`); its user.
    async fn consume_account_token(
        &mut self,
        hash: &[u8; 32],
        purpose: TokenPurpose,
        now: i64,
    ) -> Result<Option<i64>, sqlx::Error>;
    /// Revokes every active session of `user` but `keep`; how many.
    async fn revoke_sessions(
        &mut self,
        user: i64,
        keep: Option<i64>,
        now: i64,
    ) -> Result<u64, sqlx::Error>;
}

impl<C> AccountTokenSql for C
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    for<'q> i64: Encode<'q, C::Database> + Decode<'q, C::Database> + Type<C::Database>,
    for<'q> Option<i64>: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> &'q [u8]: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> &'q str: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> OffsetDateTime: Encode<'q, C::Database> + Type<C::Database>,
    usize: sqlx::ColumnIndex<<C::Database as Database>::Row>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
{
    async fn insert_account_token(
        &mut self,
        user: i64,
        token: &NewAccountToken,
    ) -> Result<i64, sqlx::Error> {
        const SQL: &str = "INSERT INTO account_tokens \
            (user_id, purpose, token_hash, created_at, expires_at) \
            VALUES ($1, $2, $3, $4, $5) RETURNING id";
        sqlx::query_scalar(SQL)
            .bind(user)
            .bind(token.purpose.name())
            .bind(&token.hash[..])
            .bind(token.created_at)
            .bind(token.expires_at)
            .fetch_one(self)
            .await
    }

    async fn insert_verification_if_unverified(
        &mut self,
        user: i64,
        token: &NewAccountToken,
    ) -> Result<Option<i64>, sqlx::Error> {
        const SQL: &str = "INSERT INTO account_tokens \
            (user_id, purpose, token_hash, created_at, expires_at) \
            SELECT id, $2, $3, $4, $5 FROM users WHERE id = $1 AND email_verified_at IS NULL \
            RETURNING id";
        sqlx::query_scalar(SQL)
            .bind(user)
            .bind(token.purpose.name())
            .bind(&token.hash[..])
            .bind(token.created_at)
            .bind(token.expires_at)
            .fetch_optional(self)
            .await
    }

    async fn delete_account_tokens(
        &mut self,
        user: i64,
        purpose: TokenPurpose,
    ) -> Result<(), sqlx::Error> {
        const SQL: &str = "DELETE FROM account_tokens WHERE user_id = $1 AND purpose = $2";
        sqlx::query(SQL)
            .bind(user)
            .bind(purpose.name())
            .execute(self)
            .await
            .map(drop)
    }

    async fn consume_account_token(
        &mut self,
        hash: &[u8; 32],
        purpose: TokenPurpose,
        now: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        const SQL: &str = "DELETE FROM account_tokens \
            WHERE token_hash = $1 AND purpose = $2 AND expires_at > $3 RETURNING user_id";
        sqlx::query_scalar(SQL)
            .bind(&hash[..])
            .bind(purpose.name())
            .bind(now)
            .fetch_optional(self)
            .await
    }

    async fn revoke_sessions(
        &mut self,
        user: i64,
        keep: Option<i64>,
        now: i64,
    ) -> Result<u64, sqlx::Error> {
        // `keep` NULL keeps none: `id <> NULL` is never true, hence the explicit test.
        const SQL: &str = "UPDATE sessions SET revoked_at = $1 \
            WHERE user_id = $2 AND revoked_at IS NULL AND ($3 IS NULL OR id <> $3) RETURNING id";
        let revoked: Vec<i64> = sqlx::query_scalar(SQL)
            .bind(now)
            .bind(user)
            .bind(keep)
            .fetch_all(self)
            .await?;
        Ok(u64::try_from(revoked.len()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::domain::{Email, Username};
    use crate::mail::MailKind;
    use crate::store::{NewSession, TokenRecord};

    const NOW: i64 = 1_800_000_000;

    fn mail(kind: MailKind) -> QueuedMail {
        QueuedMail {
            kind,
            recipient: "ada@example.com".to_owned(),
            message_id: format!("{}@test", crate::auth::tokens::new_jti().expect("random")),
            payload: vec![1, 2, 3],
            created_at: NOW,
            expires_at: NOW + 3600,
        }
    }

    fn token(purpose: TokenPurpose, byte: u8, expires_at: i64) -> NewAccountToken {
        NewAccountToken {
            purpose,
            hash: [byte; 32],
            created_at: NOW,
            expires_at,
        }
    }

    async fn user(db: &Db) -> UserId {
        let new = NewUser {
            email: Email::parse("ada@example.com").expect("an address"),
            username: Username::parse("ada").expect("a username"),
        };
        let verification = token(TokenPurpose::EmailVerification, 0xee, NOW + 86_400);
        let mail = mail(MailKind::EmailVerification);
        db.insert_user(
            &new,
            "$2b$04$old",
            &verification,
            &mail,
            &[crate::store::test_audit()],
        )
        .await
        .expect("inserted")
        .id
    }

    async fn session(db: &Db, user: UserId, byte: u8) -> SessionId {
        crate::store::test_session(db, user, "$2b$04$old", byte, NOW)
            .await
            .expect("the password is unchanged")
    }

    async fn count(db: &Db, sql: &'static str) -> i64 {
        dispatch!(db, conn => sqlx::query_scalar::<_, i64>(sql).fetch_one(conn).await)
            .expect("a count")
    }

    #[tokio::test]
    async fn a_new_reset_token_replaces_the_earlier_one_and_drops_its_unsent_mail() {
        let (_dir, db) = crate::store::test_database().await;
        let ada = user(&db).await;
        let first = token(TokenPurpose::PasswordReset, 1, NOW + 3600);
        let second = token(TokenPurpose::PasswordReset, 2, NOW + 3600);
        db.issue_password_reset(
            ada,
            &first,
            &mail(MailKind::PasswordReset),
            &crate::store::test_audit(),
        )
        .await
        .expect("issued");
        db.issue_password_reset(
            ada,
            &second,
            &mail(MailKind::PasswordReset),
            &crate::store::test_audit(),
        )
        .await
        .expect("issued");
        let reset = TokenPurpose::PasswordReset;
        let owner = |hash| db.account_token_owner(hash, reset, NOW);
        assert!(owner(&first.hash).await.expect("query").is_none());
        let found = owner(&second.hash).await.expect("query").expect("valid");
        assert_eq!(found.user_id, ada);
        assert_eq!(found.username, "ada");
        let queued = "SELECT count(*) FROM mail_outbox WHERE kind = 'password_reset'";
        assert_eq!(count(&db, queued).await, 1);
        // A verification token is not a reset token.
        assert!(owner(&[0xee; 32]).await.expect("query").is_none());
    }

    #[tokio::test]
    async fn a_reset_uses_the_token_once_and_ends_every_session() {
        let (_dir, db) = crate::store::test_database().await;
        let ada = user(&db).await;
        session(&db, ada, 10).await;
        session(&db, ada, 11).await;
        let issued = token(TokenPurpose::PasswordReset, 1, NOW + 3600);
        db.issue_password_reset(
            ada,
            &issued,
            &mail(MailKind::PasswordReset),
            &crate::store::test_audit(),
        )
        .await
        .expect("issued");
        let notice = mail(MailKind::PasswordChanged);
        let reset = |now| PasswordReset {
            token_hash: &issued.hash,
            user: ada,
            hashed_password: "$2b$04$new",
            now,
            notice: &notice,
        };
        // Expired: nothing changes.
        assert_eq!(
            db.reset_password(&reset(NOW + 3600), &crate::store::test_audit())
                .await
                .expect("ran"),
            None
        );
        assert_eq!(
            db.reset_password(&reset(NOW), &crate::store::test_audit())
                .await
                .expect("ran"),
            Some(2)
        );
        assert_eq!(
            db.reset_password(&reset(NOW), &crate::store::test_audit())
                .await
                .expect("ran"),
            None
        );
        let stored = db
            .credentials_by_id(ada)
            .await
            .expect("query")
            .expect("ada");
        assert_eq!(stored.hashed_password, "$2b$04$new");
        assert!(stored.email_verified, "a reset proves the mailbox");
        let active = "SELECT count(*) FROM sessions WHERE revoked_at IS NULL";
        assert_eq!(count(&db, active).await, 0);
        let notices = "SELECT count(*) FROM mail_outbox WHERE kind = 'password_changed'";
        assert_eq!(count(&db, notices).await, 1);
    }

    #[tokio::test]
    async fn verification_is_single_use_and_not_offered_once_verified() {
        let (_dir, db) = crate::store::test_database().await;
        let ada = user(&db).await;
        let again = token(TokenPurpose::EmailVerification, 3, NOW + 60);
        assert!(
            db.issue_email_verification(
                ada,
                &again,
                &mail(MailKind::EmailVerification),
                &crate::store::test_audit()
            )
            .await
            .expect("issued")
        );
        // The first one (from sign-up) still works, and only once.
        assert_eq!(
            db.verify_email(&[0xee; 32], NOW, &crate::store::test_audit())
                .await
                .expect("ran"),
            Some(ada)
        );
        assert_eq!(
            db.verify_email(&[0xee; 32], NOW, &crate::store::test_audit())
                .await
                .expect("ran"),
            None
        );
        let stored = db
            .credentials_by_id(ada)
            .await
            .expect("query")
            .expect("ada");
        assert!(stored.email_verified);
        let more = token(TokenPurpose::EmailVerification, 4, NOW + 60);
        assert!(
            !db.issue_email_verification(
                ada,
                &more,
                &mail(MailKind::EmailVerification),
                &crate::store::test_audit()
            )
            .await
            .expect("ran")
        );
        // A reset token does not verify.
        let reset = token(TokenPurpose::PasswordReset, 5, NOW + 60);
        db.issue_password_reset(
            ada,
            &reset,
            &mail(MailKind::PasswordReset),
            &crate::store::test_audit(),
        )
        .await
        .expect("issued");
        assert_eq!(
            db.verify_email(&reset.hash, NOW, &crate::store::test_audit())
                .await
                .expect("ran"),
            None
        );
    }

    #[tokio::test]
    async fn a_change_applies_only_over_the_verified_hash_and_keeps_the_current_session() {
        let (_dir, db) = crate::store::test_database().await;
        let ada = user(&db).await;
        let current = session(&db, ada, 10).await;
        session(&db, ada, 11).await;
        let reset = token(TokenPurpose::PasswordReset, 1, NOW + 3600);
        db.issue_password_reset(
            ada,
            &reset,
            &mail(MailKind::PasswordReset),
            &crate::store::test_audit(),
        )
        .await
        .expect("issued");
        let notice = mail(MailKind::PasswordChanged);
        let change = |old_hash| PasswordChange {
            user: ada,
            keep: current,
            old_hash,
            hashed_password: "$2b$04$new",
            now: NOW,
            notice: &notice,
        };
        assert_eq!(
            db.change_password(&change("$2b$04$other"), &crate::store::test_audit())
                .await
                .expect("ran"),
            None
        );
        assert_eq!(
            db.change_password(&change("$2b$04$old"), &crate::store::test_audit())
                .await
                .expect("ran"),
            Some(1)
        );
        let active: i64 = dispatch!(&db, conn => sqlx::query_scalar(
            "SELECT id FROM sessions WHERE revoked_at IS NULL")
            .fetch_one(conn)
            .await)
        .expect("one session left");
        assert_eq!(active, current.get());
        let owner = db.account_token_owner(&reset.hash, TokenPurpose::PasswordReset, NOW);
        assert!(
            owner.await.expect("query").is_none(),
            "reset tokens are gone"
        );
    }

    #[tokio::test]
    async fn a_login_checked_against_the_old_password_opens_no_session_after_a_change() {
        let (_dir, db) = crate::store::test_database().await;
        let ada = user(&db).await;
        let current = session(&db, ada, 10).await;
        let notice = mail(MailKind::PasswordChanged);
        let change = PasswordChange {
            user: ada,
            keep: current,
            old_hash: "$2b$04$old",
            hashed_password: "$2b$04$new",
            now: NOW,
            notice: &notice,
        };
        assert_eq!(
            db.change_password(&change, &crate::store::test_audit())
                .await
                .expect("ran"),
            Some(0)
        );
        // A login whose bcrypt check read "$2b$04$old" before the change committed.
        let late = NewSession {
            user: ada,
            now: NOW,
            expires_at: NOW + 86_400,
            user_agent: None,
            ip: None,
            verified_hash: "$2b$04$old",
        };
        let record = TokenRecord {
            hash: [12; 32],
            jti: "jti-late".to_owned(),
            issued_at: NOW,
        };
        assert_eq!(
            db.create_session(&late, &record, &crate::store::test_audit())
                .await
                .expect("ran"),
            None
        );
        let with_new = NewSession {
            verified_hash: "$2b$04$new",
            ..late
        };
        assert!(
            db.create_session(&with_new, &record, &crate::store::test_audit())
                .await
                .expect("ran")
                .is_some()
        );
    }

    #[tokio::test]
    async fn the_purge_deletes_expired_tokens_and_their_mail_only() {
        let (_dir, db) = crate::store::test_database().await;
        let ada = user(&db).await;
        let reset = token(TokenPurpose::PasswordReset, 1, NOW + 10);
        db.issue_password_reset(
            ada,
            &reset,
            &mail(MailKind::PasswordReset),
            &crate::store::test_audit(),
        )
        .await
        .expect("issued");
        assert_eq!(db.purge_account_tokens(NOW).await.expect("ran"), 0);
        assert_eq!(db.purge_account_tokens(NOW + 10).await.expect("ran"), 1);
        let left = "SELECT count(*) FROM account_tokens";
        assert_eq!(count(&db, left).await, 1, "the verification token lives on");
        let mail = "SELECT count(*) FROM mail_outbox WHERE kind = 'password_reset'";
        assert_eq!(count(&db, mail).await, 0);
    }
}
