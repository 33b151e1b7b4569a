//! E-mail look-alikes: spellings that look like (or are encoded differently from) a registered
//! address never make a second account; internationalised domains are stored as A-labels; and
//! `cerego migrate` reports stored addresses that are not in canonical form.

use std::process::Command;

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TEST_SECRET, TestApp, spawn_app, validation_errors};

/// Signs up `email` with a fresh username; returns the response.
async fn signup_as(app: &TestApp, email: &str, username: &str) -> reqwest::Response {
    app.signup(email, username, GOOD_PASSWORD).await
}

/// Asserts a 422 whose only entry is `value_error.email` at `email`, with a message that says
/// what was wrong; returns the message.
async fn assert_email_refused(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json body");
    let detail = body["detail"].as_array().expect("detail is a list");
    assert_eq!(detail.len(), 1, "{body}");
    assert_eq!(detail[0]["loc"], json!(["body", "email"]), "{body}");
    assert_eq!(detail[0]["type"], "value_error.email", "{body}");
    let msg = detail[0]["msg"].as_str().expect("msg").to_owned();
    assert!(
        msg.starts_with("value is not a valid email address: "),
        "{msg}"
    );
    msg
}

async fn user_count(app: &TestApp) -> i64 {
    app.db.scalar("SELECT count(*) FROM users").await
}

db_tests! {
    async fn invisible_bidi_and_mixed_script_look_alikes_are_refused(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(signup_as(&app, "uada@example.com", "uada").await.status(), 201);

        let look_alikes = [
            ("uada\u{200B}@example.com", "invisible"),
            ("ua\u{200D}da@example.com", "invisible"),
            ("ua\u{00AD}da@example.com", "invisible"),
            ("\u{FEFF}uada@example.com", "invisible"),
            ("\u{202E}uada@example.com", "bidirectional"),
            ("u\u{0430}da@example.com", "part before the @-sign mixes scripts"),
            ("uada@ex\u{0430}mple.com", "label of the domain mixes scripts"),
        ];
        for (i, (email, reason)) in look_alikes.iter().enumerate() {
            let msg = assert_email_refused(signup_as(&app, email, &format!("look{i}")).await).await;
            assert!(msg.contains(reason), "{email:?}: {msg}");
        }
        assert_eq!(user_count(&app).await, 1, "no second account");
    }

    async fn decomposed_fullwidth_and_upper_case_spellings_are_one_account(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(signup_as(&app, "uada@example.com", "uada").await.status(), 201);
        let precomposed = signup_as(&app, "u\u{E1}da@example.com", "uaacute").await;
        assert_eq!(precomposed.status(), 201);
        let body: Value = precomposed.json().await.expect("json");
        assert_eq!(body["email"], "u\u{E1}da@example.com");

        for (i, email) in [
            "ua\u{301}da@example.com",
            "UA\u{301}DA@EXAMPLE.COM",
            "u\u{FF21}\u{FF24}\u{FF21}@example.com",
            "\u{FF55}\u{FF41}\u{FF44}\u{FF41}@\u{FF45}xample.com",
        ]
        .iter()
        .enumerate()
        {
            let response = signup_as(&app, email, &format!("again{i}")).await;
            assert_eq!(response.status(), 409, "{email:?}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body, json!({ "detail": "Email already registered" }));
        }
        assert_eq!(user_count(&app).await, 2);

        // Each spelling logs in to the account it folds to.
        for (email, id) in [("UＡＤＡ@example.com", 1), ("ua\u{301}da@Example.com", 2)] {
            let login = app
                .login_json(&json!({ "email": email, "password": GOOD_PASSWORD }))
                .await;
            assert_eq!(login.status(), 200, "{email:?}");
            let token = login.json::<Value>().await.expect("json")["access_token"]
                .as_str()
                .expect("token")
                .to_owned();
            let me: Value = app.me(&token).await.json().await.expect("json");
            assert_eq!(me["id"], id, "{email:?}");
        }
    }

    async fn an_idn_domain_is_stored_as_a_labels_and_logs_in_with_its_unicode_form(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = signup_as(&app, "Ada@B\u{FC}cher.Example", "ada").await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["email"], "ada@xn--bcher-kva.example");
        let stored = app
            .db
            .scalar("SELECT count(*) FROM users WHERE email = 'ada@xn--bcher-kva.example'")
            .await;
        assert_eq!(stored, 1);

        for email in ["ada@b\u{FC}cher.example", "ADA@BU\u{308}CHER.EXAMPLE", "ada@xn--bcher-kva.example"] {
            let login = app
                .login_json(&json!({ "email": email, "password": GOOD_PASSWORD }))
                .await;
            assert_eq!(login.status(), 200, "{email:?}");
        }
        let form = app
            .login_form(&[("username", "ada@b\u{FC}cher.example"), ("password", GOOD_PASSWORD)])
            .await;
        assert_eq!(form.status(), 200);
        let again = signup_as(&app, "ada@xn--bcher-kva.example", "ada2").await;
        assert_eq!(again.status(), 409);
    }

    async fn a_look_alike_login_name_is_a_422_or_an_unknown_account(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(signup_as(&app, "uada@example.com", "uada").await.status(), 201);
        let hidden = app
            .login_json(&json!({ "email": "uada\u{200B}@example.com", "password": GOOD_PASSWORD }))
            .await;
        assert_eq!(hidden.status(), 401, "an unparsable address is an unknown account");
        let errors = validation_errors(
            app.login_json(&json!({ "email": "uada@example.com", "username": {}, "password": GOOD_PASSWORD }))
                .await,
        )
        .await;
        assert_eq!(errors, [("username".to_owned(), "string_type".to_owned())]);
    }

    async fn migrate_reports_stored_addresses_not_in_canonical_form(backend: Backend) {
        let app = spawn_app(backend).await;
        // Rows as the FastAPI system may have left them.
        let rows = [
            ("Ada@Example.com", "ada", false, false),
            ("ua\u{301}da@example.com", "decomposed", true, false),
            ("uada\u{200B}@example.com", "zwsp", false, true),
            ("bob@b\u{FC}cher.example", "ulabel", true, false),
            ("\u{FF35}ADA@example.com", "fullwidth", true, false),
            ("u\u{0430}da@example.com", "cyrillic", false, true),
            ("carol@example.com", "carol", false, false),
        ];
        let (mut changed, mut refused) = (Vec::new(), Vec::new());
        for (email, username, is_changed, is_refused) in rows {
            app.db
                .execute(
                    "INSERT INTO users (email, username, hashed_password, created_at, updated_at) \
                     VALUES ($1, $2, 'x', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')",
                    &[email, username],
                )
                .await;
            let id = app.db.scalar("SELECT max(id) FROM users").await;
            if is_changed {
                changed.push(id);
            }
            if is_refused {
                refused.push(id);
            }
        }

        let output = Command::new(env!("CARGO_BIN_EXE_cerego"))
            .arg("migrate")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", app.db.url())
            .env("JWT_SECRET_KEY", TEST_SECRET)
            .env("LOG_FORMAT", "json")
            .output()
            .expect("run cerego migrate");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{log}");
        let report: Value = log
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|entry| {
                entry["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("stored email addresses not in canonical form"))
            })
            .unwrap_or_else(|| panic!("no report in {log}"));
        assert_eq!(report["level"], "WARN");
        assert_eq!(report["changed"], json!(changed.len()), "{report}");
        assert_eq!(report["refused"], json!(refused.len()), "{report}");
        assert_eq!(report["changed_user_ids"], format!("{changed:?}"), "{report}");
        assert_eq!(report["refused_user_ids"], format!("{refused:?}"), "{report}");
        assert!(!log.contains("example.com"), "addresses are not logged: {log}");
        // Nothing was rewritten.
        let kept = app
            .db
            .scalar("SELECT count(*) FROM users WHERE email = 'ua\u{301}da@example.com'")
            .await;
        assert_eq!(kept, 1);
    }
}
