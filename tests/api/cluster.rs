//! Several `cerego` processes as one service: replicas on one PostgreSQL database and one Redis,
//! behind a real nginx (Debian's `nginx`, run as a child process with a generated configuration),
//! each replica also reachable directly on a fixed port of its own (a restarted replica comes
//! back on the same port, as in a real rolling restart). PgBouncer in transaction pooling mode:
//! [`pgbouncer`].
//!
//! These are PostgreSQL-only tests (`TEST_DATABASE_URL`). They use the Redis on 127.0.0.1:6379
//! (`.ci/run` starts one), in a key space of their own: store keys are HMACs keyed by the
//! token-signing secret, and each test uses a fresh one. Without PostgreSQL, Redis, nginx or
//! PgBouncer a test is skipped with a notice, except under `CI`, where it fails.

mod pgbouncer;
mod replicas;
mod rolling;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Response};
use serde_json::{Value, json};

use crate::helpers::{GOOD_PASSWORD, postgres_url, random_hex, redis_answers, required};

const BIN: &str = env!("CARGO_BIN_EXE_cerego");
const SHARED_REDIS: &str = "127.0.0.1:6379";
/// The proxy every replica trusts to name the client (nginx, and the tests themselves when they
/// address a replica directly with `X-Forwarded-For`).
const TRUSTED_PROXIES: &str = "127.0.0.1/32";

/// `cerego migrate` on `url`, with nothing else in its environment.
fn migrate(url: &str) -> std::process::Output {
    Command::new(BIN)
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("LOG_FORMAT", "json")
        .output()
        .expect("cerego migrate")
}

/// Where `name` is: on `PATH`, or in the `sbin` directories Debian installs daemons to (often
/// not on a user's `PATH`); the bare name when nowhere.
fn tool(name: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(Into::into))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| name.into())
}

/// Whether `program` runs (with `args`, say `-v`) and exits 0.
fn installed(program: &str, args: &[&str]) -> bool {
    Command::new(tool(program))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// PostgreSQL (`TEST_DATABASE_URL`), the shared Redis and nginx: what every test here needs.
/// `false` (skipped, with a notice) when one is missing outside CI.
fn prerequisites() -> bool {
    postgres_url().is_some()
        && required(redis_answers(SHARED_REDIS), "a Redis on 127.0.0.1:6379")
        && required(installed("nginx", &["-v"]), "nginx (apt-get install nginx)")
}

/// A port that was free a moment ago: a replica keeps it across restarts.
fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768 and up): a replica restarts on its port, and in
    // the gap an outgoing connection (nginx's, another test's) must not be able to take it.
    crate::signing_keys::free_port()
}

/// Whether something accepts TCP connections on `port`.
fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Whether this process runs as root (nginx and PgBouncer then need a word about users).
fn running_as_root(dir: &Path) -> bool {
    let probe = dir.join(".uid-probe");
    std::fs::write(&probe, b"").expect("write in the tempdir");
    let uid = std::fs::metadata(&probe).expect("metadata").uid();
    let _ = std::fs::remove_file(probe);
    uid == 0
}

/// A token-signing secret no other test uses: a key space of the test's own in Redis.
fn fresh_secret() -> String {
    format!("cluster-{}", random_hex(16))
}

/// Sends `signal` (`TERM`, `KILL`, …) to `pid`.
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// One `cerego serve` process on a fixed port, restartable on that port with the same settings.
pub(crate) struct Replica {
    pub(crate) name: String,
    pub(crate) port: u16,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Every line it wrote (standard output and error), over all its runs.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    /// Spawns `cerego serve` on `port` with `env` (on top of a clean environment) and returns at
    /// once; [`Replica::ready`] waits for it.
    pub(crate) fn spawn(name: &str, port: u16, env: Vec<(String, String)>) -> Self {
        let mut replica = Self {
            name: name.to_owned(),
            port,
            env,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            lines: Arc::new(Mutex::new(Vec::new())),
        };
        replica.start_again();
        replica
    }

    /// Starts the process (again) on its port with its settings; returns at once.
    pub(crate) fn start_again(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            .env("LOG_FORMAT", "json")
            .env("MAIL_OUTBOX_DIR", self.dir.path().join("outbox"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn cerego");
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = self.lines.clone();
            // Reads every line to the end, so the process never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        self.child = Some(child);
    }

    /// `http://127.0.0.1:<port><path>`: this replica, not the balancer.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits (bounded) until `/readyz` answers 200; fails if the process exits first.
    pub(crate) async fn ready(&mut self, client: &Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return;
            }
            let child = self.child.as_mut().expect("started");
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "{} exited during start-up ({status}):\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready in 30 s:\n{}",
                self.name,
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `SIGTERM`: the graceful shutdown a rolling restart relies on.
    pub(crate) fn terminate(&self) {
        signal(self.child.as_ref().expect("running").id(), "TERM");
    }

    /// A `SIGTERM` ready to go: a shell already waiting to send it (its `kill` is a built-in)
    /// the moment [`PrimedSignal::fire`] writes it a line, so that the signal follows what the
    /// test did just before by microseconds, not by the milliseconds it takes to start `kill`
    /// from a large test process.
    pub(crate) fn primed_terminate(&self) -> PrimedSignal {
        let pid = self.child.as_ref().expect("running").id();
        let shell = Command::new("sh")
            .args(["-c", &format!("read _ && kill -TERM {pid}")])
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh");
        PrimedSignal(shell)
    }

    /// Waits (bounded by `most`) for the process to exit and returns its status.
    pub(crate) async fn exited(&mut self, most: Duration) -> ExitStatus {
        let deadline = Instant::now() + most;
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {most:?} of SIGTERM:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every line logged so far (all runs), parsed where it is JSON.
    pub(crate) fn json_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The last `n` lines, for a failure message.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let lines = self.lines.lock().expect("lines");
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} (port {}), its last lines:\n{}",
                self.name,
                self.port,
                self.log_tail(15)
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A signal a shell is waiting to send: [`Replica::primed_terminate`].
pub(crate) struct PrimedSignal(Child);

impl PrimedSignal {
    pub(crate) fn fire(mut self) {
        self.0
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"\n")
            .expect("wake the shell");
        assert!(self.0.wait().expect("sh").success(), "kill -TERM");
    }
}

/// nginx in front of `upstreams`, as a child process with a configuration generated in a
/// tempdir (its error log, access log, pid and temp files there too).
///
/// The upstream block is what a deployment would write: round-robin, the default
/// `proxy_next_upstream error timeout` (a request that could not be sent to one replica goes to
/// the next; one already sent is not repeated unless it is idempotent) and no keep-alive to the
/// replicas. Each server has `fail_timeout=1s` (default `max_fails=1`): a replica seen down is
/// left out for a second instead of the default ten, so that one restarted is back in rotation
/// soon.
pub(crate) struct Nginx {
    pub(crate) port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Nginx {
    pub(crate) fn start(upstreams: &[u16]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let servers: String = upstreams
            .iter()
            .map(|p| format!("        server 127.0.0.1:{p} fail_timeout=1s;\n"))
            .collect();
        let d = dir.path().display();
        let config = format!(
            r#"# Generated by tests/api/cluster.rs
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstream '$status "$request" upstream=$upstream_addr upstream_status=$upstream_status time=$request_time';
    access_log {d}/access.log upstream;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream cerego {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://cerego;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_next_upstream error timeout;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), config).expect("write nginx.conf");
        let child = Command::new(tool("nginx"))
            .arg("-p")
            .arg(dir.path())
            .args(["-c", "nginx.conf", "-e", "error.log"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Self {
            port,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(port) {
            if let Some(status) = nginx
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let mut stderr = String::new();
                if let Some(mut err) = nginx.child.take().and_then(|mut c| c.stderr.take()) {
                    let _ = err.read_to_string(&mut stderr);
                }
                panic!("nginx exited ({status}): {stderr}\n{}", nginx.error_log());
            }
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    /// `http://127.0.0.1:<port><path>`: through the balancer.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// nginx's error log so far (upstream failures are there, with the replica they concern).
    pub(crate) fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// nginx's access log so far: one line per request, with the replica(s) tried and their
    /// answers.
    pub(crate) fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The settings every replica of a cluster shares, on top of a clean environment.
pub(crate) fn shared_env(database_url: &str, secret: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", database_url),
        ("JWT_SECRET_KEY", secret),
        ("REDIS_URL", &format!("redis://{SHARED_REDIS}")),
        ("TRUSTED_PROXIES", TRUSTED_PROXIES),
        ("BCRYPT_COST", "4"),
        ("SHUTDOWN_GRACE_SECS", "10"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `n` replicas on one fresh PostgreSQL database, behind one nginx.
pub(crate) struct Cluster {
    pub(crate) replicas: Vec<Replica>,
    pub(crate) nginx: Nginx,
    pub(crate) client: Client,
    /// Dropped after the replicas (fields drop in order).
    _db: crate::helpers::TestDb,
}

impl Cluster {
    /// Starts `n` replicas at once (the first start on the fresh database migrates it, the
    /// others wait), each with `extra` settings on top of [`shared_env`], and nginx in front of
    /// them; returns once every replica is ready.
    pub(crate) async fn start(n: usize, extra: &[(&str, &str)]) -> Self {
        let db = crate::helpers::TestDb::create(crate::helpers::Backend::Postgres).await;
        let mut env = shared_env(&db.url(), &fresh_secret());
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut replicas: Vec<Replica> = (0..n)
            .map(|i| Replica::spawn(&format!("replica {i}"), free_port(), env.clone()))
            .collect();
        let client = client();
        for replica in &mut replicas {
            replica.ready(&client).await;
        }
        let nginx = Nginx::start(&replicas.iter().map(|r| r.port).collect::<Vec<_>>());
        Self {
            replicas,
            nginx,
            client,
            _db: db,
        }
    }
}

/// A client with a bound on every request (a hung request fails the test instead of hanging it).
pub(crate) fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// `POST url` with the JSON `body` and, when given, a bearer token and `X-Forwarded-For`.
pub(crate) async fn post(
    client: &Client,
    url: &str,
    body: Option<&Value>,
    token: Option<&str>,
    forwarded_for: Option<&str>,
) -> Response {
    let mut request = client.post(url);
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// `GET url` with a bearer token.
pub(crate) async fn get_authed(client: &Client, url: &str, token: &str) -> Response {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Signs `username` up at `base` (a replica or the balancer) with [`GOOD_PASSWORD`].
pub(crate) async fn sign_up(client: &Client, base: &str, username: &str) {
    let body = json!({
        "email": format!("{username}@example.com"),
        "username": username,
        "password": GOOD_PASSWORD,
    });
    let response = post(
        client,
        &format!("{base}/auth/signup"),
        Some(&body),
        None,
        None,
    )
    .await;
    assert_eq!(response.status(), 201, "sign-up of {username} at {base}");
}

/// Logs `username` in at `base` with `password`; returns the access and refresh tokens.
pub(crate) async fn log_in(
    client: &Client,
    base: &str,
    username: &str,
    password: &str,
) -> (String, String) {
    let body = json!({ "username": username, "password": password });
    let response = post(
        client,
        &format!("{base}/auth/login"),
        Some(&body),
        None,
        None,
    )
    .await;
    assert_eq!(response.status(), 200, "login of {username} at {base}");
    tokens(response).await
}

/// Refreshes at `base`; returns the new access and refresh tokens.
pub(crate) async fn refreshed(
    client: &Client,
    base: &str,
    refresh_token: &str,
) -> (String, String) {
    let body = json!({ "refresh_token": refresh_token });
    let response = post(
        client,
        &format!("{base}/auth/refresh"),
        Some(&body),
        None,
        None,
    )
    .await;
    assert_eq!(response.status(), 200, "refresh at {base}");
    tokens(response).await
}

/// The access and refresh tokens of a login or refresh answer.
pub(crate) async fn tokens(response: Response) -> (String, String) {
    let body: Value = response.json().await.expect("json");
    let field = |name: &str| {
        body[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            .to_owned()
    };
    (field("access_token"), field("refresh_token"))
}

/// The sum of every `cerego_http_requests_total` series of `route` on a replica's `/metrics`:
/// the requests it answered on that route.
pub(crate) async fn requests_served(client: &Client, replica: &Replica, route: &str) -> f64 {
    let text = client
        .get(replica.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let label = format!("route=\"{route}\"");
    text.lines()
        .filter(|line| line.starts_with("cerego_http_requests_total{") && line.contains(&label))
        .filter_map(|line| line.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}
