use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{
    Backend, GOOD_PASSWORD, TEST_SECRET, assert_detail, spawn_app, validation_errors,
};

/// Made by Python's bcrypt 5.0 (`bcrypt.hashpw(b"python-made secret 1", bcrypt.gensalt(12))`),
/// as the FastAPI system stores it.
const PYTHON_HASH: &str = "$2b$12$hAK2LFmE41dHYcAIWglcSeKL2w.bF5Ka0D85u8qKuE/QxRPOEXNgq";
const PYTHON_PASSWORD: &str = "python-made secret 1";

async fn assert_token_response(response: reqwest::Response, user_id: i64) {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1800);
    let token = body["access_token"].as_str().expect("token");
    let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub", "iat"]);
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(TEST_SECRET.as_bytes()),
        &validation,
    )
    .expect("a standard JWT library verifies the token with the secret")
    .claims;
    assert_eq!(claims["sub"], user_id.to_string());
    assert_eq!(
        claims["roles"],
        json!(["user"]),
        "the roles claim, for other services"
    );
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert_eq!(exp - iat, 1800);
}

async fn assert_bad_login(response: reqwest::Response) {
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_detail(response, 401, "Incorrect username or password").await;
}

db_tests! {
    async fn login_by_email_returns_a_verifiable_bearer_token(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.create_user("ada").await;

        let response = app
            .login_json(&json!({ "email": "ADA@example.com ", "password": GOOD_PASSWORD }))
            .await;

        assert_token_response(response, user["id"].as_i64().expect("id")).await;
    }

    async fn login_by_username_ignores_its_case(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.create_user("Ada_L").await;

        let response = app
            .login_json(&json!({ "username": "ada_l", "password": GOOD_PASSWORD }))
            .await;

        assert_token_response(response, user["id"].as_i64().expect("id")).await;
    }

    async fn the_oauth2_password_form_accepts_a_username_or_an_email(backend: Backend) {
        let app = spawn_app(backend).await;
        let id = app.create_user("ada").await["id"].as_i64().expect("id");

        let by_name = app
            .login_form(&[("grant_type", "password"), ("username", "ada"), ("password", GOOD_PASSWORD)])
            .await;
        assert_token_response(by_name, id).await;
        let by_email = app
            .login_form(&[("username", "ada@example.com"), ("password", GOOD_PASSWORD)])
            .await;
        assert_token_response(by_email, id).await;
        let other_grant = app
            .login_form(&[("grant_type", "client_credentials"), ("username", "ada"), ("password", GOOD_PASSWORD)])
            .await;
        let errors = validation_errors(other_grant).await;
        assert_eq!(errors, [("grant_type".to_owned(), "string_pattern_mismatch".to_owned())]);
    }

    async fn wrong_password_and_unknown_account_get_the_same_401(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;

        let wrong = app.login_json(&json!({ "email": "ada@example.com", "password": "not the password" })).await;
        let unknown = app.login_json(&json!({ "email": "nobody@example.com", "password": GOOD_PASSWORD })).await;
        let unknown_name = app.login_form(&[("username", "nobody"), ("password", GOOD_PASSWORD)]).await;
        let not_an_email = app.login_json(&json!({ "email": "nobody", "password": GOOD_PASSWORD })).await;
        let too_long = app.login_json(&json!({ "email": "ada@example.com", "password": "x".repeat(100) })).await;
        let empty = app.login_json(&json!({ "username": "ada", "password": "" })).await;

        for response in [wrong, unknown, unknown_name, not_an_email, too_long, empty] {
            assert_bad_login(response).await;
        }
    }

    async fn missing_or_mistyped_login_fields_are_422(backend: Backend) {
        let app = spawn_app(backend).await;

        let nothing = validation_errors(app.login_json(&json!({})).await).await;
        assert_eq!(
            nothing,
            [("username".to_owned(), "missing".to_owned()), ("password".to_owned(), "missing".to_owned())]
        );
        let mistyped = validation_errors(app.login_json(&json!({ "email": 5, "password": true })).await).await;
        assert_eq!(
            mistyped,
            [("email".to_owned(), "string_type".to_owned()), ("password".to_owned(), "string_type".to_owned())]
        );
        let form = validation_errors(app.login_form(&[("username", "ada")]).await).await;
        assert_eq!(form, [("password".to_owned(), "missing".to_owned())]);
        let garbage = app
            .client
            .post(app.url("/auth/login"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("request");
        assert_eq!(validation_errors(garbage).await, [(String::new(), "json_invalid".to_owned())]);
    }

    async fn hashes_made_by_python_bcrypt_log_in_in_every_variant(backend: Backend) {
        let app = spawn_app(backend).await;
        let variants = [
            ("py2b", PYTHON_HASH.to_owned()),
            ("py2a", PYTHON_HASH.replacen("$2b$", "$2a$", 1)),
            ("py2y", PYTHON_HASH.replacen("$2b$", "$2y$", 1)),
        ];
        for (name, hash) in &variants {
            let email = format!("{name}@example.com");
            app.db
                .execute(
                    "INSERT INTO users (email, username, hashed_password, created_at, updated_at) \
                     VALUES ($1, $2, $3, '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')",
                    &[&email, name, hash],
                )
                .await;
        }

        for (name, _) in &variants {
            let ok = app.login_form(&[("username", name), ("password", PYTHON_PASSWORD)]).await;
            assert_eq!(ok.status(), 200, "{name}");
            let wrong = app.login_form(&[("username", name), ("password", "python-made secret 2")]).await;
            assert_bad_login(wrong).await;
        }
    }
}

/// A users table as the FastAPI system's SQLAlchemy model creates it (SERIAL id, naive
/// timestamps, nullable columns, case-sensitive unique indexes) is adopted in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_table_from_the_fastapi_system_is_adopted_and_its_users_log_in() {
    if crate::helpers::postgres_url().is_none() {
        return;
    }
    let db = crate::helpers::TestDb::create(Backend::Postgres).await;
    db.execute(
        "CREATE TABLE users (id SERIAL PRIMARY KEY, email VARCHAR UNIQUE, username VARCHAR UNIQUE, \
         hashed_password VARCHAR, created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(), \
         updated_at TIMESTAMP WITHOUT TIME ZONE)",
        &[],
    )
    .await;
    db.execute(
        "INSERT INTO users (email, username, hashed_password, created_at) \
         VALUES ($1, $2, $3, '2024-05-01 12:00:00')",
        &["legacy@example.com", "legacy", PYTHON_HASH],
    )
    .await;
    let url = db.url();
    let app = crate::helpers::spawn_on(db, crate::helpers::test_settings(&url)).await;

    let login = app
        .login_form(&[("username", "legacy"), ("password", PYTHON_PASSWORD)])
        .await;
    assert_eq!(login.status(), 200);
    let token = login.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let me: Value = app.me(&token).await.json().await.expect("json");
    assert_eq!(me["username"], "legacy");
    assert_eq!(me["created_at"], "2024-05-01T12:00:00.000000Z");
    assert_eq!(
        me["updated_at"], "2024-05-01T12:00:00.000000Z",
        "a missing updated_at takes created_at"
    );
    let taken = app
        .signup("LEGACY@example.com", "newcomer", GOOD_PASSWORD)
        .await;
    assert_detail(taken, 409, "Email already registered").await;
    assert_eq!(
        app.signup("new@example.com", "newcomer", GOOD_PASSWORD)
            .await
            .status(),
        201
    );
}

db_tests! {
    async fn an_account_whose_stored_hash_is_not_bcrypt_fails_like_a_wrong_password(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        let foreign = [
            (
                "$pbkdf2-sha256$29000$N2bsnTNmrFWqFeI8J4Rwbg$Zhb2XoUBvNsCYOnk.Ny8T3GmYZKx8WOG5qvQWHqJGGU",
                "pbkdf2-sha256",
            ),
            ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "argon2id"),
            // Even the password itself stored in plain text does not let it in.
            (GOOD_PASSWORD, "none"),
        ];

        for (stored, _) in foreign {
            app.db
                .execute("UPDATE users SET hashed_password = $1 WHERE username = 'ada'", &[stored])
                .await;
            let response = app
                .login_json(&json!({ "username": "ada", "password": GOOD_PASSWORD }))
                .await;
            assert_bad_login(response).await;
        }

        let metrics = app.get("/metrics").await.text().await.expect("text");
        for (_, scheme) in foreign {
            let line = format!("cerego_password_hash_unsupported_total{{scheme=\"{scheme}\"}} 1\n");
            assert!(metrics.contains(&line), "{line} in {metrics}");
        }
        // Each paid the dummy verification, as a wrong password does.
        let verified = "cerego_password_hash_duration_seconds_count{operation=\"verify\"} 3\n";
        assert!(metrics.contains(verified), "{metrics}");
        assert!(metrics.contains("cerego_logins_total{outcome=\"failure\"} 3\n"), "{metrics}");
    }

    async fn a_present_field_of_the_wrong_type_is_a_422_even_when_another_field_is_used(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        let unused_username = app
            .login_json(&json!({ "email": "ada@example.com", "username": {}, "password": GOOD_PASSWORD }))
            .await;
        assert_eq!(
            validation_errors(unused_username).await,
            [("username".to_owned(), "string_type".to_owned())]
        );
        let mistyped_grant = app
            .login_json(&json!({ "username": "ada", "password": GOOD_PASSWORD, "grant_type": 1 }))
            .await;
        assert_eq!(
            validation_errors(mistyped_grant).await,
            [("grant_type".to_owned(), "string_type".to_owned())]
        );
        // Unknown extra fields stay ignored, and a null optional field counts as absent.
        let extra = app
            .login_json(&json!({
                "email": "ada@example.com", "username": null, "password": GOOD_PASSWORD, "remember": {}
            }))
            .await;
        assert_eq!(extra.status(), 200);
        let null_email = app
            .login_json(&json!({ "email": null, "username": "ada", "password": GOOD_PASSWORD }))
            .await;
        assert_eq!(null_email.status(), 200);
    }
}
