//! The hash chain: recomputed here from the rows (SHA-256 of the previous hash and the row's
//! canonical content) after concurrent writers and after a retention purge, and checked by
//! `cerego audit verify`, which passes on an intact chain and names the row after one is
//! edited, deleted or inserted by hand.
//!
//! The tests whose names end in `_by_audit_verify` need the `audit verify` command.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::audit_helpers::{
    assert_chain_intact, assert_verify_fails, assert_verify_passes, content_of, hash_of, head, rows,
};
use crate::db_tests;
use crate::helpers::{
    Backend, GOOD_PASSWORD, TestApp, spawn_app, spawn_app_with, spawn_app_with_clock,
};

/// An app with six events: ids 1 to 6 (two sign-ups of two rows each, a login, a failed one).
async fn six_events(backend: Backend) -> TestApp {
    let app = spawn_app(backend).await;
    app.signup_tagged("ada", GOOD_PASSWORD, "signup-ada").await;
    app.session_tagged("ada", GOOD_PASSWORD, "login").await;
    app.login_tagged("ada", "not the password", "wrong", 401)
        .await;
    app.signup_tagged("bob", GOOD_PASSWORD, "signup-bob").await;
    let rows = assert_chain_intact(&app.db).await;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        rows[0].prev_hash,
        crate::audit_helpers::ZERO_HASH,
        "the first row starts at genesis"
    );
    rows.iter().for_each(|r| assert!(r.occurred_at > 0));
    app
}

/// `count` accounts, then `per` logins of each at once (tokio tasks, each its own request id).
async fn concurrent_logins(backend: Backend, count: usize, per: usize) -> TestApp {
    let app = spawn_app_with(backend, |s| s.limits.enabled = false).await;
    let mut ids = Vec::new();
    for n in 0..count {
        ids.push(
            app.signup_tagged(&format!("user{n}"), GOOD_PASSWORD, &format!("signup-{n}"))
                .await,
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count * per {
        let (client, url) = (app.client.clone(), app.url("/auth/login"));
        let body = json!({ "username": format!("user{}", n % count), "password": GOOD_PASSWORD });
        tasks.spawn(async move {
            let response = client
                .post(url)
                .header("x-request-id", format!("req-c-{n}"))
                .json(&body)
                .send()
                .await
                .expect("request");
            response.status().as_u16()
        });
    }
    let statuses = tasks.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let rows = assert_chain_intact(&app.db).await;
    assert_eq!(rows.len(), count * 2 + count * per);
    let ids_in_order: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let expected: Vec<i64> = (1..=i64::try_from(rows.len()).expect("few")).collect();
    assert_eq!(ids_in_order, expected, "consecutive ids from 1");
    for pair in rows.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "row {} links to row {}",
            pair[1].id, pair[0].id
        );
    }
    let logins: Vec<_> = rows
        .iter()
        .filter(|r| r.event == "auth.login_succeeded")
        .collect();
    assert_eq!(logins.len(), count * per);
    let request_ids: BTreeSet<String> = logins
        .iter()
        .map(|r| r.request_id.clone().expect("request id"))
        .collect();
    let expected: BTreeSet<String> = (0..count * per).map(|n| format!("req-c-{n}")).collect();
    assert_eq!(request_ids, expected, "each login once");
    let sessions: BTreeSet<String> = logins.iter().map(|r| r.details.clone()).collect();
    assert_eq!(sessions.len(), count * per, "a session each");
    for row in logins {
        let n: usize = row
            .request_id
            .as_deref()
            .and_then(|r| r.strip_prefix("req-c-"))
            .and_then(|n| n.parse().ok())
            .expect("n");
        assert_eq!(row.target_user_id, Some(ids[n % count]), "{row:?}");
        assert_eq!(row.actor_user_id, row.target_user_id);
    }
    app
}

/// A trail with retention of a day, on a clock that moves: four events, two days pass, three
/// more; then waits (a purge every second) until the four old rows are gone. The old fourth
/// row's hash.
async fn purged_trail(backend: Backend) -> (TestApp, String) {
    let app = spawn_app_with_clock(backend, |s| {
        s.audit_retention = Some(Duration::from_secs(86_400));
        s.sessions.purge_interval = Duration::from_secs(1);
    })
    .await;
    app.signup_tagged("ada", GOOD_PASSWORD, "old-signup").await;
    app.session_tagged("ada", GOOD_PASSWORD, "old-login").await;
    app.login_tagged("ada", "not the password", "old-wrong", 401)
        .await;
    let old = assert_chain_intact(&app.db).await;
    assert_eq!(old.len(), 4);
    let old_hash = old[3].hash.clone();

    app.advance_clock(Duration::from_secs(2 * 86_400));
    app.signup_tagged("bob", GOOD_PASSWORD, "new-signup").await;
    app.session_tagged("bob", GOOD_PASSWORD, "new-login").await;
    // Waiting for the purge task's next tick (real time), not for the events to age.
    let mut left = 4;
    for _ in 0..100 {
        left = app
            .db
            .scalar("SELECT COUNT(*) FROM audit_events WHERE id <= 4")
            .await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the events past their retention were purged");
    (app, old_hash)
}

db_tests! {
    async fn fifty_concurrent_logins_keep_one_unbroken_chain(backend: Backend) {
        concurrent_logins(backend, 10, 5).await;
    }

    async fn fifty_concurrent_logins_keep_one_unbroken_chain_by_audit_verify(backend: Backend) {
        let app = concurrent_logins(backend, 10, 5).await;
        assert_verify_passes(&app.db, "70 events (ids 1..70)");
    }

    /// After a purge the chain starts at the anchor: the newest purged row's hash, which the
    /// first kept row links to; new rows go on from the head.
    async fn a_purge_moves_the_anchor_and_the_rest_of_the_chain_stays_intact(backend: Backend) {
        let (app, old_hash) = purged_trail(backend).await;

        let (last_id, _, anchor_id, anchor_hash) = head(&app.db).await;
        assert_eq!((anchor_id, anchor_hash.as_str()), (4, old_hash.as_str()), "the anchor is the newest purged row");
        let kept = assert_chain_intact(&app.db).await;
        let ids: Vec<i64> = kept.iter().map(|r| r.id).collect();
        assert_eq!(ids, [5, 6, 7]);
        assert_eq!(last_id, 7);
        assert_eq!(kept[0].prev_hash, old_hash, "the first kept row links to the anchor");
        assert_eq!(app.metric("cerego_audit_events_purged_total").await, 4.0);

        app.login_tagged("bob", "not the password", "after-purge", 401).await;
        let kept = assert_chain_intact(&app.db).await;
        assert_eq!(kept.iter().map(|r| r.id).collect::<Vec<_>>(), [5, 6, 7, 8]);
        assert_eq!(kept[3].prev_hash, kept[2].hash);
        assert_eq!(kept[3].occurred_at, app.clock_now_micros(), "stamped by the moved clock");
    }

    async fn a_purge_keeps_the_chain_green_by_audit_verify(backend: Backend) {
        let (app, _) = purged_trail(backend).await;
        let purged = assert_verify_passes(&app.db, "3 events (ids 5..7)");
        assert_eq!(purged.len(), 1, "{purged:?}");
        assert!(
            purged[0].starts_with("events up to id 4 (the newest occurred at ")
                && purged[0].ends_with("Z) were purged by retention"),
            "{purged:?}"
        );
        app.login_tagged("bob", "not the password", "after-purge", 401).await;
        assert_verify_passes(&app.db, "4 events (ids 5..8)");
    }

    async fn the_chain_recomputed_here_matches_every_row(backend: Backend) {
        let app = six_events(backend).await;
        let rows = rows(&app.db).await;
        // One row recomputed by hand, field by field, as the documentation spells it.
        let row = &rows[2];
        let expected_content = format!(
            "[3,{},\"auth.login_succeeded\",{ada},{ada},\"127.0.0.1\",{},\"req-login\",\"success\",{}]",
            row.occurred_at,
            serde_json::to_string(&crate::audit_helpers::agent("login")).expect("json"),
            row.details,
            ada = row.target_user_id.expect("ada"),
        );
        assert_eq!(content_of(row), expected_content);
        assert_eq!(row.hash, hash_of(&rows[1].hash, &expected_content));
        let details: Value = serde_json::from_str(&row.details).expect("json");
        assert_eq!(row.details, details.to_string(), "details are stored canonical: sorted keys, no spaces");
    }

    async fn audit_verify_passes_on_an_intact_chain_and_on_none_by_audit_verify(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_verify_passes(&app.db, "no events");
        let app = six_events(backend).await;
        assert_verify_passes(&app.db, "6 events (ids 1..6)");
    }

    async fn an_edited_row_is_named_by_audit_verify(backend: Backend) {
        let app = six_events(backend).await;
        app.db.run_sql("UPDATE audit_events SET ip = '10.9.9.9' WHERE id = 3").await;
        assert_verify_fails(&app.db, "row 3 was altered");
        // Put back, the chain is intact again: the check is exact, not a guess.
        app.db.run_sql("UPDATE audit_events SET ip = '127.0.0.1' WHERE id = 3").await;
        assert_verify_passes(&app.db, "6 events (ids 1..6)");
        app.db.run_sql("UPDATE audit_events SET details = '{\"reason\":\"account_disabled\"}' WHERE id = 4").await;
        assert_verify_fails(&app.db, "row 4 was altered");
    }

    async fn an_edited_and_rehashed_row_is_named_by_audit_verify(backend: Backend) {
        let app = six_events(backend).await;
        let mut row = rows(&app.db).await.remove(2);
        row.user_agent = Some("forged".into());
        let hash = hash_of(&row.prev_hash, &content_of(&row));
        app.db.run_sql(&format!("UPDATE audit_events SET user_agent = 'forged', hash = '{hash}' WHERE id = 3")).await;
        assert_verify_fails(&app.db, "row 3 was altered");
    }

    async fn a_row_deleted_in_the_middle_is_named_by_audit_verify(backend: Backend) {
        let app = six_events(backend).await;
        app.db.run_sql("DELETE FROM audit_events WHERE id = 3").await;
        assert_verify_fails(&app.db, "row 3 is missing");
    }

    async fn the_newest_row_deleted_is_named_by_audit_verify(backend: Backend) {
        let app = six_events(backend).await;
        app.db.run_sql("DELETE FROM audit_events WHERE id = 6").await;
        assert_verify_fails(&app.db, "row 6 is missing");
    }

    async fn a_row_inserted_by_hand_is_named_by_audit_verify(backend: Backend) {
        let app = six_events(backend).await;
        let last = rows(&app.db).await.remove(5);
        let made_up = "ab".repeat(32);
        app.db
            .run_sql(&format!(
                "INSERT INTO audit_events (id, occurred_at, event, actor_user_id, target_user_id, ip, \
                 user_agent, request_id, outcome, details, prev_hash, hash) VALUES (7, {}, \
                 'auth.login_succeeded', 1, 1, '127.0.0.1', 'curl', 'x', 'success', '{{}}', '{}', '{made_up}')",
                last.occurred_at + 1,
                last.hash,
            ))
            .await;
        assert_verify_fails(&app.db, "row 7 was inserted out of chain");
    }

    /// A signed-up account's own requests are the only thing the trail of these tests saw:
    /// the test helpers send every request with a tag.
    async fn the_trail_of_a_request_without_a_user_agent_has_null_there(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app
            .client
            .post(app.url("/auth/login"))
            .json(&json!({ "username": "nobody", "password": "x" }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 401);
        let generated = response.headers()["x-request-id"].to_str().expect("ASCII").to_owned();
        let rows = rows(&app.db).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].user_agent, None, "no User-Agent sent");
        assert_eq!(rows[0].request_id.as_deref(), Some(generated.as_str()), "the id the service made up and echoed");
        let _ = Method::GET;
    }
}
