//! The audit trail of account recovery and address verification: a reset asked for and
//! completed, a password changed, a verification link sent (at sign-up and on request) and
//! used, and a login refused for an unverified address; nothing for an unknown address, a bad
//! token or an address already verified.

use reqwest::Method;
use serde_json::json;

use crate::audit_helpers::{Trail, assert_chain_intact, failure, success};
use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, spawn_app_with};
use crate::mailflow::{NEW_PASSWORD, email_of, spawn_with_sink};
use crate::smtp_sink::{Received, token_of};

db_tests! {
    async fn recovery_and_verification_events_name_the_account_and_the_client(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        let db = &app.db;
        let ada = app.signup_tagged("ada", GOOD_PASSWORD, "signup-ada").await;
        let (_, _, _) = app.session_tagged("ada", GOOD_PASSWORD, "login").await;
        let mut trail = Trail::start(db).await;

        let forgot = |email: String, tag: &'static str| {
            let app = &app;
            async move {
                let body = json!({ "email": email });
                app.send_tagged(Method::POST, "/auth/password/forgot", tag, None, Some(&body), 202).await;
            }
        };
        forgot(email_of("ada"), "forgot").await;
        trail.expect(db, "forgot", &[success("password.reset_requested", "forgot").on(ada)]).await;
        forgot(email_of("nobody"), "forgot-unknown").await;
        trail.expect_none(db, "an unknown address").await;

        let token = token_of(&sink.reset_mail(&email_of("ada")).await.reset_link());
        let bad = json!({ "token": format!("{token}x"), "new_password": NEW_PASSWORD });
        app.send_tagged(Method::POST, "/auth/password/reset", "reset-bad", None, Some(&bad), 400).await;
        trail.expect_none(db, "a bad reset token").await;
        let body = json!({ "token": token, "new_password": NEW_PASSWORD });
        app.send_tagged(Method::POST, "/auth/password/reset", "reset", None, Some(&body), 204).await;
        trail
            .expect(db, "reset", &[success("password.reset_completed", "reset").on(ada).details(json!({ "sessions_revoked": 1 }))])
            .await;
        app.send_tagged(Method::POST, "/auth/password/reset", "reset-again", None, Some(&body), 400).await;
        trail.expect_none(db, "a used reset token").await;

        let (access, _, _) = app.session_tagged("ada", NEW_PASSWORD, "login-new").await;
        app.session_tagged("ada", NEW_PASSWORD, "login-other").await;
        trail.new_rows(db).await;
        let wrong = json!({ "current_password": "not the password", "new_password": GOOD_PASSWORD });
        app.send_tagged(Method::POST, "/auth/password/change", "change-wrong", Some(&access), Some(&wrong), 400).await;
        trail.expect_none(db, "a wrong current password").await;
        let change = json!({ "current_password": NEW_PASSWORD, "new_password": GOOD_PASSWORD });
        app.send_tagged(Method::POST, "/auth/password/change", "change", Some(&access), Some(&change), 204).await;
        trail
            .expect(db, "change", &[success("password.changed", "change").by(ada).on(ada).details(json!({ "sessions_revoked": 1 }))])
            .await;

        // The reset proved ada's mailbox: asking for a verification link is a 409 and no event.
        app.send_tagged(Method::POST, "/auth/email/verification", "resend-verified", Some(&access), None, 409).await;
        trail.expect_none(db, "an address already verified").await;

        let bob = app.signup_tagged("bob", GOOD_PASSWORD, "signup-bob").await;
        trail
            .expect(db, "sign-up", &[
                success("user.signed_up", "signup-bob").on(bob),
                success("email.verification_sent", "signup-bob").on(bob),
            ])
            .await;
        let (bobs, _, _) = app.session_tagged("bob", GOOD_PASSWORD, "login-bob").await;
        trail.new_rows(db).await;
        app.send_tagged(Method::POST, "/auth/email/verification", "resend", Some(&bobs), None, 202).await;
        trail
            .expect(db, "verification on request", &[success("email.verification_sent", "resend").by(bob).on(bob)])
            .await;
        let mail = sink.nth_to(&email_of("bob"), 2, Received::is_verification).await;
        let token = token_of(&mail.verification_link());
        let body = json!({ "token": token });
        app.send_tagged(Method::POST, "/auth/email/verify", "verify", None, Some(&body), 204).await;
        trail.expect(db, "verified", &[success("email.verified", "verify").on(bob)]).await;
        app.send_tagged(Method::POST, "/auth/email/verify", "verify-again", None, Some(&body), 400).await;
        trail.expect_none(db, "a used verification token").await;
        assert_chain_intact(db).await;
    }

    async fn a_login_refused_for_an_unverified_address_says_so(backend: Backend) {
        let app = spawn_app_with(backend, |s| s.recovery.require_email_verification = true).await;
        let ada = app.signup_tagged("ada", GOOD_PASSWORD, "signup").await;
        let mut trail = Trail::start(&app.db).await;

        app.login_tagged("ada", GOOD_PASSWORD, "unverified", 403).await;

        trail
            .expect(&app.db, "unverified", &[failure("auth.login_failed", "unverified").on(ada).details(json!({ "reason": "email_not_verified" }))])
            .await;
    }
}
