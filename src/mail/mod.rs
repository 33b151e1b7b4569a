//! Outgoing mail: composing the messages of account recovery, keeping them in the outbox until
//! they are delivered, and delivering them.
//!
//! A use case that sends mail builds a [`QueuedMail`] with the [`Mailer`] and writes it to the
//! outbox table in the same transaction as the token it carries (see `store::outbox`), then
//! [`Mailer::wake`]s the sender. The sender ([`Mailer::run`], one task per process) claims due
//! messages, renders and delivers them (SMTP with `SMTP_URL`, else `.eml` files in
//! `MAIL_OUTBOX_DIR`), and retries failures with exponential backoff until the message's link
//! expires. No request ever waits for a mail server.
//!
//! What a message says (the greeting's name and the link, which is as good as a password) is
//! sealed with ChaCha20-Poly1305 before it is stored, under a key derived from the signing secret,
//! so a copy of the database does not hold usable reset links.
//!
//! The parts:
//! - `seal`: the outbox's ChaCha20-Poly1305 seal, bound to the `Message-ID` and recipient;
//! - `message`: `Message-ID`s, subjects, the text and HTML bodies, the headers;
//! - `transport`: SMTP through lettre, or atomically written `.eml` files;
//! - `sender`: the delivery loop: leases, bounded concurrency, backoff, expiry, metrics.
//!
//! Delivery is at least once: a message whose delivery was cut off (the process stopped, the
//! database did not answer after the relay accepted it) is sent again when its lease runs out,
//! with the same `Message-ID` and `Date`.

mod message;
mod seal;
mod sender;
mod transport;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::{MailSettings, RecoverySettings};
use crate::metrics::Metrics;

/// The messages cerego sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// A link to set a new password (`crg_pr_` token).
    PasswordReset,
    /// A link to confirm the address (`crg_ev_` token).
    EmailVerification,
    /// "Your password was changed" (after a reset or a change), no link to act on.
    PasswordChanged,
}

impl MailKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [
        Self::PasswordReset,
        Self::EmailVerification,
        Self::PasswordChanged,
    ];

    /// The kind's name: the outbox's `kind` column and the `kind` label of the mail metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
            Self::PasswordChanged => "password_changed",
        }
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// What a message says apart from its kind: sealed in the outbox, rendered at delivery.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailContent {
    /// The account's username, for the greeting.
    pub username: String,
    /// The link to act on (it holds the token), for kinds that have one.
    pub link: Option<String>,
}

impl std::fmt::Debug for MailContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailContent")
            .field("has_link", &self.link.is_some())
            .finish_non_exhaustive()
    }
}

/// A message ready for the outbox: written by the use case's transaction, read by the sender.
#[derive(Clone)]
pub struct QueuedMail {
    /// What it is.
    pub kind: MailKind,
    /// The address it goes to (the account's stored address).
    pub recipient: String,
    /// Its `Message-ID` (without angle brackets), fixed at composition so retries repeat it.
    pub message_id: String,
    /// The sealed [`MailContent`].
    pub payload: Vec<u8>,
    /// When it was composed (its `Date`), Unix seconds.
    pub created_at: i64,
    /// After this (Unix seconds) it is given up undelivered: its link no longer works.
    pub expires_at: i64,
}

impl std::fmt::Debug for QueuedMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedMail")
            .field("kind", &self.kind)
            .field("message_id", &self.message_id)
            .finish_non_exhaustive()
    }
}

/// A message the sender claimed from the outbox: leased to this process until `lease_until`,
/// by which time it is delivered (row deleted), given up (row deleted) or scheduled for another
/// attempt (lease released). Another replica may claim it once the lease has run out.
#[derive(Clone)]
pub struct ClaimedMail {
    /// The outbox row.
    pub id: i64,
    /// What it is.
    pub kind: MailKind,
    /// The address it goes to.
    pub recipient: String,
    /// Its `Message-ID`, without angle brackets.
    pub message_id: String,
    /// The sealed [`MailContent`].
    pub payload: Vec<u8>,
    /// When it was composed (its `Date`), Unix seconds.
    pub created_at: i64,
    /// After this (Unix seconds) it is given up undelivered.
    pub expires_at: i64,
    /// Delivery attempts that failed so far.
    pub attempts: i64,
    /// The lease this claim holds (Unix seconds); a failed attempt is recorded only while the
    /// row still holds this lease.
    pub lease_until: i64,
}

impl std::fmt::Debug for ClaimedMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedMail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("message_id", &self.message_id)
            .field("attempts", &self.attempts)
            .field("lease_until", &self.lease_until)
            .finish_non_exhaustive()
    }
}

/// Composes messages and delivers the outbox.
pub struct Mailer {
    settings: MailSettings,
    recovery: RecoverySettings,
    seal: seal::Seal,
    transport: transport::Transport,
    metrics: Arc<Metrics>,
    wake: Notify,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for `settings`, sealing with `key` (32 bytes, derived from the signing secret).
    /// Fails on an `SMTP_URL` lettre cannot use (nothing is connected yet).
    pub fn new(
        settings: &MailSettings,
        recovery: &RecoverySettings,
        key: &[u8; 32],
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            transport: transport::Transport::new(settings)?,
            settings: settings.clone(),
            recovery: recovery.clone(),
            seal: seal::Seal::new(key),
            metrics,
            wake: Notify::new(),
        })
    }

    /// A password-reset message to `to` whose link carries `token`, valid until `expires_at`.
    pub fn password_reset(
        &self,
        to: &str,
        username: &str,
        token: &str,
        now: i64,
        expires_at: i64,
    ) -> anyhow::Result<QueuedMail> {
        let link = with_token(&self.recovery.password_reset_url, token);
        self.compose(
            MailKind::PasswordReset,
            to,
            username,
            Some(link),
            now,
            expires_at,
        )
    }

    /// A verification message to `to` whose link carries `token`, valid until `expires_at`.
    pub fn email_verification(
        &self,
        to: &str,
        username: &str,
        token: &str,
        now: i64,
        expires_at: i64,
    ) -> anyhow::Result<QueuedMail> {
        let link = with_token(&self.recovery.email_verification_url, token);
        self.compose(
            MailKind::EmailVerification,
            to,
            username,
            Some(link),
            now,
            expires_at,
        )
    }

    /// A "your password was changed" notice to `to`.
    pub fn password_changed(
        &self,
        to: &str,
        username: &str,
        now: i64,
    ) -> anyhow::Result<QueuedMail> {
        self.compose(
            MailKind::PasswordChanged,
            to,
            username,
            None,
            now,
            now.saturating_add(NOTICE_LIFETIME_SECS),
        )
    }

    /// Tells the sender that a message was just queued (call after the transaction commits).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn compose(
        &self,
        kind: MailKind,
        to: &str,
        username: &str,
        link: Option<String>,
        now: i64,
        expires_at: i64,
    ) -> anyhow::Result<QueuedMail> {
        let message_id = message::new_message_id(&self.settings.from)?;
        let content = MailContent {
            username: username.to_owned(),
            link,
        };
        let payload = self.seal.seal(&message_id, to, &content)?;
        Ok(QueuedMail {
            kind,
            recipient: to.to_owned(),
            message_id,
            payload,
            created_at: now,
            expires_at,
        })
    }
}

/// How long a notice without a link (password changed) is retried before it is given up.
pub const NOTICE_LIFETIME_SECS: i64 = 3 * 24 * 3600;

/// `page` with `token=<token>` added to its query.
fn with_token(page: &str, token: &str) -> String {
    let separator = if page.contains('?') { '&' } else { '?' };
    format!("{page}{separator}token={token}")
}
