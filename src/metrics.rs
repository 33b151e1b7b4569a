//! Prometheus metrics: what `/metrics` exposes, owned by the app (no global registry, so every
//! app in a test process counts on its own).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The media type of [`Metrics::render`]'s output: the encoder writes OpenMetrics 1.0 (`# TYPE`
/// lines name a counter without its `_total`, the body ends in `# EOF`), which a Prometheus server
/// reading it as the classic `text/plain; version=0.0.4` format would mis-type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The methods recorded under their own name; any other token is `OTHER`.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The `method` label for a request's method. hyper accepts any token as a method, so recording
/// it verbatim would let a client grow the label set (and memory) without bound.
pub fn method_label(method: &str) -> &'static str {
    STANDARD_METHODS
        .into_iter()
        .find(|standard| *standard == method)
        .unwrap_or("OTHER")
}

/// Labels of a finished HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method, or `OTHER`.
    pub method: String,
    /// Route template (`/auth/me`), or `unmatched`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method, or `OTHER`.
    pub method: String,
    /// Route template, or `unmatched`.
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SchemeLabels {
    scheme: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    rule: &'static str,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreErrorLabels {
    store: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    database: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: from a cached /auth/me to a queued bcrypt hash.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Latencies<RouteLabels>,
    logins: Family<OutcomeLabels, Counter>,
    hash_seconds: Latencies<OperationLabels>,
    hash_rejected: Counter,
    hash_running: Gauge,
    hash_running_max: Gauge,
    hash_slots: Gauge,
    hash_unsupported: Family<SchemeLabels, Counter>,
    pool: Family<PoolLabels, Gauge>,
    connections_open: Gauge,
    connections_closed: Family<ReasonLabels, Counter>,
    connection_limit_reached: Counter,
    requests_cancelled: Family<RouteLabels, Counter>,
    rate_limit_decisions: Family<DecisionLabels, Counter>,
    rate_limited: Family<RuleLabels, Counter>,
    rate_limit_store_errors: Family<StoreErrorLabels, Counter>,
    login_throttled: Family<ScopeLabels, Counter>,
    sessions_opened: Counter,
    sessions_refreshed: Counter,
    sessions_revoked: Family<ReasonLabels, Counter>,
    mail_sent: Family<KindLabels, Counter>,
    mail_failed_attempts: Family<KindLabels, Counter>,
    mail_expired: Family<KindLabels, Counter>,
    mail_queue_depth: Gauge,
    audit_events: Family<EventLabels, Counter>,
    audit_purged: Counter,
    legacy_tokens: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Why sessions ended before their time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// `POST /auth/logout`.
    Logout,
    /// `POST /auth/logout-all`.
    LogoutAll,
    /// `DELETE /auth/sessions/{id}`.
    Revoked,
    /// A used refresh token presented after its grace window.
    RefreshReuse,
    /// Every session of an account whose password was reset.
    PasswordReset,
    /// The other sessions of an account whose password was changed.
    PasswordChange,
    /// Sessions an admin ended: `DELETE /admin/users/{id}/sessions`, or disabling the account.
    Admin,
}

impl RevokeReason {
    /// Every reason, so each series exists from start-up.
    pub const ALL: [Self; 7] = [
        Self::Logout,
        Self::LogoutAll,
        Self::Revoked,
        Self::RefreshReuse,
        Self::PasswordReset,
        Self::PasswordChange,
        Self::Admin,
    ];

    /// The `reason` label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::Revoked => "revoked",
            Self::RefreshReuse => "refresh_reuse",
            Self::PasswordReset => "password_reset",
            Self::PasswordChange => "password_change",
            Self::Admin => "admin",
        }
    }
}

/// Why the server closed a connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No whole request head arrived within `HTTP_HEADER_READ_TIMEOUT_SECS`.
    HeaderTimeout,
    /// A keep-alive connection sat idle between requests for `HTTP_IDLE_TIMEOUT_SECS`.
    IdleTimeout,
}

/// A bcrypt operation counted as running; dropping it counts it as finished.
#[derive(Debug)]
#[must_use = "the operation counts as running only while this lives"]
pub struct HashRunning<'a>(&'a Gauge);

impl Drop for HashRunning<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How a login ended.
#[derive(Debug, Clone, Copy)]
pub enum LoginOutcome {
    /// A token was issued.
    Success,
    /// Unknown account or wrong password.
    Failure,
}

/// Which bcrypt operation was timed.
#[derive(Debug, Clone, Copy)]
pub enum HashOperation {
    /// A new hash (sign-up).
    Hash,
    /// A verification (login).
    Verify,
}

impl Metrics {
    /// A fresh registry; `database` (`sqlite` or `postgres`) goes into the build info.
    pub fn new(database: &'static str) -> Self {
        let mut registry = Registry::with_prefix("cerego");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let request_seconds: Latencies<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            request_seconds.clone(),
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register("logins", "Password logins by outcome", logins.clone());
        let hash_seconds: Latencies<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "password_hash_duration_seconds",
            "bcrypt time per operation, including the wait for a hashing slot",
            hash_seconds.clone(),
        );
        let hash_rejected = Counter::default();
        registry.register(
            "password_hash_rejected",
            "Hashes and verifications turned away because the queue was full (answered 503)",
            hash_rejected.clone(),
        );
        let hash_running = Gauge::default();
        registry.register(
            "password_hash_running",
            "bcrypt operations running now",
            hash_running.clone(),
        );
        let hash_running_max = Gauge::default();
        registry.register(
            "password_hash_running_max",
            "Most bcrypt operations ever running at once (never above the slots)",
            hash_running_max.clone(),
        );
        let hash_slots = Gauge::default();
        registry.register(
            "password_hash_slots",
            "bcrypt operations allowed to run at once (one per core)",
            hash_slots.clone(),
        );
        let hash_unsupported = Family::<SchemeLabels, Counter>::default();
        registry.register(
            "password_hash_unsupported",
            "Logins to accounts whose stored hash is not a usable bcrypt hash, by scheme",
            hash_unsupported.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections by state",
            pool.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "HTTP connections open now",
            connections_open.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_connections_closed",
            "HTTP connections the server closed on its own, by reason",
            connections_closed.clone(),
        );
        let connection_limit_reached = Counter::default();
        registry.register(
            "http_connection_limit_reached",
            "Times accepting paused because HTTP_MAX_CONNECTIONS connections were open",
            connection_limit_reached.clone(),
        );
        let requests_cancelled = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_requests_cancelled",
            "HTTP requests abandoned because the client went away before the response",
            requests_cancelled.clone(),
        );
        let rate_limit_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "rate_limit_decisions",
            "Rate-limit checks by rule and decision (allowed / limited)",
            rate_limit_decisions.clone(),
        );
        let rate_limited = Family::<RuleLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a rate limit, by rule",
            rate_limited.clone(),
        );
        let rate_limit_store_errors = Family::<StoreErrorLabels, Counter>::default();
        registry.register(
            "rate_limit_store_errors",
            "Rate-limit store failures, by store and what was done (admitted: fail-open; refused: 503)",
            rate_limit_store_errors.clone(),
        );
        let login_throttled = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "login_throttled",
            "Logins refused with 429 before any password check, by scope (account_ip backoff or account cap)",
            login_throttled.clone(),
        );
        let sessions_opened = Counter::default();
        registry.register(
            "sessions_opened",
            "Sessions opened by a login",
            sessions_opened.clone(),
        );
        let sessions_refreshed = Counter::default();
        registry.register(
            "sessions_refreshed",
            "Refresh-token rotations",
            sessions_refreshed.clone(),
        );
        let sessions_revoked = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sessions_revoked",
            "Sessions ended before their time, by reason",
            sessions_revoked.clone(),
        );
        let mail_sent = Family::<KindLabels, Counter>::default();
        registry.register(
            "mail_sent",
            "Messages delivered (to the SMTP server, or written to MAIL_OUTBOX_DIR), by kind",
            mail_sent.clone(),
        );
        let mail_failed_attempts = Family::<KindLabels, Counter>::default();
        registry.register(
            "mail_failed_attempts",
            "Delivery attempts that failed and will be retried, by kind",
            mail_failed_attempts.clone(),
        );
        let mail_expired = Family::<KindLabels, Counter>::default();
        registry.register(
            "mail_expired",
            "Messages given up undelivered (their link expired first, or they could not be opened or rendered), by kind",
            mail_expired.clone(),
        );
        let mail_queue_depth = Gauge::default();
        registry.register(
            "mail_queue_depth",
            "Messages in the outbox waiting to be delivered, as of the sender's last pass",
            mail_queue_depth.clone(),
        );
        // Every kind's series from the start, so a dashboard shows 0 rather than "no data" (and a
        // failure rate divides by a series that exists).
        for kind in crate::mail::MailKind::ALL.map(crate::mail::MailKind::name) {
            for family in [&mail_sent, &mail_failed_attempts, &mail_expired] {
                drop(family.get_or_create(&KindLabels { kind }));
            }
        }
        for reason in RevokeReason::ALL.map(RevokeReason::name) {
            drop(sessions_revoked.get_or_create(&ReasonLabels { reason }));
        }
        let audit_events = Family::<EventLabels, Counter>::default();
        registry.register(
            "audit_events",
            "Audit events written (committed with the change they record), by event",
            audit_events.clone(),
        );
        for event in crate::domain::AuditEvent::ALL {
            drop(audit_events.get_or_create(&EventLabels {
                event: event.as_str(),
            }));
        }
        let audit_purged = Counter::default();
        registry.register(
            "audit_events_purged",
            "Audit events deleted by the retention purge (AUDIT_RETENTION_DAYS)",
            audit_purged.clone(),
        );
        let legacy_tokens = Counter::default();
        registry.register(
            "legacy_tokens_accepted",
            "Tokens of the FastAPI system accepted on GET /auth/me (JWT_ACCEPT_LEGACY_UNTIL)",
            legacy_tokens.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                database,
            })
            .set(1);
        registry.register("build_info", "Version and database of this build", build);
        Self {
            registry,
            requests,
            request_seconds,
            logins,
            hash_seconds,
            hash_rejected,
            hash_running,
            hash_running_max,
            hash_slots,
            hash_unsupported,
            pool,
            connections_open,
            connections_closed,
            connection_limit_reached,
            requests_cancelled,
            rate_limit_decisions,
            rate_limited,
            rate_limit_store_errors,
            login_throttled,
            sessions_opened,
            sessions_refreshed,
            sessions_revoked,
            mail_sent,
            mail_failed_attempts,
            mail_expired,
            mail_queue_depth,
            audit_events,
            audit_purged,
            legacy_tokens,
        }
    }

    /// Counts one audit event written.
    pub fn record_audit_event(&self, event: crate::domain::AuditEvent) {
        self.audit_events
            .get_or_create(&EventLabels {
                event: event.as_str(),
            })
            .inc();
    }

    /// Counts a legacy token accepted on `GET /auth/me`.
    pub fn record_legacy_token_accepted(&self) {
        self.legacy_tokens.inc();
    }

    /// Counts audit events deleted by the retention purge.
    pub fn record_audit_purged(&self, count: u64) {
        self.audit_purged.inc_by(count);
    }

    /// Counts one rate-limit check of `rule` (a fixed name) and, when refused, one 429.
    pub fn record_rate_limit(&self, rule: &'static str, allowed: bool) {
        let decision = if allowed { "allowed" } else { "limited" };
        self.rate_limit_decisions
            .get_or_create(&DecisionLabels { rule, decision })
            .inc();
        if !allowed {
            self.rate_limited.get_or_create(&RuleLabels { rule }).inc();
        }
    }

    /// Counts a failed call to the rate-limit store (`memory` or `redis`), and whether the
    /// request was admitted anyway (fail-open) or refused with 503.
    pub fn record_rate_limit_store_error(&self, store: &'static str, admitted: bool) {
        let action = if admitted { "admitted" } else { "refused" };
        self.rate_limit_store_errors
            .get_or_create(&StoreErrorLabels { store, action })
            .inc();
    }

    /// Counts a login refused by the brute-force throttle; `scope` is `account_ip` or `account`.
    pub fn record_login_throttled(&self, scope: &'static str) {
        self.login_throttled
            .get_or_create(&ScopeLabels { scope })
            .inc();
    }

    /// Counts a message delivered; `kind` is a [`crate::mail::MailKind`] name.
    pub fn record_mail_sent(&self, kind: &'static str) {
        self.mail_sent.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts a delivery attempt that failed (it will be retried).
    pub fn record_mail_failed_attempt(&self, kind: &'static str) {
        self.mail_failed_attempts
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts a message given up because it expired before it could be delivered.
    pub fn record_mail_expired(&self, kind: &'static str) {
        self.mail_expired.get_or_create(&KindLabels { kind }).inc();
    }

    /// Sets the number of messages waiting in the outbox.
    pub fn set_mail_queue_depth(&self, depth: u64) {
        self.mail_queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Counts a session opened by a login.
    pub fn record_session_opened(&self) {
        self.sessions_opened.inc();
    }

    /// Counts a refresh-token rotation.
    pub fn record_session_refreshed(&self) {
        self.sessions_refreshed.inc();
    }

    /// Counts `count` sessions ended early for `reason`.
    pub fn record_sessions_revoked(&self, reason: RevokeReason, count: u64) {
        self.sessions_revoked
            .get_or_create(&ReasonLabels {
                reason: reason.name(),
            })
            .inc_by(count);
    }

    /// Counts a connection opened (`+1`) or closed (`-1`).
    pub fn record_connections_open(&self, delta: i64) {
        self.connections_open.inc_by(delta);
    }

    /// Counts a connection the server closed on its own.
    pub fn record_connection_closed(&self, reason: CloseReason) {
        let reason = match reason {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
        };
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one time accepting paused at the connection cap.
    pub fn record_connection_limit_reached(&self) {
        self.connection_limit_reached.inc();
    }

    /// Counts a request whose client went away before its response was ready. `method` is
    /// one of the standard methods or `OTHER`, so clients cannot grow the label set.
    pub fn record_request_cancelled(&self, method: &str, route: &str) {
        let labels = RouteLabels {
            method: method_label(method).to_owned(),
            route: route.to_owned(),
        };
        self.requests_cancelled.get_or_create(&labels).inc();
    }

    /// Counts a finished request and its latency. A method outside the standard nine is counted
    /// as `OTHER` (see [`method_label`]).
    pub fn record_request(&self, method: &str, route: &str, status: u16, latency: Duration) {
        let route_labels = RouteLabels {
            method: method_label(method).to_owned(),
            route: route.to_owned(),
        };
        self.request_seconds
            .get_or_create(&route_labels)
            .observe(latency.as_secs_f64());
        let labels = RequestLabels {
            method: route_labels.method,
            route: route_labels.route,
            status,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts a login attempt that reached the password check.
    pub fn record_login(&self, outcome: LoginOutcome) {
        let outcome = match outcome {
            LoginOutcome::Success => "success",
            LoginOutcome::Failure => "failure",
        };
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Records how long a bcrypt operation took.
    pub fn record_hash(&self, operation: HashOperation, took: Duration) {
        let operation = match operation {
            HashOperation::Hash => "hash",
            HashOperation::Verify => "verify",
        };
        self.hash_seconds
            .get_or_create(&OperationLabels { operation })
            .observe(took.as_secs_f64());
    }

    /// Counts an operation turned away by the full hashing queue.
    pub fn record_hash_rejected(&self) {
        self.hash_rejected.inc();
    }

    /// Sets how many bcrypt operations may run at once.
    pub fn set_hash_slots(&self, slots: usize) {
        self.hash_slots
            .set(i64::try_from(slots).unwrap_or(i64::MAX));
    }

    /// Counts a bcrypt operation as running until the returned guard is dropped, and raises the
    /// high-water mark if this makes the most ever running at once.
    pub fn hash_running(&self) -> HashRunning<'_> {
        let now = self.hash_running.inc() + 1;
        self.hash_running_max
            .inner()
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        HashRunning(&self.hash_running)
    }

    /// Counts a login to an account whose stored hash is of `scheme` (one of a fixed set of
    /// names, so the label set stays bounded), which this service cannot verify.
    pub fn record_hash_unsupported(&self, scheme: &'static str) {
        self.hash_unsupported
            .get_or_create(&SchemeLabels { scheme })
            .inc();
    }

    /// The OpenMetrics text exposition (it ends in `# EOF`; see [`CONTENT_TYPE`]), with the pool gauges set to `(open, idle)` connections first.
    pub fn render(&self, pool: (u32, usize)) -> String {
        let (open, idle) = (i64::from(pool.0), i64::try_from(pool.1).unwrap_or(i64::MAX));
        self.pool
            .get_or_create(&PoolLabels { state: "open" })
            .set(open);
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(idle);
        self.pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set((open - idle).max(0));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_revocation_reason_is_exported_from_start_up_at_zero() {
        let metrics = Metrics::new("sqlite");
        let text = metrics.render((0, 0));
        for reason in RevokeReason::ALL {
            let series = format!(
                "cerego_sessions_revoked_total{{reason=\"{}\"}} 0",
                reason.name()
            );
            assert!(text.contains(&series), "{series} missing from\n{text}");
        }
    }

    #[test]
    fn standard_methods_keep_their_name_and_any_other_token_is_other() {
        for method in STANDARD_METHODS {
            assert_eq!(method_label(method), method);
        }
        for method in ["FOO1", "get", "PROPFIND", "GETX", ""] {
            assert_eq!(method_label(method), "OTHER", "{method}");
        }
    }
}
