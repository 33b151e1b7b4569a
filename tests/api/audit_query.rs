//! `GET /admin/audit-events`: every stored row as the API shows it, newest first; the filters
//! (event, actor, target, since, until, each alone and together) against the same filter
//! applied here to the rows read from the database; keyset pages walked to the end with no
//! row missing or repeated; the permission checked before the parameters.
//!
//! These tests need the route (they fail with a 404 until it exists).

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_helpers::{id_of, query_errors, spawn_admin_app};
use crate::audit_helpers::{api_event, rfc3339_micros, rows, walk};
use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestApp, assert_detail};
use cerego::store::AuditRecord;

/// A trail of some thirty events of several kinds, actors and targets; the admin's token and
/// the ids of the admin, ada and bob.
async fn varied_trail(app: &TestApp) -> (String, i64, i64, i64) {
    let admin = app.admin_token().await;
    let root = id_of(&app.me_json(&admin).await);
    let ada = app.signup_tagged("ada", GOOD_PASSWORD, "signup-ada").await;
    let bob = app.signup_tagged("bob", GOOD_PASSWORD, "signup-bob").await;
    for n in 0..4 {
        app.session_tagged("ada", GOOD_PASSWORD, &format!("ada-{n}"))
            .await;
        app.login_tagged("bob", "not the password", &format!("bob-wrong-{n}"), 401)
            .await;
        app.login_tagged("nobody", "not the password", &format!("nobody-{n}"), 401)
            .await;
    }
    let (bobs, _, _) = app.session_tagged("bob", GOOD_PASSWORD, "bob-login").await;
    for (disabled, tag) in [(true, "disable"), (false, "enable")] {
        let body = json!({ "disabled": disabled });
        app.send_tagged(
            Method::PATCH,
            &format!("/admin/users/{ada}"),
            tag,
            Some(&admin),
            Some(&body),
            200,
        )
        .await;
    }
    app.send_tagged(
        Method::PUT,
        &format!("/admin/users/{bob}/roles/admin"),
        "grant",
        Some(&admin),
        None,
        204,
    )
    .await;
    app.send_tagged(
        Method::POST,
        "/auth/logout",
        "bob-logout",
        Some(&bobs),
        None,
        204,
    )
    .await;
    (admin, root, ada, bob)
}

/// The rows matching `keep`, newest first, as the API shows them.
fn expected(rows: &[AuditRecord], keep: impl Fn(&AuditRecord) -> bool) -> Vec<Value> {
    rows.iter()
        .rev()
        .filter(|r| keep(r))
        .map(api_event)
        .collect()
}

db_tests! {
    async fn every_event_is_listed_newest_first_and_pages_walk_without_gaps(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let (admin, ..) = varied_trail(&app).await;
        let all = rows(&app.db).await;
        assert_eq!(all.len(), 23, "the trail varied_trail writes");
        let want = expected(&all, |_| true);

        // The default page size is 50: one page.
        let (items, pages) = walk(&app, "/admin/audit-events?", &admin, 50).await;
        assert_eq!((items.len(), pages), (all.len(), 1));
        assert_eq!(items, want, "every row, newest first, with every field");
        let keys: Vec<&String> = items[0].as_object().expect("object").keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, ["actor_user_id", "details", "event", "hash", "id", "ip", "occurred_at", "outcome", "prev_hash", "request_id", "target_user_id", "user_agent"]);

        for limit in [1, 3, 7, 100] {
            let (items, pages) = walk(&app, &format!("/admin/audit-events?limit={limit}"), &admin, limit).await;
            assert_eq!(items, want, "limit {limit}: no row missing or repeated");
            assert_eq!(pages, all.len().div_ceil(limit).max(1), "limit {limit}");
        }
        let ids: Vec<i64> = want.iter().map(|e| e["id"].as_i64().expect("id")).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    }

    async fn each_filter_alone_and_together_selects_exactly_its_rows(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let (admin, root, ada, bob) = varied_trail(&app).await;
        let all = rows(&app.db).await;
        let middle = &all[all.len() / 2];
        let later = &all[all.len() * 3 / 4];
        let (since, until) = (rfc3339_micros(middle.occurred_at), rfc3339_micros(later.occurred_at));
        let cases: Vec<(String, Vec<Value>)> = vec![
            ("event=auth.login_failed".into(), expected(&all, |r| r.event == "auth.login_failed")),
            ("event=auth.login_succeeded".into(), expected(&all, |r| r.event == "auth.login_succeeded")),
            ("event=role.deleted".into(), Vec::new()),
            (format!("actor={root}"), expected(&all, |r| r.actor_user_id == Some(root))),
            (format!("target={ada}"), expected(&all, |r| r.target_user_id == Some(ada))),
            (format!("target={bob}&event=auth.login_failed"), expected(&all, |r| r.target_user_id == Some(bob) && r.event == "auth.login_failed")),
            (format!("actor={root}&target={ada}"), expected(&all, |r| r.actor_user_id == Some(root) && r.target_user_id == Some(ada))),
            (format!("since={since}"), expected(&all, |r| r.occurred_at >= middle.occurred_at)),
            (format!("until={until}"), expected(&all, |r| r.occurred_at <= later.occurred_at)),
            (format!("since={since}&until={until}"), expected(&all, |r| (middle.occurred_at..=later.occurred_at).contains(&r.occurred_at))),
            (format!("since={until}&until={since}"), Vec::new()),
            (format!("since={since}&event=auth.login_failed&target={bob}"), expected(&all, |r| r.occurred_at >= middle.occurred_at && r.event == "auth.login_failed" && r.target_user_id == Some(bob))),
            ("actor=999999".into(), Vec::new()),
        ];
        for (query, want) in cases {
            let query = query.replace('+', "%2B");
            for limit in [2, 50] {
                let (items, _) = walk(&app, &format!("/admin/audit-events?{query}&limit={limit}"), &admin, limit).await;
                assert_eq!(items, want, "{query} (limit {limit})");
            }
        }
        // `since` in another offset names the same instant.
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(middle.occurred_at) * 1000).expect("time");
        let shifted = at.to_offset(time::UtcOffset::from_hms(2, 0, 0).expect("offset"))
            .format(&time::format_description::well_known::Rfc3339).expect("format").replace('+', "%2B");
        let (items, _) = walk(&app, &format!("/admin/audit-events?since={shifted}&limit=100"), &admin, 100).await;
        assert_eq!(items, expected(&all, |r| r.occurred_at >= middle.occurred_at), "since={shifted}");
    }

    async fn a_cursor_is_not_shifted_by_events_written_meanwhile(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let (admin, ..) = varied_trail(&app).await;
        let before = rows(&app.db).await;
        let first: Value = app.admin_get("/admin/audit-events?limit=5", &admin).await;
        let cursor = first["next_cursor"].as_str().expect("a cursor").to_owned();
        app.login_tagged("ada", "not the password", "meanwhile", 401).await;
        let second = app.admin_get(&format!("/admin/audit-events?limit=5&cursor={cursor}"), &admin).await;
        let want = expected(&before, |_| true);
        assert_eq!(first["items"].as_array().expect("items")[..], want[..5]);
        assert_eq!(second["items"].as_array().expect("items")[..], want[5..10]);
    }

    async fn the_permission_comes_before_the_parameters(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        app.create_user("ada").await;
        let ada = app.token_for("ada").await;
        app.create_role(&admin, "auditor", &["audit:read"]).await;
        let (_, auditor) = app.user_with_role(&admin, "carol", "auditor").await;

        assert_eq!(app.call(Method::GET, "/admin/audit-events", None, None).await.status(), 401);
        assert_eq!(app.call(Method::GET, "/admin/audit-events?limit=0", None, None).await.status(), 401);
        for path in ["/admin/audit-events", "/admin/audit-events?limit=0&event=nope"] {
            assert_detail(app.call(Method::GET, path, Some(&ada), None).await, 403, "Not enough permissions").await;
        }
        let page = app.admin_get("/admin/audit-events?limit=1", &auditor).await;
        assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "audit:read is enough");

        for (query, name) in [
            ("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"),
            ("event=user.signedup", "event"), ("event=User.Signed_Up", "event"),
            ("actor=0", "actor"), ("actor=x", "actor"), ("target=-1", "target"),
            ("since=yesterday", "since"), ("until=2026-13-01T00:00:00Z", "until"),
            ("cursor=not-a-cursor", "cursor"),
        ] {
            let response = app.call(Method::GET, &format!("/admin/audit-events?{query}"), Some(&auditor), None).await;
            let errors = query_errors(response, name).await;
            assert_eq!(errors.len(), 1, "{query}: {errors:?}");
        }
    }
}
