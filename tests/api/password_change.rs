//! Password change: the current password checked, the new one held to the policy, every other
//! session ended while this one stays, outstanding reset links cancelled, and a notice mailed.

use serde_json::json;

use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, assert_detail, retry_after, validation_errors};
use crate::mailflow::{
    INVALID_TOKEN, NEW_PASSWORD, assert_well_formed, change, email_of, forgot_ok, login, login_ok,
    reset, spawn_with_sink,
};
use crate::smtp_sink::token_of;

const WRONG_CURRENT: &str = "Current password is incorrect";

db_tests! {
    async fn a_change_keeps_this_session_ends_the_others_and_sends_a_notice(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        let ada = email_of("ada");
        let (access, refresh) = login_ok(&app, "ada", GOOD_PASSWORD).await;
        let (other_access, other_refresh) = login_ok(&app, "ada", GOOD_PASSWORD).await;
        let (bobs, _) = {
            app.create_user("bob").await;
            login_ok(&app, "bob", GOOD_PASSWORD).await
        };

        assert_eq!(change(&app, &access, GOOD_PASSWORD, NEW_PASSWORD).await.status(), 204);

        assert_eq!(app.me(&access).await.status(), 200, "this session stays");
        assert_eq!(app.me(&other_access).await.status(), 401, "another session ends at once");
        assert_eq!(app.refresh(&other_refresh).await.status(), 401);
        assert_eq!(app.refresh(&refresh).await.status(), 200, "this session refreshes");
        assert_eq!(app.me(&bobs).await.status(), 200, "another user's session stays");
        assert_eq!(login(&app, "ada", GOOD_PASSWORD).await.status(), 401);
        login_ok(&app, "ada", NEW_PASSWORD).await;

        let notice = sink.notice_mail(&ada).await;
        assert_well_formed(&notice, &ada);
        assert!(!notice.raw_text().contains(NEW_PASSWORD), "no password in the mail");
        assert!(sink.received().iter().all(|m| !m.is_to(&email_of("bob")) || m.is_verification()));
    }

    async fn a_wrong_current_password_is_400_and_changes_nothing(backend: Backend) {
        let (app, _sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        let (access, _) = login_ok(&app, "ada", GOOD_PASSWORD).await;
        let (other, _) = login_ok(&app, "ada", GOOD_PASSWORD).await;

        assert_detail(change(&app, &access, "not the password", NEW_PASSWORD).await, 400, WRONG_CURRENT).await;

        assert_eq!(app.me(&other).await.status(), 200, "no session ended");
        assert_eq!(login(&app, "ada", NEW_PASSWORD).await.status(), 401);
        login_ok(&app, "ada", GOOD_PASSWORD).await;
    }

    async fn wrong_current_passwords_meet_the_login_throttle(backend: Backend) {
        let (app, _sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        let (access, _) = login_ok(&app, "ada", GOOD_PASSWORD).await;

        // A stolen access token must not become a way to guess the password: the change counts
        // as a login of the account's address, so LOGIN_BACKOFF_AFTER (5) failures start the
        // backoff, and then even the right password waits.
        for _ in 0..5 {
            assert_detail(change(&app, &access, "not the password", NEW_PASSWORD).await, 400, WRONG_CURRENT).await;
        }
        let refused = change(&app, &access, GOOD_PASSWORD, NEW_PASSWORD).await;
        assert!(retry_after(refused.headers()).is_some_and(|secs| secs >= 1));
        assert_detail(refused, 429, "Too many failed login attempts").await;

        assert_eq!(login(&app, "ada", NEW_PASSWORD).await.status(), 401, "nothing changed");
        login_ok(&app, "ada", GOOD_PASSWORD).await;
    }

    async fn the_new_password_passes_the_signup_policy(backend: Backend) {
        let (app, _sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("lovelace_1").await;
        let (access, _) = login_ok(&app, "lovelace_1", GOOD_PASSWORD).await;

        for (password, kind) in [
            ("seven77", "string_too_short"),
            ("password1", "value_error.password_common"),
            ("Lovelace_1", "value_error.password_similar"),
        ] {
            let errors = validation_errors(change(&app, &access, GOOD_PASSWORD, password).await).await;
            assert_eq!(errors, [("new_password".to_owned(), kind.to_owned())], "{password:?}");
        }
        login_ok(&app, "lovelace_1", GOOD_PASSWORD).await;
    }

    async fn a_change_needs_a_bearer_token_and_both_fields(backend: Backend) {
        let (app, _sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        let anonymous = app
            .client
            .post(app.url("/auth/password/change"))
            .json(&json!({ "current_password": GOOD_PASSWORD, "new_password": NEW_PASSWORD }))
            .send()
            .await
            .expect("request");
        assert_eq!(anonymous.status(), 401);

        let (access, _) = login_ok(&app, "ada", GOOD_PASSWORD).await;
        let missing = app
            .client
            .post(app.url("/auth/password/change"))
            .bearer_auth(&access)
            .json(&json!({ "new_password": NEW_PASSWORD }))
            .send()
            .await
            .expect("request");
        let errors = validation_errors(missing).await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "current_password");
        login_ok(&app, "ada", GOOD_PASSWORD).await;
    }

    async fn a_change_cancels_outstanding_reset_links(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        forgot_ok(&app, &email_of("ada")).await;
        let token = token_of(&sink.reset_mail(&email_of("ada")).await.reset_link());
        let (access, _) = login_ok(&app, "ada", GOOD_PASSWORD).await;

        assert_eq!(change(&app, &access, GOOD_PASSWORD, NEW_PASSWORD).await.status(), 204);

        assert_detail(reset(&app, &token, "a password someone else chose").await, 400, INVALID_TOKEN).await;
        login_ok(&app, "ada", NEW_PASSWORD).await;
    }
}
