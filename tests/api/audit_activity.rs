//! `GET /auth/activity`: the caller's own events (those whose target is the caller), newest
//! first, with address and user agent of the caller's own requests but never an admin's
//! (`by_admin`), and nothing of another account's.
//!
//! These tests need the route (they fail with a 404 until it exists).

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_helpers::{id_of, spawn_admin_app};
use crate::audit_helpers::{activity_of, rows, walk};
use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD};

db_tests! {
    async fn activity_shows_only_my_events_and_hides_the_admin_s_address(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let (admin, _, _) = app.session_tagged("root", GOOD_PASSWORD, "admin-login").await;
        let root = id_of(&app.me_json(&admin).await);
        let ada = app.signup_tagged("ada", GOOD_PASSWORD, "ada-signup").await;
        let bob = app.signup_tagged("bob", GOOD_PASSWORD, "bob-signup").await;
        let (ada_token, _, _) = app.session_tagged("ada", GOOD_PASSWORD, "ada-login").await;
        app.login_tagged("ada", "not the password", "ada-wrong", 401).await;
        app.session_tagged("bob", GOOD_PASSWORD, "bob-login").await;
        app.login_tagged("bob", "not the password", "bob-wrong", 401).await;
        app.send_tagged(Method::DELETE, &format!("/admin/users/{ada}/sessions"), "admin-ends", Some(&admin), None, 204).await;
        app.send_tagged(Method::PUT, &format!("/admin/users/{ada}/roles/admin"), "admin-grants", Some(&admin), None, 204).await;
        let (ada_token2, _, _) = app.session_tagged("ada", GOOD_PASSWORD, "ada-again").await;
        assert_eq!(app.me(&ada_token).await.status(), 401, "ended by the admin");
        let all = rows(&app.db).await;

        for (viewer, token) in [(ada, ada_token2.clone()), (root, admin.clone())] {
            let want: Vec<Value> = all.iter().rev().filter(|r| r.target_user_id == Some(viewer)).map(|r| activity_of(r, viewer)).collect();
            let (items, _) = walk(&app, "/auth/activity?", &token, 20).await;
            assert_eq!(items, want, "user {viewer}");
        }
        let (items, _) = walk(&app, "/auth/activity?", &ada_token2, 20).await;
        let keys: Vec<&String> = items[0].as_object().expect("object").keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, ["by_admin", "details", "event", "id", "ip", "occurred_at", "outcome", "user_agent"]);
        let by_admin: Vec<&Value> = items.iter().filter(|i| i["by_admin"] == json!(true)).collect();
        assert_eq!(by_admin.len(), 2, "{items:?}");
        for item in by_admin {
            assert_eq!((&item["ip"], &item["user_agent"]), (&Value::Null, &Value::Null), "{item}");
        }
        let own = items.iter().find(|i| i["event"] == "auth.login_failed").expect("the wrong password");
        assert_eq!(own["ip"], "127.0.0.1");
        assert_eq!(own["user_agent"], crate::audit_helpers::agent("ada-wrong"));
        assert_eq!(own["by_admin"], json!(false));
        let ids_of_bob: Vec<i64> = all.iter().filter(|r| r.target_user_id == Some(bob)).map(|r| r.id).collect();
        assert!(items.iter().all(|i| !ids_of_bob.contains(&i["id"].as_i64().expect("id"))));
    }

    async fn activity_pages_and_limits(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let ada = id_of(&app.create_user("ada").await);
        for n in 0..24 {
            app.login_tagged("ada", "not the password", &format!("wrong-{n}"), 401).await;
        }
        let token = app.token_for("ada").await;
        let all = rows(&app.db).await;
        let want: Vec<Value> = all.iter().rev().filter(|r| r.target_user_id == Some(ada)).map(|r| activity_of(r, ada)).collect();
        assert_eq!(want.len(), 2 + 24 + 1);

        let first = app.get_authed("/auth/activity", &token).await;
        assert_eq!(first.status(), 200);
        let first: Value = first.json().await.expect("json");
        assert_eq!(first["items"].as_array().map(Vec::len), Some(20), "20 by default");
        assert!(first["next_cursor"].is_string());
        for limit in [1, 5, 20, 100] {
            let (items, _) = walk(&app, &format!("/auth/activity?limit={limit}"), &token, limit).await;
            assert_eq!(items, want, "limit {limit}");
        }
        for query in ["limit=0", "limit=101", "limit=x", "cursor=not-a-cursor"] {
            let response = app.get_authed(&format!("/auth/activity?{query}"), &token).await;
            assert_eq!(response.status(), 422, "{query}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["detail"][0]["loc"][0], "query", "{body}");
        }
        assert_eq!(app.get("/auth/activity").await.status(), 401);
    }
}
