//! `/admin/roles` and the grants `/admin/users/{id}/roles/{role}`: create, list, update, delete;
//! the built-in roles; bad bodies; unknown users and roles.

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_helpers::{PERMISSIONS, id_of, spawn_admin_app};
use crate::db_tests;
use crate::helpers::{Backend, TestApp, assert_detail, validation_errors};

/// The message of a 422 for a permission that does not exist.
const ENUM_MESSAGE: &str = "Input should be 'users:read', 'users:write', 'users:delete', \
    'sessions:revoke', 'roles:read', 'roles:write' or 'audit:read'";

async fn roles(app: &TestApp, token: &str) -> Value {
    app.admin_get("/admin/roles", token).await
}

fn names(roles: &Value) -> Vec<&str> {
    roles
        .as_array()
        .unwrap_or_else(|| panic!("a list: {roles}"))
        .iter()
        .map(|role| role["name"].as_str().expect("name"))
        .collect()
}

db_tests! {
    /// The built-in roles as listed; a custom role created (repeats merged, permissions in their
    /// fixed order), listed by name, replaced, deleted; unknown names 404.
    async fn a_custom_role_is_created_listed_replaced_and_deleted(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;

        let listed = roles(&app, &admin).await;
        assert_eq!(
            listed,
            json!([
                { "name": "admin", "description": listed[0]["description"], "permissions": PERMISSIONS, "builtin": true },
                { "name": "user", "description": listed[1]["description"], "permissions": [], "builtin": true },
            ])
        );
        assert!(listed[0]["description"].is_string() && listed[1]["description"].is_string());

        let body = json!({
            "name": "support",
            "description": "Helpdesk",
            "permissions": ["sessions:revoke", "users:read", "sessions:revoke"],
        });
        let created = app.call(Method::POST, "/admin/roles", Some(&admin), Some(&body)).await;
        assert_eq!(created.status(), 201);
        let support = json!({
            "name": "support",
            "description": "Helpdesk",
            "permissions": ["users:read", "sessions:revoke"],
            "builtin": false,
        });
        assert_eq!(created.json::<Value>().await.expect("json"), support);
        app.create_role(&admin, "billing", &[]).await;
        let listed = roles(&app, &admin).await;
        assert_eq!(names(&listed), ["admin", "billing", "support", "user"]);
        assert_eq!(listed[2], support);

        let body = json!({ "permissions": ["roles:read"] });
        let replaced = app.call(Method::PUT, "/admin/roles/support", Some(&admin), Some(&body)).await;
        assert_eq!(replaced.status(), 200);
        let support = json!({ "name": "support", "description": "", "permissions": ["roles:read"], "builtin": false });
        assert_eq!(replaced.json::<Value>().await.expect("json"), support);
        assert_eq!(roles(&app, &admin).await[2], support);

        let deleted = app.call(Method::DELETE, "/admin/roles/support", Some(&admin), None).await;
        assert_eq!(deleted.status(), 204);
        assert_eq!(names(&roles(&app, &admin).await), ["admin", "billing", "user"]);
        for (method, body) in [(Method::DELETE, None), (Method::PUT, Some(json!({ "permissions": [] })))] {
            let response = app.call(method.clone(), "/admin/roles/support", Some(&admin), body.as_ref()).await;
            assert_detail(response, 404, "Role not found").await;
            let response = app.call(method, "/admin/roles/Not%20A%20Name", Some(&admin), body.as_ref()).await;
            assert_detail(response, 404, "Role not found").await;
        }
    }

    /// `admin` and `user` cannot be created again, replaced or deleted; nor can a custom role be
    /// created twice.
    async fn built_in_roles_cannot_be_changed(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        app.create_role(&admin, "support", &["users:read"]).await;
        let before = roles(&app, &admin).await;

        for name in ["admin", "user", "support"] {
            let body = json!({ "name": name, "permissions": [] });
            let response = app.call(Method::POST, "/admin/roles", Some(&admin), Some(&body)).await;
            assert_detail(response, 409, "Role already exists").await;
        }
        for name in ["admin", "user"] {
            let path = format!("/admin/roles/{name}");
            let body = json!({ "permissions": [] });
            let response = app.call(Method::PUT, &path, Some(&admin), Some(&body)).await;
            assert_detail(response, 409, "Built-in roles cannot be changed").await;
            let response = app.call(Method::DELETE, &path, Some(&admin), None).await;
            assert_detail(response, 409, "Built-in roles cannot be changed").await;
        }

        assert_eq!(roles(&app, &admin).await, before, "nothing changed");
        assert_eq!(app.me_json(&admin).await["is_admin"], json!(true));
    }

    /// Unknown permissions, a permission list that is not a list of strings, a bad name and an
    /// over-long description are 422s naming the field, and create nothing.
    async fn bad_role_bodies_are_422(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let post = |body: Value| {
            let (app, admin) = (&app, &admin);
            async move { app.call(Method::POST, "/admin/roles", Some(admin), Some(&body)).await }
        };

        let response = post(json!({ "name": "support", "permissions": ["users:read", "users:fly"] })).await;
        assert_eq!(response.status(), 422);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["detail"][0]["loc"], json!(["body", "permissions"]), "{body}");
        assert_eq!(body["detail"][0]["type"], "enum", "{body}");
        assert_eq!(body["detail"][0]["msg"], ENUM_MESSAGE, "{body}");

        let errors = validation_errors(post(json!({ "name": "support", "permissions": "users:read" })).await).await;
        assert_eq!(errors, [("permissions".to_owned(), "list_type".to_owned())]);
        let errors = validation_errors(post(json!({ "name": "support", "permissions": [1] })).await).await;
        assert_eq!(errors, [("permissions".to_owned(), "string_type".to_owned())]);
        let errors = validation_errors(post(json!({ "name": "Not A Name", "permissions": [] })).await).await;
        assert_eq!(errors, [("name".to_owned(), "string_pattern_mismatch".to_owned())]);
        let long = json!({ "name": "support", "description": "x".repeat(501), "permissions": [] });
        let errors = validation_errors(post(long).await).await;
        assert_eq!(errors, [("description".to_owned(), "string_too_long".to_owned())]);

        let body = json!({ "permissions": ["users:fly"] });
        app.create_role(&admin, "billing", &[]).await;
        let response = app.call(Method::PUT, "/admin/roles/billing", Some(&admin), Some(&body)).await;
        assert_eq!(response.status(), 422);
        assert_eq!(names(&roles(&app, &admin).await), ["admin", "billing", "user"]);
    }

    /// Grants and revocations are idempotent 204s; an unknown user is 404 before an unknown role;
    /// deleting a role takes it from its holders.
    async fn grants_are_idempotent_and_unknown_users_and_roles_are_404(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let id = id_of(&app.create_user("ada").await);
        let token = app.token_for("ada").await;
        app.create_role(&admin, "support", &["users:read"]).await;

        assert_eq!(app.grant(&admin, id, "support").await.status(), 204);
        assert_eq!(app.grant(&admin, id, "support").await.status(), 204, "again");
        assert_eq!(app.me_json(&token).await["roles"], json!(["support", "user"]));
        assert_eq!(app.revoke(&admin, id, "support").await.status(), 204);
        assert_eq!(app.revoke(&admin, id, "support").await.status(), 204, "again");
        assert_eq!(app.me_json(&token).await["roles"], json!(["user"]));

        assert_detail(app.grant(&admin, id, "nope").await, 404, "Role not found").await;
        assert_detail(app.revoke(&admin, id, "nope").await, 404, "Role not found").await;
        assert_detail(app.grant(&admin, id, "NOPE!").await, 404, "Role not found").await;
        assert_detail(app.grant(&admin, 999_999, "nope").await, 404, "User not found").await;
        assert_detail(app.grant(&admin, 999_999, "support").await, 404, "User not found").await;
        assert_detail(app.revoke(&admin, 999_999, "support").await, 404, "User not found").await;

        assert_eq!(app.grant(&admin, id, "support").await.status(), 204);
        let deleted = app.call(Method::DELETE, "/admin/roles/support", Some(&admin), None).await;
        assert_eq!(deleted.status(), 204);
        assert_eq!(app.me_json(&token).await["roles"], json!(["user"]), "the grant went with the role");
    }
}
