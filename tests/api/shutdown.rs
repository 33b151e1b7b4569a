use std::time::Duration;

use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, spawn_app_with};

db_tests! {
    async fn graceful_shutdown_finishes_the_request_in_flight(backend: Backend) {
        // Cost 13 makes the sign-up take long enough to be in flight when shutdown begins.
        let mut app = spawn_app_with(backend, |s| s.bcrypt_cost = 13).await;
        let (client, url) = (app.client.clone(), app.url("/auth/signup"));
        let body = serde_json::json!({ "email": "ada@example.com", "username": "ada", "password": GOOD_PASSWORD });
        let in_flight = tokio::spawn(async move { client.post(url).json(&body).send().await });
        tokio::time::sleep(Duration::from_millis(150)).await;

        app.begin_shutdown();
        let response = in_flight.await.expect("task").expect("the request is answered");

        assert_eq!(response.status(), 201);
        app.shut_down().await.expect("server stopped cleanly");
        let after = app.client.get(app.url("/healthz")).send().await;
        assert!(after.is_err(), "no longer accepting connections");
    }
}

/// Reads one HTTP/1.1 response from `stream` until the server closes it: the status line and
/// whether it said `connection: close`.
async fn read_response(stream: &mut tokio::net::TcpStream) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the server answers and closes the connection");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, text.to_ascii_lowercase())
}

db_tests! {
    /// A connection a balancer opened just before the shutdown signal, which had not sent its
    /// request yet, is not closed under it: its request is served (with `connection: close`),
    /// here a `/readyz` that already says the instance is going away. New connections are
    /// refused.
    async fn a_connection_opened_before_shutdown_still_gets_its_request_served(backend: Backend) {
        use tokio::io::AsyncWriteExt;
        let mut app = spawn_app_with(backend, |s| s.bcrypt_cost = 13).await;
        let address = app.address.trim_start_matches("http://").to_owned();
        let mut early = tokio::net::TcpStream::connect(&address).await.expect("connect");
        // A slow sign-up keeps the server draining while the early connection speaks.
        let (client, url) = (app.client.clone(), app.url("/auth/signup"));
        let body = serde_json::json!({ "email": "ada@example.com", "username": "ada", "password": GOOD_PASSWORD });
        let in_flight = tokio::spawn(async move { client.post(url).json(&body).send().await });
        tokio::time::sleep(Duration::from_millis(150)).await;

        app.begin_shutdown();
        // Until the listener is closed: the early connection was accepted before.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&address).await.is_ok() {
            assert!(std::time::Instant::now() < deadline, "the listener closes");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        early
            .write_all(b"GET /readyz HTTP/1.1\r\nhost: cerego\r\n\r\n")
            .await
            .expect("send");
        let (status, response) = read_response(&mut early).await;

        assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{response}");
        assert!(response.contains("connection: close"), "{response}");
        assert!(response.contains(r#"{"detail":"service unavailable"}"#), "{response}");
        assert!(
            tokio::net::TcpStream::connect(&address).await.is_err(),
            "no longer accepting connections"
        );
        let signup = in_flight.await.expect("task").expect("answered");
        assert_eq!(signup.status(), 201);
        app.shut_down().await.expect("server stopped cleanly");
    }

    /// A request still running when `SHUTDOWN_GRACE_SECS` is over is cut off: its connection
    /// is closed without an answer, and the server stops instead of waiting for it.
    async fn shutdown_closes_what_outlives_the_grace_period(backend: Backend) {
        // Cost 16: a hash takes seconds, far longer than the one second of grace.
        let mut app = spawn_app_with(backend, |s| {
            s.bcrypt_cost = 16;
            s.shutdown_grace = Duration::from_secs(1);
        })
        .await;
        let (client, url) = (app.client.clone(), app.url("/auth/signup"));
        let body = serde_json::json!({ "email": "ada@example.com", "username": "ada", "password": GOOD_PASSWORD });
        let in_flight = tokio::spawn(async move { client.post(url).json(&body).send().await });
        tokio::time::sleep(Duration::from_millis(300)).await;

        app.shut_down().await.expect("server stopped cleanly");
        let cut = in_flight.await.expect("task");

        let err = cut.map(|r| r.status()).expect_err("the request was cut off");
        // Sent and then cut off, not refused at the door.
        assert!(!err.is_connect(), "{err}");
    }
}
