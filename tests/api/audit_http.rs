//! `GET /admin/audit-events` and `GET /auth/activity` as routes: who may call them, the
//! validation of every parameter, the shape of a page, and keyset paging. (Which events each
//! action writes, and with what, is tested in the `audit_*` files.)

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_helpers::{id_of, query_errors, spawn_admin_app, with_admin};
use crate::db_tests;
use crate::helpers::{
    Backend, TestApp, assert_api_timestamp, assert_detail, rule_names, spawn_app_with,
};

/// `path` with the query `pairs`, percent-encoded.
fn with_query(app: &TestApp, path: &str, pairs: &[(&str, &str)]) -> reqwest::Url {
    let mut url = reqwest::Url::parse(&app.url(path)).expect("URL");
    url.query_pairs_mut().extend_pairs(pairs.iter().copied());
    url
}

async fn get(app: &TestApp, path: &str, pairs: &[(&str, &str)], token: &str) -> reqwest::Response {
    app.client
        .get(with_query(app, path, pairs))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// A 200 page: its items and `next_cursor`.
async fn page(
    app: &TestApp,
    path: &str,
    pairs: &[(&str, &str)],
    token: &str,
) -> (Vec<Value>, Option<String>) {
    let response = get(app, path, pairs, token).await;
    assert_eq!(response.status(), 200, "{path} {pairs:?}");
    let body: Value = response.json().await.expect("json");
    let keys: Vec<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["items", "next_cursor"], "{body}");
    let next = match &body["next_cursor"] {
        Value::Null => None,
        Value::String(cursor) => Some(cursor.clone()),
        other => panic!("next_cursor: {other}"),
    };
    (body["items"].as_array().expect("items").clone(), next)
}

/// Every item of `path` with `pairs`, walked `limit` at a time; the items and the page count.
async fn walk(
    app: &TestApp,
    path: &str,
    pairs: &[(&str, &str)],
    limit: &str,
    token: &str,
) -> (Vec<Value>, usize) {
    let (mut items, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut query = pairs.to_vec();
        query.push(("limit", limit));
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor));
        }
        let (found, next) = page(app, path, &query, token).await;
        pages += 1;
        assert!(found.len() <= limit.parse().expect("a number"));
        items.extend(found);
        match next {
            Some(next) => cursor = Some(next),
            None => return (items, pages),
        }
    }
}

fn ids(items: &[Value]) -> Vec<i64> {
    items
        .iter()
        .map(|item| item["id"].as_i64().expect("an id"))
        .collect()
}

fn assert_newest_first(items: &[Value]) {
    let ids = ids(items);
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {ids:?}"
    );
}

/// The `(loc, type)` pairs of a 422 on the query.
async fn query_kinds(response: reqwest::Response) -> Vec<(String, String)> {
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json");
    body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("detail is a list: {body}"))
        .iter()
        .map(|entry| {
            assert_eq!(entry["loc"][0], "query", "{body}");
            assert!(
                entry["msg"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
            (
                entry["loc"][1].as_str().expect("a name").to_owned(),
                entry["type"].as_str().expect("a type").to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

const EVERYTHING_WRONG: [(&str, &str); 7] = [
    ("event", "auth.login"),
    ("actor", "0"),
    ("target", "x"),
    ("since", "yesterday"),
    ("until", "2026-11-29"),
    ("limit", "101"),
    ("cursor", "not-ours"),
];

db_tests! {
    /// 401 without a token and 403 without `audit:read`, before any parameter is looked at;
    /// a custom role granting only `audit:read` is enough.
    async fn the_audit_trail_needs_audit_read_before_anything_else(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let bad = with_query(&app, "/admin/audit-events", &EVERYTHING_WRONG);

        let anonymous = app.client.get(bad.clone()).send().await.expect("request");
        assert_detail(anonymous, 401, "Could not validate credentials").await;
        app.create_user("plain").await;
        let plain = app.token_for("plain").await;
        let refused = app.client.get(bad.clone()).bearer_auth(&plain).send().await.expect("request");
        assert_detail(refused, 403, "Not enough permissions").await;
        // users:read is not audit:read.
        app.create_role(&admin, "support", &["users:read"]).await;
        let (_, support) = app.user_with_role(&admin, "helper", "support").await;
        let refused = app.client.get(bad).bearer_auth(&support).send().await.expect("request");
        assert_detail(refused, 403, "Not enough permissions").await;

        app.create_role(&admin, "auditor", &["audit:read"]).await;
        let (_, auditor) = app.user_with_role(&admin, "auditor1", "auditor").await;
        let (items, _) = page(&app, "/admin/audit-events", &[], &auditor).await;
        assert!(!items.is_empty(), "sign-ups and logins were recorded");
    }

    /// Every bad parameter is reported in one 422, each at `["query", name]`.
    async fn every_bad_audit_query_parameter_is_reported_at_once(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let response = get(&app, "/admin/audit-events", &EVERYTHING_WRONG, &admin).await;
        assert_eq!(
            query_kinds(response).await,
            pairs(&[
                ("event", "enum"), ("actor", "greater_than_equal"), ("target", "int_parsing"),
                ("since", "datetime_parsing"), ("until", "datetime_parsing"),
                ("limit", "less_than_equal"), ("cursor", "value_error"),
            ])
        );
        for (name, value, kind) in [
            ("event", "", "enum"), ("actor", "-1", "greater_than_equal"), ("actor", "1.0", "int_parsing"),
            ("target", "0", "greater_than_equal"), ("since", "2026-11-29T10:00:00", "datetime_parsing"),
            ("until", "1795957509", "datetime_parsing"), ("limit", "0", "greater_than_equal"),
            ("limit", "ten", "int_parsing"),
        ] {
            let response = get(&app, "/admin/audit-events", &[(name, value)], &admin).await;
            let errors = query_errors(response, name).await;
            assert_eq!(errors.len(), 1, "{name}={value}: {errors:?}");
            assert_eq!(errors[0].0, kind, "{name}={value}");
        }
        let response = get(&app, "/admin/audit-events", &[("event", "auth.login")], &admin).await;
        let errors = query_errors(response, "event").await;
        assert!(errors[0].1.contains("'auth.login_succeeded'"), "names the allowed values: {}", errors[0].1);
        // Well-formed base64 of an id this service never gives (0) is not a cursor either.
        let response = get(&app, "/admin/audit-events", &[("cursor", "MA")], &admin).await;
        assert_eq!(query_errors(response, "cursor").await, [("value_error".to_owned(), "Invalid cursor".to_owned())]);
    }

    /// An event has every column, `details` is an object, the hashes are hex and chain: each
    /// event's `prev_hash` is the `hash` of the one before it.
    async fn an_audit_event_shows_every_column_and_the_chain(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        app.create_user("ada").await;
        app.token_for("ada").await;

        let (items, next) = page(&app, "/admin/audit-events", &[("limit", "100")], &admin).await;
        assert_eq!(next, None);
        assert!(items.len() >= 4, "admin bootstrap and login, ada's sign-up and login: {items:?}");
        assert_newest_first(&items);
        let keys = [
            "actor_user_id", "details", "event", "hash", "id", "ip", "occurred_at", "outcome",
            "prev_hash", "request_id", "target_user_id", "user_agent",
        ];
        for item in &items {
            let mut found: Vec<&str> = item.as_object().expect("an object").keys().map(String::as_str).collect();
            found.sort_unstable();
            assert_eq!(found, keys, "{item}");
            assert_api_timestamp(&item["occurred_at"]);
            assert!(item["details"].is_object(), "{item}");
            assert!(matches!(item["outcome"].as_str(), Some("success" | "failure")), "{item}");
            for hash in ["hash", "prev_hash"] {
                let hex = item[hash].as_str().expect("a string");
                assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{item}");
            }
        }
        for pair in items.windows(2) {
            assert_eq!(pair[0]["prev_hash"], pair[1]["hash"], "consecutive events chain");
            assert_eq!(pair[0]["id"].as_i64().expect("id"), pair[1]["id"].as_i64().expect("id") + 1);
        }
        let oldest = items.last().expect("events");
        assert_eq!(oldest["id"], 1);
        assert_eq!(oldest["prev_hash"], "0".repeat(64));
    }

    /// Pages of one, walked with the cursor, give every event once, newest first, and the
    /// filters narrow the list: by event, account, and time.
    async fn audit_events_page_by_cursor_and_filter(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let ada = id_of(&app.create_user("ada").await);
        let bob = id_of(&app.create_user("bob").await);
        app.token_for("ada").await;

        let (all, _) = page(&app, "/admin/audit-events", &[("limit", "100")], &admin).await;
        let (walked, pages) = walk(&app, "/admin/audit-events", &[], "1", &admin).await;
        assert_eq!(ids(&walked), ids(&all));
        assert_eq!(pages, all.len());
        let (walked, _) = walk(&app, "/admin/audit-events", &[], "3", &admin).await;
        assert_eq!(ids(&walked), ids(&all));

        let (signed_up, _) = page(&app, "/admin/audit-events", &[("event", "user.signed_up")], &admin).await;
        let targets: Vec<&Value> = signed_up.iter().map(|e| &e["target_user_id"]).collect();
        assert_eq!(targets, [&json!(bob), &json!(ada)]);
        let (of_ada, _) = page(&app, "/admin/audit-events", &[("target", &ada.to_string())], &admin).await;
        assert!(!of_ada.is_empty());
        assert!(of_ada.iter().all(|e| e["target_user_id"] == json!(ada)), "{of_ada:?}");
        let (by_ada, _) = page(&app, "/admin/audit-events", &[("actor", &ada.to_string()), ("event", "auth.login_succeeded")], &admin).await;
        assert_eq!(by_ada.len(), 1, "{by_ada:?}");
        let (none, next) = page(&app, "/admin/audit-events", &[("target", "999999")], &admin).await;
        assert_eq!((none.len(), next), (0, None));

        // since and until are inclusive: one event's own time selects it.
        let newest = &all[0];
        let at = newest["occurred_at"].as_str().expect("a time");
        let (exact, _) = page(&app, "/admin/audit-events", &[("since", at), ("until", at)], &admin).await;
        assert!(ids(&exact).contains(&newest["id"].as_i64().expect("id")), "{exact:?}");
        assert!(exact.iter().all(|e| e["occurred_at"] == at));
        let (future, _) = page(&app, "/admin/audit-events", &[("since", "2999-01-01T00:00:00+01:00")], &admin).await;
        assert!(future.is_empty());
        let (past, _) = page(&app, "/admin/audit-events", &[("until", "2000-01-01T00:00:00Z")], &admin).await;
        assert!(past.is_empty());
    }

    /// `/auth/activity` needs a token, shows only the caller's own events, hides an admin's
    /// address, and pages like the admin list.
    async fn activity_shows_only_the_callers_events_and_hides_the_admins_address(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let ada = id_of(&app.create_user("ada").await);
        app.create_user("bob").await;
        app.token_for("bob").await;
        let ada_token = app.token_for("ada").await;

        let anonymous = app.client.get(app.url("/auth/activity")).send().await.expect("request");
        assert_detail(anonymous, 401, "Could not validate credentials").await;

        for body in [json!({ "disabled": true }), json!({ "disabled": false })] {
            let response = app.patch_user(&admin, ada, &body).await;
            assert_eq!(response.status(), 200);
        }
        let ada_token = {
            // Disabling ended ada's sessions.
            let ended = app.call(Method::GET, "/auth/activity", Some(&ada_token), None).await;
            assert_eq!(ended.status(), 401);
            app.token_for("ada").await
        };
        let (items, next) = page(&app, "/auth/activity", &[], &ada_token).await;
        assert_eq!(next, None);
        assert_newest_first(&items);
        let events: Vec<&str> = items.iter().map(|e| e["event"].as_str().expect("event")).collect();
        assert_eq!(
            events,
            [
                "auth.login_succeeded", "user.enabled", "user.disabled", "auth.login_succeeded",
                "email.verification_sent", "user.signed_up",
            ]
        );
        let keys = ["by_admin", "details", "event", "id", "ip", "occurred_at", "outcome", "user_agent"];
        for item in &items {
            let mut found: Vec<&str> = item.as_object().expect("an object").keys().map(String::as_str).collect();
            found.sort_unstable();
            assert_eq!(found, keys, "{item}");
            assert_api_timestamp(&item["occurred_at"]);
            assert!(item["details"].is_object(), "{item}");
            let by_admin = matches!(item["event"].as_str(), Some("user.enabled" | "user.disabled"));
            assert_eq!(item["by_admin"], json!(by_admin), "{item}");
            if by_admin {
                assert_eq!((&item["ip"], &item["user_agent"]), (&Value::Null, &Value::Null), "{item}");
            } else {
                assert_eq!(item["ip"], "127.0.0.1", "{item}");
            }
        }
        assert_eq!(items[2]["details"], json!({ "sessions_revoked": 1 }));

        let (walked, pages) = walk(&app, "/auth/activity", &[], "1", &ada_token).await;
        assert_eq!((ids(&walked), pages), (ids(&items), items.len()));
        let response = get(&app, "/auth/activity", &[("limit", "0"), ("cursor", "***")], &ada_token).await;
        assert_eq!(query_kinds(response).await, pairs(&[("limit", "greater_than_equal"), ("cursor", "value_error")]));
        let response = get(&app, "/auth/activity", &[("limit", "101")], &ada_token).await;
        assert_eq!(query_kinds(response).await, pairs(&[("limit", "less_than_equal")]));
    }

    /// Both routes answer to the API's general limits, as `/auth/sessions` and `/admin/users`
    /// do: `api_user` with a token, `api_ip` without.
    async fn both_audit_routes_answer_to_the_api_rate_limits(backend: Backend) {
        let app = spawn_app_with(backend, with_admin).await;
        let admin = app.admin_token().await;
        for path in ["/auth/activity", "/admin/audit-events"] {
            let authed = app.call(Method::GET, path, Some(&admin), None).await;
            assert_eq!(authed.status(), 200, "{path}");
            assert_eq!(rule_names(authed.headers()), ["api_user"], "{path}");
            let anonymous = app.call(Method::GET, path, None, None).await;
            assert_eq!(anonymous.status(), 401, "{path}");
            assert_eq!(rule_names(anonymous.headers()), ["api_ip"], "{path}");
        }
    }
}
