use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, assert_detail, spawn_app, validation_errors};

fn fields(errors: &[(String, String)]) -> Vec<&str> {
    errors.iter().map(|(field, _)| field.as_str()).collect()
}

db_tests! {
    async fn signup_returns_201_with_the_normalised_user_and_no_secret(backend: Backend) {
        let app = spawn_app(backend).await;

        let response = app.signup("  Ada.Lovelace@Example.COM ", "Ada_L", GOOD_PASSWORD).await;

        assert_eq!(response.status(), 201);
        let user: Value = response.json().await.expect("json");
        let object = user.as_object().expect("object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "created_at",
                "email",
                "email_verified",
                "id",
                "is_admin",
                "roles",
                "updated_at",
                "username"
            ]
        );
        assert_eq!(user["email_verified"], false);
        assert_eq!(user["is_admin"], false);
        assert_eq!(user["roles"], json!(["user"]));
        assert!(user["id"].as_i64().is_some_and(|id| id > 0));
        assert_eq!(user["email"], "ada.lovelace@example.com");
        assert_eq!(user["username"], "Ada_L");
        let created = OffsetDateTime::parse(user["created_at"].as_str().expect("str"), &Rfc3339)
            .expect("RFC 3339");
        OffsetDateTime::parse(user["updated_at"].as_str().expect("str"), &Rfc3339).expect("RFC 3339");
        assert!((OffsetDateTime::now_utc() - created).abs() < time::Duration::minutes(5));
    }

    async fn the_password_is_stored_only_as_a_bcrypt_hash(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;

        let hash = app.db.stored_hash("ada@example.com").await;

        assert!(hash.starts_with("$2b$04$"), "{hash}");
        assert_eq!(hash.len(), 60);
        assert!(!hash.contains(GOOD_PASSWORD));
    }

    async fn every_failing_field_is_listed_in_one_422(backend: Backend) {
        let app = spawn_app(backend).await;

        let response = app.signup("not-an-email", "x", "short").await;

        let errors = validation_errors(response).await;
        assert_eq!(
            errors,
            [
                ("email".to_owned(), "value_error.email".to_owned()),
                ("username".to_owned(), "string_too_short".to_owned()),
                ("password".to_owned(), "string_too_short".to_owned()),
            ]
        );
    }

    async fn each_email_rule_is_enforced(backend: Backend) {
        let app = spawn_app(backend).await;
        // 254 characters in all: a 64-byte local part (the most a mailbox may have) and a
        // 189-character domain of labels of at most 63.
        let domain = format!("{}.{}.{}.com", "b".repeat(63), "c".repeat(63), "d".repeat(57));
        let too_long = format!("{}@{domain}x", "a".repeat(64));
        let long_local = format!("{}@example.com", "a".repeat(65));
        let bad = ["", "ada", "ada@", "@example.com", "a@b@example.com", "ada@localhost",
            "ada@exa..mple.com", "ada lovelace@example.com", too_long.as_str(),
            long_local.as_str(), "a..b@example.com", ".ada@example.com", "a,b@example.com"];

        for email in bad {
            let errors = validation_errors(app.signup(email, "ada", GOOD_PASSWORD).await).await;
            assert_eq!(errors, [("email".to_owned(), "value_error.email".to_owned())], "{email:?}");
        }
        let longest = format!("{}@{domain}", "a".repeat(64));
        assert_eq!(longest.len(), 254);
        assert_eq!(app.signup(&longest, "ada", GOOD_PASSWORD).await.status(), 201);
    }

    async fn each_username_rule_is_enforced(backend: Backend) {
        let app = spawn_app(backend).await;
        let long = "a".repeat(33);
        let cases = [
            ("ab", "string_too_short"),
            (long.as_str(), "string_too_long"),
            ("_ada", "string_pattern_mismatch"),
            ("-ada", "string_pattern_mismatch"),
            ("ada lovelace", "string_pattern_mismatch"),
            ("ada@home", "string_pattern_mismatch"),
            ("adé", "string_pattern_mismatch"),
        ];

        for (username, kind) in cases {
            let errors = validation_errors(app.signup("ada@example.com", username, GOOD_PASSWORD).await).await;
            assert_eq!(errors, [("username".to_owned(), kind.to_owned())], "{username:?}");
        }
        for (i, ok) in ["abc", "A.b-c_9", &"z".repeat(32)].into_iter().enumerate() {
            let response = app.signup(&format!("u{i}@example.com"), ok, GOOD_PASSWORD).await;
            assert_eq!(response.status(), 201, "{ok}");
        }
    }

    async fn each_password_rule_is_enforced(backend: Backend) {
        let app = spawn_app(backend).await;
        let (ascii, euros) = ("x".repeat(73), "€".repeat(25));
        let cases = [
            ("seven77", "string_too_short"),
            (ascii.as_str(), "string_too_long"),
            (euros.as_str(), "string_too_long"),
            ("password1", "value_error.password_common"),
            ("BaseBall", "value_error.password_common"),
            ("Lovelace_1", "value_error.password_similar"),
            ("ADA@EXAMPLE.COM", "value_error.password_similar"),
        ];

        for (password, kind) in cases {
            let errors = validation_errors(app.signup("ada@example.com", "lovelace_1", password).await).await;
            assert_eq!(errors, [("password".to_owned(), kind.to_owned())], "{password:?}");
        }
        let at_limit = "€".repeat(24);
        assert_eq!(app.signup("ada@example.com", "lovelace_1", &at_limit).await.status(), 201);
        let login = app.login_json(&json!({ "username": "lovelace_1", "password": at_limit })).await;
        assert_eq!(login.status(), 200, "a 72-byte password logs in");
    }

    async fn missing_and_mistyped_fields_are_named(backend: Backend) {
        let app = spawn_app(backend).await;

        let missing = app.post_json("/auth/signup", &json!({})).await;
        let errors = validation_errors(missing).await;
        assert_eq!(fields(&errors), ["email", "username", "password"]);
        assert!(errors.iter().all(|(_, kind)| kind == "missing"));

        let mistyped = app
            .post_json("/auth/signup", &json!({"email": 1, "username": ["a"], "password": null}))
            .await;
        let errors = validation_errors(mistyped).await;
        assert_eq!(fields(&errors), ["email", "username", "password"]);
        assert!(errors.iter().all(|(_, kind)| kind == "string_type"));
    }

    async fn malformed_bodies_are_422s_about_the_body(backend: Backend) {
        let app = spawn_app(backend).await;
        let cases: [(&str, &str, &str); 4] = [
            ("application/json", "{\"email\": ", "json_invalid"),
            ("application/json", "[1, 2]", "model_attributes_type"),
            ("text/plain", "{}", "content_type"),
            ("application/x-www-form-urlencoded", "email=a", "content_type"),
        ];

        for (content_type, body, kind) in cases {
            let response = app
                .client
                .post(app.url("/auth/signup"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("request");
            let errors = validation_errors(response).await;
            assert_eq!(errors, [(String::new(), kind.to_owned())], "{content_type} {body}");
        }
    }

    async fn a_body_over_64_kib_is_refused_with_413(backend: Backend) {
        let app = spawn_app(backend).await;
        let huge = json!({ "email": "a@example.com", "username": "ada", "password": "x".repeat(70_000) });

        let response = app.post_json("/auth/signup", &huge).await;

        assert_detail(response, 413, "Request body too large").await;
    }

    async fn a_taken_email_is_409_whatever_its_case(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;

        let response = app.signup("ADA@Example.com", "someone_else", GOOD_PASSWORD).await;

        assert_detail(response, 409, "Email already registered").await;
    }

    async fn a_taken_username_is_409_whatever_its_case(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;

        let response = app.signup("other@example.com", "ADA", GOOD_PASSWORD).await;

        assert_detail(response, 409, "Username already taken").await;
    }

    async fn concurrent_duplicate_signups_create_exactly_one_account(backend: Backend) {
        let app = spawn_app(backend).await;
        let same_email = (0..20).map(|i| ("race@example.com".to_owned(), format!("racer{i}")));
        let same_name = (0..20).map(|i| (format!("r{i}@example.com"), "Runner".to_owned()));

        for bodies in [same_email.collect::<Vec<_>>(), same_name.collect()] {
            let mut tasks = tokio::task::JoinSet::new();
            for (email, username) in bodies {
                let (client, url) = (app.client.clone(), app.url("/auth/signup"));
                let body = json!({ "email": email, "username": username, "password": GOOD_PASSWORD });
                tasks.spawn(async move {
                    let response = client.post(url).json(&body).send().await.expect("request");
                    response.status().as_u16()
                });
            }
            let statuses = tasks.join_all().await;

            assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
            assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 19, "{statuses:?}");
        }
    }
}

db_tests! {
    async fn concurrent_signups_of_one_address_hash_once_and_the_rest_get_409(backend: Backend) {
        // A realistic cost: each hash takes long enough that the others arrive while it runs.
        let app = crate::helpers::spawn_app_with(backend, |s| s.bcrypt_cost = 10).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let (client, url) = (app.client.clone(), app.url("/auth/signup"));
            // Half name the address in another case: one normalised address all the same.
            let email = if i % 2 == 0 { "same@example.com" } else { "SAME@Example.com" };
            let body = json!({ "email": email, "username": format!("same{i}"), "password": GOOD_PASSWORD });
            tasks.spawn(async move {
                client.post(url).json(&body).send().await.expect("request").status().as_u16()
            });
        }
        let statuses = tasks.join_all().await;

        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 49, "{statuses:?}");
        let metrics = app.get("/metrics").await.text().await.expect("text");
        let hashed = "cerego_password_hash_duration_seconds_count{operation=\"hash\"} 1\n";
        assert!(metrics.contains(hashed), "one password hashed: {metrics}");
    }

    async fn signup_checks_the_type_of_every_documented_field_and_ignores_unknown_ones(backend: Backend) {
        let app = spawn_app(backend).await;
        let mistyped = app
            .post_json(
                "/auth/signup",
                &json!({ "email": "ada@example.com", "username": ["ada"], "password": GOOD_PASSWORD, "role": {} }),
            )
            .await;
        assert_eq!(
            validation_errors(mistyped).await,
            [("username".to_owned(), "string_type".to_owned())]
        );
        let extra = app
            .post_json(
                "/auth/signup",
                &json!({ "email": "ada@example.com", "username": "ada", "password": GOOD_PASSWORD, "role": {} }),
            )
            .await;
        assert_eq!(extra.status(), 201);
        let user: Value = extra.json().await.expect("json");
        assert!(user.get("role").is_none());
    }
}
