//! The cut-over from the FastAPI system (`JWT_ACCEPT_LEGACY_UNTIL`): until then, `GET /auth/me`
//! and no other route accepts the tokens that system minted (`{"sub", "exp"}`, HS256 with the
//! shared `JWT_SECRET_KEY`, no `sid`), whether `sub` is the id, the username or the e-mail;
//! from then on, or when the setting is unset, they are refused like any forged token.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::admin_helpers::{ADMIN_USERNAME, id_of, with_admin};
use crate::db_tests;
use crate::helpers::{
    Backend, TEST_SECRET, TestApp, spawn_app, spawn_app_with, spawn_app_with_clock,
};
use crate::me::{INVALID, assert_rejected_with};
use crate::signing_keys::{Alg, keys_generate, with_keys};

const ACCEPTED: &str = "cerego_legacy_tokens_accepted_total";

/// A token as the FastAPI system mints it: `{"sub": sub, "exp": exp}`, `alg` with `secret`.
fn legacy_with(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A FastAPI token for `sub`, valid for 25 minutes from `now` (the FastAPI system's tokens live
/// `JWT_ACCESS_TOKEN_EXPIRE_MINUTES`, 30 in the tests).
fn legacy(sub: &str, now: i64) -> String {
    legacy_with(
        Algorithm::HS256,
        TEST_SECRET,
        &json!({ "sub": sub, "exp": now + 1500 }),
    )
}

/// Accepts legacy tokens until an hour from now.
fn until_in_an_hour() -> Option<OffsetDateTime> {
    Some(OffsetDateTime::now_utc() + Duration::from_secs(3600))
}

/// `GET /auth/me` with `token`, asserting a 200; the user.
async fn me_ok(app: &TestApp, token: &str, why: &str) -> Value {
    let response = app.me(token).await;
    assert_eq!(response.status(), 200, "{why}");
    response.json().await.expect("json")
}

db_tests! {
    /// Before the cut-over a FastAPI token naming the user by id, username or e-mail gets the
    /// same `/auth/me` as the user's own cerego token, and each is counted; from the cut-over
    /// (the service's clock moved past it), the same unexpired tokens are refused, uncounted.
    async fn legacy_tokens_work_on_me_until_the_cut_over(backend: Backend) {
        let app = spawn_app_with_clock(backend, |settings| {
            settings.jwt.accept_legacy_until = until_in_an_hour();
        })
        .await;
        let user = app.create_user("ada").await;
        let expected = me_ok(&app, &app.token_for("ada").await, "cerego token").await;
        let now = app.clock_now();
        let subjects = [
            id_of(&user).to_string(),
            "ada".to_owned(),
            "ada@example.com".to_owned(),
        ];
        for (count, sub) in subjects.iter().enumerate() {
            assert_eq!(me_ok(&app, &legacy(sub, now), sub).await, expected, "sub {sub}");
            assert_eq!(app.metric(ACCEPTED).await, (count + 1) as f64);
        }

        app.advance_clock(Duration::from_secs(2 * 3600));
        let now = app.clock_now();
        for sub in &subjects {
            // Unexpired, but past the cut-over: refused all the same.
            assert_rejected_with(&app, &legacy(sub, now), INVALID, sub).await;
        }
        assert_eq!(app.metric(ACCEPTED).await, 3.0, "refusals are not counted");
    }

    /// A cut-over already past, or none set: refused.
    async fn legacy_tokens_are_refused_after_the_cut_over_or_without_one(backend: Backend) {
        let past = spawn_app_with(backend, |settings| {
            settings.jwt.accept_legacy_until =
                Some(OffsetDateTime::now_utc() - Duration::from_secs(60));
        })
        .await;
        past.create_user("ada").await;
        let now = past.clock_now();
        assert_rejected_with(&past, &legacy("ada", now), INVALID, "cut-over past").await;
        assert_eq!(past.metric(ACCEPTED).await, 0.0);
        drop(past);

        let unset = spawn_app(backend).await;
        let user = unset.create_user("ada").await;
        for sub in [id_of(&user).to_string(), "ada".to_owned()] {
            assert_rejected_with(&unset, &legacy(&sub, now), INVALID, "no cut-over set").await;
        }
        assert_eq!(unset.metric(ACCEPTED).await, 0.0);
    }

    /// The admin's FastAPI token works on `/auth/me` and nowhere else: not on the user's own
    /// routes, not on the admin API (which the admin's cerego token opens).
    async fn legacy_tokens_open_no_other_route(backend: Backend) {
        let app = spawn_app_with(backend, |settings| {
            with_admin(settings);
            settings.jwt.accept_legacy_until = until_in_an_hour();
        })
        .await;
        let token = legacy(ADMIN_USERNAME, app.clock_now());
        me_ok(&app, &token, "legacy on /auth/me").await;
        let cerego = app.admin_token().await;
        assert_eq!(app.call(Method::GET, "/admin/users", Some(&cerego), None).await.status(), 200);

        for (method, path) in [
            (Method::GET, "/auth/sessions"),
            (Method::GET, "/auth/activity"),
            (Method::GET, "/admin/users"),
            (Method::GET, "/admin/roles"),
            (Method::GET, "/admin/audit-events"),
            (Method::POST, "/auth/logout"),
            (Method::POST, "/auth/logout-all"),
        ] {
            let response = app.call(method.clone(), path, Some(&token), None).await;
            assert_eq!(response.status(), 401, "{method} {path}");
            assert_eq!(response.headers()["www-authenticate"], INVALID, "{method} {path}");
        }
        assert_eq!(app.metric(ACCEPTED).await, 1.0, "only the /auth/me request counted");
        me_ok(&app, &token, "still works on /auth/me").await;
    }

    /// Tokens that are not what the FastAPI system mints with the shared secret, or no longer
    /// valid, or naming nobody: refused, uncounted.
    async fn expired_forged_or_unknown_legacy_tokens_are_refused(backend: Backend) {
        let app = spawn_app_with(backend, |settings| {
            settings.jwt.accept_legacy_until = until_in_an_hour();
        })
        .await;
        let user = app.create_user("ada").await;
        let now = app.clock_now();
        let sign = |claims: Value| legacy_with(Algorithm::HS256, TEST_SECRET, &claims);
        let other_secret = "another-secret-key-with-at-least-32-bytes";
        let mut kid = Header::new(Algorithm::HS256);
        kid.kid = Some("k1".to_owned());
        let cases = [
            ("expired an hour ago", sign(json!({ "sub": "ada", "exp": now - 3600 }))),
            // Longer-lived than any access token (a FastAPI reset link's token, say).
            ("living a day", sign(json!({ "sub": "ada", "exp": now + 86_400 }))),
            ("living 31 minutes", sign(json!({ "sub": "ada", "exp": now + 31 * 60 + 31 }))),
            ("no exp", sign(json!({ "sub": "ada" }))),
            ("no sub", sign(json!({ "exp": now + 600 }))),
            ("empty sub", sign(json!({ "sub": "", "exp": now + 600 }))),
            ("numeric sub", sign(json!({ "sub": id_of(&user), "exp": now + 600 }))),
            ("with sid", sign(json!({ "sub": "ada", "sid": "1", "exp": now + 600 }))),
            ("unknown id", sign(json!({ "sub": "999999", "exp": now + 600 }))),
            ("unknown username", sign(json!({ "sub": "nobody", "exp": now + 600 }))),
            ("unknown e-mail", sign(json!({ "sub": "nobody@example.com", "exp": now + 600 }))),
            (
                "another secret",
                legacy_with(Algorithm::HS256, other_secret, &json!({ "sub": "ada", "exp": now + 600 })),
            ),
            (
                "HS512 where the secret signs HS256",
                legacy_with(Algorithm::HS512, TEST_SECRET, &json!({ "sub": "ada", "exp": now + 600 })),
            ),
            (
                "a kid",
                jsonwebtoken::encode(
                    &kid,
                    &json!({ "sub": "ada", "exp": now + 600 }),
                    &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
                )
                .expect("sign"),
            ),
        ];
        for (why, token) in cases {
            assert_rejected_with(&app, &token, INVALID, why).await;
        }
        assert_eq!(app.metric(ACCEPTED).await, 0.0);
        me_ok(&app, &legacy("ada", now), "control").await;
    }

    /// A disabled account's FastAPI token is refused, as its sessions are; enabled again, it
    /// works; deleted, refused.
    async fn legacy_tokens_of_disabled_or_deleted_accounts_are_refused(backend: Backend) {
        let app = spawn_app_with(backend, |settings| {
            with_admin(settings);
            settings.jwt.accept_legacy_until = until_in_an_hour();
            settings.limits.enabled = false;
        })
        .await;
        let admin = app.admin_token().await;
        let id = id_of(&app.create_user("bob").await);
        let token = legacy("bob", app.clock_now());
        me_ok(&app, &token, "enabled").await;

        let disable = |disabled: bool| {
            let admin = admin.clone();
            let app = &app;
            async move {
                let response = app.patch_user(&admin, id, &json!({ "disabled": disabled })).await;
                assert_eq!(response.status(), 200, "PATCH disabled {disabled}");
            }
        };
        disable(true).await;
        assert_rejected_with(&app, &token, INVALID, "disabled").await;
        let by_id = legacy(&id.to_string(), app.clock_now());
        assert_rejected_with(&app, &by_id, INVALID, "disabled, by id").await;
        disable(false).await;
        me_ok(&app, &token, "enabled again").await;

        let deleted = app
            .call(Method::DELETE, &format!("/admin/users/{id}"), Some(&admin), None)
            .await;
        assert_eq!(deleted.status(), 204);
        assert_rejected_with(&app, &token, INVALID, "deleted").await;
        assert_rejected_with(&app, &by_id, INVALID, "deleted, by id").await;
    }

    /// A numeric `sub` that is one account's id and another's username names neither: refused.
    /// Each account is still reachable by what names it alone.
    async fn a_sub_that_is_one_id_and_another_username_is_refused(backend: Backend) {
        let app = spawn_app_with(backend, |settings| {
            settings.jwt.accept_legacy_until = until_in_an_hour();
        })
        .await;
        app.create_user("first").await;
        // The next account gets id 500.
        app.db
            .run_sql(match backend {
                Backend::Sqlite => "UPDATE sqlite_sequence SET seq = 499 WHERE name = 'users'",
                Backend::Postgres => "ALTER TABLE users ALTER COLUMN id RESTART WITH 500",
            })
            .await;
        let x = app.create_user("xavier").await;
        assert_eq!(id_of(&x), 500);
        let y = app.create_user("500").await;
        let now = app.clock_now();

        assert_rejected_with(&app, &legacy("500", now), INVALID, "id 500 and username 500").await;
        assert_eq!(app.metric(ACCEPTED).await, 0.0);
        assert_eq!(me_ok(&app, &legacy("xavier", now), "x by name").await["id"], 500);
        let y_id = id_of(&y).to_string();
        assert_eq!(me_ok(&app, &legacy(&y_id, now), "y by id").await["username"], "500");
        assert_eq!(
            me_ok(&app, &legacy("500@example.com", now), "y by e-mail").await["username"],
            "500"
        );
    }

    /// Under EdDSA the FastAPI system's HS256 tokens (signed with `JWT_SECRET_KEY`) still work on
    /// `/auth/me` before the cut-over, while an HS256 token shaped like cerego's own (with `sid`)
    /// is refused: cerego signs with the key, not the secret.
    async fn legacy_hs256_tokens_work_under_eddsa(backend: Backend) {
        let keys = tempfile::tempdir().expect("tempdir");
        keys_generate(Alg::EdDsa, keys.path());
        let app = spawn_app_with(backend, |settings| {
            with_keys(settings, Alg::EdDsa, keys.path());
            settings.jwt.accept_legacy_until = until_in_an_hour();
        })
        .await;
        app.create_user("ada").await;
        let cerego = app.token_for("ada").await;
        let expected = me_ok(&app, &cerego, "EdDSA token").await;
        let now = app.clock_now();
        assert_eq!(me_ok(&app, &legacy("ada", now), "legacy HS256").await, expected);
        assert_eq!(app.metric(ACCEPTED).await, 1.0);

        let claims = crate::signing_keys::jwt_part(&cerego, 1);
        let hs256 = legacy_with(Algorithm::HS256, TEST_SECRET, &claims);
        assert_rejected_with(&app, &hs256, INVALID, "HS256 with sid under EdDSA").await;
        let response = app.get_authed("/auth/sessions", &legacy("ada", now)).await;
        assert_eq!(response.status(), 401);
    }

    /// Under HS384 (the FastAPI system's `JWT_ALGORITHM`, shared) legacy tokens are HS384.
    async fn legacy_tokens_follow_the_configured_hmac_algorithm(backend: Backend) {
        let app = spawn_app_with(backend, |settings| {
            settings.jwt.signing = cerego::config::Signing::Secret(Algorithm::HS384);
            settings.jwt.accept_legacy_until = until_in_an_hour();
        })
        .await;
        app.create_user("ada").await;
        let now = app.clock_now();
        let claims = json!({ "sub": "ada", "exp": now + 600 });
        me_ok(&app, &legacy_with(Algorithm::HS384, TEST_SECRET, &claims), "HS384").await;
        let hs256 = legacy_with(Algorithm::HS256, TEST_SECRET, &claims);
        assert_rejected_with(&app, &hs256, INVALID, "HS256 under HS384").await;
    }
}
