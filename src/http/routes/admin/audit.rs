//! `GET /admin/audit-events`: the audit trail, filtered and a page at a time, newest first.
//! Also the schemas the trail's two views share (event names, outcomes).

use std::borrow::Cow;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema::SchemaType};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::domain::{AuditEvent, UserId};
use crate::http::AppState;
use crate::http::cursor;
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{AuditRead, QueryParams, Require};
use crate::http::openapi::{ErrorDetail, ValidationError};
use crate::store::{AuditQuery, AuditRecord};

/// Events per page unless `limit` says otherwise.
const DEFAULT_LIMIT: i64 = 50;
/// Most events per page.
const MAX_LIMIT: i64 = 100;

/// One event of the audit trail, as stored (the fields its hash covers, and the hashes).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEvent, example = json!({
    "id": 1042, "occurred_at": "2026-11-29T13:05:09.000123Z", "event": "user.disabled",
    "outcome": "success", "actor_user_id": 1, "target_user_id": 7, "ip": "203.0.113.9",
    "user_agent": "Mozilla/5.0", "request_id": "0b6c5d5e-8f0a-4c57-9d43-7f1f1e0f2a61",
    "details": { "sessions_revoked": 2 },
    "prev_hash": "9f2c1d0e5b7a4c3f8e6d2b1a0c9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19",
    "hash": "3b8e4f1a2c6d9e0f7a5b3c1d8e6f4a2b0c9d7e5f3a1b8c6d4e2f0a9b7c5d3e1f"
}))]
pub struct AuditEventResponse {
    /// Its place in the chain: consecutive, in the order the events were committed.
    id: i64,
    /// When it happened: RFC 3339, UTC, six fractional digits.
    #[schema(format = DateTime)]
    occurred_at: String,
    /// What happened.
    #[schema(value_type = AuditEventName)]
    event: String,
    /// Whether it was done or refused.
    #[schema(value_type = AuditOutcome)]
    outcome: String,
    /// Who did it; `null` for an anonymous client or the service itself.
    actor_user_id: Option<i64>,
    /// Whose account it concerns, if any.
    target_user_id: Option<i64>,
    /// The client's IP address (as the rate limiter sees it).
    ip: Option<String>,
    /// The client's `User-Agent` (at most 512 bytes).
    user_agent: Option<String>,
    /// The request's `x-request-id`.
    request_id: Option<String>,
    /// Facts of the event (ids, names, counts; never a password, token or hash).
    #[schema(value_type = Object)]
    details: Value,
    /// The previous event's `hash` (64 zeros before the first event ever written).
    prev_hash: String,
    /// SHA-256 in lowercase hex over `prev_hash` and the event's canonical content; `cerego
    /// audit verify` checks the chain.
    hash: String,
}

impl From<AuditRecord> for AuditEventResponse {
    fn from(record: AuditRecord) -> Self {
        Self {
            occurred_at: record.occurred_at_rfc3339(),
            details: record.details_value(),
            id: record.id,
            event: record.event,
            outcome: record.outcome,
            actor_user_id: record.actor_user_id,
            target_user_id: record.target_user_id,
            ip: record.ip,
            user_agent: record.user_agent,
            request_id: record.request_id,
            prev_hash: record.prev_hash,
            hash: record.hash,
        }
    }
}

/// One page of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventPage {
    /// Newest first.
    items: Vec<AuditEventResponse>,
    /// Pass as `cursor` for the next page; `null` when this page is the last.
    #[schema(example = "MTAyMA")]
    next_cursor: Option<String>,
}

/// An event's name (documentation: the schema is built from [`AuditEvent::ALL`], so it cannot
/// fall behind).
pub struct AuditEventName;

impl PartialSchema for AuditEventName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some("A kind of security event"))
            .enum_values(Some(AuditEvent::ALL.iter().map(|e| e.as_str())))
            .into()
    }
}

impl ToSchema for AuditEventName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AuditEventName")
    }
}

/// How the action an event records ended (documentation).
pub struct AuditOutcome;

impl PartialSchema for AuditOutcome {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some("`success`: it was done; `failure`: it was refused"))
            .enum_values(Some(["success", "failure"]))
            .into()
    }
}

impl ToSchema for AuditOutcome {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AuditOutcome")
    }
}

/// The query of `GET /admin/audit-events` (documentation; [`EventsQuery::parse`] reads it).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "describes the query parameters for OpenAPI only")]
struct EventsParams {
    /// Only events of this kind.
    #[param(inline, value_type = Option<AuditEventName>)]
    event: Option<String>,
    /// Only events done by this account.
    #[param(minimum = 1)]
    actor: Option<i64>,
    /// Only events concerning this account.
    #[param(minimum = 1)]
    target: Option<i64>,
    /// Only events at or after this time (RFC 3339, e.g. `2026-11-29T00:00:00Z`).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Only events at or before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// Events per page.
    #[param(minimum = 1, maximum = 100, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (opaque); absent or empty: the first page.
    cursor: Option<String>,
}

/// `GET /admin/audit-events`'s query, checked.
#[derive(Debug)]
struct EventsQuery(AuditQuery);

impl EventsQuery {
    /// Every bad parameter is listed, each at `["query", "<name>"]`.
    fn parse(query: &QueryParams) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let event = query
            .text("event", usize::MAX, &mut errors)
            .and_then(|raw| {
                let event = AuditEvent::parse(raw);
                if event.is_none() {
                    errors.push(FieldError::query("event", not_an_event(), "enum"));
                }
                event
            });
        let actor = query.optional_int("actor", 1..=i64::MAX, &mut errors);
        let target = query.optional_int("target", 1..=i64::MAX, &mut errors);
        // Inclusive bounds in whole microseconds (the stored precision): a `since` between two
        // microseconds starts at the later one, an `until` ends at the earlier one.
        let since = instant(query, "since", &mut errors).map(|at| micros(at, 999));
        let until = instant(query, "until", &mut errors).map(|at| micros(at, 0));
        let limit = query.int("limit", DEFAULT_LIMIT, 1..=MAX_LIMIT, &mut errors);
        let before = cursor::param(query, &mut errors);
        match (limit.and_then(|l| u32::try_from(l).ok()), errors.is_empty()) {
            (Some(limit), true) => Ok(Self(AuditQuery {
                event,
                actor: actor.map(UserId::new),
                target: target.map(UserId::new),
                since,
                until,
                before,
                limit,
            })),
            _ => Err(errors),
        }
    }
}

/// pydantic's message for a value outside an enumeration: every allowed value, quoted.
fn not_an_event() -> String {
    let names: Vec<String> = AuditEvent::ALL
        .iter()
        .map(|e| format!("'{}'", e.as_str()))
        .collect();
    match names.split_last() {
        Some((last, rest)) => format!("Input should be {} or {last}", rest.join(", ")),
        None => "Input should be an event name".to_owned(),
    }
}

/// The RFC 3339 date-time parameter `name` if present; records `datetime_parsing` otherwise.
fn instant(
    query: &QueryParams,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<OffsetDateTime> {
    let raw = query.text(name, usize::MAX, errors)?;
    match parse_rfc3339(raw) {
        Some(at) => Some(at),
        None => {
            errors.push(FieldError::query(
                name,
                "Input should be a valid RFC 3339 date-time, e.g. 2026-11-29T13:05:09Z",
                "datetime_parsing",
            ));
            None
        }
    }
}

/// `raw` as an RFC 3339 date-time. A space where a `+02:00` offset's sign belongs is taken as
/// the `+` it was: an unencoded `+` in a query string decodes to a space.
fn parse_rfc3339(raw: &str) -> Option<OffsetDateTime> {
    if let Ok(at) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Some(at);
    }
    let sign = raw.len().checked_sub(6)?;
    if raw.get(sign..=sign) != Some(" ") {
        return None;
    }
    let mended = format!("{}+{}", &raw[..sign], &raw[sign + 1..]);
    OffsetDateTime::parse(&mended, &Rfc3339).ok()
}

/// `at` in Unix microseconds, rounding up its sub-microsecond part when `round_up` is 999 (0:
/// down).
fn micros(at: OffsetDateTime, round_up: i128) -> i64 {
    let micros = (at.unix_timestamp_nanos() + round_up).div_euclid(1_000);
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// List audit events.
#[utoipa::path(
    get,
    path = "/admin/audit-events",
    tag = "admin",
    summary = "List audit events",
    description = "Requires `audit:read`. The security events of every account (sign-ups, \
        logins and failed logins, sessions ended, password and email changes, admin actions), \
        newest first, a page at a time: pass `next_cursor` as `cursor` for the next (keyset \
        paging, so events written meanwhile never shift a page). Filters combine; `since` and \
        `until` are inclusive. Events are append-only: no operation changes or deletes them, \
        and `cerego audit verify` checks their hash chain.",
    params(EventsParams),
    security(("OAuth2PasswordBearer" = ["audit:read"]), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "A page of events", body = AuditEventPage),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 403, description = "The caller's roles do not grant `audit:read`", body = ErrorDetail,
            example = json!({ "detail": "Not enough permissions" })),
        (status = 422, description = "`event` not an event name, `actor` or `target` not a positive integer, `since` or `until` not an RFC 3339 date-time, `limit` not an integer from 1 to 100, or a `cursor` this service did not make", body = ValidationError),
    )
)]
pub async fn list_audit_events(
    Require(_caller): Require<AuditRead>,
    State(state): State<AppState>,
    query: QueryParams,
) -> Result<Json<AuditEventPage>, ApiError> {
    let EventsQuery(query) = EventsQuery::parse(&query).map_err(ApiError::Validation)?;
    let page = state.auth.audit_events(query).await?;
    Ok(Json(AuditEventPage {
        items: page.events.into_iter().map(Into::into).collect(),
        next_cursor: page.next.map(cursor::encode),
    }))
}

#[cfg(test)]
mod tests;
