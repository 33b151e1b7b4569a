//! The audit trail from the use cases' side: entries describing what a request did (with the
//! client's address, user agent and request id), and what follows once the change they record
//! has committed: one log line each (`"audience": "audit"`) and a count by event. The rows
//! themselves are written by the store, in the transaction of the change (see
//! [`crate::store`]'s `audit` module).

use std::time::Duration;

use crate::domain::{AuditEvent, Outcome, UserId};
use crate::metrics::Metrics;
use crate::store::{AuditEntry, AuditQuery, AuditRecord, unix_micros};

use super::{Auth, AuthError, ClientInfo};

impl ClientInfo {
    /// An entry of `event` carrying this client's address, user agent and request id.
    pub fn audit(&self, event: AuditEvent, outcome: Outcome) -> AuditEntry {
        let mut entry = AuditEntry::new(event, outcome);
        entry.ip = self.ip.map(|ip| ip.to_string());
        entry.user_agent = self
            .user_agent
            .as_deref()
            .map(|ua| super::sessions::cut(ua, 512).to_owned());
        entry.request_id = self.request_id.clone();
        entry
    }
}

/// After the store call that took `entries` succeeded: each row it wrote is logged once and
/// counted (an entry it wrote no row for, because nothing changed, is skipped).
pub(crate) fn written<'a>(metrics: &Metrics, entries: impl IntoIterator<Item = &'a AuditEntry>) {
    for entry in entries {
        if let Some(record) = entry.written() {
            metrics.record_audit_event(entry.event);
            mirror(record);
        }
    }
}

/// The log line of a stored event: its fields as the API shows them, with `"audience":
/// "audit"` for collectors to route on (`details` is written as a JSON object: see
/// [`crate::telemetry::AUDIT_DETAILS`]).
pub fn mirror(record: &AuditRecord) {
    tracing::info!(
        target: crate::telemetry::AUDIT_TARGET,
        audience = "audit",
        id = record.id,
        occurred_at = record.occurred_at_rfc3339(),
        event = record.event.as_str(),
        outcome = record.outcome.as_str(),
        actor_user_id = record.actor_user_id,
        target_user_id = record.target_user_id,
        ip = record.ip.as_deref(),
        user_agent = record.user_agent.as_deref(),
        request_id = record.request_id.as_deref(),
        details = record.details.as_str(),
        prev_hash = record.prev_hash.as_str(),
        hash = record.hash.as_str(),
        "audit event"
    );
}

impl Auth {
    /// [`ClientInfo::audit`] of a change that was done, stamped by the service's clock.
    pub(super) fn success(&self, client: &ClientInfo, event: AuditEvent) -> AuditEntry {
        self.stamped(client.audit(event, Outcome::Success))
    }

    /// [`ClientInfo::audit`] of an attempt that was refused, stamped by the service's clock.
    pub(super) fn failure(&self, client: &ClientInfo, event: AuditEvent) -> AuditEntry {
        self.stamped(client.audit(event, Outcome::Failure))
    }

    fn stamped(&self, mut entry: AuditEntry) -> AuditEntry {
        entry.at = Some(unix_micros(self.clock.now()));
        entry
    }

    /// [`written`] with this service's metrics.
    pub(super) fn audited<'a>(&self, entries: impl IntoIterator<Item = &'a AuditEntry>) {
        written(&self.metrics, entries);
    }
}

/// One page of the trail, newest first.
#[derive(Debug)]
pub struct AuditPage {
    /// At most the page size of events.
    pub events: Vec<AuditRecord>,
    /// The id to continue below (the last event's) when more events follow; `None` when this
    /// page is the last.
    pub next: Option<i64>,
}

impl Auth {
    /// A page of the events matching `query` (`query.limit` of them at most), newest first.
    /// Keyset paging by id: events written meanwhile have higher ids, so they never shift a
    /// later page.
    pub async fn audit_events(&self, query: AuditQuery) -> Result<AuditPage, AuthError> {
        let limit = query.limit;
        // One more than asked for says whether another page follows, without a count.
        let query = AuditQuery {
            limit: limit.saturating_add(1),
            ..query
        };
        let mut events = self.db.audit_events(&query).await?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = events.len() > limit;
        events.truncate(limit);
        let next = if more {
            events.last().map(|event| event.id)
        } else {
            None
        };
        Ok(AuditPage { events, next })
    }

    /// `GET /auth/activity`: the events concerning `user`'s own account (logins and failed
    /// logins with address and user agent, password changes and resets, sessions ended, role
    /// and status changes), newest first, below `before`.
    pub async fn activity(
        &self,
        user: UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<AuditPage, AuthError> {
        self.audit_events(AuditQuery {
            target: Some(user),
            before,
            limit,
            ..AuditQuery::default()
        })
        .await
    }

    /// Deletes the events older than `retention` by the service's clock (the oldest rows of
    /// the chain; the chain's anchor moves with them, so verification still passes); how many.
    /// Rows that are not an intact chain are not deleted (an error is logged): a purge never
    /// removes the evidence of tampering.
    pub async fn purge_audit_events(&self, retention: Duration) -> Result<u64, AuthError> {
        let cutoff = self.clock.now() - retention;
        let purge = self.db.purge_audit_events(unix_micros(cutoff)).await?;
        self.metrics.record_audit_purged(purge.deleted);
        if purge.deleted > 0 {
            tracing::info!(
                count = purge.deleted,
                "audit events past their retention purged"
            );
        }
        if let Some(broken) = purge.refused {
            tracing::error!(
                error = %broken,
                "the audit chain is broken among the events due for purging: they are kept \
                 (run `cerego audit verify`); the purge stops there until the chain is repaired"
            );
        }
        Ok(purge.deleted)
    }
}
