//! Bursts of password work: ordinary bursts are all served; past the queue, after a short wait
//! for a place, a 503.

use std::time::Duration;

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestApp, spawn_app_with};

/// Sends `bodies` to `path` all at once; returns each response's status, headers and body.
async fn burst(app: &TestApp, path: &str, bodies: Vec<Value>) -> Vec<(u16, Option<String>, Value)> {
    let mut tasks = tokio::task::JoinSet::new();
    for body in bodies {
        let (client, url) = (app.client.clone(), app.url(path));
        tasks.spawn(async move {
            let response = client.post(url).json(&body).send().await.expect("request");
            let status = response.status().as_u16();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_owned());
            (status, retry, response.json::<Value>().await.expect("json"))
        });
    }
    tasks.join_all().await
}

db_tests! {
    async fn an_ordinary_burst_of_twenty_signups_is_all_served(backend: Backend) {
        // Cost 10 makes the hashes queue behind each other on the two cores.
        let app = spawn_app_with(backend, |s| s.bcrypt_cost = 10).await;
        let bodies = (0..20)
            .map(|i| json!({ "email": format!("u{i}@example.com"), "username": format!("user{i}"), "password": GOOD_PASSWORD }))
            .collect();

        let results = burst(&app, "/auth/signup", bodies).await;

        let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
        assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    }

    async fn past_the_hashing_queue_logins_get_a_503_with_retry_after(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            s.bcrypt_cost = 12;
            s.hash_queue.per_core = 0;
            s.hash_queue.full_wait = Duration::ZERO;
        })
        .await;
        let bodies = (0..12)
            .map(|i| json!({ "username": format!("nobody{i}"), "password": GOOD_PASSWORD }))
            .collect();

        let results = burst(&app, "/auth/login", bodies).await;

        let busy: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
        assert!(!busy.is_empty(), "some logins were turned away: {results:?}");
        for (_, retry, body) in &busy {
            assert_eq!(retry.as_deref(), Some("1"));
            assert_eq!(body, &json!({ "detail": "Service busy" }));
        }
        assert!(results.iter().all(|r| matches!(r.0, 401 | 503)), "{results:?}");
        let metrics = app.get("/metrics").await.text().await.expect("text");
        assert!(metrics.contains(&format!("cerego_password_hash_rejected_total {}", busy.len())), "{metrics}");
    }

    async fn a_login_finding_the_queue_full_waits_for_a_place_before_turning_away(backend: Backend) {
        // No queue at all: only one login per core is admitted at once, and every other one
        // must wait for a place. Cheap hashes free places well within the wait.
        let app = spawn_app_with(backend, |s| {
            s.bcrypt_cost = 4;
            s.hash_queue.per_core = 0;
            s.hash_queue.full_wait = Duration::from_secs(5);
        })
        .await;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let bodies = (0..4 * cores)
            .map(|i| json!({ "username": format!("nobody{i}"), "password": GOOD_PASSWORD }))
            .collect();

        let results = burst(&app, "/auth/login", bodies).await;

        assert!(results.iter().all(|r| r.0 == 401), "every login was served: {results:?}");
        let metrics = app.get("/metrics").await.text().await.expect("text");
        assert!(metrics.contains("cerego_password_hash_rejected_total 0"), "{metrics}");
    }
}
