//! A rolling restart under load: every replica in turn gets SIGTERM, exits 0 and is started again
//! on its port, while a bounded load runs through nginx, and not one request fails.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};

use super::{Cluster, prerequisites, requests_served, sign_up};
use crate::helpers::GOOD_PASSWORD;

/// Concurrent clients of the load, each with an account and a session of its own.
const TASKS: usize = 8;
/// Requests the load makes before the first restart, and after the last.
const SETTLE_REQUESTS: u64 = 60;
/// Requests a restarted replica answers through nginx before the next replica is stopped: it
/// is back in rotation.
const BACK_IN_ROTATION: f64 = 10.0;
/// Rolling restarts in a row (each replica is restarted this many times).
const ROUNDS: usize = 2;
/// Fewest requests each phase must count: a test that did nothing cannot pass.
const FEWEST_PER_PHASE: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Me,
    Login,
    Refresh,
}

/// What the load did in one phase (before the restarts, during each restart, after them).
#[derive(Debug, Default, Clone, Copy)]
struct Phase {
    me: u64,
    login: u64,
    refresh: u64,
    failed: u64,
}

impl Phase {
    fn total(&self) -> u64 {
        self.me + self.login + self.refresh
    }
}

struct Tally {
    phases: Vec<Phase>,
    failures: Vec<String>,
    /// When the test began: failures say when they happened, to match nginx's error log.
    began: Instant,
}

impl Tally {
    fn record(&mut self, phase: usize, op: Op, failure: Option<String>) {
        let counts = &mut self.phases[phase];
        match op {
            Op::Me => counts.me += 1,
            Op::Login => counts.login += 1,
            Op::Refresh => counts.refresh += 1,
        }
        if let Some(failure) = failure {
            counts.failed += 1;
            self.failures.push(format!(
                "phase {phase}, {:.3} s in ({}), {op:?}: {failure}",
                self.began.elapsed().as_secs_f64(),
                utc_now()
            ));
        }
    }
}

/// The time of day in UTC to the millisecond, as nginx's error log has it (to the second).
fn utc_now() -> String {
    let at = time::OffsetDateTime::now_utc();
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// One request of the load through nginx: the tokens it gave (login, refresh) or why it failed.
/// Anything but a 200 is a failure, a transport error included.
async fn send(
    client: &Client,
    balancer: &str,
    op: Op,
    username: &str,
    tokens: Option<&(String, String)>,
) -> Result<Option<(String, String)>, String> {
    let request = match (op, tokens) {
        (Op::Me, Some((access, _))) => client
            .get(format!("{balancer}/auth/me"))
            .bearer_auth(access),
        (Op::Refresh, Some((_, refresh))) => client
            .post(format!("{balancer}/auth/refresh"))
            .json(&json!({ "refresh_token": refresh })),
        _ => client
            .post(format!("{balancer}/auth/login"))
            .json(&json!({ "username": username, "password": GOOD_PASSWORD })),
    };
    let response = request
        .send()
        .await
        .map_err(|e| format!("transport: {e:?}"))?;
    let status = response.status();
    let upstream = response
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let body = response
        .text()
        .await
        .map_err(|e| format!("{status} from {upstream}, body: {e:?}"))?;
    if status != 200 {
        return Err(format!("{status} from {upstream}: {body:.200}"));
    }
    if op == Op::Me {
        return Ok(None);
    }
    let body: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body:.200}"))?;
    let field = |name: &str| body[name].as_str().map(str::to_owned);
    match (field("access_token"), field("refresh_token")) {
        (Some(access), Some(refresh)) => Ok(Some((access, refresh))),
        _ => Err(format!("no tokens from {upstream}: {body}")),
    }
}

/// One client of the load until `stop`: `/auth/me` with its token, a refresh along its own
/// rotation chain, `/auth/me` again, a fresh login; over and over. A failed step starts the
/// chain again with a login (its own failure is counted too).
async fn client_loop(
    client: Client,
    balancer: String,
    username: String,
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut tokens: Option<(String, String)> = None;
    let cycle = [Op::Me, Op::Refresh, Op::Me, Op::Login];
    let mut step = 0;
    while !stop.load(Ordering::Relaxed) {
        let op = if tokens.is_none() {
            Op::Login
        } else {
            cycle[step % cycle.len()]
        };
        step += 1;
        let at = phase.load(Ordering::SeqCst);
        let outcome = send(&client, &balancer, op, &username, tokens.as_ref()).await;
        match outcome {
            Ok(Some(fresh)) => {
                // A login's session replaces the chain only when there is none: the chain
                // keeps rotating across the whole run.
                if op == Op::Refresh || tokens.is_none() {
                    tokens = Some(fresh);
                }
                tally.lock().expect("tally").record(at, op, None);
            }
            Ok(None) => tally.lock().expect("tally").record(at, op, None),
            Err(failure) => {
                tokens = None;
                tally.lock().expect("tally").record(at, op, Some(failure));
            }
        }
    }
}

/// Waits (bounded) until the load has made `requests` in `phase`.
async fn until_requests(tally: &Mutex<Tally>, phase: usize, requests: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tally.lock().expect("tally").phases[phase].total() < requests {
        assert!(
            Instant::now() < deadline,
            "the load made fewer than {requests} requests in phase {phase} in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request() {
    if !prerequisites() {
        return;
    }
    // The limits stay on, in Redis, with budgets the load cannot spend: one client address
    // (the test's) makes every request.
    let unspendable = "1000000/second";
    let mut cluster = Cluster::start(
        3,
        &[
            ("RATE_LIMIT_LOGIN_IP", unspendable),
            ("RATE_LIMIT_LOGIN_ACCOUNT", unspendable),
            ("RATE_LIMIT_REFRESH_IP", unspendable),
            ("RATE_LIMIT_API_USER", unspendable),
            ("RATE_LIMIT_API_IP", unspendable),
        ],
    )
    .await;
    let balancer = cluster.nginx.url("");
    for task in 0..TASKS {
        sign_up(&cluster.client, &balancer, &format!("load{task}")).await;
    }
    let replicas = cluster.replicas.len();
    // Phase 0: before any restart; then one per restart, from the replica's SIGTERM until it
    // is back in rotation; the last: after the last restart.
    let restarts = ROUNDS * replicas;
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally {
        phases: vec![Phase::default(); restarts + 2],
        failures: Vec::new(),
        began: Instant::now(),
    }));
    // Its own client: connections to nginx are kept alive (nginx's to the replicas are not).
    let load_client = super::client();
    let load: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(client_loop(
                load_client.clone(),
                balancer.clone(),
                format!("load{task}"),
                phase.clone(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();

    until_requests(&tally, 0, SETTLE_REQUESTS).await;
    let mut exits = Vec::new();
    // What happened when, to read failures against.
    let mut timeline = Vec::new();
    for restart in 0..restarts {
        phase.store(restart + 1, Ordering::SeqCst);
        let replica = &mut cluster.replicas[restart % replicas];
        let who = format!(
            "phase {}: {} (port {})",
            restart + 1,
            replica.name,
            replica.port
        );
        timeline.push(format!("{} {who}: SIGTERM", utc_now()));
        replica.terminate();
        let status = replica.exited(Duration::from_secs(20)).await;
        timeline.push(format!("{} {who}: exited ({status})", utc_now()));
        exits.push(status);
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM:\n{}",
            replica.name,
            replica.log_tail(20)
        );
        replica.start_again();
        replica.ready(&cluster.client).await;
        timeline.push(format!("{} {who}: ready", utc_now()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while requests_served(&cluster.client, replica, "/auth/me").await < BACK_IN_ROTATION {
            assert!(
                Instant::now() < deadline,
                "{} restarted but nginx sent it no load in 20 s",
                replica.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        timeline.push(format!("{} {who}: back in rotation", utc_now()));
    }
    phase.store(restarts + 1, Ordering::SeqCst);
    until_requests(&tally, restarts + 1, SETTLE_REQUESTS).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }

    let tally = tally.lock().expect("tally");
    let total: u64 = tally.phases.iter().map(Phase::total).sum();
    let failed: u64 = tally.phases.iter().map(|p| p.failed).sum();
    let access_log = cluster.nginx.access_log();
    // Requests nginx passed on to another replica (its upstream address list has a comma).
    let passed_on = access_log
        .lines()
        .filter(|l| {
            l.split(" upstream=")
                .nth(1)
                .is_some_and(|u| u.contains(", "))
        })
        .count();
    eprintln!(
        "{ROUNDS} rolling restarts of {replicas} replicas (ports {:?}) under {TASKS} concurrent \
         clients through nginx: {total} requests, {failed} failed; {passed_on} passed on by nginx \
         to another replica; exit codes {:?}",
        cluster.replicas.iter().map(|r| r.port).collect::<Vec<_>>(),
        exits.iter().map(|s| s.code()).collect::<Vec<_>>()
    );
    for (i, p) in tally.phases.iter().enumerate() {
        eprintln!(
            "  phase {i}: {} requests (me {}, login {}, refresh {}), {} failed",
            p.total(),
            p.me,
            p.login,
            p.refresh,
            p.failed
        );
    }
    for failure in tally.failures.iter().take(20) {
        eprintln!("  failure: {failure}");
    }
    if failed > 0 {
        eprintln!("  timeline:\n    {}", timeline.join("\n    "));
    }
    assert_eq!(
        failed,
        0,
        "failed requests: {:#?}\nnginx error log:\n{}",
        tally.failures,
        cluster.nginx.error_log()
    );
    for (i, p) in tally.phases.iter().enumerate() {
        assert!(
            p.total() >= FEWEST_PER_PHASE && p.me > 0 && p.login > 0 && p.refresh > 0,
            "phase {i} made too few requests of each kind: {p:?}"
        );
    }
}

/// What a rolling restart relies on, without a balancer's luck: requests a replica has been sent
/// in full before SIGTERM (waiting in its accept queue, or on connections it has accepted but not
/// read yet) are all answered before it exits. Each round opens connections, sends a login on
/// every one, then signals; the replica is started again on its port for the next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_before_sigterm_are_all_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const ROUNDS: usize = 5;
    const CONNECTIONS: usize = 16;
    if !prerequisites() {
        return;
    }
    let db = crate::helpers::TestDb::create(crate::helpers::Backend::Postgres).await;
    let mut env = super::shared_env(&db.url(), &super::fresh_secret());
    env.push((
        "RATE_LIMIT_LOGIN_IP".to_owned(),
        "1000000/second".to_owned(),
    ));
    env.push((
        "RATE_LIMIT_LOGIN_ACCOUNT".to_owned(),
        "1000000/second".to_owned(),
    ));
    let mut replica = super::Replica::spawn("replica", super::free_port(), env);
    let client = super::client();
    replica.ready(&client).await;
    // An account per connection: concurrent logins of one account meet its login throttle
    // (attempts in flight count as failures until they succeed).
    let mut requests = Vec::new();
    for i in 0..CONNECTIONS {
        let name = format!("drain{i}");
        sign_up(&client, &replica.url(""), &name).await;
        let body = json!({ "username": name, "password": GOOD_PASSWORD }).to_string();
        requests.push(format!(
            "POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
    }
    let mut unanswered = Vec::new();
    for round in 0..ROUNDS {
        let signal = replica.primed_terminate();
        let mut connections = Vec::new();
        for request in &requests {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", replica.port))
                .await
                .expect("connect");
            stream.write_all(request.as_bytes()).await.expect("send");
            connections.push(stream);
        }
        signal.fire();
        for (i, mut stream) in connections.into_iter().enumerate() {
            let mut answer = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
                    .await
                    .expect("an answer or a close within 30 s");
            let answer = String::from_utf8_lossy(&answer);
            if read.is_err() || !answer.starts_with("HTTP/1.1 200 ") {
                unanswered.push(format!(
                    "round {round}, connection {i}: {read:?}, {:?}",
                    answer.lines().next().unwrap_or("(nothing)")
                ));
            }
        }
        let status = replica.exited(Duration::from_secs(20)).await;
        assert!(status.success(), "exit after SIGTERM: {status}");
        replica.start_again();
        replica.ready(&client).await;
    }
    assert!(
        unanswered.is_empty(),
        "{} of {} requests sent before SIGTERM were not answered 200: {unanswered:#?}",
        unanswered.len(),
        ROUNDS * CONNECTIONS
    );
}
