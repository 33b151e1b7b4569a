//! The audit trail's query and the JSON of an event.

use serde_json::json;

use super::*;

fn parse(query: &str) -> Result<AuditQuery, Vec<FieldError>> {
    EventsQuery::parse(&QueryParams::parse(query)).map(|EventsQuery(query)| query)
}

fn kinds(errors: &[FieldError]) -> Vec<(String, &str)> {
    errors
        .iter()
        .map(|e| (e.loc.join("."), e.kind.as_str()))
        .collect()
}

#[test]
fn an_empty_query_asks_for_the_newest_fifty_events_unfiltered() {
    let query = parse("").expect("valid");
    assert_eq!(query.limit, 50);
    assert_eq!(
        (
            query.event,
            query.actor,
            query.target,
            query.since,
            query.until,
            query.before
        ),
        (None, None, None, None, None, None)
    );
}

#[test]
fn every_filter_is_read() {
    let cursor = cursor::encode(1020);
    let query = parse(&format!(
        "event=user.disabled&actor=1&target=7&since=2026-11-29T00:00:00Z\
         &until=2026-11-29T13:05:09.000123Z&limit=10&cursor={cursor}"
    ))
    .expect("valid");
    assert_eq!(query.event, Some(AuditEvent::UserDisabled));
    assert_eq!(query.actor, Some(UserId::new(1)));
    assert_eq!(query.target, Some(UserId::new(7)));
    assert_eq!(query.since, Some(1_795_910_400_000_000));
    assert_eq!(query.until, Some(1_795_957_509_000_123));
    assert_eq!(query.limit, 10);
    assert_eq!(query.before, Some(1020));
}

#[test]
fn every_event_name_is_a_filter_and_nothing_else_is() {
    for event in AuditEvent::ALL {
        let query = parse(&format!("event={}", event.as_str())).expect("a name");
        assert_eq!(query.event, Some(*event));
    }
    for bad in ["auth.login", "USER.SIGNED_UP", "", "user.signed_up%20"] {
        let errors = parse(&format!("event={bad}")).expect_err(bad);
        assert_eq!(
            kinds(&errors),
            [("query.event".to_owned(), "enum")],
            "{bad}"
        );
        assert!(
            errors[0]
                .msg
                .starts_with("Input should be 'user.signed_up', 'auth.login_succeeded', "),
            "{}",
            errors[0].msg
        );
        assert!(
            errors[0]
                .msg
                .ends_with(", 'role.deleted' or 'admin.bootstrapped'"),
            "{}",
            errors[0].msg
        );
    }
}

#[test]
fn actor_and_target_are_positive_integers() {
    for name in ["actor", "target"] {
        for (value, kind) in [
            ("0", "greater_than_equal"),
            ("-4", "greater_than_equal"),
            ("x", "int_parsing"),
            ("", "int_parsing"),
            ("1.5", "int_parsing"),
            ("99999999999999999999", "int_parsing"),
        ] {
            let query = format!("{name}={value}");
            let errors = parse(&query).expect_err(&query);
            assert_eq!(kinds(&errors), [(format!("query.{name}"), kind)], "{query}");
        }
    }
}

#[test]
fn since_and_until_take_rfc_3339_in_any_offset_and_are_inclusive_to_the_microsecond() {
    let at = |query: &str| {
        let query = parse(query).expect(query);
        (query.since, query.until)
    };
    // 2026-11-29T13:05:09Z is 1_795_957_509 s.
    assert_eq!(
        at("since=2026-11-29T15:05:09%2B02:00"),
        (Some(1_795_957_509_000_000), None)
    );
    // An unencoded `+` reads as a space: taken back.
    assert_eq!(
        at("until=2026-11-29T15:05:09+02:00"),
        (None, Some(1_795_957_509_000_000))
    );
    // Lowercase `t` and `z`, and a space for the `T` (RFC 3339 § 5.6 allows both).
    assert_eq!(
        at("since=2026-11-29t13:05:09z&until=2026-11-29%2013:05:09Z"),
        (Some(1_795_957_509_000_000), Some(1_795_957_509_000_000))
    );
    // Nanoseconds: `since` rounds up, `until` down, so both stay inclusive of what they name.
    assert_eq!(
        at("since=2026-11-29T13:05:09.000000001Z&until=2026-11-29T13:05:09.000001999Z"),
        (Some(1_795_957_509_000_001), Some(1_795_957_509_000_001))
    );
    // The extremes RFC 3339 can spell (as property-based testers generate them).
    for extreme in [
        "0001-01-01T00:00:00%2B23:59",
        "9999-12-31T23:59:59.999999-23:59",
    ] {
        let (since, _) = at(&format!("since={extreme}"));
        assert!(since.is_some(), "{extreme}");
    }
    assert_eq!(
        at("since=1969-12-31T23:59:59.9999995Z"),
        (Some(0), None),
        "before the epoch too"
    );
}

#[test]
fn since_and_until_refuse_what_is_not_an_rfc_3339_date_time() {
    for bad in [
        "2026-11-29",
        "2026-11-29T13:05:09",
        "1795957509",
        "yesterday",
        "",
        "2026-02-30T00:00:00Z",
        "2026-11-29T25:00:00Z",
    ] {
        for name in ["since", "until"] {
            let query = format!("{name}={bad}");
            let errors = parse(&query).expect_err(&query);
            assert_eq!(
                kinds(&errors),
                [(format!("query.{name}"), "datetime_parsing")],
                "{query}"
            );
        }
    }
}

#[test]
fn limit_is_an_integer_from_1_to_100() {
    assert_eq!(parse("limit=1").expect("valid").limit, 1);
    assert_eq!(parse("limit=100").expect("valid").limit, 100);
    for (query, kind) in [
        ("limit=0", "greater_than_equal"),
        ("limit=101", "less_than_equal"),
        ("limit=many", "int_parsing"),
    ] {
        let errors = parse(query).expect_err(query);
        assert_eq!(
            kinds(&errors),
            [("query.limit".to_owned(), kind)],
            "{query}"
        );
    }
}

#[test]
fn every_bad_parameter_is_listed_at_once_in_parameter_order() {
    let errors = parse("cursor=x&limit=0&until=soon&since=then&target=0&actor=a&event=nope")
        .expect_err("seven");
    assert_eq!(
        kinds(&errors),
        [
            ("query.event".to_owned(), "enum"),
            ("query.actor".to_owned(), "int_parsing"),
            ("query.target".to_owned(), "greater_than_equal"),
            ("query.since".to_owned(), "datetime_parsing"),
            ("query.until".to_owned(), "datetime_parsing"),
            ("query.limit".to_owned(), "greater_than_equal"),
            ("query.cursor".to_owned(), "value_error"),
        ]
    );
}

#[test]
fn an_event_shows_every_column_with_details_as_an_object() {
    let record = AuditRecord {
        id: 12,
        occurred_at: 1_795_957_509_000_123,
        event: "user.disabled".to_owned(),
        actor_user_id: Some(1),
        target_user_id: Some(7),
        ip: Some("203.0.113.9".to_owned()),
        user_agent: None,
        request_id: Some("req-1".to_owned()),
        outcome: "success".to_owned(),
        details: r#"{"sessions_revoked":2}"#.to_owned(),
        prev_hash: "a".repeat(64),
        hash: "b".repeat(64),
    };
    assert_eq!(
        serde_json::to_value(AuditEventResponse::from(record)).expect("JSON"),
        json!({
            "id": 12, "occurred_at": "2026-11-29T13:05:09.000123Z", "event": "user.disabled",
            "outcome": "success", "actor_user_id": 1, "target_user_id": 7,
            "ip": "203.0.113.9", "user_agent": null, "request_id": "req-1",
            "details": { "sessions_revoked": 2 },
            "prev_hash": "a".repeat(64), "hash": "b".repeat(64)
        })
    );
}
