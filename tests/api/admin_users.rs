//! `/admin/users`: the admin view of an account, disabling, deleting, revoking sessions, and the
//! roles in `UserResponse` and the access token.

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_helpers::{ADMIN_USERNAME, id_of, jwt_claims, spawn_admin_app};
use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, assert_api_timestamp, assert_detail};

/// The keys of an `AdminUser`.
const ADMIN_USER_KEYS: [&str; 10] = [
    "created_at",
    "disabled",
    "email",
    "email_verified",
    "id",
    "is_admin",
    "last_login_at",
    "roles",
    "updated_at",
    "username",
];

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

db_tests! {
    /// The sign-up answer and `/auth/me` carry `is_admin` and `roles`; the access token's `roles`
    /// claim names the roles at login.
    async fn user_views_and_tokens_carry_the_roles(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;

        let ada = app.create_user("ada").await;
        assert_eq!(ada["is_admin"], json!(false), "{ada}");
        assert_eq!(ada["roles"], json!(["user"]), "{ada}");
        let token = app.token_for("ada").await;
        assert_eq!(jwt_claims(&token)["roles"], json!(["user"]));
        assert_eq!(app.me_json(&token).await, ada);

        let me = app.me_json(&admin).await;
        assert_eq!(me["is_admin"], json!(true), "{me}");
        assert_eq!(me["roles"], json!(["admin", "user"]), "{me}");
        assert_eq!(jwt_claims(&admin)["roles"], json!(["admin", "user"]));

        app.create_role(&admin, "support", &["users:read"]).await;
        app.create_role(&admin, "auditor", &["audit:read"]).await;
        assert_eq!(app.grant(&admin, id_of(&ada), "support").await.status(), 204);
        assert_eq!(app.grant(&admin, id_of(&ada), "auditor").await.status(), 204);
        let me = app.me_json(&token).await;
        assert_eq!(me["roles"], json!(["auditor", "support", "user"]), "sorted: {me}");
        assert_eq!(me["is_admin"], json!(false));
        let fresh = app.token_for("ada").await;
        assert_eq!(jwt_claims(&fresh)["roles"], json!(["auditor", "support", "user"]));
    }

    /// `GET /admin/users/{id}`: the `AdminUser` view, `last_login_at` set by a login; unknown
    /// ids 404, ids that are not positive integers 422.
    async fn an_account_is_shown_with_its_admin_fields(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let ada = app.create_user("ada").await;
        let path = format!("/admin/users/{}", id_of(&ada));

        let shown = app.admin_get(&path, &admin).await;
        assert_eq!(keys(&shown), ADMIN_USER_KEYS);
        for key in ["id", "email", "username", "created_at", "email_verified", "is_admin", "roles"] {
            assert_eq!(shown[key], ada[key], "{key}");
        }
        assert_eq!(shown["disabled"], json!(false));
        assert_eq!(shown["last_login_at"], Value::Null, "never logged in");

        app.token_for("ada").await;
        let shown = app.admin_get(&path, &admin).await;
        let at = assert_api_timestamp(&shown["last_login_at"]);
        assert!((time::OffsetDateTime::now_utc() - at).abs() < time::Duration::minutes(5));

        let root = app.admin_get(&format!("/admin/users/{}", id_of(&app.me_json(&admin).await)), &admin).await;
        assert_eq!(root["username"], ADMIN_USERNAME);
        assert_eq!(root["is_admin"], json!(true));
        assert_eq!(root["email_verified"], json!(true), "the operator vouches for the address");

        let missing = app.call(Method::GET, "/admin/users/999999", Some(&admin), None).await;
        assert_detail(missing, 404, "User not found").await;
        for bad in ["abc", "0", "-1", "1.5"] {
            let response = app.call(Method::GET, &format!("/admin/users/{bad}"), Some(&admin), None).await;
            assert_eq!(response.status(), 422, "{bad}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["detail"][0]["loc"], json!(["path", "id"]), "{bad}: {body}");
            assert_eq!(body["detail"][0]["type"], "int_parsing", "{bad}: {body}");
        }
    }

    /// Disabling ends every session at once and refuses the login (403 with the right password,
    /// the usual 401 with a wrong one) and the refresh; enabling lets the account log in again,
    /// while the revoked sessions stay revoked.
    async fn disable_ends_the_sessions_and_enable_lets_the_account_back_in(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let id = id_of(&app.create_user("ada").await);
        let (access, refresh) = app.login_pair("ada").await;
        let login = |password: &str| {
            let (app, body) = (&app, json!({ "username": "ada", "password": password }));
            async move { app.login_json(&body).await }
        };

        let response = app.patch_user(&admin, id, &json!({ "disabled": true })).await;
        assert_eq!(response.status(), 200);
        let shown: Value = response.json().await.expect("json");
        assert_eq!(shown["disabled"], json!(true), "{shown}");
        assert_eq!(keys(&shown), ADMIN_USER_KEYS);

        assert_eq!(app.me(&access).await.status(), 401, "the next request after a disable");
        assert_detail(login(GOOD_PASSWORD).await, 403, "Account disabled").await;
        assert_detail(login("not the password at all").await, 401, "Incorrect username or password").await;
        assert_eq!(app.refresh(&refresh).await.status(), 401);
        let again = app.patch_user(&admin, id, &json!({ "disabled": true })).await;
        assert_eq!(again.status(), 200, "disabling twice is a no-op");
        let unchanged = app.patch_user(&admin, id, &json!({})).await;
        assert_eq!(unchanged.status(), 200);
        assert_eq!(unchanged.json::<Value>().await.expect("json")["disabled"], json!(true));

        let response = app.patch_user(&admin, id, &json!({ "disabled": false })).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.expect("json")["disabled"], json!(false));
        assert_eq!(login(GOOD_PASSWORD).await.status(), 200, "enabled: login works again");
        assert_eq!(app.me(&access).await.status(), 401, "revoked sessions stay revoked");
        assert_eq!(app.refresh(&refresh).await.status(), 401);

        let bad = app.patch_user(&admin, id, &json!({ "disabled": "yes" })).await;
        assert_eq!(bad.status(), 422);
        let body: Value = bad.json().await.expect("json");
        assert_eq!(body["detail"][0]["type"], "bool_type", "{body}");
        let missing = app.patch_user(&admin, 999_999, &json!({ "disabled": true })).await;
        assert_detail(missing, 404, "User not found").await;
    }

    /// Deleting an account ends its tokens and frees its e-mail address and username.
    async fn delete_frees_the_email_and_ends_the_token(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let id = id_of(&app.create_user("ada").await);
        let (access, refresh) = app.login_pair("ada").await;
        let path = format!("/admin/users/{id}");

        let response = app.call(Method::DELETE, &path, Some(&admin), None).await;
        assert_eq!(response.status(), 204);

        assert_eq!(app.me(&access).await.status(), 401);
        assert_eq!(app.refresh(&refresh).await.status(), 401);
        assert_detail(app.call(Method::GET, &path, Some(&admin), None).await, 404, "User not found").await;
        assert_detail(app.call(Method::DELETE, &path, Some(&admin), None).await, 404, "User not found").await;
        let again = app.signup("ada@example.com", "ada", GOOD_PASSWORD).await;
        assert_eq!(again.status(), 201, "the address and the username are free");
        let again: Value = again.json().await.expect("json");
        assert_ne!(id_of(&again), id);
        app.token_for("ada").await;
    }

    /// `DELETE /admin/users/{id}/sessions` ends every session of the account, which may log in
    /// again.
    async fn revoking_sessions_ends_every_token_of_the_account(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let id = id_of(&app.create_user("ada").await);
        let (first, first_refresh) = app.login_pair("ada").await;
        let (second, _) = app.login_pair("ada").await;
        let before = app.metric("cerego_sessions_revoked_total{reason=\"admin\"}").await;

        let path = format!("/admin/users/{id}/sessions");
        assert_eq!(app.call(Method::DELETE, &path, Some(&admin), None).await.status(), 204);

        assert_eq!(app.me(&first).await.status(), 401);
        assert_eq!(app.me(&second).await.status(), 401);
        assert_eq!(app.refresh(&first_refresh).await.status(), 401);
        assert_eq!(app.me(&admin).await.status(), 200, "the admin's own session is another");
        let after = app.metric("cerego_sessions_revoked_total{reason=\"admin\"}").await;
        assert!((after - before - 2.0).abs() < f64::EPSILON, "{before} → {after}");
        let fresh = app.token_for("ada").await;
        assert_eq!(app.me(&fresh).await.status(), 200);
        let missing = app.call(Method::DELETE, "/admin/users/999999/sessions", Some(&admin), None).await;
        assert_detail(missing, 404, "User not found").await;
    }
}
