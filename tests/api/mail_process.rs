//! Account recovery through the `cerego` binary itself: the laptop default (no SMTP server, no
//! database setting) writes each message as an `.eml` file under `./data/outbox/` and logs its
//! path; and a whole recovery session at `RUST_LOG=debug` logs no password, token or link.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::{Client, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::db_tests;
use crate::helpers::{Backend, TestDb, random_hex};
use crate::logged::Logged;
use crate::smtp_sink::{MAIL_WAIT, Received, SmtpSink, path_of, token_of};

/// Sends `request` and asserts its status.
async fn send(request: reqwest::RequestBuilder, status: u16, what: &str) -> Response {
    let response = request.send().await.expect(what);
    assert_eq!(response.status(), status, "{what}");
    response
}

/// The `.eml` files in `dir` (none when it does not exist).
fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
}

/// Waits (bounded) for an `.eml` file in `dir` whose message contains `needle`.
async fn wait_for_eml(dir: &Path, needle: &str) -> (PathBuf, Received) {
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        for path in eml_files(dir) {
            let raw = std::fs::read(&path).expect("read the .eml file");
            if String::from_utf8_lossy(&raw).contains(needle) {
                let message = Received {
                    from: String::new(),
                    recipients: Vec::new(),
                    raw,
                };
                return (path, message);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no .eml file with {needle} in {}: {:?}",
            dir.display(),
            eml_files(dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_laptop_mail_is_written_to_data_outbox_and_its_path_logged() {
    // No SMTP_URL, MAIL_OUTBOX_DIR, DATABASE_URL or JWT_SECRET_KEY: the embedded defaults.
    let server = Logged::start(&[]);
    let client = Client::new();
    let outbox = server.dir.path().join("data").join("outbox");
    let account = json!({ "email": "ada@example.com", "username": "ada", "password": "correct horse battery staple" });
    send(
        client.post(server.url("/auth/signup")).json(&account),
        201,
        "signup",
    )
    .await;
    send(
        client
            .post(server.url("/auth/password/forgot"))
            .json(&json!({ "email": "ada@example.com" })),
        202,
        "forgot",
    )
    .await;

    let (path, message) = wait_for_eml(&outbox, "crg_pr_").await;
    let mail = message.parse();
    assert_eq!(mail.to, ["ada@example.com"]);
    assert!(mail.date.is_some() && mail.message_id.is_some());
    let link = message.reset_link();
    assert!(
        link.starts_with("http://localhost:8000/auth/password/reset?token=crg_pr_"),
        "PUBLIC_BASE_URL defaults to http://localhost:8000: {link}"
    );
    let (verification_path, _) = wait_for_eml(&outbox, "crg_ev_").await;
    assert_ne!(path, verification_path);

    // The link in the file works (on this server, whatever its port).
    let token = token_of(&link);
    let page = send(
        client.get(server.url(&path_of(&link))),
        200,
        "the reset page",
    )
    .await;
    assert!(page.text().await.expect("page").contains("password"));
    send(
        client
            .post(server.url("/auth/password/reset"))
            .json(&json!({ "token": token, "new_password": "a brand new passphrase" })),
        204,
        "reset",
    )
    .await;
    send(
        client
            .post(server.url("/auth/login"))
            .json(&json!({ "username": "ada", "password": "a brand new passphrase" })),
        200,
        "login with the new password",
    )
    .await;

    let name = path
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    let deadline = Instant::now() + MAIL_WAIT;
    let logged = loop {
        let lines = server.lines();
        if let Some(line) = lines.iter().find(|line| line.contains(&name)) {
            break line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no log line names {name}:\n{}",
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        serde_json::from_str::<Value>(&logged).is_ok(),
        "a JSON line: {logged}"
    );
    assert!(
        logged.contains("outbox"),
        "the path, not only the name: {logged}"
    );
    assert!(
        !logged.contains(&token),
        "the token is not logged: {logged}"
    );
    let lines = server.stop();
    assert!(
        lines.iter().all(|line| !line.contains(&token)),
        "the token is never logged"
    );
}

/// The SHA-256 of `token` as hex and as base64 (either could be how it is stored).
fn hash_spellings(token: &str) -> [String; 3] {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    [
        hex,
        base64::engine::general_purpose::STANDARD.encode(digest),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
    ]
}

db_tests! {
    async fn a_recovery_session_logs_no_password_token_or_link(backend: Backend) {
        let db = TestDb::create(backend).await;
        let sink = SmtpSink::start().await;
        let key = format!("mail-hygiene-key-{}", random_hex(24));
        let server = Logged::start(&[
            ("DATABASE_URL", &db.url()),
            ("JWT_SECRET_KEY", &key),
            ("RUST_LOG", "debug"),
            ("SMTP_URL", &sink.url()),
            ("MAIL_RETRY_MAX_SECS", "1"),
        ]);
        let client = Client::new();
        let passwords: Vec<String> = ["first", "reset", "form", "changed", "wrong"]
            .iter()
            .map(|what| format!("{what}-{}-pw", random_hex(10)))
            .collect();
        let (first, after_reset, after_form, changed, wrong) =
            (&passwords[0], &passwords[1], &passwords[2], &passwords[3], &passwords[4]);
        let mut secrets: Vec<String> = passwords.clone();
        secrets.push(key.clone());
        let ada = "ada@example.com";

        let account = json!({ "email": ada, "username": "ada", "password": first });
        send(client.post(server.url("/auth/signup")).json(&account), 201, "signup").await;
        let verification = sink.verification_mail(ada).await.verification_link();
        let verification_token = token_of(&verification);
        send(client.get(server.url(&path_of(&verification))), 200, "verification page").await;
        send(client.post(server.url("/auth/email/verify")).json(&json!({ "token": verification_token })), 204, "verify").await;
        secrets.extend([verification.clone(), verification_token.clone()]);

        let forgot = json!({ "email": ada });
        send(client.post(server.url("/auth/password/forgot")).json(&forgot), 202, "forgot").await;
        let link = sink.reset_mail(ada).await.reset_link();
        let token = token_of(&link);
        secrets.extend([link.clone(), token.clone()]);
        send(client.get(server.url(&path_of(&link))), 200, "reset page").await;
        send(client.post(server.url("/auth/password/reset")).json(&json!({ "token": token, "new_password": after_reset })), 204, "reset").await;
        send(client.post(server.url("/auth/password/reset")).json(&json!({ "token": token, "new_password": wrong })), 400, "reset again").await;

        send(client.post(server.url("/auth/password/forgot")).json(&forgot), 202, "forgot again").await;
        let link = sink.nth_to(ada, 2, Received::is_reset).await.reset_link();
        let token = token_of(&link);
        secrets.extend([link.clone(), token.clone()]);
        let mismatch = [("token", token.as_str()), ("new_password", after_form.as_str()), ("confirm_password", wrong.as_str())];
        send(client.post(server.url("/auth/password/reset")).form(&mismatch), 422, "form mismatch").await;
        let form = [("token", token.as_str()), ("new_password", after_form.as_str()), ("confirm_password", after_form.as_str())];
        send(client.post(server.url("/auth/password/reset")).form(&form), 200, "form reset").await;

        let login = send(client.post(server.url("/auth/login")).json(&json!({ "username": "ada", "password": after_form })), 200, "login").await;
        let tokens: Value = login.json().await.expect("json");
        let access = tokens["access_token"].as_str().expect("access").to_owned();
        secrets.push(access.clone());
        secrets.extend(access.split('.').map(str::to_owned));
        secrets.push(tokens["refresh_token"].as_str().expect("refresh").to_owned());
        let change = |current: &str, new: &str| {
            client
                .post(server.url("/auth/password/change"))
                .bearer_auth(&access)
                .json(&json!({ "current_password": current, "new_password": new }))
        };
        send(change(wrong, changed), 400, "change with a wrong password").await;
        send(change(after_form, changed), 204, "change").await;
        send(client.post(server.url("/auth/email/verification")).bearer_auth(&access), 409, "already verified").await;
        let made_up = format!("crg_pr_{}", random_hex(32));
        send(client.post(server.url("/auth/password/reset")).json(&json!({ "token": made_up, "new_password": wrong })), 400, "made-up token").await;
        secrets.push(made_up);

        // Every notice (two resets, one change) has gone out before the log is read.
        sink.wait_where(3, |m| m.is_to(ada) && m.is_notice()).await;
        let tokens_now: Vec<String> = secrets.iter().filter(|s| s.starts_with("crg_")).cloned().collect();
        for token in tokens_now {
            secrets.extend(hash_spellings(&token));
        }

        let lines = server.stop();
        assert!(lines.iter().any(|line| line.contains("\"level\":\"DEBUG\"")), "debug lines were on");
        let finished = lines.iter().filter(|line| line.contains("\"request finished\"")).count();
        assert!(finished >= 14, "every request is logged ({finished} lines)");
        for line in &lines {
            assert!(serde_json::from_str::<Value>(line).is_ok(), "not a JSON line: {line}");
        }
        let log = lines.join("\n");
        for secret in &secrets {
            assert!(!log.contains(secret.as_str()), "a secret reached the logs: {secret}");
        }
    }
}
