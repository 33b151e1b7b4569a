//! SQL for `mail_outbox`: queueing a message inside a use case's transaction, and what the sender
//! needs to claim, retry and finish messages.

use anyhow::anyhow;
use sqlx::{Connection, Database, Encode, Executor, FromRow, IntoArguments, Type};

use super::{Db, StoreError, dispatch};
use crate::mail::{ClaimedMail, MailKind, QueuedMail};

/// Queueing mail on a connection inside a transaction (any driver).
pub(crate) trait OutboxSql {
    /// Writes `mail` to the outbox, due at once; `token` is the `account_tokens` row its link
    /// carries (deleting that row, when the token is superseded, drops the message if unsent).
    async fn enqueue_mail(
        &mut self,
        mail: &QueuedMail,
        token: Option<i64>,
    ) -> Result<(), sqlx::Error>;
}

impl<C> OutboxSql for C
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    for<'q> i64: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> Option<i64>: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> &'q [u8]: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> &'q str: Encode<'q, C::Database> + Type<C::Database>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
{
    async fn enqueue_mail(
        &mut self,
        mail: &QueuedMail,
        token: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        const SQL: &str = "INSERT INTO mail_outbox \
            (kind, recipient, message_id, payload, token_id, created_at, expires_at, next_attempt_at) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $6)";
        sqlx::query(SQL)
            .bind(mail.kind.name())
            .bind(mail.recipient.as_str())
            .bind(mail.message_id.as_str())
            .bind(&mail.payload[..])
            .bind(token)
            .bind(mail.created_at)
            .bind(mail.expires_at)
            .execute(self)
            .await
            .map(drop)
    }
}

/// The outbox as the sender's wait needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Messages in the outbox (due, waiting for a retry, or being delivered).
    pub depth: u64,
    /// When the next message of a kind this process knows becomes claimable (Unix seconds:
    /// its next attempt, or the end of the lease another sender holds), if any.
    pub next_due: Option<i64>,
}

/// A claimed row as the claim's `RETURNING` gives it.
#[derive(FromRow)]
struct ClaimedRow {
    id: i64,
    kind: String,
    recipient: String,
    message_id: String,
    payload: Vec<u8>,
    created_at: i64,
    expires_at: i64,
    attempts: i32,
}

/// The kinds this build can send, bound as `$2, $3, $4` of the claim and `$1, $2, $3` of the
/// status: a row of a kind only a newer release knows is left to a replica that can send it.
const KINDS: [&str; 3] = [
    MailKind::ALL[0].name(),
    MailKind::ALL[1].name(),
    MailKind::ALL[2].name(),
];

/// The longest `last_error` kept, in bytes (the column holds 512 characters).
const LAST_ERROR_MAX: usize = 512;

impl Db {
    /// Claims up to `limit` due messages for this process until `lease_until`.
    ///
    /// Safe with several senders on one database, without `FOR UPDATE SKIP LOCKED` (which
    /// SQLite lacks): candidates are read first, then each is taken with a compare-and-swap
    /// (`UPDATE … WHERE locked_until <= now RETURNING …`). Only one sender's update can match a
    /// row whose lease has run out (PostgreSQL re-checks the condition on the row version a
    /// concurrent update left; SQLite has one writer), so a message is never claimed twice at
    /// once; a sender that loses the race simply gets fewer rows.
    pub async fn claim_mail(
        &self,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedMail>, StoreError> {
        const CANDIDATES: &str = "SELECT id FROM mail_outbox \
            WHERE next_attempt_at <= $1 AND locked_until <= $1 AND kind IN ($2, $3, $4) \
            ORDER BY next_attempt_at, id LIMIT $5";
        const CLAIM: &str = "UPDATE mail_outbox SET locked_until = $1 \
            WHERE id = $2 AND locked_until <= $3 AND next_attempt_at <= $3 \
            RETURNING id, kind, recipient, message_id, payload, created_at, expires_at, attempts";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<ClaimedRow> = dispatch!(self, conn => {
            let ids: Vec<i64> = sqlx::query_scalar(CANDIDATES)
                .bind(now)
                .bind(KINDS[0])
                .bind(KINDS[1])
                .bind(KINDS[2])
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?;
            let mut won = Vec::with_capacity(ids.len());
            for id in ids {
                let row: Option<ClaimedRow> = sqlx::query_as(CLAIM)
                    .bind(lease_until)
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&mut *conn)
                    .await?;
                won.extend(row);
            }
            Ok(won)
        })?;
        rows.into_iter()
            .map(|row| {
                let kind = MailKind::from_name(&row.kind).ok_or_else(|| {
                    StoreError::Unexpected(anyhow!("unknown mail kind {:?}", row.kind))
                })?;
                Ok(ClaimedMail {
                    id: row.id,
                    kind,
                    recipient: row.recipient,
                    message_id: row.message_id,
                    payload: row.payload,
                    created_at: row.created_at,
                    expires_at: row.expires_at,
                    attempts: i64::from(row.attempts),
                    lease_until,
                })
            })
            .collect()
    }

    /// Deletes a message that was delivered or given up.
    pub async fn delete_mail(&self, id: i64) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM mail_outbox WHERE id = $1";
        dispatch!(self, conn => sqlx::query(SQL).bind(id).execute(conn).await.map(drop))
    }

    /// Records a failed attempt at `mail`: one more attempt, the next at `next_attempt_at`,
    /// lease released, `error` kept (cut to 512 bytes). Does nothing if the lease ran out and
    /// another sender holds the row now; gives whether the row was updated.
    pub async fn record_mail_failure(
        &self,
        mail: &ClaimedMail,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE mail_outbox \
            SET attempts = attempts + 1, next_attempt_at = $1, locked_until = 0, last_error = $2 \
            WHERE id = $3 AND locked_until = $4";
        let error = cut(error, LAST_ERROR_MAX);
        let updated = dispatch!(self, conn => sqlx::query(SQL)
            .bind(next_attempt_at)
            .bind(error)
            .bind(mail.id)
            .bind(mail.lease_until)
            .execute(conn)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(updated > 0)
    }

    /// How many messages wait and when the next one is due, in one query.
    pub async fn outbox_status(&self) -> Result<OutboxStatus, StoreError> {
        const SQL: &str = "SELECT COUNT(*), MIN(CASE WHEN kind IN ($1, $2, $3) THEN \
            (CASE WHEN locked_until > next_attempt_at THEN locked_until ELSE next_attempt_at END) \
            END) FROM mail_outbox";
        let (depth, next_due): (i64, Option<i64>) = dispatch!(self, conn => sqlx::query_as(SQL)
            .bind(KINDS[0])
            .bind(KINDS[1])
            .bind(KINDS[2])
            .fetch_one(conn)
            .await)?;
        Ok(OutboxStatus {
            depth: u64::try_from(depth).unwrap_or(0),
            next_due,
        })
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A row as the sender's tests inspect it.
#[cfg(test)]
#[derive(Debug, FromRow)]
pub(crate) struct OutboxTestRow {
    pub(crate) attempts: i32,
    pub(crate) next_attempt_at: i64,
    pub(crate) locked_until: i64,
    pub(crate) last_error: Option<String>,
}

#[cfg(test)]
impl Db {
    /// Queues `mail` outside any use case (tests).
    pub(crate) async fn enqueue_mail_for_test(&self, mail: &QueuedMail) -> Result<(), StoreError> {
        dispatch!(self, conn => conn.enqueue_mail(mail, None).await)
    }

    /// Every outbox row (tests).
    pub(crate) async fn outbox_rows_for_test(&self) -> Result<Vec<OutboxTestRow>, StoreError> {
        const SQL: &str = "SELECT attempts, next_attempt_at, locked_until, last_error \
            FROM mail_outbox ORDER BY id";
        dispatch!(self, conn => sqlx::query_as(SQL).fetch_all(conn).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("abc", 512), "abc");
        assert_eq!(cut("abcdef", 3), "abc");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
        assert_eq!(cut("€€", 4), "€");
    }

    #[test]
    fn kinds_are_every_kind() {
        assert_eq!(KINDS.len(), MailKind::ALL.len());
        for kind in MailKind::ALL {
            assert!(KINDS.contains(&kind.name()));
        }
    }
}
