//! Faults: lock-order races on PostgreSQL, `kill -9` under load, and a PostgreSQL outage (a
//! throwaway cluster that the test creates, freezes, stops, starts and drops: [`outage`]).

mod outage;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::Client;
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TEST_SECRET, TestDb, spawn_app_with, test_settings};

db_tests! {
    /// A purge (another instance's: here a second pool on the same database, in a tight loop)
    /// races refreshes. It counts every session as ended, as a purge does for a session at the
    /// very second it expires or goes idle while its owner refreshes it; here that happens to
    /// all of them, as often as possible. Before rotation and purge took their locks in one order
    /// (the session, then its tokens), PostgreSQL broke the resulting deadlocks with 40P01: a 503
    /// on the refresh or a failed purge.
    async fn purges_racing_refreshes_never_deadlock(backend: Backend) {
        const WORKERS: usize = 6;
        const ROUNDS: usize = 30;
        // 180 logins and 540 refreshes from one address in seconds: far past the rate limits.
        let app = Arc::new(spawn_app_with(backend, |s| s.limits.enabled = false).await);
        for worker in 0..WORKERS {
            app.create_user(&format!("racer{worker}")).await;
        }
        let (purger, _) =
            cerego::store::connect(&test_settings(&app.db.url()).database).expect("second pool");
        let done = Arc::new(AtomicBool::new(false));
        let purged = Arc::new(AtomicU64::new(0));
        let purging = tokio::spawn({
            let (done, purged) = (done.clone(), purged.clone());
            async move {
                while !done.load(Ordering::Relaxed) {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    let count = purger
                        .purge_sessions(now, now + 24 * 3600)
                        .await
                        .expect("a purge never fails");
                    purged.fetch_add(count, Ordering::Relaxed);
                }
            }
        });

        let mut workers = Vec::new();
        for worker in 0..WORKERS {
            let app = app.clone();
            workers.push(tokio::spawn(async move {
                let name = format!("racer{worker}");
                let mut statuses = Vec::new();
                for _ in 0..ROUNDS {
                    let (access, mut refresh) = app.login_pair(&name).await;
                    for _ in 0..3 {
                        let rotated = app.refresh(&refresh).await;
                        statuses.push(("refresh", rotated.status().as_u16()));
                        let body: Value = rotated.json().await.expect("json");
                        match body["refresh_token"].as_str() {
                            Some(next) => refresh = next.to_owned(),
                            None => break,
                        }
                    }
                    let logout = app.post_authed("/auth/logout", &access).await;
                    statuses.push(("logout", logout.status().as_u16()));
                }
                statuses
            }));
        }
        let mut statuses = Vec::new();
        for worker in workers {
            statuses.extend(worker.await.expect("worker"));
        }
        done.store(true, Ordering::Relaxed);
        purging.await.expect("purger");

        // A refresh or logout of a session the purge has just deleted is refused, as it should
        // be; a logout that passed authentication before the purge finds no session to end.
        assert!(
            statuses.iter().all(|(what, status)| match *what {
                "refresh" => matches!(status, 200 | 401),
                _ => matches!(status, 204 | 401 | 404),
            }),
            "no 503 (deadlock) nor other failure: {statuses:?}"
        );
        assert!(
            statuses.contains(&("refresh", 200)),
            "some refreshes won the race: {statuses:?}"
        );
        assert!(purged.load(Ordering::Relaxed) > 0, "the purge deleted sessions");
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_cerego");

/// A `cerego serve` process on `url`, killed when dropped.
pub(crate) struct Cerego {
    child: Child,
    pub(crate) address: String,
    /// Every JSON log line so far.
    pub(crate) logs: Arc<Mutex<Vec<Value>>>,
}

impl Cerego {
    pub(crate) fn start(url: &str) -> Self {
        Self::start_with(url, |_| {})
    }

    pub(crate) fn start_with(url: &str, configure: impl FnOnce(&mut Command)) -> Self {
        let dir = std::env::temp_dir();
        let mut command = Command::new(BIN);
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("DATABASE_URL", url)
            .env("JWT_SECRET_KEY", TEST_SECRET)
            .env("BCRYPT_COST", "4")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("spawn cerego");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let (tx, logs) = (tx.clone(), logs.clone());
            // Reads every line to the end, so the process never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if entry["message"] == "listening"
                        && let Some(address) = entry["address"].as_str()
                    {
                        let _ = tx.send(address.to_owned());
                    }
                    logs.lock().expect("logs").push(entry);
                }
            });
        }
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("cerego starts and logs its address");
        Self {
            child,
            address: format!("http://{address}"),
            logs,
        }
    }

    /// `kill -9`: no graceful shutdown, no chance to finish anything.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Cerego {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

db_tests! {
    /// `kill -9` in the middle of a sign-up load, then a restart on the same database: every
    /// sign-up that was answered 201 was durable and can log in.
    async fn every_acknowledged_signup_survives_kill_9(backend: Backend) {
        const WORKERS: usize = 8;
        const KILL_AFTER: usize = 40;
        const MOST_PER_WORKER: usize = 200;
        let db = TestDb::create(backend).await;
        // Hundreds of sign-ups, then as many logins, from one address: past the rate limits.
        let unlimited = |cmd: &mut Command| {
            cmd.env("RATE_LIMIT_ENABLED", "false");
        };
        let mut server = Cerego::start_with(&db.url(), unlimited);
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let mut workers = Vec::new();
        for worker in 0..WORKERS {
            let (client, acknowledged) = (client.clone(), acknowledged.clone());
            let url = format!("{}/auth/signup", server.address);
            workers.push(tokio::spawn(async move {
                for n in 0..MOST_PER_WORKER {
                    let name = format!("k{worker}x{n}");
                    let body = json!({
                        "email": format!("{name}@example.com"),
                        "username": name,
                        "password": GOOD_PASSWORD,
                    });
                    match client.post(&url).json(&body).send().await {
                        Ok(response) if response.status() == 201 => {
                            acknowledged.lock().expect("list").push(name);
                        }
                        Ok(response) => panic!("sign-up of {name}: {}", response.status()),
                        // The process is gone: this request may or may not have been stored.
                        Err(_) => return,
                    }
                }
            }));
        }
        while acknowledged.lock().expect("list").len() < KILL_AFTER {
            assert!(
                workers.iter().any(|w| !w.is_finished()),
                "the load ended before the kill"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill();
        for worker in workers {
            worker.await.expect("worker");
        }
        let acknowledged = acknowledged.lock().expect("list").clone();
        assert!(
            acknowledged.len() < WORKERS * MOST_PER_WORKER,
            "the kill came while sign-ups were still running"
        );

        let restarted = Cerego::start_with(&db.url(), unlimited);
        for name in &acknowledged {
            let response = client
                .post(format!("{}/auth/login", restarted.address))
                .json(&json!({ "username": name, "password": GOOD_PASSWORD }))
                .send()
                .await
                .expect("login");
            assert_eq!(response.status(), 200, "{name} got 201 before the kill");
        }
    }
}

/// A database that is down logs one warning per interval (with a count), not one per failed
/// request: 100 readiness checks against a PostgreSQL port where nothing listens give 100 503s
/// and a single "database unavailable" line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_logged_once_per_interval_not_per_request() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{closed_port}/cerego");
    let mut server = Cerego::start_with(&url, |cmd| {
        cmd.env("DATABASE_AUTO_MIGRATE", "false");
    });
    let client = Client::new();
    for _ in 0..100 {
        let response = client
            .get(format!("{}/readyz", server.address))
            .send()
            .await
            .expect("readyz");
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, json!({ "detail": "Service unavailable" }));
    }
    server.kill();

    let logs = server.logs.lock().expect("logs");
    let warnings: Vec<&Value> = logs
        .iter()
        .filter(|entry| matches!(entry["level"].as_str(), Some("WARN" | "ERROR")))
        .collect();
    assert_eq!(warnings.len(), 1, "one line for the outage: {warnings:#?}");
    assert!(
        warnings[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("database unavailable")),
        "{warnings:#?}"
    );
    assert_eq!(warnings[0]["failures"], 1, "{warnings:#?}");
}
