//! Bursts of password work: ordinary bursts are all served; past the queue, after a short wait
//! for a place, a 503; clients that hang up mid-login never get more bcrypt running than the
//! hashing slots.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

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

/// The value of the unlabelled sample `name` in a `/metrics` text.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in {metrics}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Opens a connection, sends a login and hangs up `after` later without reading the answer.
async fn login_and_hang_up(address: String, body: String, after: Duration) {
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let request = format!(
        "POST /auth/login HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    tokio::time::sleep(after).await;
    drop(stream);
}

/// Threads of this process now (the app runs inside the test process), where Linux says.
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count)
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
            // The burst grows with the cores, past RATE_LIMIT_LOGIN_IP on a large machine.
            s.limits.enabled = false;
        })
        .await;
        // Every core gets a place (there is no queue), so the burst must outnumber the cores
        // for some logins to find none.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let bodies = (0..2 * cores + 8)
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
            // The burst grows with the cores, past RATE_LIMIT_LOGIN_IP on a large machine.
            s.limits.enabled = false;
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

db_tests! {
    async fn logins_whose_clients_hang_up_never_run_more_bcrypt_than_the_slots(backend: Backend) {
        // Cost 12 takes far longer than the 50 ms each client waits, so every login is
        // abandoned while its bcrypt would still be running.
        // 150 wrong passwords for one account from one address: the rate limits and the login
        // throttle would refuse most before any bcrypt ran, which is not what is measured here.
        let app = spawn_app_with(backend, |s| {
            s.bcrypt_cost = 12;
            s.limits.enabled = false;
        })
        .await;
        app.create_user("ada").await;
        let address = app.address.trim_start_matches("http://").to_owned();
        let body = json!({ "username": "ada", "password": "not the password" }).to_string();
        let sampler = tokio::spawn(async {
            let mut most = 0;
            for _ in 0..800 {
                most = most.max(threads().unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            most
        });

        // One login every 20 ms for three seconds, each hung up on 50 ms after it was sent.
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..150 {
            clients.spawn(login_and_hang_up(address.clone(), body.clone(), Duration::from_millis(50)));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        clients.join_all().await;

        // The work still running finishes on its own; then the gauges settle.
        let mut metrics = String::new();
        for _ in 0..600 {
            metrics = app.get("/metrics").await.text().await.expect("text");
            if sample(&metrics, "cerego_password_hash_running") == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "most threads in the process: {}",
            sampler.await.expect("sampler")
        );
        let slots = sample(&metrics, "cerego_password_hash_slots");
        let most = sample(&metrics, "cerego_password_hash_running_max");
        eprintln!("bcrypt running at once: at most {most} with {slots} slots");
        assert_eq!(sample(&metrics, "cerego_password_hash_running"), 0.0, "{metrics}");
        assert!(most >= 1.0 && most <= slots, "{most} bcrypt at once with {slots} slots");
        // No client read an answer, so every verification counted was an abandoned login's.
        let verified = metrics
            .lines()
            .find_map(|l| l.strip_prefix("cerego_password_hash_duration_seconds_count{operation=\"verify\"} "))
            .map_or(0.0, |v| v.parse::<f64>().expect("a number"));
        eprintln!("abandoned logins whose verification ran and was counted: {verified}");
        assert!(verified >= 1.0, "abandoned verifications were counted: {metrics}");
    }
}
