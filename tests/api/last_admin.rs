//! No admin change may leave the service without an enabled admin: the only admin cannot be
//! demoted, disabled or deleted, a disabled admin does not count, and two concurrent demotions
//! of the only two admins end with one done and one refused.

use reqwest::Method;
use serde_json::json;

use crate::admin_helpers::{id_of, spawn_admin_app};
use crate::db_tests;
use crate::helpers::{Backend, TestApp, assert_detail};

const LAST_ADMIN: &str = "Cannot remove the last admin";

/// The number of accounts holding `admin`, read from the database.
async fn admin_grants(app: &TestApp) -> i64 {
    app.db
        .scalar("SELECT COUNT(*) FROM user_roles WHERE role_name = 'admin'")
        .await
}

db_tests! {
    /// Demoting, disabling or deleting the only admin is 409 and changes nothing; with a second
    /// enabled admin the same demotion is done; a disabled second admin does not count.
    async fn the_last_admin_cannot_be_demoted_disabled_or_deleted(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let token = app.admin_token().await;
        let root = id_of(&app.me_json(&token).await);
        let path = format!("/admin/users/{root}");

        assert_detail(app.revoke(&token, root, "admin").await, 409, LAST_ADMIN).await;
        assert_detail(app.patch_user(&token, root, &json!({ "disabled": true })).await, 409, LAST_ADMIN).await;
        assert_detail(app.call(Method::DELETE, &path, Some(token.as_str()), None).await, 409, LAST_ADMIN).await;
        let me = app.me_json(&token).await;
        assert_eq!(me["is_admin"], json!(true), "{me}");
        assert_eq!(app.admin_get(&path, &token).await["disabled"], json!(false));

        let (second, second_token) = app.user_with_role(&token, "second", "admin").await;
        let response = app.patch_user(&token, second, &json!({ "disabled": true })).await;
        assert_eq!(response.status(), 200, "root remains an enabled admin");
        assert_detail(app.revoke(&token, root, "admin").await, 409, LAST_ADMIN).await;
        assert_detail(app.call(Method::DELETE, &path, Some(token.as_str()), None).await, 409, LAST_ADMIN).await;
        assert_eq!(app.me(&second_token).await.status(), 401, "disabled");

        let response = app.patch_user(&token, second, &json!({ "disabled": false })).await;
        assert_eq!(response.status(), 200);
        assert_eq!(app.revoke(&token, root, "admin").await.status(), 204, "second is an enabled admin");
        assert_eq!(admin_grants(&app).await, 1);
        assert_detail(
            app.call(Method::GET, "/admin/users", Some(token.as_str()), None).await,
            403,
            "Not enough permissions",
        )
        .await;
    }

    /// Many rounds of two demotions at once, of the only two admins, by an operator who holds
    /// every permission through a custom role but not `admin` (so it does not count as an
    /// admin itself): each round exactly one 204 and one 409, one admin left.
    async fn two_concurrent_demotions_of_the_only_two_admins_leave_one(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let root_token = app.admin_token().await;
        let root = id_of(&app.me_json(&root_token).await);
        let (second, second_token) = app.user_with_role(&root_token, "second", "admin").await;
        app.create_role(
            &root_token,
            "granter",
            &[
                "users:read", "users:write", "users:delete", "sessions:revoke",
                "roles:read", "roles:write", "audit:read",
            ],
        )
        .await;
        let (_, operator) = app.user_with_role(&root_token, "operator", "granter").await;

        for round in 0..12 {
            assert_eq!(admin_grants(&app).await, 2, "round {round} starts with two admins");
            let (a, b) = tokio::join!(
                app.revoke(&operator, root, "admin"),
                app.revoke(&operator, second, "admin"),
            );
            let (a, b) = (a.status().as_u16(), b.status().as_u16());
            let mut statuses = [a, b];
            statuses.sort_unstable();
            assert_eq!(statuses, [204, 409], "round {round}: {a} {b}");
            assert_eq!(admin_grants(&app).await, 1, "round {round}");
            let root_is_admin = app.me_json(&root_token).await["is_admin"] == json!(true);
            let second_is_admin = app.me_json(&second_token).await["is_admin"] == json!(true);
            assert!(root_is_admin != second_is_admin, "round {round}: exactly one admin");
            assert_eq!(root_is_admin, a == 409, "round {round}: the refused one is the admin");

            let demoted = if root_is_admin { second } else { root };
            assert_eq!(app.grant(&operator, demoted, "admin").await.status(), 204);
        }
    }
}

/// The lock itself, made visible on PostgreSQL: while another transaction holds a demotion of
/// the second admin (uncommitted, after taking the turn every such change takes), a demotion of
/// the first through the API waits for it, and once it commits, sees it and refuses. Without
/// the turn, the API's transaction would not see the uncommitted demotion, would count two
/// admins and demote the first too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_waits_for_one_in_flight_and_then_refuses() {
    use sqlx::Connection;

    if crate::helpers::postgres_url().is_none() {
        return;
    }
    let app = spawn_admin_app(Backend::Postgres).await;
    let token = app.admin_token().await;
    let root = id_of(&app.me_json(&token).await);
    let (second, _) = app.user_with_role(&token, "second", "admin").await;

    let mut conn = sqlx::PgConnection::connect(&app.db.url())
        .await
        .expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("UPDATE roles SET updated_at = updated_at WHERE name = 'admin'")
        .execute(&mut *tx)
        .await
        .expect("the admins' turn");
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role_name = 'admin'")
        .bind(second)
        .execute(&mut *tx)
        .await
        .expect("demote second");

    let demotion = tokio::spawn(
        app.client
            .delete(app.url(&format!("/admin/users/{root}/roles/admin")))
            .bearer_auth(&token)
            .send(),
    );
    // Until PostgreSQL shows the API's transaction waiting for a lock (bounded, so a demotion
    // that never waits fails here rather than hanging).
    let mut waited = false;
    for _ in 0..200 {
        assert!(
            !demotion.is_finished(),
            "the demotion did not wait for the one in flight"
        );
        let waiting = app
            .db
            .scalar(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await;
        if waiting > 0 {
            waited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(waited, "no lock wait appeared");
    tx.commit().await.expect("commit the other demotion");

    let response = demotion.await.expect("task").expect("response");
    assert_detail(response, 409, LAST_ADMIN).await;
    assert_eq!(admin_grants(&app).await, 1, "root is still an admin");
    assert_eq!(app.me_json(&token).await["is_admin"], json!(true));
}
