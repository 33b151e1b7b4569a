//! Helpers for the authorization and admin API tests: an app started with an admin account
//! (`ADMIN_*`), requests with a bearer token, roles and their holders.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cerego::config::{AdminAccount, Settings};
use cerego::domain::{Email, NewPassword, NewUser, Username};
use reqwest::{Method, Response};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Backend, GOOD_PASSWORD, TestApp, spawn_app_with};

/// `ADMIN_EMAIL` of the apps [`spawn_admin_app`] starts.
pub const ADMIN_EMAIL: &str = "root@example.com";
/// `ADMIN_USERNAME` of the apps [`spawn_admin_app`] starts (its password: [`GOOD_PASSWORD`]).
pub const ADMIN_USERNAME: &str = "root";

/// Every permission, in the order of `Permission::ALL` (the order a role's JSON lists them).
pub const PERMISSIONS: [&str; 7] = [
    "users:read",
    "users:write",
    "users:delete",
    "sessions:revoke",
    "roles:read",
    "roles:write",
    "audit:read",
];

/// The settings' admin account, as `ADMIN_EMAIL`, `ADMIN_USERNAME` and `ADMIN_PASSWORD` give it.
pub fn admin_account(email: &str, username: &str, password: &str) -> AdminAccount {
    AdminAccount {
        account: NewUser {
            email: Email::parse(email).expect("a valid ADMIN_EMAIL"),
            username: Username::parse(username).expect("a valid ADMIN_USERNAME"),
        },
        password: NewPassword::parse(SecretString::from(password), &[username, email])
            .expect("a valid ADMIN_PASSWORD"),
    }
}

/// Sets the admin account [`ADMIN_EMAIL`] / [`ADMIN_USERNAME`] / [`GOOD_PASSWORD`].
pub fn with_admin(settings: &mut Settings) {
    settings.admin = Some(admin_account(ADMIN_EMAIL, ADMIN_USERNAME, GOOD_PASSWORD));
}

/// Starts the app with the admin account of [`with_admin`] and no rate limits (the admin tests
/// sign up and log in far more accounts than one address may).
pub async fn spawn_admin_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |settings| {
        with_admin(settings);
        settings.limits.enabled = false;
    })
    .await
}

/// The claims of a JWT, unverified.
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// The `id` of a user as JSON (sign-up answer, `AdminUser`).
pub fn id_of(user: &Value) -> i64 {
    user["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {user}"))
}

impl TestApp {
    /// An access token of the bootstrapped admin.
    pub async fn admin_token(&self) -> String {
        self.token_for(ADMIN_USERNAME).await
    }

    /// A request with an optional bearer token and an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request")
    }

    /// `GET path` with `token`, asserting a 200; the JSON body.
    pub async fn admin_get(&self, path: &str, token: &str) -> Value {
        let response = self.call(Method::GET, path, Some(token), None).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("json")
    }

    /// `POST /admin/roles` of a custom role holding `permissions`, asserting a 201.
    pub async fn create_role(&self, token: &str, name: &str, permissions: &[&str]) -> Value {
        let body = json!({ "name": name, "permissions": permissions });
        let response = self
            .call(Method::POST, "/admin/roles", Some(token), Some(&body))
            .await;
        assert_eq!(response.status(), 201, "POST /admin/roles {name}");
        response.json().await.expect("json")
    }

    /// `PUT /admin/users/{id}/roles/{role}` with `token`.
    pub async fn grant(&self, token: &str, id: i64, role: &str) -> Response {
        let path = format!("/admin/users/{id}/roles/{role}");
        self.call(Method::PUT, &path, Some(token), None).await
    }

    /// `DELETE /admin/users/{id}/roles/{role}` with `token`.
    pub async fn revoke(&self, token: &str, id: i64, role: &str) -> Response {
        let path = format!("/admin/users/{id}/roles/{role}");
        self.call(Method::DELETE, &path, Some(token), None).await
    }

    /// `PATCH /admin/users/{id}` with `body`.
    pub async fn patch_user(&self, token: &str, id: i64, body: &Value) -> Response {
        let path = format!("/admin/users/{id}");
        self.call(Method::PATCH, &path, Some(token), Some(body))
            .await
    }

    /// Signs up `username`, gives it `role` (with `admin_token`), logs it in; its id and access
    /// token.
    pub async fn user_with_role(
        &self,
        admin_token: &str,
        username: &str,
        role: &str,
    ) -> (i64, String) {
        let id = id_of(&self.create_user(username).await);
        let granted = self.grant(admin_token, id, role).await;
        assert_eq!(granted.status(), 204, "PUT role {role} on {username}");
        (id, self.token_for(username).await)
    }

    /// `/auth/me` of `token`, asserting a 200.
    pub async fn me_json(&self, token: &str) -> Value {
        let response = self.me(token).await;
        assert_eq!(response.status(), 200, "/auth/me");
        response.json().await.expect("json")
    }
}

/// Asserts a 422 whose entries are all at `loc: ["query", name]`; their `(type, msg)` pairs.
pub async fn query_errors(response: Response, name: &str) -> Vec<(String, String)> {
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json");
    body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("detail is a list: {body}"))
        .iter()
        .map(|entry| {
            assert_eq!(entry["loc"], json!(["query", name]), "{body}");
            let text = |key: &str| entry[key].as_str().expect(key).to_owned();
            (text("type"), text("msg"))
        })
        .collect()
}
