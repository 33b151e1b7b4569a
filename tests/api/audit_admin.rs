//! The audit trail of the admin API and of the admin account's bootstrap: the admin as actor,
//! the account as target, the role's facts in the details; nothing for a change that changes
//! nothing, and nothing at all for a refused request (409 last admin, 403, 404, 422, a
//! sign-up conflict).

use std::io::Write;
use std::process::Stdio;

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_helpers::{ADMIN_EMAIL, ADMIN_USERNAME, admin_account, id_of, spawn_admin_app};
use crate::audit_helpers::{Trail, assert_chain_intact, failure, rows, success};
use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestDb, spawn_app, spawn_on, test_settings};

/// A request that must be refused: method, path, bearer token, JSON body, status.
type Attempt<'a> = (Method, String, Option<&'a str>, Option<Value>, u16);

db_tests! {
    async fn admin_actions_record_the_admin_as_actor_and_the_account_as_target(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let db = &app.db;
        let (admin, _, session) = app.session_tagged(ADMIN_USERNAME, GOOD_PASSWORD, "admin-login").await;
        let root = id_of(&app.me_json(&admin).await);
        let mut trail = Trail::from_start();
        trail
            .expect(db, "start-up and the admin's login", &[
                success("admin.bootstrapped", "-").no_client().on(root).details(json!({ "created": true, "source": "environment" })),
                success("auth.login_succeeded", "admin-login").by(root).on(root).details(json!({ "session_id": session })),
            ])
            .await;
        let ada = app.signup_tagged("ada", GOOD_PASSWORD, "signup").await;
        app.session_tagged("ada", GOOD_PASSWORD, "ada-login").await;
        trail.new_rows(db).await;
        let user = format!("/admin/users/{ada}");
        let send = |method: Method, path: String, tag: &'static str, body: Option<Value>, status: u16| {
            let (app, admin) = (&app, admin.clone());
            async move { app.send_tagged(method, &path, tag, Some(&admin), body.as_ref(), status).await; }
        };

        send(Method::PATCH, user.clone(), "disable", Some(json!({ "disabled": true })), 200).await;
        trail.expect(db, "disable", &[success("user.disabled", "disable").by(root).on(ada).details(json!({ "sessions_revoked": 1 }))]).await;
        send(Method::PATCH, user.clone(), "disable-again", Some(json!({ "disabled": true })), 200).await;
        trail.expect_none(db, "disabling a disabled account").await;
        app.login_tagged("ada", GOOD_PASSWORD, "disabled-login", 403).await;
        trail
            .expect(db, "disabled login", &[failure("auth.login_failed", "disabled-login").on(ada).details(json!({ "reason": "account_disabled" }))])
            .await;
        send(Method::PATCH, user.clone(), "enable", Some(json!({ "disabled": false })), 200).await;
        trail.expect(db, "enable", &[success("user.enabled", "enable").by(root).on(ada)]).await;
        send(Method::PATCH, user.clone(), "enable-again", Some(json!({ "disabled": false })), 200).await;
        trail.expect_none(db, "enabling an enabled account").await;

        app.session_tagged("ada", GOOD_PASSWORD, "ada-1").await;
        app.session_tagged("ada", GOOD_PASSWORD, "ada-2").await;
        trail.new_rows(db).await;
        send(Method::DELETE, format!("{user}/sessions"), "end-sessions", None, 204).await;
        trail
            .expect(db, "end sessions", &[success("session.revoked", "end-sessions").by(root).on(ada).details(json!({ "sessions_revoked": 2 }))])
            .await;

        let role = json!({ "name": "support", "permissions": ["sessions:revoke", "users:read", "sessions:revoke"] });
        send(Method::POST, "/admin/roles".into(), "role-create", Some(role), 201).await;
        trail
            .expect(db, "role created", &[success("role.created", "role-create").by(root)
                .details(json!({ "role": "support", "permissions": ["users:read", "sessions:revoke"] }))])
            .await;
        send(Method::PUT, "/admin/roles/support".into(), "role-update", Some(json!({ "permissions": ["roles:read"] })), 200).await;
        trail
            .expect(db, "role updated", &[success("role.updated", "role-update").by(root)
                .details(json!({ "role": "support", "permissions": ["roles:read"], "previous_permissions": ["users:read", "sessions:revoke"] }))])
            .await;
        let grant = format!("{user}/roles/support");
        send(Method::PUT, grant.clone(), "grant", None, 204).await;
        trail.expect(db, "granted", &[success("role.granted", "grant").by(root).on(ada).details(json!({ "role": "support" }))]).await;
        send(Method::PUT, grant.clone(), "grant-again", None, 204).await;
        trail.expect_none(db, "a role already held").await;
        send(Method::DELETE, grant.clone(), "revoke", None, 204).await;
        trail.expect(db, "revoked", &[success("role.revoked", "revoke").by(root).on(ada).details(json!({ "role": "support" }))]).await;
        send(Method::DELETE, grant, "revoke-again", None, 204).await;
        trail.expect_none(db, "a role not held").await;
        send(Method::DELETE, "/admin/roles/support".into(), "role-delete", None, 204).await;
        trail
            .expect(db, "role deleted", &[success("role.deleted", "role-delete").by(root).details(json!({ "role": "support", "permissions": ["roles:read"] }))])
            .await;
        send(Method::DELETE, user.clone(), "delete", None, 204).await;
        trail.expect(db, "deleted", &[success("user.deleted", "delete").by(root).on(ada)]).await;
        assert_chain_intact(db).await;
    }

    /// Refused requests write nothing: the last admin (409), a user without the permission
    /// (403), no token (401), an unknown account or role (404), a bad body (422), a built-in
    /// role (4xx), a sign-up that conflicts (409) or is invalid (422).
    async fn refused_requests_write_no_event(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let db = &app.db;
        let admin = app.admin_token().await;
        let root = id_of(&app.me_json(&admin).await);
        let ada = app.signup_tagged("ada", GOOD_PASSWORD, "signup").await;
        let (ada_token, _, _) = app.session_tagged("ada", GOOD_PASSWORD, "ada-login").await;
        let mut trail = Trail::start(db).await;
        let root_path = format!("/admin/users/{root}");
        let tries: Vec<Attempt<'_>> = vec![
            (Method::DELETE, format!("{root_path}/roles/admin"), Some(admin.as_str()), None, 409),
            (Method::PATCH, root_path.clone(), Some(admin.as_str()), Some(json!({ "disabled": true })), 409),
            (Method::DELETE, root_path.clone(), Some(admin.as_str()), None, 409),
            (Method::PATCH, root_path.clone(), Some(ada_token.as_str()), Some(json!({ "disabled": true })), 403),
            (Method::DELETE, root_path.clone(), Some(ada_token.as_str()), None, 403),
            (Method::DELETE, format!("{root_path}/sessions"), Some(ada_token.as_str()), None, 403),
            (Method::PUT, format!("/admin/users/{ada}/roles/admin"), Some(ada_token.as_str()), None, 403),
            (Method::POST, "/admin/roles".into(), Some(ada_token.as_str()), Some(json!({ "name": "x", "permissions": [] })), 403),
            (Method::PATCH, format!("/admin/users/{ada}"), None, Some(json!({ "disabled": true })), 401),
            (Method::PATCH, "/admin/users/999999".into(), Some(admin.as_str()), Some(json!({ "disabled": true })), 404),
            (Method::DELETE, "/admin/users/999999/sessions".into(), Some(admin.as_str()), None, 404),
            (Method::PUT, format!("/admin/users/{ada}/roles/nosuchrole"), Some(admin.as_str()), None, 404),
            (Method::DELETE, "/admin/roles/nosuchrole".into(), Some(admin.as_str()), None, 404),
            (Method::PATCH, format!("/admin/users/{ada}"), Some(admin.as_str()), Some(json!({ "disabled": "yes" })), 422),
            (Method::POST, "/admin/roles".into(), Some(admin.as_str()), Some(json!({ "name": "admin", "permissions": [] })), 409),
            (Method::DELETE, "/admin/roles/admin".into(), Some(admin.as_str()), None, 409),
            (Method::POST, "/admin/roles".into(), Some(admin.as_str()), Some(json!({ "name": "bad", "permissions": ["no:such"] })), 422),
            (Method::POST, "/auth/signup".into(), None, Some(json!({ "email": "ada@example.com", "username": "ada2", "password": GOOD_PASSWORD })), 409),
            (Method::POST, "/auth/signup".into(), None, Some(json!({ "email": "new@example.com", "username": "ada", "password": GOOD_PASSWORD })), 409),
            (Method::POST, "/auth/signup".into(), None, Some(json!({ "email": "not an email", "username": "zed", "password": GOOD_PASSWORD })), 422),
            (Method::DELETE, "/auth/sessions/999999".into(), Some(ada_token.as_str()), None, 404),
        ];
        for (n, (method, path, token, body, status)) in tries.into_iter().enumerate() {
            let what = format!("{method} {path} ({status})");
            let response = app.tagged(method, &path, &format!("refused-{n}"), token);
            let response = match &body {
                Some(body) => response.json(body),
                None => response,
            }
            .send()
            .await
            .expect("request");
            assert_eq!(response.status(), status, "{what}");
            trail.expect_none(db, &what).await;
        }
        assert_eq!(app.me_json(&admin).await["is_admin"], json!(true));
    }

    /// `admin.bootstrapped` at start-up for an account that already existed (`created: false`),
    /// none on a restart that changes nothing, and from `cerego create-admin` (`source:
    /// command`).
    async fn the_bootstrap_records_whether_it_created_the_account_and_from_where(backend: Backend) {
        let app = spawn_app(backend).await;
        let founder = app.signup_tagged("founder", GOOD_PASSWORD, "signup").await;
        app.db.execute("UPDATE users SET email_verified_at = created_at WHERE username = $1", &["founder"]).await;
        let before = rows(&app.db).await.len();
        let db = app.shut_down_keeping_db().await;
        let mut settings = test_settings(&db.url());
        settings.admin = Some(admin_account("founder@example.com", "founder", GOOD_PASSWORD));
        let app = spawn_on(db, settings.clone()).await;
        let all = rows(&app.db).await;
        assert_eq!(all.len(), before + 1, "{all:?}");
        let row = crate::audit_helpers::described(&all[before]);
        assert_eq!(row, json!({
            "event": "admin.bootstrapped", "outcome": "success", "actor_user_id": null,
            "target_user_id": founder, "ip": null, "user_agent": null, "request_id": null,
            "details": { "created": false, "source": "environment" },
        }));
        let db = app.shut_down_keeping_db().await;
        let app = spawn_on(db, settings).await;
        assert_eq!(rows(&app.db).await.len(), before + 1, "a restart that changes nothing writes nothing");

        let db = app.shut_down_keeping_db().await;
        let output = create_admin(&db, ADMIN_EMAIL, ADMIN_USERNAME);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let all = rows(&db).await;
        assert_eq!(all.len(), before + 2);
        let row = crate::audit_helpers::described(&all[before + 1]);
        assert_eq!(row["details"], json!({ "created": true, "source": "command" }), "{row}");
        assert_eq!((row["event"].as_str(), row["actor_user_id"].is_null(), row["ip"].is_null()), (Some("admin.bootstrapped"), true, true), "{row}");
        let admin_id = db.scalar("SELECT id FROM users WHERE username = 'root'").await;
        assert_eq!(row["target_user_id"], json!(admin_id));
        assert_chain_intact(&db).await;
    }
}

/// `cerego create-admin` with the password on standard input.
fn create_admin(db: &TestDb, email: &str, username: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = crate::process::command(&dir)
        .args(["create-admin", "--email", email, "--username", username])
        .env("DATABASE_URL", db.url())
        .env("BCRYPT_COST", "4")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cerego create-admin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{GOOD_PASSWORD}\n").as_bytes())
        .expect("write the password");
    child.wait_with_output().expect("cerego create-admin ends")
}
