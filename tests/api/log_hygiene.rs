//! Secrets never reach the logs: the real binary at `RUST_LOG=debug` (JSON lines) goes through a
//! scripted session that touches every route, successes and failures alike, and then the whole
//! log is searched for every password, token, token segment and the signing key it used.

use reqwest::{Client, Response};
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{Backend, TestDb, random_hex};
use crate::logged::Logged;

/// `cerego serve` at `RUST_LOG=debug` on `database_url`, signing with `secret`.
fn serve(database_url: &str, secret: &str) -> Logged {
    Logged::start(&[
        ("RUST_LOG", "debug"),
        ("DATABASE_URL", database_url),
        ("JWT_SECRET_KEY", secret),
    ])
}

/// The scripted client: every request checks its status, and every secret it handles is kept.
struct Session {
    client: Client,
    address: String,
    secrets: Vec<String>,
}

impl Session {
    async fn send(&self, request: reqwest::RequestBuilder, status: u16, what: &str) -> Response {
        let response = request.send().await.expect(what);
        assert_eq!(response.status(), status, "{what}");
        response
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.address))
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.address))
    }

    /// Keeps a token and, for a JWT, each of its segments.
    fn keep_token(&mut self, token: &str) {
        self.secrets.push(token.to_owned());
        if token.matches('.').count() == 2 {
            self.secrets.extend(token.split('.').map(str::to_owned));
        }
    }

    /// Reads a token pair from a login or refresh response and keeps both tokens.
    async fn pair(&mut self, response: Response) -> (String, String) {
        let body: Value = response.json().await.expect("token json");
        let field = |name: &str| body[name].as_str().expect(name).to_owned();
        let (access, refresh) = (field("access_token"), field("refresh_token"));
        self.keep_token(&access);
        self.keep_token(&refresh);
        (access, refresh)
    }
}

db_tests! {
    async fn a_session_through_every_route_logs_no_password_token_or_key(backend: Backend) {
        let db = TestDb::create(backend).await;
        let secret = format!("log-hygiene-key-{}", random_hex(24));
        let server = serve(&db.url(), &secret);
        let password = format!("pw-{}-hygiene", random_hex(12));
        let wrong_password = format!("wrong-{}-pw", random_hex(12));
        let invalid_signup_password = format!("bad-{}-pw", random_hex(12));
        let made_up_refresh = format!("crg_rt_{}A", random_hex(21));
        let mut s = Session {
            client: Client::new(),
            address: server.address.clone(),
            secrets: vec![secret.clone(), password.clone(), wrong_password.clone(), invalid_signup_password.clone(), made_up_refresh.clone()],
        };

        let account = json!({ "email": "ada@example.com", "username": "ada", "password": password });
        s.send(s.post("/auth/signup").json(&account), 201, "signup").await;
        let invalid = json!({ "email": "not an email", "username": "bob", "password": invalid_signup_password });
        s.send(s.post("/auth/signup").json(&invalid), 422, "invalid signup").await;
        let response = s.send(s.post("/auth/login").json(&json!({ "username": "ada", "password": password })), 200, "login json").await;
        let (access, refresh) = s.pair(response).await;
        let response = s.send(s.post("/auth/login").form(&[("username", "ada@example.com"), ("password", password.as_str())]), 200, "login form").await;
        let (form_access, _form_refresh) = s.pair(response).await;
        s.send(s.get("/auth/me").bearer_auth(&access), 200, "me").await;
        let response = s.send(s.post("/auth/refresh").json(&json!({ "refresh_token": refresh })), 200, "refresh").await;
        let (access, _refresh) = s.pair(response).await;

        let sessions: Value = s.send(s.get("/auth/sessions").bearer_auth(&access), 200, "sessions").await.json().await.expect("json");
        let other = sessions.as_array().expect("a list").iter()
            .find(|session| session["current"] == false)
            .and_then(|session| session["id"].as_i64())
            .expect("the form login's session");
        let revoke = s.client.delete(format!("{}/auth/sessions/{other}", s.address)).bearer_auth(&access);
        s.send(revoke, 204, "revoke").await;
        s.send(s.get("/auth/me").bearer_auth(&form_access), 401, "revoked session's token").await;
        s.send(s.post("/auth/logout").bearer_auth(&access), 204, "logout").await;
        s.send(s.get("/auth/me").bearer_auth(&access), 401, "logged-out token").await;

        let response = s.send(s.post("/auth/login").json(&json!({ "email": "ada@example.com", "password": password })), 200, "login again").await;
        let (access, refresh) = s.pair(response).await;
        s.send(s.post("/auth/logout-all").bearer_auth(&access), 204, "logout-all").await;
        s.send(s.post("/auth/refresh").json(&json!({ "refresh_token": refresh })), 401, "refresh after logout-all").await;

        s.send(s.post("/auth/login").json(&json!({ "username": "ada", "password": wrong_password })), 401, "wrong password").await;
        s.send(s.post("/auth/login").form(&[("username", "nobody"), ("password", wrong_password.as_str())]), 401, "unknown user").await;
        s.send(s.post("/auth/refresh").json(&json!({ "refresh_token": made_up_refresh })), 401, "wrong refresh").await;
        let forged = format!("{}.{}", access.rsplit_once('.').expect("a JWT").0, random_hex(16));
        s.keep_token(&forged);
        s.send(s.get("/auth/me").bearer_auth(&forged), 401, "forged token").await;

        for (path, status) in [("/docs/", 200), ("/openapi.json", 200), ("/metrics", 200), ("/healthz", 200), ("/readyz", 200), ("/no/such/route", 404)] {
            s.send(s.get(path), status, path).await;
        }

        let lines = server.stop();
        let finished = lines.iter().filter(|line| line.contains("\"request finished\"")).count();
        assert!(finished >= 24, "every request is logged ({finished} lines):\n{}", lines.join("\n"));
        assert!(lines.iter().any(|line| line.contains("\"level\":\"DEBUG\"")), "debug lines were on:\n{}", lines.join("\n"));
        for line in &lines {
            assert!(serde_json::from_str::<Value>(line).is_ok(), "not a JSON line: {line}");
        }
        let log = lines.join("\n");
        for secret in &s.secrets {
            assert!(!log.contains(secret.as_str()), "a secret reached the logs: {secret}");
        }
    }
}
