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
