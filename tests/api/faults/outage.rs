//! A PostgreSQL outage under load, on a throwaway cluster this test creates on a free port (the
//! shared cluster is never touched): its processes frozen with SIGSTOP, then the cluster stopped
//! and started. Requests get a prompt 503 while the database is gone, none hangs, the process
//! survives, and service is back as soon as the database answers.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{TestApp, TestDb, random_hex, spawn_on, test_settings};

const VERSION: &str = "15";
/// The deadlines the app under test runs with.
const ACQUIRE: Duration = Duration::from_secs(2);
const QUERY: Duration = Duration::from_secs(2);
/// How long the cluster stays frozen: longer than any request may take, so a request that
/// hung until SIGCONT would show as one that took too long.
const FROZEN: Duration = Duration::from_secs(10);

/// A PostgreSQL cluster of its own, dropped (after being thawed) when this is dropped, also
/// when the test panics.
struct Cluster {
    name: String,
    port: u16,
}

impl Cluster {
    /// `None` (after a notice) when the cluster tools are missing; with `CI` set that fails.
    fn create() -> Option<Self> {
        // Without arguments it only prints its usage: this asks whether it can be run at all.
        let tools = Command::new("pg_createcluster").output();
        if tools.is_err() {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                "CI is set but pg_createcluster is missing: the outage test must run in CI"
            );
            eprintln!("SKIPPED: PostgreSQL outage test (needs pg_createcluster, run as root)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let cluster = Self {
            name: format!("cerego_outage_{}", random_hex(4)),
            port,
        };
        cluster.run(
            "pg_createcluster",
            &[
                VERSION,
                cluster.name.as_str(),
                "--port",
                &port.to_string(),
                "--start",
                "--",
                "--auth=trust",
            ],
        );
        Some(cluster)
    }

    fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = Command::new(program).args(args).output().expect(program);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl(&self, action: &str) {
        self.run("pg_ctlcluster", &[VERSION, &self.name, action]);
    }

    /// The postmaster and its children.
    fn pids(&self) -> Vec<String> {
        let pid_file = format!("/var/lib/postgresql/{VERSION}/{}/postmaster.pid", self.name);
        let Some(postmaster) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
        else {
            return Vec::new();
        };
        let children = Command::new("ps")
            .args(["-o", "pid=", "--ppid", &postmaster])
            .output()
            .expect("ps");
        let mut pids = vec![postmaster];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
        pids
    }

    fn signal(&self, signal: &str) {
        // Several passes: a backend the postmaster was forking while the first list was taken
        // is not in that list, and would go on serving through a "frozen" database.
        for pass in 0..3 {
            if pass > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            for pid in self.pids() {
                // A child may have exited meanwhile.
                let _ = Command::new("kill").args([signal, &pid]).status();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", VERSION, &self.name])
            .status();
    }
}

/// One request of the load: when it started, how long it took, and what came back.
#[derive(Debug)]
struct Outcome {
    started: Instant,
    took: Duration,
    status: u16,
    body: Value,
}

/// A light load on `app` until `stop`: three clients reading `/auth/me`, one signing up new
/// accounts named after `phase`.
fn load(
    phase: &'static str,
    app: &Arc<TestApp>,
    token: &str,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    (0..4)
        .map(|client| {
            let (app, token, stop) = (app.clone(), token.to_owned(), stop.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let started = Instant::now();
                    let request = if client == 0 {
                        let name = format!("{phase}{n}");
                        app.client.post(app.url("/auth/signup")).json(&json!({
                            "email": format!("{name}@example.com"), "username": name,
                            "password": crate::helpers::GOOD_PASSWORD,
                        }))
                    } else {
                        app.client.get(app.url("/auth/me")).bearer_auth(&token)
                    };
                    let response = request
                        .send()
                        .await
                        .expect("an answer, never a dropped connection");
                    let status = response.status().as_u16();
                    let body = response.json().await.expect("a JSON body");
                    outcomes.push(Outcome {
                        started,
                        took: started.elapsed(),
                        status,
                        body,
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                outcomes
            })
        })
        .collect()
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.expect("load task"));
    }
    outcomes
}

/// Every answer is a success or the documented 503, and none took longer than a request's
/// deadlines allow (acquire + query + the pool's grace, with slack for a loaded machine).
fn check(outcomes: &[Outcome]) -> Vec<Duration> {
    let bound = ACQUIRE + QUERY + Duration::from_secs(3);
    let mut unavailable = Vec::new();
    for outcome in outcomes {
        match outcome.status {
            200 | 201 => {}
            503 => {
                assert_eq!(
                    outcome.body,
                    json!({ "detail": "Service unavailable" }),
                    "{outcome:?}"
                );
                unavailable.push(outcome.took);
            }
            _ => panic!("unexpected answer: {outcome:?}"),
        }
        assert!(
            outcome.took <= bound,
            "a request took {:?} (bound {bound:?}): {outcome:?}",
            outcome.took
        );
    }
    unavailable
}

async fn until_me_answers(app: &TestApp, token: &str) -> Instant {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        if app.me(token).await.status() == 200 {
            return Instant::now();
        }
        assert!(Instant::now() < give_up, "service did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_then_stopped_database_gives_prompt_503s_and_service_comes_back() {
    let Some(cluster) = Cluster::create() else {
        return;
    };
    let name = format!("cerego_test_{}", random_hex(8));
    let mut admin = sqlx::PgConnection::connect(&cluster.url("postgres"))
        .await
        .expect("cluster answers");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    admin.close().await.expect("close");
    let db = TestDb::Postgres {
        admin_url: cluster.url("postgres"),
        name: name.clone(),
        url: cluster.url(&name),
    };
    let mut settings = test_settings(&db.url());
    settings.database.acquire_timeout = ACQUIRE;
    settings.database.query_timeout = QUERY;
    // The load reads /auth/me 60 times a second with one token and signs up 20 a second.
    settings.limits.enabled = false;
    let app = Arc::new(spawn_on(db, settings).await);
    app.create_user("ada").await;
    let token = app.token_for("ada").await;

    // 1. Frozen: the sockets stay open and silent, so only the deadlines end a request.
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load("frozen", &app, &token, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.signal("-STOP");
    let frozen = Instant::now();
    tokio::time::sleep(FROZEN).await;
    // The thaw begins with the first process continued: sending the signals can take a
    // while on a loaded machine, and requests may already succeed meanwhile.
    let thawed = Instant::now();
    cluster.signal("-CONT");
    let back = until_me_answers(&app, &token).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = finish(tasks).await;
    let unavailable = check(&outcomes);
    let during: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.started > frozen + Duration::from_millis(100) && o.started + o.took < thawed)
        .collect();
    assert!(
        during.len() >= 4,
        "requests ran during the freeze: {during:?}"
    );
    assert!(during.iter().all(|o| o.status == 503), "{during:?}");
    eprintln!(
        "frozen: {} answers 503, slowest {:?}, fastest {:?}; service back {:?} after SIGCONT",
        unavailable.len(),
        unavailable.iter().max().expect("some 503s"),
        unavailable.iter().min().expect("some 503s"),
        back - thawed
    );

    // 2. Stopped and started: connections are refused, then the database is a new process.
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load("stopped", &app, &token, &stop);
    cluster.ctl("stop");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let starting = tokio::task::spawn_blocking({
        let name = cluster.name.clone();
        move || {
            Command::new("pg_ctlcluster")
                .args([VERSION, &name, "start"])
                .status()
        }
    });
    let url = cluster.url("postgres");
    let database_back = async {
        loop {
            if let Ok(conn) = sqlx::PgConnection::connect(&url).await {
                let _ = conn.close().await;
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (database_back, service_back) = tokio::join!(database_back, until_me_answers(&app, &token));
    assert!(
        starting
            .await
            .expect("start")
            .expect("pg_ctlcluster")
            .success()
    );
    stop.store(true, Ordering::Relaxed);
    let outcomes = finish(tasks).await;
    let unavailable = check(&outcomes);
    assert!(!unavailable.is_empty(), "the stopped database gave 503s");
    let recovery = service_back.saturating_duration_since(database_back);
    eprintln!(
        "stopped: {} answers 503, slowest {:?}; first 200 {recovery:?} after the database answered",
        unavailable.len(),
        unavailable.iter().max().expect("some 503s"),
    );
    assert!(
        recovery < Duration::from_secs(5),
        "service back within seconds: {recovery:?}"
    );
    drop(app);
}
