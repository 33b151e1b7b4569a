//! SQL for the audit trail: appending events inside the transactions of the changes they
//! record, reading them back, verifying the hash chain and purging old events.
//!
//! **One chain, in commit order.** Each row's `hash` is SHA-256 over the previous row's hash
//! and the row's canonical content ([`AuditRecord::content`]). To append, a transaction first
//! updates the one row of `audit_chain`, which hands out the next id and the current head's
//! hash; on PostgreSQL that row lock is held until the transaction ends, so appends take turns
//! and the next one sees this one's hash (or, if this one rolled back, the same head again). On
//! SQLite every write transaction holds the one write lock anyway.
//!
//! **The chain head is the last lock a transaction takes.** An append is the last thing a
//! transaction does before it commits, and after taking the head's lock it only inserts its
//! own row and writes the head again, so a transaction holding the head never waits for any
//! other lock: appends cannot take part in a deadlock, and the head is held for three
//! statements and a commit. That bounds the audited writes of the whole service to one commit
//! at a time (a few hundred a second on PostgreSQL, far above what bcrypt lets logins and
//! sign-ups reach).
//!
//! **Retention.** A purge deletes the oldest rows (a prefix of the chain) and records the last
//! one it deleted as the chain's anchor, in one transaction; verification starts from the
//! anchor, so a purge never breaks it, while a row deleted by hand anywhere else does.

use std::fmt::Write as _;
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{Connection, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use super::{Db, StoreError, dispatch};
use crate::domain::{AuditEvent, Outcome, UserId};

/// The `prev_hash` of the first event ever written.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Details of an event: names and values (never a password, token or hash).
pub type Details = Vec<(&'static str, Value)>;

/// An event to record, as the use case that causes it describes it. The store stamps the time
/// and the chain position when it writes it, in the transaction of the change.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// What happened.
    pub event: AuditEvent,
    /// Whether it was done or refused.
    pub outcome: Outcome,
    /// Who did it; `None` for an anonymous client or the service itself.
    pub actor: Option<UserId>,
    /// Whose account it concerns, if any (the store fills it in where only it knows: a new
    /// account's id, a reused refresh token's owner).
    pub target: Option<UserId>,
    /// The client's IP address, as the rate limiter sees it.
    pub ip: Option<String>,
    /// The client's `User-Agent`, cut to 512 bytes.
    pub user_agent: Option<String>,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
    /// Facts of the event (ids, names, counts).
    pub details: Details,
    /// When it happened (Unix microseconds) by the service's clock; `None`: when the store
    /// writes it, by the system clock.
    pub at: Option<i64>,
    /// The row as written, once its transaction wrote it (see [`AuditEntry::written`]).
    written: OnceLock<AuditRecord>,
}

impl AuditEntry {
    /// An event with no actor, target, client or details yet.
    pub fn new(event: AuditEvent, outcome: Outcome) -> Self {
        Self {
            event,
            outcome,
            actor: None,
            target: None,
            ip: None,
            user_agent: None,
            request_id: None,
            details: Vec::new(),
            at: None,
            written: OnceLock::new(),
        }
    }

    /// The entry done by `actor`.
    #[must_use]
    pub fn by(mut self, actor: UserId) -> Self {
        self.actor = Some(actor);
        self
    }

    /// The entry concerning `target`'s account.
    #[must_use]
    pub fn on(mut self, target: UserId) -> Self {
        self.target = Some(target);
        self
    }

    /// The entry with the detail `key` set to `value`.
    #[must_use]
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.details.push((key, value.into()));
        self
    }

    /// The row the store wrote for this entry; `None` if it wrote none (the change was refused
    /// or changed nothing). Meaningful once the store call that took the entry returned `Ok`:
    /// the transaction that wrote it has then committed.
    pub fn written(&self) -> Option<&AuditRecord> {
        self.written.get()
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AuditRecord {
    /// Its place in the chain (consecutive, in commit order).
    pub id: i64,
    /// When it was written: Unix microseconds, UTC.
    pub occurred_at: i64,
    /// The event's name (as stored: a row edited by hand may hold any text).
    pub event: String,
    /// Who did it.
    pub actor_user_id: Option<i64>,
    /// Whose account it concerns.
    pub target_user_id: Option<i64>,
    /// The client's IP address.
    pub ip: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// The request's id.
    pub request_id: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// A JSON object, in canonical form (keys sorted, no spaces), exactly as hashed.
    pub details: String,
    /// The previous row's `hash` ([`GENESIS_HASH`] for the first row ever written).
    pub prev_hash: String,
    /// SHA-256, in lowercase hex, over `prev_hash` and [`AuditRecord::content`].
    pub hash: String,
}

impl AuditRecord {
    /// The canonical content the hash covers: a JSON array of the row's fields in column order,
    /// with `details` as stored: `[id,occurred_at,event,actor_user_id,target_user_id,ip,
    /// user_agent,request_id,outcome,details]`.
    pub fn content(&self) -> String {
        let head = serde_json::to_string(&(
            self.id,
            self.occurred_at,
            &self.event,
            self.actor_user_id,
            self.target_user_id,
            &self.ip,
            &self.user_agent,
            &self.request_id,
            &self.outcome,
        ))
        .unwrap_or_default();
        let mut content = head;
        content.pop(); // the closing bracket
        content.push(',');
        content.push_str(&self.details);
        content.push(']');
        content
    }

    /// The hash this row should carry: SHA-256 over the ASCII of `prev_hash`, a newline, and
    /// [`AuditRecord::content`], in lowercase hex.
    pub fn expected_hash(&self) -> String {
        let mut sha = Sha256::new();
        sha.update(self.prev_hash.as_bytes());
        sha.update(b"\n");
        sha.update(self.content().as_bytes());
        hex(&sha.finalize())
    }

    /// `occurred_at` in RFC 3339, UTC, with six fractional digits
    /// (`2026-11-29T13:05:09.000123Z`).
    pub fn occurred_at_rfc3339(&self) -> String {
        rfc3339_micros(self.occurred_at)
    }

    /// The details as a JSON value (an empty object if the stored text is not JSON).
    pub fn details_value(&self) -> Value {
        serde_json::from_str(&self.details).unwrap_or_else(|_| Value::Object(Default::default()))
    }
}

/// Unix microseconds in RFC 3339, UTC, with six fractional digits
/// (`2026-11-29T13:05:09.000123Z`).
pub fn rfc3339_micros(micros: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|at| at.format(FORMAT).ok())
        .unwrap_or_default()
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `details` as canonical JSON text: an object with its keys sorted (recursively), no spaces.
pub fn canonical_details(details: &[(&'static str, Value)]) -> String {
    let mut sorted: Vec<&(&'static str, Value)> = details.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut out = String::from("{");
    for (i, (key, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_canonical(&mut out, &Value::String((*key).to_owned()));
        out.push(':');
        write_canonical(&mut out, value);
    }
    out.push('}');
    out
}

/// Writes `value` as canonical JSON (object keys sorted, whatever order the map keeps).
fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).unwrap_or_default());
                out.push(':');
                write_canonical(out, &map[key]);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).unwrap_or_default()),
    }
}

/// Now, in Unix microseconds.
fn now_micros() -> i64 {
    unix_micros(time::OffsetDateTime::now_utc())
}

/// `at` in Unix microseconds.
pub fn unix_micros(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// What to read from the trail: one page, newest first (see [`Db::audit_events`]).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this event.
    pub event: Option<AuditEvent>,
    /// Only events by this user.
    pub actor: Option<UserId>,
    /// Only events concerning this user.
    pub target: Option<UserId>,
    /// Only events at or after this time (Unix microseconds).
    pub since: Option<i64>,
    /// Only events at or before this time (Unix microseconds).
    pub until: Option<i64>,
    /// Only events with a smaller id (the keyset cursor); `None`: from the newest.
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// What [`Db::verify_audit_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Rows checked.
    pub checked: u64,
    /// The first row kept (after the anchor) and the newest, if any.
    pub span: Option<(i64, i64)>,
    /// The first problem found, walking from the oldest kept row; `None`: the chain is intact.
    pub broken: Option<ChainBreak>,
    /// The newest row retention purges deleted, and when it occurred (Unix microseconds), if
    /// any was: everything up to it is gone. Worth comparing with `AUDIT_RETENTION_DAYS` and the
    /// log mirror, since whoever can delete rows can also move the anchor.
    pub purged_through: Option<(i64, Option<i64>)>,
}

/// What [`Db::purge_audit_events`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purge {
    /// Events deleted.
    pub deleted: u64,
    /// Where the rows due for deletion are not an intact chain: nothing from there on was
    /// deleted.
    pub refused: Option<ChainBreak>,
}

/// The first place where the stored trail is not the chain that was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// The row's content or `prev_hash` does not give its `hash`: it was edited.
    #[error("row {0} was altered: its content does not match its hash")]
    Altered(i64),
    /// The row's own hash matches its content, but the next row recorded another hash for it:
    /// it was rewritten and re-hashed.
    #[error("row {0} was altered: row {next} recorded another hash for it", next = .0 + 1)]
    Rehashed(i64),
    /// A row of the chain is not there (deleted, and not by a retention purge).
    #[error("row {0} is missing: it was deleted")]
    Missing(i64),
    /// A row that the chain never had: before the anchor, after the head, or not linked to
    /// the row before it.
    #[error("row {0} was inserted out of chain")]
    Inserted(i64),
    /// The newest row is not the one the chain's head recorded.
    #[error("row {0} is not the chain's newest row as recorded: the head or the row was altered")]
    HeadMismatch(i64),
}

/// The chain's head row.
#[derive(Debug, FromRow)]
struct Head {
    last_id: i64,
    last_hash: String,
    anchor_id: i64,
    anchor_hash: String,
    #[sqlx(default)]
    anchor_occurred_at: Option<i64>,
}

/// The chain walked from the anchor, a row at a time, as `verify` and the purge check it.
struct ChainWalk<'h> {
    head: &'h Head,
    /// The id the next row must have.
    expected_id: i64,
    /// The hash the next row must name as its `prev_hash`.
    prev_hash: String,
}

impl<'h> ChainWalk<'h> {
    /// Before the oldest kept row.
    fn from_anchor(head: &'h Head) -> Self {
        Self {
            head,
            expected_id: head.anchor_id + 1,
            prev_hash: head.anchor_hash.trim_end().to_owned(),
        }
    }

    /// Checks `row`, the next one in id order, and moves past it.
    /// Hashes are compared as stored: a hash is 64 characters, so `CHAR(64)` never pads one,
    /// and a shorter value put there by hand fails the comparison, as it should.
    fn step(&mut self, row: &AuditRecord) -> Result<(), ChainBreak> {
        if row.id > self.head.last_id {
            return Err(ChainBreak::Inserted(row.id));
        }
        if row.id > self.expected_id {
            return Err(ChainBreak::Missing(self.expected_id));
        }
        if row.expected_hash() != row.hash {
            return Err(ChainBreak::Altered(row.id));
        }
        if row.prev_hash != self.prev_hash {
            // The row is what was hashed, so its `prev_hash` is the one written: the row before
            // it changed since (the first row's predecessor is the anchor).
            return Err(if row.id == self.head.anchor_id + 1 {
                ChainBreak::Inserted(row.id)
            } else {
                ChainBreak::Rehashed(row.id - 1)
            });
        }
        self.expected_id = row.id + 1;
        self.prev_hash.clone_from(&row.hash);
        Ok(())
    }

    /// Whether `next`, the row after the last one stepped over, follows it: else that last row
    /// was rewritten and re-hashed.
    fn vouched_by(&self, next: &AuditRecord) -> Result<(), ChainBreak> {
        if next.id == self.expected_id && next.prev_hash == self.prev_hash {
            Ok(())
        } else {
            Err(ChainBreak::Rehashed(self.expected_id - 1))
        }
    }

    /// Whether the last row stepped over is the head's newest row.
    fn at_head(&self) -> Result<(), ChainBreak> {
        if self.expected_id <= self.head.last_id {
            Err(ChainBreak::Missing(self.expected_id))
        } else if self.prev_hash != self.head.last_hash.trim_end() {
            Err(ChainBreak::HeadMismatch(self.head.last_id))
        } else {
            Ok(())
        }
    }
}

/// The columns of an [`AuditRecord`].
macro_rules! record_columns {
    () => {
        concat!(
            "id, occurred_at, event, actor_user_id, target_user_id, ip, user_agent, ",
            "request_id, outcome, details, prev_hash, hash"
        )
    };
}

/// Rows read at a time by verification and purges.
const BATCH: i64 = 1000;

impl Db {
    /// Writes `entries` in a transaction of their own: events that record no change (a failed
    /// or throttled login).
    pub async fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        dispatch!(self, conn => {
            let mut tx = conn.begin().await?;
            for entry in entries {
                tx.append(entry, None, &[]).await?;
            }
            tx.commit().await
        })
    }

    /// A page of events matching `query`, newest (highest id) first.
    ///
    /// The `WHERE` names only the filters given (from fixed fragments; every value is bound),
    /// so each combination gets a plan that uses its index: a catch-all `($1 IS NULL OR …)`
    /// makes SQLite scan the whole trail, e.g. for `/auth/activity` of an account with few
    /// events.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = concat!(
            "SELECT ",
            record_columns!(),
            " FROM audit_events WHERE TRUE"
        )
        .to_owned();
        let mut ints: Vec<i64> = Vec::new();
        let mut text: Option<&'static str> = None;
        let mut filter = |sql: &mut String, condition: &str, value: Option<i64>| {
            if let Some(value) = value {
                ints.push(value);
                // Placeholders number the integers first; the event name, if any, comes last.
                let _ = write!(sql, " AND {condition} ${}", ints.len());
            }
        };
        filter(&mut sql, "id <", query.before);
        filter(&mut sql, "actor_user_id =", query.actor.map(UserId::get));
        filter(&mut sql, "target_user_id =", query.target.map(UserId::get));
        filter(&mut sql, "occurred_at >=", query.since);
        filter(&mut sql, "occurred_at <=", query.until);
        if let Some(event) = query.event {
            text = Some(event.as_str());
            let _ = write!(sql, " AND event = ${}", ints.len() + 1);
        }
        let _ = write!(
            sql,
            " ORDER BY id DESC LIMIT ${}",
            ints.len() + usize::from(text.is_some()) + 1
        );
        let limit = i64::from(query.limit);
        Ok(dispatch!(self, conn => {
            let mut select = sqlx::query_as::<_, AuditRecord>(sqlx::AssertSqlSafe(sql.as_str()));
            for value in &ints {
                select = select.bind(*value);
            }
            if let Some(event) = text {
                select = select.bind(event);
            }
            select.bind(limit).fetch_all(conn).await
        })?)
    }

    /// Walks the chain from the oldest kept row to the head, in one snapshot, and reports the
    /// first row that was altered, deleted or inserted out of chain. Not bounded by the query
    /// timeout (the whole trail is read, a batch at a time).
    pub async fn verify_audit_chain(&self) -> Result<ChainReport, StoreError> {
        match self {
            Db::Postgres(pool) => {
                pool.with_conn_unbounded(false, async |conn: &mut sqlx::PgConnection| {
                    let mut tx = conn.begin().await?;
                    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                        .execute(&mut *tx)
                        .await?;
                    let report = tx.walk_chain().await?;
                    tx.rollback().await?;
                    Ok(report)
                })
                .await
            }
            Db::Sqlite(pool, _) => {
                pool.with_conn_unbounded(false, async |conn: &mut sqlx::SqliteConnection| {
                    // A read transaction: in WAL mode its first read fixes its snapshot.
                    let mut tx = conn.begin().await?;
                    let report = tx.walk_chain().await?;
                    tx.rollback().await?;
                    Ok(report)
                })
                .await
            }
        }
    }

    /// Deletes the events that occurred before `before` (Unix microseconds): the oldest rows,
    /// a batch per transaction, each batch recorded as the chain's new anchor. How many, and
    /// the break that stopped it, if any: a batch is deleted only if it is intact (each row
    /// hashes to its `hash` and links to the one before, from the anchor), so a purge never
    /// deletes the evidence of a row edited or deleted by hand.
    pub async fn purge_audit_events(&self, before: i64) -> Result<Purge, StoreError> {
        let mut purge = Purge::default();
        loop {
            let batch = dispatch!(self, conn => {
                let mut tx = conn.begin().await?;
                let batch = tx.purge_batch(before).await?;
                tx.commit().await?;
                Ok(batch)
            })?;
            match batch {
                Ok(deleted) => {
                    purge.deleted += deleted;
                    if deleted < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                        return Ok(purge);
                    }
                }
                Err(broken) => {
                    purge.refused = Some(broken);
                    return Ok(purge);
                }
            }
        }
    }
}

/// The statements of the trail, each written once for both databases.
pub(super) trait AuditSql {
    /// Appends `entry` as the chain's next row, with `target` (if given) instead of the
    /// entry's, and `extra` added to its details; must be the last thing the transaction does
    /// before it commits (see the module comment). Records the row in the entry.
    async fn append(
        &mut self,
        entry: &AuditEntry,
        target: Option<i64>,
        extra: &[(&'static str, Value)],
    ) -> Result<(), sqlx::Error>;
    /// Checks the chain (see [`Db::verify_audit_chain`]).
    async fn walk_chain(&mut self) -> Result<ChainReport, sqlx::Error>;
    /// Deletes up to [`BATCH`] of the oldest rows, if they occurred before `before` and are an
    /// intact chain from the anchor, and records the last as the anchor; how many, or where
    /// the chain is broken (nothing deleted).
    async fn purge_batch(&mut self, before: i64) -> Result<Result<u64, ChainBreak>, sqlx::Error>;
}

impl<C> AuditSql for C
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    for<'q> i64: Encode<'q, C::Database> + Decode<'q, C::Database> + Type<C::Database>,
    for<'q> Option<i64>: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> &'q str: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> Option<&'q str>: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> String: Decode<'q, C::Database> + Type<C::Database>,
    for<'r> AuditRecord: FromRow<'r, <C::Database as Database>::Row>,
    for<'r> Head: FromRow<'r, <C::Database as Database>::Row>,
    usize: sqlx::ColumnIndex<<C::Database as Database>::Row>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
{
    async fn append(
        &mut self,
        entry: &AuditEntry,
        target: Option<i64>,
        extra: &[(&'static str, Value)],
    ) -> Result<(), sqlx::Error> {
        const TAKE: &str = "UPDATE audit_chain SET last_id = last_id + 1 WHERE id = 1 \
            RETURNING last_id, last_hash";
        const INSERT: &str = concat!(
            "INSERT INTO audit_events (",
            record_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        const HEAD: &str = "UPDATE audit_chain SET last_hash = $1 WHERE id = 1";
        let (id, prev_hash): (i64, String) = sqlx::query_as(TAKE).fetch_one(&mut *self).await?;
        let mut details = entry.details.clone();
        details.extend(extra.iter().cloned());
        let mut record = AuditRecord {
            id,
            occurred_at: entry.at.unwrap_or_else(now_micros),
            event: entry.event.as_str().to_owned(),
            actor_user_id: entry.actor.map(UserId::get),
            target_user_id: target.or(entry.target.map(UserId::get)),
            ip: entry.ip.clone(),
            user_agent: entry.user_agent.clone(),
            request_id: entry.request_id.clone(),
            outcome: entry.outcome.as_str().to_owned(),
            details: canonical_details(&details),
            prev_hash: prev_hash.trim_end().to_owned(),
            hash: String::new(),
        };
        record.hash = record.expected_hash();
        sqlx::query(INSERT)
            .bind(record.id)
            .bind(record.occurred_at)
            .bind(record.event.as_str())
            .bind(record.actor_user_id)
            .bind(record.target_user_id)
            .bind(record.ip.as_deref())
            .bind(record.user_agent.as_deref())
            .bind(record.request_id.as_deref())
            .bind(record.outcome.as_str())
            .bind(record.details.as_str())
            .bind(record.prev_hash.as_str())
            .bind(record.hash.as_str())
            .execute(&mut *self)
            .await?;
        sqlx::query(HEAD)
            .bind(record.hash.as_str())
            .execute(&mut *self)
            .await?;
        // A second append of one entry (there is none) keeps the first row recorded.
        let _ = entry.written.set(record);
        Ok(())
    }

    async fn walk_chain(&mut self) -> Result<ChainReport, sqlx::Error> {
        const HEAD: &str = "SELECT last_id, last_hash, anchor_id, anchor_hash, anchor_occurred_at \
            FROM audit_chain WHERE id = 1";
        const ROWS: &str = concat!(
            "SELECT ",
            record_columns!(),
            " FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2"
        );
        const OLDER: &str = "SELECT max(id) FROM audit_events WHERE id <= $1";
        let head: Head = sqlx::query_as(HEAD).fetch_one(&mut *self).await?;
        let mut report = ChainReport {
            checked: 0,
            span: None,
            broken: None,
            purged_through: (head.anchor_id > 0)
                .then_some((head.anchor_id, head.anchor_occurred_at)),
        };
        // A row at or before the anchor: the purge deleted every one of those.
        let older: Option<i64> = sqlx::query_scalar(OLDER)
            .bind(head.anchor_id)
            .fetch_one(&mut *self)
            .await?;
        if let Some(id) = older {
            report.broken = Some(ChainBreak::Inserted(id));
            return Ok(report);
        }
        let mut walk = ChainWalk::from_anchor(&head);
        let mut after = head.anchor_id;
        loop {
            let rows: Vec<AuditRecord> = sqlx::query_as(ROWS)
                .bind(after)
                .bind(BATCH)
                .fetch_all(&mut *self)
                .await?;
            let done = rows.len() < usize::try_from(BATCH).unwrap_or(usize::MAX);
            for row in rows {
                after = row.id;
                if let Err(broken) = walk.step(&row) {
                    report.broken = Some(broken);
                    return Ok(report);
                }
                report.checked += 1;
                let first = report.span.map_or(row.id, |(first, _)| first);
                report.span = Some((first, row.id));
            }
            if done {
                break;
            }
        }
        report.broken = walk.at_head().err();
        Ok(report)
    }

    async fn purge_batch(&mut self, before: i64) -> Result<Result<u64, ChainBreak>, sqlx::Error> {
        // Taking the head first makes the purge one of the appends' turns: no row is appended
        // while the anchor moves.
        const LOCK: &str = "UPDATE audit_chain SET anchor_id = anchor_id WHERE id = 1 \
            RETURNING last_id, last_hash, anchor_id, anchor_hash";
        // The oldest kept rows, by primary key from the anchor (an index range, however long
        // the trail): a batch and the row after it, whose link vouches for the batch's last.
        const OLDEST: &str = concat!(
            "SELECT ",
            record_columns!(),
            " FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2"
        );
        const DELETE: &str = "DELETE FROM audit_events WHERE id <= $1";
        const ANCHOR: &str = "UPDATE audit_chain \
            SET anchor_id = $1, anchor_hash = $2, anchor_occurred_at = $3 WHERE id = 1";
        let head: Head = sqlx::query_as(LOCK).fetch_one(&mut *self).await?;
        let rows: Vec<AuditRecord> = sqlx::query_as(OLDEST)
            .bind(head.anchor_id)
            .bind(BATCH + 1)
            .fetch_all(&mut *self)
            .await?;
        // The leading run that occurred before the cutoff: a prefix of the chain. (Times rise
        // with ids but for the moments between stamping and taking the head, so a row a little
        // younger than the cutoff may wait for the next purge behind one a little older.)
        let due = rows
            .iter()
            .take(usize::try_from(BATCH).unwrap_or(usize::MAX))
            .take_while(|row| row.occurred_at < before)
            .count();
        let Some(last) = due.checked_sub(1).map(|i| &rows[i]) else {
            return Ok(Ok(0));
        };
        // Deleted only if intact, as `verify` would find it: each row what was hashed, linked
        // to the one before from the anchor, and the last one vouched for by its successor (or
        // the head) — else a row rewritten and re-hashed at the end of a batch would go, and
        // its forged hash would become the anchor.
        let mut walk = ChainWalk::from_anchor(&head);
        let checked = rows[..due]
            .iter()
            .try_for_each(|row| walk.step(row))
            .and_then(|()| match rows.get(due) {
                Some(next) => walk.vouched_by(next),
                None => walk.at_head(),
            });
        if let Err(broken) = checked {
            return Ok(Err(broken));
        }
        sqlx::query(DELETE)
            .bind(last.id)
            .execute(&mut *self)
            .await?;
        sqlx::query(ANCHOR)
            .bind(last.id)
            .bind(last.hash.trim_end())
            .bind(last.occurred_at)
            .execute(&mut *self)
            .await?;
        Ok(Ok(u64::try_from(due).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests;
