//! The admin account from `ADMIN_EMAIL` / `ADMIN_USERNAME` / `ADMIN_PASSWORD`: created on a fresh
//! database, granted to an existing account (which keeps its password), idempotent across
//! restarts and across replicas starting at once.

use cerego::app::App;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::admin_helpers::{
    ADMIN_EMAIL, ADMIN_USERNAME, admin_account, id_of, spawn_admin_app, with_admin,
};
use crate::db_tests;
use crate::helpers::{
    Backend, GOOD_PASSWORD, TestApp, TestDb, assert_detail, postgres_url, spawn_app, spawn_on,
    test_settings,
};

/// Another password that passes the policy.
const OTHER_PASSWORD: &str = "an entirely different passphrase";

/// Restarts `app` on its database with the admin account of `with_admin` (and `password`).
async fn restart_with_admin(app: TestApp, password: &str) -> TestApp {
    let db = app.shut_down_keeping_db().await;
    let mut settings = test_settings(&db.url());
    settings.admin = Some(admin_account(ADMIN_EMAIL, ADMIN_USERNAME, password));
    spawn_on(db, settings).await
}

async fn counts(db: &TestDb) -> (i64, i64) {
    (
        db.scalar("SELECT COUNT(*) FROM users").await,
        db.scalar("SELECT COUNT(*) FROM user_roles WHERE role_name = 'admin'")
            .await,
    )
}

async fn login(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    app.login_json(&json!({ "username": username, "password": password }))
        .await
}

db_tests! {
    /// On a fresh database the account is created with the password, holds `admin` and `user`,
    /// its address counts as verified, and it can call the admin API.
    async fn a_fresh_database_gets_the_admin_account(backend: Backend) {
        let app = spawn_admin_app(backend).await;

        assert_eq!(counts(&app.db).await, (1, 1));
        let token = app.admin_token().await;
        let me = app.me_json(&token).await;
        assert_eq!(me["email"], ADMIN_EMAIL);
        assert_eq!(me["username"], ADMIN_USERNAME);
        assert_eq!(me["is_admin"], json!(true));
        assert_eq!(me["roles"], json!(["admin", "user"]));
        assert_eq!(me["email_verified"], json!(true));
        let listed = app.admin_get("/admin/users", &token).await;
        assert_eq!(listed["items"][0]["id"], me["id"]);
    }

    /// An account that already has the address gains `admin` and keeps its own password (the
    /// settings' password is not used), and nothing else is created.
    async fn an_existing_account_gains_admin_and_keeps_its_password(backend: Backend) {
        let app = spawn_app(backend).await;
        let signed_up = app.signup(ADMIN_EMAIL, "founder", GOOD_PASSWORD).await;
        assert_eq!(signed_up.status(), 201);
        let signed_up: Value = signed_up.json().await.expect("json");
        assert_eq!(signed_up["is_admin"], json!(false));
        let hash = app.db.stored_hash(ADMIN_EMAIL).await;
        // Its owner confirmed the address (an account that never did is refused; see below).
        app.db
            .execute("UPDATE users SET email_verified_at = created_at WHERE email = $1", &[ADMIN_EMAIL])
            .await;

        let app = restart_with_admin(app, OTHER_PASSWORD).await;

        assert_eq!(counts(&app.db).await, (1, 1));
        assert_eq!(app.db.stored_hash(ADMIN_EMAIL).await, hash, "password kept");
        assert_detail(login(&app, "founder", OTHER_PASSWORD).await, 401, "Incorrect username or password").await;
        let token = app.token_for("founder").await;
        let me = app.me_json(&token).await;
        assert_eq!(me["id"], signed_up["id"]);
        assert_eq!(me["is_admin"], json!(true));
        assert_eq!(me["roles"], json!(["admin", "user"]));
        assert_eq!(app.admin_get("/admin/users", &token).await["items"].as_array().map(Vec::len), Some(1));
    }

    /// Restarting with the same settings changes nothing: one account, one grant, same id and
    /// password hash, still an admin.
    async fn restarting_is_idempotent(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let id = id_of(&app.me_json(&app.admin_token().await).await);
        let hash = app.db.stored_hash(ADMIN_EMAIL).await;

        let app = restart_with_admin(app, GOOD_PASSWORD).await;
        let mut app = restart_with_admin(app, OTHER_PASSWORD).await;

        assert_eq!(counts(&app.db).await, (1, 1));
        assert_eq!(app.db.stored_hash(ADMIN_EMAIL).await, hash);
        let me = app.me_json(&app.admin_token().await).await;
        assert_eq!(id_of(&me), id);
        assert_eq!(me["is_admin"], json!(true));
        app.shut_down().await.expect("clean shutdown");
    }

    /// A disabled admin account stays disabled across a restart (the bootstrap does not enable
    /// it); another admin remains.
    async fn a_disabled_admin_account_is_not_re_enabled(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let root_token = app.admin_token().await;
        let root = id_of(&app.me_json(&root_token).await);
        let (_, other) = app.user_with_role(&root_token, "other", "admin").await;
        assert_eq!(app.patch_user(&other, root, &json!({ "disabled": true })).await.status(), 200);

        let app = restart_with_admin(app, GOOD_PASSWORD).await;

        assert_detail(login(&app, ADMIN_USERNAME, GOOD_PASSWORD).await, 403, "Account disabled").await;
        assert_eq!(counts(&app.db).await, (2, 2));
    }

    /// `ADMIN_USERNAME` held by an account with another address: start-up fails saying so.
    async fn a_taken_admin_username_stops_start_up(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(app.signup("someone@example.com", ADMIN_USERNAME, GOOD_PASSWORD).await.status(), 201);
        let db = app.shut_down_keeping_db().await;
        let mut settings = test_settings(&db.url());
        with_admin(&mut settings);

        let error = App::build(settings).await.err().expect("start-up fails");

        let message = format!("{error:#}");
        assert!(message.contains("ADMIN_USERNAME is taken by another account"), "{message}");
        assert_eq!(counts(&db).await, (1, 0));
    }
}

/// Starts two replicas at once on one PostgreSQL database (migrated by a first start without
/// `ADMIN_*` when `migrated`), five times over: both come up and serve the admin, with one admin
/// account and one grant between them.
async fn two_replicas_at_once(migrated: bool) {
    if postgres_url().is_none() {
        return;
    }
    for round in 0..5 {
        let db = TestDb::create(Backend::Postgres).await;
        if migrated {
            drop(
                App::build(test_settings(&db.url()))
                    .await
                    .expect("the first start migrates"),
            );
        }
        let settings = || {
            let mut settings = test_settings(&db.url());
            with_admin(&mut settings);
            settings
        };
        let (first, second) = tokio::join!(App::build(settings()), App::build(settings()));
        let apps = [first, second]
            .map(|built| built.unwrap_or_else(|err| panic!("round {round}: {err:#}")));

        assert_eq!(counts(&db).await, (1, 1), "round {round}");
        let client = reqwest::Client::new();
        let mut stops = Vec::new();
        let mut servers = Vec::new();
        for app in apps {
            let address = format!("http://{}", app.local_addr().expect("bound"));
            let (stop, stopped) = oneshot::channel::<()>();
            servers.push(tokio::spawn(app.run_until(async {
                let _ = stopped.await;
            })));
            stops.push(stop);
            let body = json!({ "username": ADMIN_USERNAME, "password": GOOD_PASSWORD });
            let response = client
                .post(format!("{address}/auth/login"))
                .json(&body)
                .send()
                .await
                .expect("login");
            assert_eq!(response.status(), 200, "round {round}: {address}");
        }
        for stop in stops {
            let _ = stop.send(());
        }
        for server in servers {
            server.await.expect("server task").expect("clean shutdown");
        }
    }
}

/// The bootstrap's own race: two replicas of a new version with `ADMIN_*` set, on a database
/// that is already migrated, make one admin between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_starting_at_once_on_postgresql_make_one_admin() {
    two_replicas_at_once(true).await;
}

/// The same on a fresh database: both replicas also migrate it at once, and both come up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_starting_at_once_on_a_fresh_postgresql_database_both_come_up() {
    two_replicas_at_once(false).await;
}

db_tests! {
    /// An account that never confirmed the address is not made an admin: anyone may sign up
    /// with the address an operator will name. Start-up fails saying so, and nothing changes.
    async fn an_unverified_account_with_the_admin_address_stops_start_up(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(
            app.signup(ADMIN_EMAIL, "squatter", GOOD_PASSWORD)
                .await
                .status(),
            201
        );
        let db = app.shut_down_keeping_db().await;
        let mut settings = test_settings(&db.url());
        with_admin(&mut settings);

        let error = App::build(settings).await.err().expect("start-up fails");

        let message = format!("{error:#}");
        assert!(
            message.contains("ADMIN_EMAIL belongs to an account whose address is not verified"),
            "{message}"
        );
        assert_eq!(counts(&db).await, (1, 0));
    }
}
