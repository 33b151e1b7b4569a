//! SQL for `mail_outbox`: queueing a message inside a use case's transaction, and what the sender
//! needs to claim, retry and finish messages.

use sqlx::{Connection, Database, Encode, Executor, IntoArguments, Type};

use crate::mail::QueuedMail;

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
