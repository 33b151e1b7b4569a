//! `GET /auth/me`: the token's user, and every way a token is refused, with the
//! `WWW-Authenticate` challenge that tells the client what to do next.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{Backend, TEST_SECRET, TestApp, assert_detail, spawn_app};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn mint(alg: jsonwebtoken::Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// `WWW-Authenticate` on a token that is malformed, forged or otherwise refused.
pub const INVALID: &str =
    r#"Bearer error="invalid_token", error_description="The access token is invalid""#;
/// `WWW-Authenticate` on a genuine token past its `exp`.
pub const EXPIRED: &str =
    r#"Bearer error="invalid_token", error_description="The access token expired""#;
/// `WWW-Authenticate` on a genuine token whose session (or user) is gone.
pub const SESSION_ENDED: &str =
    r#"Bearer error="invalid_token", error_description="The session has ended""#;

/// Asserts `GET /auth/me` with `token` is a 401 with the usual body and `challenge`.
pub async fn assert_rejected_with(app: &TestApp, token: &str, challenge: &str, why: &str) {
    let response = app.me(token).await;
    assert_eq!(response.status(), 401, "{why}");
    assert_eq!(response.headers()["www-authenticate"], challenge, "{why}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({ "detail": "Could not validate credentials" }),
        "{why}"
    );
}

async fn assert_rejected(app: &TestApp, token: &str, why: &str) {
    assert_rejected_with(app, token, INVALID, why).await;
}

db_tests! {
    async fn me_returns_the_tokens_user(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.create_user("ada").await;
        let token = app.token_for("ada").await;

        let response = app.me(&token).await;

        assert_eq!(response.status(), 200);
        let me: Value = response.json().await.expect("json");
        assert_eq!(me, user);
    }

    async fn me_without_a_bearer_token_is_401(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        let token = app.token_for("ada").await;

        let none = app.get("/auth/me").await;
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        assert_detail(none, 401, "Could not validate credentials").await;
        for header in [format!("Basic {token}"), token.clone(), "Bearer".to_owned(), "Bearer   ".to_owned()] {
            let response = app
                .client
                .get(app.url("/auth/me"))
                .header("authorization", header.as_str())
                .send()
                .await
                .expect("request");
            // No bearer credentials sent: no error code (RFC 6750 §3.1).
            assert_eq!(response.headers()["www-authenticate"], "Bearer", "{header}");
            assert_detail(response, 401, "Could not validate credentials").await;
        }
    }

    async fn me_refuses_every_kind_of_bad_token(backend: Backend) {
        let app = spawn_app(backend).await;
        let id = app.create_user("ada").await["id"].as_i64().expect("id").to_string();
        let valid = app.token_for("ada").await;
        let hs256 = jsonwebtoken::Algorithm::HS256;
        let [header, payload, signature]: [&str; 3] =
            valid.split('.').collect::<Vec<_>>().try_into().expect("three parts");
        let issued: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64"))
            .expect("claims");
        let sid = issued["sid"].as_str().expect("sid is a string").to_owned();
        let claims = json!({ "sub": id, "sid": sid, "jti": "j", "iat": now(), "exp": now() + 600 });

        assert_rejected(&app, "not-a-jwt", "malformed").await;
        assert_rejected(&app, &format!("{header}.{payload}.{}", "A".repeat(43)), "bad signature").await;
        assert_rejected(&app, &mint(hs256, "another-secret-of-at-least-32-bytes!!", &claims), "other key").await;
        assert_rejected(&app, &mint(jsonwebtoken::Algorithm::HS384, TEST_SECRET, &claims), "HS384").await;
        let none = format!("{}.{payload}.", b64(&json!({ "alg": "none", "typ": "JWT" })));
        assert_rejected(&app, &none, "alg none").await;
        let rs256 = format!("{}.{payload}.{signature}", b64(&json!({ "alg": "RS256", "typ": "JWT" })));
        assert_rejected(&app, &rs256, "RS256 header on an HMAC signature").await;
        let expired = json!({ "sub": id, "sid": sid, "jti": "j", "iat": now() - 7200, "exp": now() - 3600 });
        assert_rejected_with(&app, &mint(hs256, TEST_SECRET, &expired), EXPIRED, "expired").await;
        let no_exp = json!({ "sub": id, "sid": sid, "jti": "j", "iat": now() });
        assert_rejected(&app, &mint(hs256, TEST_SECRET, &no_exp), "no exp").await;
        let odd_sub = json!({ "sub": "ada", "sid": sid, "jti": "j", "iat": now(), "exp": now() + 600 });
        assert_rejected(&app, &mint(hs256, TEST_SECRET, &odd_sub), "sub not an id").await;
        let ghost = json!({ "sub": "999999", "sid": sid, "jti": "j", "iat": now(), "exp": now() + 600 });
        assert_rejected_with(&app, &mint(hs256, TEST_SECRET, &ghost), SESSION_ENDED, "no such user").await;
        let no_session = json!({ "sub": id, "jti": "j", "iat": now(), "exp": now() + 600 });
        assert_rejected(&app, &mint(hs256, TEST_SECRET, &no_session), "no sid").await;
        let other_session = json!({ "sub": id, "sid": "999999", "jti": "j", "iat": now(), "exp": now() + 600 });
        assert_rejected_with(&app, &mint(hs256, TEST_SECRET, &other_session), SESSION_ENDED, "no such session").await;

        assert_eq!(app.me(&mint(hs256, TEST_SECRET, &claims)).await.status(), 200, "control");
    }

    async fn a_deleted_users_token_stops_working(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        let token = app.token_for("ada").await;
        assert_eq!(app.me(&token).await.status(), 200);

        app.db.execute("DELETE FROM users WHERE username = $1", &["ada"]).await;

        assert_rejected_with(&app, &token, SESSION_ENDED, "deleted user").await;
    }
}
