//! The audit trail as requests write it: each event once, right after the request that causes
//! it, with the right actor, target, details, and the client's address, user agent and request
//! id; the events stamped by the service's clock; nothing for a routine refresh; and no login
//! name of an unknown account anywhere in its row.
//!
//! The rows are read from the database (`audit_events`), every column compared exactly.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::audit_helpers::{Trail, assert_chain_intact, failure, success};
use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestApp, spawn_app_with, spawn_app_with_clock};

/// A login name that looks like a password someone typed into the wrong field.
const TYPED_SECRET: &str = "Hunter2-typed-into-the-username-field";

/// The session of `access` logs out, tagged `tag`.
async fn post_tagged(app: &TestApp, path: &str, tag: &str, access: &str, status: u16) {
    app.send_tagged(Method::POST, path, tag, Some(access), None, status)
        .await;
}

db_tests! {
    /// Sign-up, logins (right and wrong password, unknown account), logout, logout-all, a
    /// session ended by id, a routine refresh (nothing) and a reuse after the grace window: each
    /// row exactly, stamped by the service's clock.
    async fn account_and_session_events_name_the_accounts_and_the_client(backend: Backend) {
        let app = spawn_app_with_clock(backend, |_| {}).await;
        let db = &app.db;
        let mut trail = Trail::start(db).await;
        assert!(trail.new_rows(db).await.is_empty(), "a fresh database has no events");

        let ada = app.signup_tagged("ada", GOOD_PASSWORD, "signup").await;
        let rows = trail
            .expect(db, "sign-up", &[
                success("user.signed_up", "signup").on(ada),
                success("email.verification_sent", "signup").on(ada),
            ])
            .await;
        let now = app.clock_now_micros();
        assert!(rows.iter().all(|r| r.occurred_at == now), "stamped by the service's clock ({now}): {rows:?}");

        let (access, refresh, session) = app.session_tagged("ada", GOOD_PASSWORD, "login").await;
        trail
            .expect(db, "login", &[success("auth.login_succeeded", "login").by(ada).on(ada).details(json!({ "session_id": session }))])
            .await;

        app.login_tagged("ada", "not the password", "wrong", 401).await;
        trail
            .expect(db, "wrong password", &[failure("auth.login_failed", "wrong").on(ada).details(json!({ "reason": "invalid_credentials" }))])
            .await;
        app.login_tagged("ada@example.com", "not the password", "wrong-email", 401).await;
        trail
            .expect(db, "wrong password by address", &[failure("auth.login_failed", "wrong-email").on(ada).details(json!({ "reason": "invalid_credentials" }))])
            .await;

        app.login_tagged(TYPED_SECRET, GOOD_PASSWORD, "unknown", 401).await;
        let rows = trail
            .expect(db, "unknown account", &[failure("auth.login_failed", "unknown").details(json!({ "reason": "invalid_credentials" }))])
            .await;
        let row = format!("{:?}", rows[0]);
        assert!(!row.contains(TYPED_SECRET) && !row.contains("Hunter2"), "no login name in the row: {row}");
        app.login_tagged("ghost@example.com", GOOD_PASSWORD, "unknown-email", 401).await;
        let rows = trail
            .expect(db, "unknown address", &[failure("auth.login_failed", "unknown-email").details(json!({ "reason": "invalid_credentials" }))])
            .await;
        assert!(!format!("{:?}", rows[0]).contains("ghost"), "no address in the row");

        // A routine refresh writes nothing.
        let body = json!({ "refresh_token": refresh });
        let rotated = app.send_tagged(Method::POST, "/auth/refresh", "refresh", None, Some(&body), 200).await;
        let rotated: serde_json::Value = rotated.json().await.expect("json");
        trail.expect_none(db, "a routine refresh").await;
        // The rotated token again, within the grace window: the same pair, nothing written.
        app.send_tagged(Method::POST, "/auth/refresh", "replay", None, Some(&body), 200).await;
        trail.expect_none(db, "a replay within the grace window").await;
        // After the grace window (10 s in the test settings): reuse, the session revoked.
        app.advance_clock(Duration::from_secs(11));
        app.send_tagged(Method::POST, "/auth/refresh", "reuse", None, Some(&body), 401).await;
        let rows = trail
            .expect(db, "reuse", &[failure("auth.refresh_reuse_detected", "reuse").on(ada).details(json!({ "session_id": session }))])
            .await;
        assert_eq!(rows[0].occurred_at, app.clock_now_micros(), "the clock moved: so did the stamp");
        assert_eq!(app.me(&access).await.status(), 401, "the session was revoked");
        assert!(rotated["access_token"].is_string());

        let (first, _, first_session) = app.session_tagged("ada", GOOD_PASSWORD, "login-1").await;
        let (_second, _, second_session) = app.session_tagged("ada", GOOD_PASSWORD, "login-2").await;
        let (third, _, _) = app.session_tagged("ada", GOOD_PASSWORD, "login-3").await;
        trail.new_rows(db).await;
        post_tagged(&app, "/auth/logout", "logout", &first, 204).await;
        trail
            .expect(db, "logout", &[success("auth.logged_out", "logout").by(ada).on(ada).details(json!({ "session_id": first_session }))])
            .await;
        let path = format!("/auth/sessions/{second_session}");
        app.send_tagged(Method::DELETE, &path, "revoke", Some(&third), None, 204).await;
        trail
            .expect(db, "session ended by id", &[success("session.revoked", "revoke").by(ada).on(ada).details(json!({ "session_id": second_session }))])
            .await;
        // Ending it again is a 404 and writes nothing.
        app.send_tagged(Method::DELETE, &path, "revoke-again", Some(&third), None, 404).await;
        trail.expect_none(db, "a session that is already ended").await;

        // Two live sessions left: the third and a fourth.
        app.session_tagged("ada", GOOD_PASSWORD, "login-4").await;
        trail.new_rows(db).await;
        post_tagged(&app, "/auth/logout-all", "logout-all", &third, 204).await;
        trail
            .expect(db, "logout-all", &[success("auth.logged_out_all", "logout-all").by(ada).on(ada).details(json!({ "sessions_revoked": 2 }))])
            .await;
        assert_chain_intact(db).await;
    }

    /// The login throttle's refusals, per (name, address) and per account, and a password
    /// change that meets it: `auth.login_throttled` with the scope, no name and (for a login)
    /// no target.
    async fn throttled_logins_and_changes_record_the_scope_and_no_name(backend: Backend) {
        // Two failures of a name from one address are free; the third attempt waits.
        let app = spawn_app_with(backend, |s| {
            s.limits.throttle.backoff_after = 2;
            s.limits.throttle.account_failure_limit = 0;
        })
        .await;
        let db = &app.db;
        let ada = app.signup_tagged("ada", GOOD_PASSWORD, "signup").await;
        let (access, _, _) = app.session_tagged("ada", GOOD_PASSWORD, "login").await;
        let mut trail = Trail::start(db).await;
        for n in 0..2 {
            app.login_tagged("ada", "not the password", &format!("wrong-{n}"), 401).await;
        }
        app.login_tagged("ada", GOOD_PASSWORD, "throttled", 429).await;
        trail
            .expect(db, "backoff", &[
                failure("auth.login_failed", "wrong-0").on(ada).details(json!({ "reason": "invalid_credentials" })),
                failure("auth.login_failed", "wrong-1").on(ada).details(json!({ "reason": "invalid_credentials" })),
                failure("auth.login_throttled", "throttled").details(json!({ "scope": "account_ip" })),
            ])
            .await;
        for n in 0..2 {
            app.login_tagged(TYPED_SECRET, "x", &format!("ghost-{n}"), 401).await;
        }
        app.login_tagged(TYPED_SECRET, "x", "ghost-throttled", 429).await;
        let rows = trail.new_rows(db).await;
        assert_eq!(rows.len(), 3);
        assert_eq!(
            crate::audit_helpers::described(&rows[2]),
            json!({
                "event": "auth.login_throttled", "outcome": "failure", "actor_user_id": null,
                "target_user_id": null, "ip": "127.0.0.1",
                "user_agent": crate::audit_helpers::agent("ghost-throttled"),
                "request_id": "req-ghost-throttled", "details": { "scope": "account_ip" },
            })
        );
        assert!(rows.iter().all(|r| !format!("{r:?}").contains("Hunter2")), "{rows:?}");

        // A password change counts as a login of the account's address.
        let body = json!({ "current_password": "not the password", "new_password": "a brand new passphrase for ada" });
        for n in 0..2 {
            app.send_tagged(Method::POST, "/auth/password/change", &format!("change-{n}"), Some(&access), Some(&body), 400).await;
        }
        trail.expect_none(db, "a wrong current password changes nothing").await;
        app.send_tagged(Method::POST, "/auth/password/change", "change-throttled", Some(&access), Some(&body), 429).await;
        trail
            .expect(db, "change throttled", &[failure("auth.login_throttled", "change-throttled").by(ada).on(ada)
                .details(json!({ "scope": "account_ip", "during": "password_change" }))])
            .await;

        // The cap per account, from every address.
        let capped = spawn_app_with(backend, |s| {
            s.limits.throttle.backoff_after = 0;
            s.limits.throttle.account_failure_limit = 2;
            s.limits.throttle.account_failure_window = Duration::from_secs(3600);
        })
        .await;
        let bob = capped.signup_tagged("bob", GOOD_PASSWORD, "signup").await;
        let mut trail = Trail::start(&capped.db).await;
        for n in 0..2 {
            capped.login_tagged("bob", "not the password", &format!("wrong-{n}"), 401).await;
        }
        capped.login_tagged("bob", GOOD_PASSWORD, "capped", 429).await;
        trail
            .expect(&capped.db, "cap", &[
                failure("auth.login_failed", "wrong-0").on(bob).details(json!({ "reason": "invalid_credentials" })),
                failure("auth.login_failed", "wrong-1").on(bob).details(json!({ "reason": "invalid_credentials" })),
                failure("auth.login_throttled", "capped").details(json!({ "scope": "account" })),
            ])
            .await;
        assert_chain_intact(db).await;
        assert_chain_intact(&capped.db).await;
    }
}
