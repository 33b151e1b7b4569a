//! Password reset end to end against a real SMTP server: the mail, its link, the form it opens,
//! the reset and what it ends; the token's single use, expiry and replacement; the same answer
//! for unknown addresses; the per-address rate limit.

use std::time::Duration;

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{
    Backend, GOOD_PASSWORD, assert_detail, assert_refused, retry_after, rule_names, rule_state,
    validation_errors,
};
use crate::mailflow::{
    FORGOT_DETAIL, INVALID_TOKEN, NEW_PASSWORD, assert_self_contained, assert_well_formed,
    email_of, email_verified, forgot, forgot_ok, html, login, login_ok, open_link, reset,
    spawn_with_sink, spawn_with_sink_and_clock,
};
use crate::smtp_sink::{Received, token_of};

const TOO_MANY: &str = "Too many requests";

db_tests! {
    async fn the_reset_mail_arrives_and_its_link_resets_the_password_and_ends_every_session(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        let ada = email_of("ada");
        let (access, refresh) = login_ok(&app, "ada", GOOD_PASSWORD).await;
        let (other_access, other_refresh) = login_ok(&app, "ada", GOOD_PASSWORD).await;

        forgot_ok(&app, &ada).await;

        let mail = sink.reset_mail(&ada).await;
        assert_well_formed(&mail, &ada);
        let link = mail.reset_link();
        assert!(
            link.starts_with("http://localhost:8000/auth/password/reset?token=crg_pr_"),
            "the link goes to PASSWORD_RESET_URL: {link}"
        );
        let token = token_of(&link);
        // 256 bits or more: at least 43 characters of base64 (or 64 of hex) after the prefix.
        assert!(token.len() >= "crg_pr_".len() + 43, "{token}");
        let parsed = mail.parse();
        assert!(parsed.html[0].contains(&token), "the HTML part links too: {}", parsed.html[0]);
        assert!(!parsed.subject.unwrap_or_default().contains(&token), "no token in the subject");

        let page = html(open_link(&app, &link).await, 200).await;
        assert!(page.to_ascii_lowercase().contains("<form"), "{page}");
        assert!(page.matches("type=\"password\"").count() >= 2, "two password fields: {page}");
        assert_self_contained(&page);

        assert_eq!(reset(&app, &token, NEW_PASSWORD).await.status(), 204);

        assert_eq!(login(&app, "ada", GOOD_PASSWORD).await.status(), 401, "the old password");
        for old in [&access, &other_access] {
            assert_eq!(app.me(old).await.status(), 401, "an access token of a session opened before");
        }
        for old in [&refresh, &other_refresh] {
            assert_eq!(app.refresh(old).await.status(), 401, "a refresh token of a session opened before");
        }
        let (fresh, _) = login_ok(&app, "ada", NEW_PASSWORD).await;
        assert!(email_verified(&app, &fresh).await, "a completed reset proves the mailbox");

        let notice = sink.notice_mail(&ada).await;
        assert_well_formed(&notice, &ada);
        assert!(!notice.raw_text().contains(&token));
        let ids: Vec<_> = [&mail, &notice].iter().map(|m| m.parse().message_id).collect();
        assert_ne!(ids[0], ids[1], "every message has its own Message-ID");
    }

    async fn an_unknown_address_gets_the_same_answer_and_no_mail(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        app.create_user("bob").await;

        let unknown = forgot(&app, "nobody@example.com").await;
        let known = forgot(&app, &email_of("ada")).await;

        assert_eq!(unknown.status(), 202);
        assert_eq!(known.status(), 202);
        assert_eq!(
            unknown.headers().get("content-type"),
            known.headers().get("content-type")
        );
        let (unknown, known) = (unknown.bytes().await.expect("body"), known.bytes().await.expect("body"));
        assert_eq!(unknown, known, "byte for byte the same body");
        let body: Value = serde_json::from_slice(&known).expect("json");
        assert_eq!(body, json!({ "detail": FORGOT_DETAIL }));

        sink.reset_mail(&email_of("ada")).await;
        // A later message as a barrier: whatever was queued before it has had its turn.
        forgot_ok(&app, &email_of("bob")).await;
        sink.reset_mail(&email_of("bob")).await;
        let received = sink.received();
        let resets: Vec<&Received> = received.iter().filter(|m| m.is_reset()).collect();
        assert_eq!(resets.len(), 2, "one reset mail each for ada and bob");
        assert!(
            received.iter().all(|m| !m.is_to("nobody@example.com")),
            "no message for the unknown address"
        );
    }

    async fn a_malformed_address_is_422_as_at_signup(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        for email in ["not an email", "ada@", "", "ada@localhost"] {
            let errors = validation_errors(forgot(&app, email).await).await;
            assert_eq!(errors, [("email".to_owned(), "value_error.email".to_owned())], "{email:?}");
        }
        let missing = validation_errors(app.post_json("/auth/password/forgot", &json!({})).await).await;
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].0, "email");
        assert!(sink.received().is_empty());
    }

    async fn two_resets_racing_with_one_token_succeed_once(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        forgot_ok(&app, &email_of("ada")).await;
        let token = token_of(&sink.reset_mail(&email_of("ada")).await.reset_link());

        let (first, second) = tokio::join!(
            reset(&app, &token, NEW_PASSWORD),
            reset(&app, &token, "another brand new phrase")
        );

        let mut statuses = [first.status().as_u16(), second.status().as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [204, 400], "one reset wins, the other finds the token used");
        let logins = [
            login(&app, "ada", NEW_PASSWORD).await.status().as_u16(),
            login(&app, "ada", "another brand new phrase").await.status().as_u16(),
        ];
        assert!(logins.contains(&200) && logins.contains(&401), "{logins:?}");
    }

    async fn two_requests_at_once_leave_one_working_link(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        let ada = email_of("ada");

        let (first, second) = tokio::join!(forgot(&app, &ada), forgot(&app, &ada));
        assert_eq!((first.status().as_u16(), second.status().as_u16()), (202, 202));

        // The later transaction deleted the earlier token (and its mail, if it was still
        // queued): one token is left, and the link of the mail that arrived last works.
        let tokens = app
            .db
            .scalar("SELECT COUNT(*) FROM account_tokens WHERE purpose = 'password_reset'")
            .await;
        assert_eq!(tokens, 1, "one reset token left");
        sink.reset_mail(&ada).await;
        let links: Vec<String> =
            sink.received().iter().filter(|m| m.is_reset()).map(Received::reset_link).collect();
        let mut pages = Vec::new();
        for link in &links {
            pages.push(open_link(&app, link).await.status().as_u16());
        }
        assert_eq!(pages.iter().filter(|&&status| status == 200).count(), 1, "{pages:?}");
    }

    async fn a_reset_token_works_once(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        forgot_ok(&app, &email_of("ada")).await;
        let token = token_of(&sink.reset_mail(&email_of("ada")).await.reset_link());

        assert_eq!(reset(&app, &token, NEW_PASSWORD).await.status(), 204);
        assert_detail(reset(&app, &token, "another good passphrase").await, 400, INVALID_TOKEN).await;

        login_ok(&app, "ada", NEW_PASSWORD).await;
        assert_eq!(login(&app, "ada", "another good passphrase").await.status(), 401);
    }

    async fn unknown_and_malformed_tokens_are_400(backend: Backend) {
        let (app, _sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        let made_up = format!("crg_pr_{}", "A".repeat(43));
        for token in [made_up.as_str(), "crg_pr_", "nonsense", ""] {
            assert_detail(reset(&app, token, NEW_PASSWORD).await, 400, INVALID_TOKEN).await;
        }
        login_ok(&app, "ada", GOOD_PASSWORD).await;
    }

    async fn a_reset_token_expires_after_its_ttl(backend: Backend) {
        // The test settings keep the default PASSWORD_RESET_TTL_SECS of 3600.
        let (app, sink) = spawn_with_sink_and_clock(backend, |_| {}).await;
        app.create_user("ada").await;
        let ada = email_of("ada");
        forgot_ok(&app, &ada).await;
        let expired = token_of(&sink.reset_mail(&ada).await.reset_link());
        app.advance_clock(Duration::from_secs(3601));

        assert_detail(reset(&app, &expired, NEW_PASSWORD).await, 400, INVALID_TOKEN).await;

        // The other side of the boundary: a fresh token a second before its end still works.
        forgot_ok(&app, &ada).await;
        let fresh = token_of(&sink.nth_to(&ada, 2, Received::is_reset).await.reset_link());
        assert_ne!(fresh, expired);
        app.advance_clock(Duration::from_secs(3599));
        assert_eq!(reset(&app, &fresh, NEW_PASSWORD).await.status(), 204);
        login_ok(&app, "ada", NEW_PASSWORD).await;
    }

    async fn a_shortened_ttl_is_honoured(backend: Backend) {
        let (app, sink) = spawn_with_sink_and_clock(backend, |s| {
            s.recovery.password_reset_ttl = Duration::from_secs(60);
        })
        .await;
        app.create_user("ada").await;
        forgot_ok(&app, &email_of("ada")).await;
        let token = token_of(&sink.reset_mail(&email_of("ada")).await.reset_link());
        app.advance_clock(Duration::from_secs(61));

        assert_detail(reset(&app, &token, NEW_PASSWORD).await, 400, INVALID_TOKEN).await;
        login_ok(&app, "ada", GOOD_PASSWORD).await;
    }

    async fn asking_again_invalidates_the_earlier_token(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        let ada = email_of("ada");
        forgot_ok(&app, &ada).await;
        let first = token_of(&sink.reset_mail(&ada).await.reset_link());
        forgot_ok(&app, &ada).await;
        let second = token_of(&sink.nth_to(&ada, 2, Received::is_reset).await.reset_link());
        assert_ne!(first, second);

        assert_detail(reset(&app, &first, NEW_PASSWORD).await, 400, INVALID_TOKEN).await;
        assert_eq!(reset(&app, &second, NEW_PASSWORD).await.status(), 204);
        login_ok(&app, "ada", NEW_PASSWORD).await;
    }

    async fn opening_the_link_does_not_use_the_token(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        forgot_ok(&app, &email_of("ada")).await;
        let link = sink.reset_mail(&email_of("ada")).await.reset_link();

        // A mail scanner opens every link, maybe twice; the person opens it afterwards.
        for _ in 0..2 {
            html(open_link(&app, &link).await, 200).await;
        }

        assert_eq!(reset(&app, &token_of(&link), NEW_PASSWORD).await.status(), 204);
        login_ok(&app, "ada", NEW_PASSWORD).await;
    }

    async fn the_new_password_passes_the_signup_policy(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("lovelace_1").await;
        forgot_ok(&app, &email_of("lovelace_1")).await;
        let token = token_of(&sink.reset_mail(&email_of("lovelace_1")).await.reset_link());

        let long = "x".repeat(73);
        for (password, kind) in [
            ("seven77", "string_too_short"),
            (long.as_str(), "string_too_long"),
            ("password1", "value_error.password_common"),
            ("Lovelace_1", "value_error.password_similar"),
        ] {
            let errors = validation_errors(reset(&app, &token, password).await).await;
            assert_eq!(errors, [("new_password".to_owned(), kind.to_owned())], "{password:?}");
        }

        // A refused password does not use the token up.
        assert_eq!(reset(&app, &token, NEW_PASSWORD).await.status(), 204);
        login_ok(&app, "lovelace_1", NEW_PASSWORD).await;
    }

    async fn the_form_posts_url_encoded_and_gets_html(backend: Backend) {
        let (app, sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;
        forgot_ok(&app, &email_of("ada")).await;
        let token = token_of(&sink.reset_mail(&email_of("ada")).await.reset_link());
        let post = |form: Vec<(&'static str, String)>| {
            app.client.post(app.url("/auth/password/reset")).form(&form).send()
        };

        let mismatch = post(vec![
            ("token", token.clone()),
            ("new_password", NEW_PASSWORD.to_owned()),
            ("confirm_password", "something else entirely".to_owned()),
        ])
        .await
        .expect("request");
        html(mismatch, 422).await;
        assert_eq!(login(&app, "ada", NEW_PASSWORD).await.status(), 401, "nothing changed");

        let done = post(vec![
            ("token", token.clone()),
            ("new_password", NEW_PASSWORD.to_owned()),
            ("confirm_password", NEW_PASSWORD.to_owned()),
        ])
        .await
        .expect("request");
        let page = html(done, 200).await;
        assert!(!page.contains(&token), "the answer does not repeat the token");
        assert_self_contained(&page);
        login_ok(&app, "ada", NEW_PASSWORD).await;
        assert_eq!(login(&app, "ada", GOOD_PASSWORD).await.status(), 401);
    }

    async fn a_reset_clears_the_login_throttle_of_the_account(backend: Backend) {
        // The per-account failure cap, which lasts an hour: only a reset can lift it sooner.
        let (app, sink) = spawn_with_sink(backend, |s| {
            s.limits.throttle.backoff_after = 0;
            s.limits.throttle.account_failure_limit = 3;
            s.limits.throttle.account_failure_window = Duration::from_secs(3600);
        })
        .await;
        app.create_user("ada").await;
        let mut capped = false;
        for _ in 0..10 {
            let response = login(&app, "ada", "not the password").await;
            if response.status() == 429 {
                assert!(retry_after(response.headers()).is_some_and(|s| s > 60));
                capped = true;
                break;
            }
            assert_eq!(response.status(), 401);
        }
        assert!(capped, "the account cap is reached");
        assert_eq!(login(&app, "ada", GOOD_PASSWORD).await.status(), 429, "even the right password waits");

        forgot_ok(&app, &email_of("ada")).await;
        let token = token_of(&sink.reset_mail(&email_of("ada")).await.reset_link());
        assert_eq!(reset(&app, &token, NEW_PASSWORD).await.status(), 204);

        login_ok(&app, "ada", NEW_PASSWORD).await;
    }

    async fn the_fourth_request_for_one_address_in_an_hour_is_refused(backend: Backend) {
        // The test settings keep the defaults: RATE_LIMIT_RECOVERY_ACCOUNT=3/hour.
        let (app, _sink) = spawn_with_sink(backend, |_| {}).await;
        app.create_user("ada").await;

        let mut refusals = Vec::new();
        for (email, spellings) in [
            (email_of("ada"), ["ada@example.com", "Ada@Example.com", "ADA@EXAMPLE.COM"]),
            ("nobody@example.com".to_owned(), ["nobody@example.com", "Nobody@example.com", "NOBODY@EXAMPLE.COM"]),
        ] {
            for (n, spelling) in spellings.iter().enumerate() {
                let response = forgot(&app, spelling).await;
                assert_eq!(rule_names(response.headers()), ["recovery_ip", "recovery_account"]);
                let state = rule_state(response.headers(), "recovery_account");
                assert_eq!((state.q, state.w, state.r), (3, 3600, 2 - n as u64), "{spelling}");
                assert_eq!(response.status(), 202, "{spelling}");
            }
            let refused = forgot(&app, &email).await;
            let status_and_body = {
                let (retry, limits) = assert_refused(refused, TOO_MANY).await;
                let names: Vec<String> = limits.into_iter().map(|(n, _)| n).collect();
                assert!(names.contains(&"recovery_account".to_owned()), "{names:?}");
                assert!(retry <= 3600, "{retry}");
                names
            };
            refusals.push(status_and_body);
        }
        assert_eq!(refusals[0], refusals[1], "known and unknown addresses are refused alike");

        // Another address has its own budget.
        let other = forgot(&app, "bob@example.com").await;
        assert_eq!(other.status(), 202);
        assert_eq!(rule_state(other.headers(), "recovery_account").r, 2);
        assert_eq!(app.metric("cerego_rate_limited_total{rule=\"recovery_account\"}").await, 2.0);
    }
}
