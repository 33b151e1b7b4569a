//! The audit trail from the use cases' side: entries describing what a request did (with the
//! client's address, user agent and request id), and what follows once the change they record
//! has committed: one log line each (`"audience": "audit"`) and a count by event. The rows
//! themselves are written by the store, in the transaction of the change (see
//! [`crate::store`]'s `audit` module).

use crate::domain::{AuditEvent, Outcome};
use crate::metrics::Metrics;
use crate::store::{AuditEntry, AuditRecord};

use super::{Auth, ClientInfo};

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

    /// [`ClientInfo::audit`] of a change that was done.
    pub fn success(&self, event: AuditEvent) -> AuditEntry {
        self.audit(event, Outcome::Success)
    }

    /// [`ClientInfo::audit`] of an attempt that was refused.
    pub fn failure(&self, event: AuditEvent) -> AuditEntry {
        self.audit(event, Outcome::Failure)
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
        target: "cerego::audit",
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
    /// [`written`] with this service's metrics.
    pub(super) fn audited<'a>(&self, entries: impl IntoIterator<Item = &'a AuditEntry>) {
        written(&self.metrics, entries);
    }
}
