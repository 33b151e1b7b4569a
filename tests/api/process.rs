//! The `cerego` binary itself: configuration errors, signals and what it logs (`migrate` and the
//! settings' documentation: `commands.rs`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{GOOD_PASSWORD, TEST_SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_cerego");

/// A `cerego serve` process whose log lines are collected.
pub(crate) struct Server {
    child: Child,
    pub(crate) address: String,
    lines: mpsc::Receiver<String>,
    startup: Vec<String>,
    dir: tempfile::TempDir,
}

/// `cerego` in `dir` with a clean environment: only `PATH`, a loopback address on a free port and
/// JSON logs.
pub fn command(dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("LOG_FORMAT", "json");
    cmd
}

pub(crate) fn start(configure: impl FnOnce(&mut Command)) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = command(&dir);
    configure(&mut cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cerego");
    let (tx, lines) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let mut startup = Vec::new();
    let address = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("cerego starts and logs");
        let listening = serde_json::from_str::<Value>(&line)
            .ok()
            .filter(|entry| entry["message"] == "listening")
            .and_then(|entry| entry["address"].as_str().map(str::to_owned));
        startup.push(line);
        if let Some(address) = listening {
            break format!("http://{address}");
        }
    };
    Server {
        child,
        address,
        lines,
        startup,
        dir,
    }
}

impl Server {
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cerego did not exit");
    }

    /// Every line logged so far, start-up included.
    /// Stops the server with SIGTERM, checks it exited cleanly, and returns its log lines as
    /// JSON.
    pub(crate) fn stop_and_read_json(&mut self) -> Vec<Value> {
        self.signal("TERM");
        assert!(self.wait().success());
        self.drain()
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    fn drain(&self) -> Vec<String> {
        self.startup
            .iter()
            .cloned()
            .chain(self.lines.try_iter())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_bad_setting_stops_start_up_with_a_message_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (var, value) in [
        ("BCRYPT_COST", "99"),
        ("JWT_SECRET_KEY", "short"),
        ("PORT", "http"),
        ("DATABASE_URL", "mysql://localhost/cerego"),
    ] {
        let output = command(&dir).env(var, value).output().expect("run");
        assert_eq!(output.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with(&format!("cerego: invalid setting {var}: ")),
            "{var}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one clear message: {stderr}");
    }
    let output = command(&dir)
        .env("DATABASE_URL", "postgres://127.0.0.1:1/x")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET_KEY"), "{stderr}");
}

#[test]
fn the_embedded_default_needs_no_setup_and_keeps_its_key_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = start(|_| {});
    let data = server.dir.path().join("data");

    assert!(data.join("cerego.db").exists());
    let key = std::fs::metadata(data.join("cerego.db.jwt-secret")).expect("generated key");
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    server.signal("INT");
    assert!(server.wait().success());
    let logs = server.drain().join("\n");
    assert!(
        logs.contains("JWT_SECRET_KEY is not set"),
        "a warning is logged: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_logs_no_secret() {
    let mut server = start(|cmd| {
        cmd.env("BCRYPT_COST", "13")
            .env("JWT_SECRET_KEY", TEST_SECRET)
            .env("RUST_LOG", "trace");
    });
    let client = reqwest::Client::new();
    let signup = client
        .post(format!("{}/auth/signup", server.address))
        .json(&json!({ "email": "ada@example.com", "username": "ada", "password": GOOD_PASSWORD }))
        .send()
        .await
        .expect("signup");
    assert_eq!(signup.status(), 201);
    let login = client
        .post(format!("{}/auth/login", server.address))
        .form(&[("username", "ada"), ("password", GOOD_PASSWORD)])
        .send()
        .await
        .expect("login");
    let tokens = login.json::<Value>().await.expect("json");
    let token = tokens["access_token"].as_str().expect("token").to_owned();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let me = client
        .get(format!("{}/auth/me", server.address))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200);

    let in_flight = tokio::spawn({
        let url = format!("{}/auth/signup", server.address);
        let client = client.clone();
        async move {
            client
                .post(url)
                .json(&json!({ "email": "bob@example.com", "username": "bob", "password": GOOD_PASSWORD }))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.signal("TERM");
    let response = in_flight
        .await
        .expect("task")
        .expect("answered during shutdown");
    assert_eq!(response.status(), 201);
    assert!(server.wait().success(), "clean exit after SIGTERM");

    let logs = server.drain().join("\n");
    assert!(logs.contains("request finished"), "logs were captured");
    let hash_prefix = "$2b$13$";
    for secret in [
        GOOD_PASSWORD,
        token.as_str(),
        refresh.as_str(),
        TEST_SECRET,
        hash_prefix,
    ] {
        assert!(
            !logs.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
}

#[test]
fn the_healthcheck_command_reports_whether_the_server_answers() {
    let server = start(|cmd| {
        cmd.env("JWT_SECRET_KEY", TEST_SECRET);
    });
    let port = server.address.rsplit(':').next().expect("port").to_owned();

    let up = command(&server.dir)
        .arg("healthcheck")
        .env("PORT", &port)
        .output()
        .expect("run");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    drop(server);
    let down = command(&tempfile::tempdir().expect("tempdir"))
        .arg("healthcheck")
        .env("PORT", &port)
        .output()
        .expect("run");
    assert!(!down.status.success());
}

/// What a login logs says which request it was: the request id, method and route are on every
/// line a request produces, not only on the access line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_outcome_is_logged_with_its_request_id_and_route() {
    let mut server = start(|cmd| {
        cmd.env("BCRYPT_COST", "4")
            .env("JWT_SECRET_KEY", TEST_SECRET);
    });
    let response = reqwest::Client::new()
        .post(format!("{}/auth/login", server.address))
        .header("x-request-id", "audit-check-42")
        .form(&[("username", "nobody"), ("password", GOOD_PASSWORD)])
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 401);
    let lines = server.stop_and_read_json();
    let finished = lines
        .iter()
        .find(|line| line["message"] == "request finished")
        .expect("the request is logged");
    assert_eq!(finished["status"], 401, "{finished}");
    assert!(
        finished["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{finished}"
    );
    assert_eq!(finished["level"], "INFO", "{finished}");
    assert_eq!(
        finished["span"],
        json!({
            "name": "request", "request_id": "audit-check-42", "method": "POST", "route": "/auth/login",
            "client_ip": "127.0.0.1"
        })
    );
    let outcome = lines
        .iter()
        .find(|line| line["message"] == "login failed")
        .expect("the failed login is logged");
    assert_eq!(outcome["span"]["request_id"], "audit-check-42", "{outcome}");
    assert_eq!(outcome["span"]["route"], "/auth/login", "{outcome}");
    assert_eq!(outcome["span"]["method"], "POST", "{outcome}");
    // An unknown account has no id to log (never `None` or `Some(UserId(…))`).
    assert!(outcome.get("user_id").is_none(), "{outcome}");
}

#[tokio::test]
async fn ids_are_logged_as_plain_numbers() {
    let mut server = start(|cmd| {
        cmd.env("BCRYPT_COST", "4")
            .env("JWT_SECRET_KEY", TEST_SECRET);
    });
    let client = reqwest::Client::new();
    let body = json!({ "email": "ada@example.com", "username": "ada", "password": GOOD_PASSWORD });
    let signup = client
        .post(format!("{}/auth/signup", server.address))
        .json(&body)
        .send()
        .await
        .expect("signup");
    assert_eq!(signup.status(), 201);
    for password in ["wrong password!", GOOD_PASSWORD] {
        client
            .post(format!("{}/auth/login", server.address))
            .json(&json!({ "username": "ada", "password": password }))
            .send()
            .await
            .expect("login");
    }
    let lines = server.stop_and_read_json();
    for message in [
        "account created",
        "login failed",
        "login succeeded",
        "session opened",
    ] {
        let line = lines
            .iter()
            .find(|line| line["message"] == message)
            .unwrap_or_else(|| panic!("{message} is logged"));
        assert_eq!(line["user_id"], json!(1), "{line}");
    }
    let opened = lines
        .iter()
        .find(|line| line["message"] == "session opened")
        .expect("session opened");
    assert!(opened["session_id"].is_u64(), "{opened}");
}
