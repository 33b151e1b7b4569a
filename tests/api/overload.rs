//! Bursts of password work: ordinary bursts are all served; past the queue, a fast 503.

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

    async fn past_the_hashing_queue_logins_get_a_fast_503_with_retry_after(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            s.bcrypt_cost = 12;
            s.hash_queue_per_core = 0;
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
}
