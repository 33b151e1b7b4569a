//! `GET /auth/activity`: the caller's own security events (logins and failed logins with the
//! address and user agent they came from, password changes, sessions ended, what admins did to
//! the account), so a user can spot a login that was not theirs.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::domain::UserId;
use crate::http::AppState;
use crate::http::cursor;
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{CurrentUser, QueryParams};
use crate::http::openapi::{ErrorDetail, ValidationError};
use crate::http::routes::admin::audit::{AuditEventName, AuditOutcome};
use crate::store::AuditRecord;

/// Events per page unless `limit` says otherwise.
const DEFAULT_LIMIT: i64 = 20;
/// Most events per page.
const MAX_LIMIT: i64 = 100;

/// One event concerning the caller's account.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": 1038, "occurred_at": "2026-11-29T13:05:09.000123Z", "event": "auth.login_succeeded",
    "outcome": "success", "ip": "203.0.113.9", "user_agent": "Mozilla/5.0", "by_admin": false,
    "details": { "session_id": 51 }
}))]
pub struct ActivityEvent {
    /// Its place in the audit trail (newer events have higher ids).
    id: i64,
    /// When it happened: RFC 3339, UTC, six fractional digits.
    #[schema(format = DateTime)]
    occurred_at: String,
    /// What happened.
    #[schema(value_type = AuditEventName)]
    event: String,
    /// Whether it was done or refused (a failed login is a `failure`).
    #[schema(value_type = AuditOutcome)]
    outcome: String,
    /// The address the request came from; `null` when an admin acted (an admin's address is
    /// not shown) or when unknown.
    ip: Option<String>,
    /// The `User-Agent` of the request; `null` when an admin acted or when none was sent.
    user_agent: Option<String>,
    /// Whether another account (an admin) did it: disabled or enabled the account, changed its
    /// roles, ended its sessions.
    by_admin: bool,
    /// Facts of the event (a session id, a count of sessions ended, a role's name, the reason
    /// a login failed).
    #[schema(value_type = Object)]
    details: Value,
}

impl ActivityEvent {
    /// `record` as `caller` may see it.
    fn new(record: AuditRecord, caller: UserId) -> Self {
        let by_admin = record
            .actor_user_id
            .is_some_and(|actor| actor != caller.get());
        Self {
            occurred_at: record.occurred_at_rfc3339(),
            details: record.details_value(),
            id: record.id,
            event: record.event,
            outcome: record.outcome,
            ip: record.ip.filter(|_| !by_admin),
            user_agent: record.user_agent.filter(|_| !by_admin),
            by_admin,
        }
    }
}

/// One page of the caller's activity.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityPage {
    /// Newest first.
    items: Vec<ActivityEvent>,
    /// Pass as `cursor` for the next page; `null` when this page is the last.
    #[schema(example = "MTAyMA")]
    next_cursor: Option<String>,
}

/// The query of `GET /auth/activity` (documentation; [`ActivityQuery::parse`] reads it).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "describes the query parameters for OpenAPI only")]
struct ActivityParams {
    /// Events per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (opaque); absent or empty: the first page.
    cursor: Option<String>,
}

/// `GET /auth/activity`'s query, checked.
#[derive(Debug, PartialEq, Eq)]
struct ActivityQuery {
    limit: u32,
    before: Option<i64>,
}

impl ActivityQuery {
    /// Every bad parameter is listed, each at `["query", "<name>"]`.
    fn parse(query: &QueryParams) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let limit = query.int("limit", DEFAULT_LIMIT, 1..=MAX_LIMIT, &mut errors);
        let before = cursor::param(query, &mut errors);
        match (limit.and_then(|l| u32::try_from(l).ok()), errors.is_empty()) {
            (Some(limit), true) => Ok(Self { limit, before }),
            _ => Err(errors),
        }
    }
}

/// The caller's recent security events.
#[utoipa::path(
    get,
    path = "/auth/activity",
    tag = "account",
    summary = "List my account's security events",
    description = "The events that concern the caller's account, newest first, a page at a \
        time (pass `next_cursor` as `cursor` for the next): logins and failed logins with the \
        address and user agent they came from, logouts and sessions ended, password changes \
        and resets, email verification, and what admins did to the account (`by_admin`; an \
        admin's address and user agent are not shown). A login you do not recognise is a \
        reason to change your password and end your other sessions.",
    params(ActivityParams),
    security(("OAuth2PasswordBearer" = []), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "A page of the caller's events", body = ActivityPage),
        (status = 401, description = "Missing, invalid or expired token, or the session has ended", body = ErrorDetail,
            example = json!({ "detail": "Could not validate credentials" })),
        (status = 422, description = "`limit` not an integer from 1 to 100, or a `cursor` this service did not make", body = ValidationError),
    )
)]
pub async fn activity(
    current: CurrentUser,
    State(state): State<AppState>,
    query: QueryParams,
) -> Result<Json<ActivityPage>, ApiError> {
    let query = ActivityQuery::parse(&query).map_err(ApiError::Validation)?;
    let caller = current.user.id;
    let page = state
        .auth
        .activity(caller, query.before, query.limit)
        .await?;
    Ok(Json(ActivityPage {
        items: page
            .events
            .into_iter()
            .map(|record| ActivityEvent::new(record, caller))
            .collect(),
        next_cursor: page.next.map(cursor::encode),
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(actor: Option<i64>) -> AuditRecord {
        AuditRecord {
            id: 40,
            occurred_at: 1_795_957_509_000_123,
            event: "session.revoked".to_owned(),
            actor_user_id: actor,
            target_user_id: Some(7),
            ip: Some("203.0.113.9".to_owned()),
            user_agent: Some("curl/8".to_owned()),
            request_id: Some("req-1".to_owned()),
            outcome: "success".to_owned(),
            details: r#"{"session_id":3}"#.to_owned(),
            prev_hash: "a".repeat(64),
            hash: "b".repeat(64),
        }
    }

    #[test]
    fn the_callers_own_and_anonymous_events_show_where_they_came_from() {
        for actor in [Some(7), None] {
            assert_eq!(
                serde_json::to_value(ActivityEvent::new(record(actor), UserId::new(7)))
                    .expect("JSON"),
                json!({
                    "id": 40, "occurred_at": "2026-11-29T13:05:09.000123Z",
                    "event": "session.revoked", "outcome": "success",
                    "ip": "203.0.113.9", "user_agent": "curl/8", "by_admin": false,
                    "details": { "session_id": 3 }
                }),
                "{actor:?}"
            );
        }
    }

    #[test]
    fn an_admins_event_hides_the_admins_address_and_user_agent() {
        let shown = serde_json::to_value(ActivityEvent::new(record(Some(1)), UserId::new(7)))
            .expect("JSON");
        assert_eq!(shown["by_admin"], json!(true));
        assert_eq!(shown["ip"], json!(null));
        assert_eq!(shown["user_agent"], json!(null));
        assert_eq!(shown["details"], json!({ "session_id": 3 }));
    }

    #[test]
    fn limit_defaults_to_20_and_is_checked_with_the_cursor() {
        let parse = |query: &str| ActivityQuery::parse(&QueryParams::parse(query));
        assert_eq!(
            parse(""),
            Ok(ActivityQuery {
                limit: 20,
                before: None
            })
        );
        assert_eq!(
            parse(&format!("limit=100&cursor={}", cursor::encode(9))),
            Ok(ActivityQuery {
                limit: 100,
                before: Some(9)
            })
        );
        let errors = parse("limit=101&cursor=zz").expect_err("two");
        let kinds: Vec<(String, &str)> = errors
            .iter()
            .map(|e| (e.loc.join("."), e.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("query.limit".to_owned(), "less_than_equal"),
                ("query.cursor".to_owned(), "value_error"),
            ]
        );
    }
}
