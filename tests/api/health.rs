use std::time::Duration;

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{
    Backend, GOOD_PASSWORD, TestDb, assert_detail, spawn_app, spawn_app_with, spawn_on,
    test_settings,
};

db_tests! {
    async fn health_and_readiness_answer_200(backend: Backend) {
        let app = spawn_app(backend).await;

        assert_eq!(app.get("/healthz").await.status(), 200);
        let ready = app.get("/readyz").await;
        assert_eq!(ready.status(), 200);
        let body: Value = ready.json().await.expect("json");
        assert_eq!(body["status"], "ready");
    }

    async fn unknown_routes_and_methods_get_fastapi_shaped_errors(backend: Backend) {
        let app = spawn_app(backend).await;

        assert_detail(app.get("/nope").await, 404, "Not Found").await;
        let wrong_method = app.client.delete(app.url("/auth/me")).send().await.expect("request");
        assert!(wrong_method.headers().contains_key("allow"));
        assert_detail(wrong_method, 405, "Method Not Allowed").await;
    }

    async fn request_ids_are_echoed_or_generated(backend: Backend) {
        let app = spawn_app(backend).await;

        let given = app.client.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.expect("request");
        assert_eq!(given.headers()["x-request-id"], "abc-123");
        let generated = app.get("/healthz").await;
        let id = generated.headers()["x-request-id"].to_str().expect("ascii");
        assert_eq!(id.len(), 36, "a UUID: {id}");
        let unsafe_id = app.client.get(app.url("/healthz")).header("x-request-id", "a b\"c").send().await.expect("request");
        assert_ne!(unsafe_id.headers()["x-request-id"], "a b\"c");
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn an_unreachable_database_gives_503s_not_hangs_or_crashes() {
    let url = format!("postgres://cerego@127.0.0.1:{}/cerego", closed_port());
    let mut settings = test_settings(&url);
    settings.database.auto_migrate = false;
    settings.database.acquire_timeout = Duration::from_secs(1);
    let app = spawn_on(TestDb::create(Backend::Sqlite).await, settings).await;

    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_detail(app.get("/readyz").await, 503, "Service unavailable").await;
    let signup = app.signup("ada@example.com", "ada", GOOD_PASSWORD).await;
    assert_detail(signup, 503, "Service unavailable").await;
    let login = app
        .login_json(&json!({ "username": "ada", "password": GOOD_PASSWORD }))
        .await;
    assert_detail(login, 503, "Service unavailable").await;
}

/// Has the server end every connection to `db` (as a restart or a firewall would); returns how
/// many there were.
async fn kill_connections(db: &TestDb) -> usize {
    use sqlx::Connection;
    let TestDb::Postgres {
        admin_url, name, ..
    } = db
    else {
        unreachable!("a PostgreSQL test database")
    };
    let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("admin");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&mut admin)
    .await
    .expect("terminate");
    killed.len()
}

/// The server closes every connection the pool holds (as a PostgreSQL restart or a firewall
/// would) while they sit idle: the next requests get fresh connections and never see an error.
#[tokio::test]
async fn connections_the_server_closed_while_idle_are_replaced_unseen() {
    if crate::helpers::postgres_url().is_none() {
        return;
    }
    let app = spawn_app(Backend::Postgres).await;
    app.create_user("ada").await;
    let token = app.token_for("ada").await;
    assert!(
        kill_connections(&app.db).await > 0,
        "the pool had connections open"
    );
    // Longer than a connection may sit idle before it is checked (store::pool::PING_AFTER_IDLE).
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    for _ in 0..5 {
        assert_eq!(app.me(&token).await.status().as_u16(), 200);
    }
    assert_eq!(app.get("/readyz").await.status().as_u16(), 200);
}

/// The server closes the pool's only connection right after it was used: the request that
/// finds it dead fails (503), and that failure gets the connection checked and replaced before
/// the next request, which succeeds.
#[tokio::test]
async fn a_connection_that_failed_is_checked_before_it_is_used_again() {
    if crate::helpers::postgres_url().is_none() {
        return;
    }
    let app = spawn_app_with(Backend::Postgres, |s| s.database.max_connections = 1).await;
    app.create_user("ada").await;
    let token = app.token_for("ada").await;
    kill_connections(&app.db).await;

    // 503 if it ran within PING_AFTER_IDLE of the last use (the usual case), 200 if a slow
    // machine let the connection sit idle long enough to be checked first.
    let first = app.me(&token).await.status().as_u16();
    assert!(matches!(first, 200 | 503), "{first}");
    for _ in 0..3 {
        assert_eq!(app.me(&token).await.status().as_u16(), 200);
    }
}

/// Stops the test database (refuses and cuts connections), then brings it back.
#[tokio::test]
async fn readiness_follows_a_postgres_outage_and_recovers_by_itself() {
    if crate::helpers::postgres_url().is_none() {
        return;
    }
    let app = spawn_app(Backend::Postgres).await;
    app.create_user("ada").await;
    let TestDb::Postgres {
        admin_url, name, ..
    } = &app.db
    else {
        unreachable!("a PostgreSQL test database")
    };
    let outage = |allow: bool| {
        let (admin_url, name) = (admin_url.clone(), name.clone());
        async move {
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("admin");
            let sql = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .expect("alter");
        }
    };

    outage(false).await;
    kill_connections(&app.db).await;
    assert_detail(app.get("/readyz").await, 503, "Service unavailable").await;
    let login = app
        .login_json(&json!({ "username": "ada", "password": GOOD_PASSWORD }))
        .await;
    assert_detail(login, 503, "Service unavailable").await;

    outage(true).await;
    let mut status = 0;
    for _ in 0..50 {
        status = app.get("/readyz").await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "ready again once the database is back");
    assert_eq!(
        app.login_json(&json!({ "username": "ada", "password": GOOD_PASSWORD }))
            .await
            .status(),
        200
    );
}
