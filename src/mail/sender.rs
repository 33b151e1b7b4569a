//! The background sender: claims due messages from the outbox, delivers them, retries.
//!
//! One sender runs in each process ([`Mailer::run`], spawned by the app). Each pass it claims
//! due messages with a lease (see `Db::claim_mail`: a compare-and-swap per row, so several
//! replicas can share one outbox) and delivers up to [`CONCURRENCY`] at a time, each in its own
//! task: a relay that is slow to answer one message holds one slot, for at most
//! [`Mailer::delivery_deadline`], while the others go on. For each claimed message:
//!
//! - past its `expires_at` (its link no longer works): the row is deleted and counted in
//!   `mail_expired`;
//! - its sealed content does not open (the signing secret, from which the seal's key is derived,
//!   changed since it was queued) or it cannot be rendered: deleted and counted as expired, with
//!   an error in the log; retrying could never succeed;
//! - delivered: the row is deleted and counted in `mail_sent`;
//! - failed (relay down, refused, timed out; permanent 5xx replies too, since a relay may give
//!   them for a passing misconfiguration): counted in `mail_failed_attempts`, and retried after
//!   1 s, 2 s, 4 s, … up to `MAIL_RETRY_MAX_SECS`, until it expires.
//!
//! Between passes the sender waits until it is woken ([`Mailer::wake`], after a use case's
//! transaction that queued mail commits), a delivery finishes, or the next message is due, and
//! never longer than [`MAX_WAIT`], so it also picks up messages other replicas queued and leases
//! that ran out. After each pass it sets `mail_queue_depth` (every row in the outbox, including
//! messages being delivered at that moment).
//!
//! **Delivery is at least once.** A lease lasts [`Mailer::delivery_deadline`] plus
//! [`LEASE_MARGIN`]. If the process stops while a message is being delivered (the task is
//! aborted at shutdown) or the row cannot be deleted after a delivery, the message is sent
//! again once its lease has run out. Its `Message-ID` and `Date` are the same, so mail clients
//! and the tests can recognise the copy.
//!
//! Nothing logged here says what a message says or to whom: kind, `Message-ID` and attempt
//! count only (the recipient is personal data, the link a credential).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::message::{self, Draft};
use super::{ClaimedMail, MailContent, Mailer};
use crate::auth::clock::Clock;
use crate::store::{Db, StoreError};

/// Messages delivered at the same time by one process.
pub const CONCURRENCY: usize = 4;

/// The longest wait between two looks at the outbox.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// The pause after the database failed to answer.
const DB_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How much longer than the delivery deadline a lease lasts (database round trips, rendering).
pub const LEASE_MARGIN: Duration = Duration::from_secs(30);

impl Mailer {
    /// Delivers the outbox until the task is aborted: at once when woken, else when the next
    /// message is due (and at least every few seconds, for messages other replicas queued).
    pub async fn run(self: Arc<Self>, db: Db, clock: Arc<dyn Clock>) {
        let mut running: JoinSet<()> = JoinSet::new();
        let mut db_failing = false;
        loop {
            let wait = match self.pass(&db, &clock, &mut running).await {
                Ok(wait) => {
                    if db_failing {
                        tracing::info!("mail sender reaches the database again");
                        db_failing = false;
                    }
                    wait
                }
                Err(err) => {
                    // The pool logs outages itself; say it once here, then quietly retry.
                    if db_failing {
                        tracing::debug!(error = %err, "mail sender: database error");
                    } else {
                        tracing::warn!(
                            error = %err,
                            "mail sender cannot read the outbox; retrying every second"
                        );
                        db_failing = true;
                    }
                    DB_ERROR_PAUSE
                }
            };
            tokio::select! {
                () = self.wake.notified() => {}
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    if let Err(err) = joined
                        && err.is_panic()
                    {
                        tracing::error!("a mail delivery task panicked");
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Claims what fits in the free delivery slots, starts delivering it, updates the queue
    /// depth, and gives how long to wait before the next pass.
    async fn pass(
        self: &Arc<Self>,
        db: &Db,
        clock: &Arc<dyn Clock>,
        running: &mut JoinSet<()>,
    ) -> Result<Duration, StoreError> {
        // Reap finished deliveries so their slots are free.
        while let Some(joined) = running.try_join_next() {
            if let Err(err) = joined
                && err.is_panic()
            {
                tracing::error!("a mail delivery task panicked");
            }
        }
        let free = CONCURRENCY.saturating_sub(running.len());
        if free > 0 {
            let now = clock.unix_now();
            let lease_until = now.saturating_add(secs(self.lease()));
            for mail in db.claim_mail(now, lease_until, free).await? {
                running.spawn(self.clone().deliver(db.clone(), clock.clone(), mail));
            }
        }
        let status = db.outbox_status().await?;
        self.metrics.set_mail_queue_depth(status.depth);
        let now = clock.unix_now();
        let wait = match status.next_due {
            Some(due) => Duration::from_secs(
                u64::try_from(due.saturating_sub(now).max(1)).unwrap_or(u64::MAX),
            ),
            None => MAX_WAIT,
        };
        Ok(wait.min(MAX_WAIT))
    }

    /// The longest one delivery may take, connection to final reply: three times
    /// `SMTP_TIMEOUT_SECS` (lettre bounds each step by it; this bounds the whole).
    fn delivery_deadline(&self) -> Duration {
        self.settings.smtp_timeout.saturating_mul(3)
    }

    /// How long a claim keeps a message from other senders.
    fn lease(&self) -> Duration {
        self.delivery_deadline().saturating_add(LEASE_MARGIN)
    }

    /// Delivers one claimed message, or gives it up, or schedules its next attempt.
    async fn deliver(self: Arc<Self>, db: Db, clock: Arc<dyn Clock>, mail: ClaimedMail) {
        let kind = mail.kind.name();
        let attempt = mail.attempts.saturating_add(1);
        if clock.unix_now() >= mail.expires_at {
            tracing::warn!(
                kind,
                message_id = %mail.message_id,
                failed_attempts = mail.attempts,
                "mail expired before it could be delivered; given up"
            );
            self.give_up(&db, &mail).await;
            return;
        }
        let content = match self
            .seal
            .open(&mail.message_id, &mail.recipient, &mail.payload)
        {
            Ok(content) => content,
            Err(err) => {
                tracing::error!(
                    kind,
                    message_id = %mail.message_id,
                    error = %err,
                    "queued mail cannot be opened (was JWT_SECRET_KEY changed since it was \
                     queued?); given up"
                );
                self.give_up(&db, &mail).await;
                return;
            }
        };
        let message = match self.render(&mail, &content) {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(
                    kind,
                    message_id = %mail.message_id,
                    error = format!("{err:#}"),
                    "queued mail cannot be rendered; given up"
                );
                self.give_up(&db, &mail).await;
                return;
            }
        };
        let deadline = self.delivery_deadline();
        let sent = match tokio::time::timeout(
            deadline,
            self.transport
                .send(&message, mail.created_at, &mail.message_id),
        )
        .await
        {
            Ok(sent) => sent,
            Err(_) => Err(super::transport::DeliveryError::timed_out(deadline)),
        };
        match sent {
            Ok(()) => {
                self.metrics.record_mail_sent(kind);
                tracing::info!(
                    kind,
                    message_id = %mail.message_id,
                    attempts = attempt,
                    "mail delivered"
                );
                if let Err(err) = db.delete_mail(mail.id).await {
                    tracing::warn!(
                        kind,
                        message_id = %mail.message_id,
                        error = %err,
                        "mail delivered but not removed from the outbox; it will be sent again \
                         when its lease runs out"
                    );
                }
            }
            Err(err) => {
                self.metrics.record_mail_failed_attempt(kind);
                let delay = backoff(mail.attempts, self.settings.retry_max);
                let next = clock.unix_now().saturating_add(secs(delay));
                tracing::warn!(
                    kind,
                    message_id = %mail.message_id,
                    attempts = attempt,
                    permanent = err.permanent,
                    retry_in_secs = delay.as_secs(),
                    error = %err,
                    "mail delivery failed; will retry"
                );
                match db.record_mail_failure(&mail, next, &err.to_string()).await {
                    Ok(true) => {}
                    Ok(false) => tracing::debug!(
                        kind,
                        message_id = %mail.message_id,
                        "the lease on this mail ran out during the attempt; another sender has it"
                    ),
                    Err(err) => tracing::warn!(
                        kind,
                        message_id = %mail.message_id,
                        error = %err,
                        "failed mail attempt not recorded; retried when its lease runs out"
                    ),
                }
            }
        }
    }

    fn render(&self, mail: &ClaimedMail, content: &MailContent) -> anyhow::Result<lettre::Message> {
        message::render(
            &Draft {
                kind: mail.kind,
                content,
                to: &mail.recipient,
                message_id: &mail.message_id,
                created_at: mail.created_at,
                expires_at: mail.expires_at,
            },
            &self.settings.from,
        )
    }

    /// Deletes a message that will never be delivered, counted as expired.
    async fn give_up(&self, db: &Db, mail: &ClaimedMail) {
        self.metrics.record_mail_expired(mail.kind.name());
        if let Err(err) = db.delete_mail(mail.id).await {
            tracing::warn!(
                kind = mail.kind.name(),
                message_id = %mail.message_id,
                error = %err,
                "mail given up but not removed from the outbox; tried again when its lease runs out"
            );
        }
    }
}

/// The wait before the next attempt after `failed_before` earlier failed attempts and this
/// one: 1 s, 2 s, 4 s, … never more than `max` (and at least 1 s).
fn backoff(failed_before: i64, max: Duration) -> Duration {
    let exponent = u32::try_from(failed_before.max(0)).unwrap_or(u32::MAX);
    let secs = 1_u64.checked_shl(exponent).unwrap_or(u64::MAX);
    Duration::from_secs(secs)
        .min(max)
        .max(Duration::from_secs(1))
}

/// Whole seconds of `duration`, as the store counts them.
fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
