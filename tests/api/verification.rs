//! E-mail verification against a real SMTP server: the mail a signup queues, the page its link
//! opens (which never uses the token), the confirmation, a new mail on request, and logins when
//! verification is required.

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, assert_detail};
use crate::mailflow::{
    INVALID_TOKEN, NEW_PASSWORD, assert_self_contained, assert_well_formed, email_of,
    email_verified, forgot_ok, html, login, login_ok, open_link, reset, spawn_with_sink, verify,
};
use crate::smtp_sink::{Received, token_of};

const NOT_VERIFIED: &str = "Email not verified";
const ALREADY_VERIFIED: &str = "Email already verified";
const INCORRECT: &str = "Incorrect username or password";

db_tests! {
    async fn signup_sends_a_link_whose_page_confirms_the_address(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        let user = app.create_user("ada").await;
        assert_eq!(user["email_verified"], json!(false), "{user}");
        let ada = email_of("ada");
        let (access, _) = login_ok(&app, "ada", GOOD_PASSWORD).await;
        assert!(!email_verified(&app, &access).await);

        let mail = sink.verification_mail(&ada).await;
        assert_well_formed(&mail, &ada);
        let link = mail.verification_link();
        assert!(
            link.starts_with("http://localhost:8000/auth/email/verify?token=crg_ev_"),
            "the link goes to EMAIL_VERIFICATION_URL: {link}"
        );
        let token = token_of(&link);
        assert!(token.len() >= "crg_ev_".len() + 43, "{token}");

        // A mail scanner opens the link, twice: the address is not confirmed by that.
        for _ in 0..2 {
            let page = html(open_link(&app, &link).await, 200).await;
            assert!(page.contains("Confirm my email"), "a button: {page}");
            assert!(page.to_ascii_lowercase().contains("<form"), "{page}");
            assert_self_contained(&page);
        }
        assert!(!email_verified(&app, &access).await, "a GET confirms nothing");

        assert_eq!(verify(&app, &token).await.status(), 204);

        assert!(email_verified(&app, &access).await);
        let me: Value = app.me(&access).await.json().await.expect("json");
        assert_eq!(me["email_verified"], json!(true));
    }

    async fn the_confirmation_button_posts_a_form_and_gets_a_page(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        let token = token_of(&sink.verification_mail(&email_of("ada")).await.verification_link());
        let post = |token: &str| {
            app.client
                .post(app.url("/auth/email/verify"))
                .form(&[("token", token)])
                .send()
        };

        let bad = post("crg_ev_not-a-token").await.expect("request");
        assert_eq!(bad.status(), 400);
        html(bad, 400).await;
        let (access, _) = login_ok(&app, "ada", GOOD_PASSWORD).await;
        assert!(!email_verified(&app, &access).await);

        let page = html(post(&token).await.expect("request"), 200).await;
        assert!(!page.contains(&token), "the answer does not repeat the token");
        assert_self_contained(&page);
        assert!(email_verified(&app, &access).await);
    }

    async fn a_new_mail_on_request_and_409_once_verified(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        let ada = email_of("ada");
        let (access, _) = login_ok(&app, "ada", GOOD_PASSWORD).await;
        let first = token_of(&sink.verification_mail(&ada).await.verification_link());

        let again = app.post_authed("/auth/email/verification", &access).await;
        assert_eq!(again.status(), 202);
        let second_mail = sink.nth_to(&ada, 2, Received::is_verification).await;
        assert_well_formed(&second_mail, &ada);
        let second = token_of(&second_mail.verification_link());
        assert_ne!(first, second);

        // An earlier verification token still proves the mailbox.
        assert_eq!(verify(&app, &first).await.status(), 204);
        assert!(email_verified(&app, &access).await);

        let verified = app.post_authed("/auth/email/verification", &access).await;
        assert_detail(verified, 409, ALREADY_VERIFIED).await;
        assert_eq!(
            sink.received().iter().filter(|m| m.is_verification()).count(),
            2,
            "no third mail"
        );
    }

    async fn requesting_a_mail_needs_a_bearer_token(backend: Backend) {
        let (app, _sink) = spawn_with_sink(backend, |_| {}).await;
        let response = app.client.post(app.url("/auth/email/verification")).send().await.expect("request");
        assert_eq!(response.status(), 401);
    }

    async fn a_bad_token_is_400_and_tokens_do_not_cross_purposes(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        let ada = email_of("ada");
        let made_up = format!("crg_ev_{}", "A".repeat(43));
        for token in [made_up.as_str(), "crg_ev_", "nonsense", ""] {
            assert_detail(verify(&app, token).await, 400, INVALID_TOKEN).await;
        }

        let verification = token_of(&sink.verification_mail(&ada).await.verification_link());
        forgot_ok(&app, &ada).await;
        let reset_token = token_of(&sink.reset_mail(&ada).await.reset_link());
        assert_detail(verify(&app, &reset_token).await, 400, INVALID_TOKEN).await;
        assert_detail(reset(&app, &verification, NEW_PASSWORD).await, 400, INVALID_TOKEN).await;

        let (access, _) = login_ok(&app, "ada", GOOD_PASSWORD).await;
        assert!(!email_verified(&app, &access).await, "nothing was verified");
        // Both tokens still work for what they are.
        assert_eq!(verify(&app, &verification).await.status(), 204);
        assert_eq!(reset(&app, &reset_token, NEW_PASSWORD).await.status(), 204);
    }

    async fn required_verification_refuses_the_login_until_the_address_is_confirmed(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |s| s.recovery.require_email_verification = true).await;
        let user = app.create_user("ada").await;
        assert_eq!(user["email_verified"], json!(false));

        assert_detail(login(&app, "ada", "not the password").await, 401, INCORRECT).await;
        assert_detail(login(&app, "ada", GOOD_PASSWORD).await, 403, NOT_VERIFIED).await;
        let by_form = app.login_form(&[("username", "ada@example.com"), ("password", GOOD_PASSWORD)]).await;
        assert_detail(by_form, 403, NOT_VERIFIED).await;

        let token = token_of(&sink.verification_mail(&email_of("ada")).await.verification_link());
        assert_eq!(verify(&app, &token).await.status(), 204);

        let (access, _) = login_ok(&app, "ada", GOOD_PASSWORD).await;
        assert!(email_verified(&app, &access).await);
        assert_detail(login(&app, "ada", "not the password").await, 401, INCORRECT).await;
    }

    async fn a_completed_reset_counts_as_verification(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |s| s.recovery.require_email_verification = true).await;
        app.create_user("ada").await;
        assert_detail(login(&app, "ada", GOOD_PASSWORD).await, 403, NOT_VERIFIED).await;

        forgot_ok(&app, &email_of("ada")).await;
        let token = token_of(&sink.reset_mail(&email_of("ada")).await.reset_link());
        assert_eq!(reset(&app, &token, NEW_PASSWORD).await.status(), 204);

        let (access, _) = login_ok(&app, "ada", NEW_PASSWORD).await;
        assert!(email_verified(&app, &access).await);
    }
}
