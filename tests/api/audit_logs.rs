//! The trail's log mirror, its metrics, and its hygiene, over a whole scripted session of the
//! real binary (with an admin account and mail to an SMTP sink): one `"audience":"audit"` line
//! per stored row with the row's fields, `cerego_audit_events_total` counting exactly the rows
//! of each event, and no password, token, reset or verification token, password hash or
//! signing key in any row or any audit line.

use reqwest::{Client, RequestBuilder, Response};
use serde_json::{Map, Value, json};

use crate::admin_helpers::{ADMIN_EMAIL, ADMIN_USERNAME};
use crate::audit_helpers::{EVENTS, rows};
use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestDb, metric_in, random_hex};
use crate::logged::Logged;
use crate::smtp_sink::{SmtpSink, token_of};

/// The scripted client: every request checks its status; every secret it sees is kept.
struct Session {
    client: Client,
    address: String,
    secrets: Vec<String>,
}

impl Session {
    fn request(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .header("user-agent", "audit-log-test");
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: RequestBuilder, status: u16, what: &str) -> Response {
        let response = request.send().await.expect(what);
        assert_eq!(response.status(), status, "{what}");
        response
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value, status: u16) -> Response {
        self.send(
            self.request(reqwest::Method::POST, path, token).json(body),
            status,
            path,
        )
        .await
    }

    fn keep(&mut self, secret: &str) {
        self.secrets.push(secret.to_owned());
        if secret.matches('.').count() == 2 {
            self.secrets.extend(secret.split('.').map(str::to_owned));
        }
    }

    /// Logs `name` in; keeps and returns the access and refresh tokens.
    async fn login(&mut self, name: &str, password: &str) -> (String, String) {
        let response = self
            .post(
                "/auth/login",
                None,
                &json!({ "username": name, "password": password }),
                200,
            )
            .await;
        let body: Value = response.json().await.expect("json");
        let (access, refresh) = (
            body["access_token"].as_str().expect("access").to_owned(),
            body["refresh_token"].as_str().expect("refresh").to_owned(),
        );
        self.keep(&access);
        self.keep(&refresh);
        (access, refresh)
    }
}

/// Every user's stored password hash.
async fn hashes(db: &TestDb) -> Vec<String> {
    let hashes: Vec<(String,)> = db.fetch_all("SELECT hashed_password FROM users").await;
    hashes.into_iter().map(|(h,)| h).collect()
}

/// Goes through every kind of event, keeping the secrets it sees (the hash of the account it
/// deletes included).
async fn scripted_session(s: &mut Session, sink: &SmtpSink, db: &TestDb) {
    use reqwest::Method;
    let ada_password = s.secrets[1].clone();
    let signup = json!({ "email": "ada@example.com", "username": "ada", "password": ada_password });
    s.post("/auth/signup", None, &signup, 201).await;
    s.post("/auth/signup", None, &signup, 409).await;
    let verification = token_of(
        &sink
            .verification_mail("ada@example.com")
            .await
            .verification_link(),
    );
    s.keep(&verification);
    s.post(
        "/auth/email/verify",
        None,
        &json!({ "token": verification }),
        204,
    )
    .await;
    // A refresh, then the rotated token again (no grace window): reuse, the session revoked.
    let (_, refresh) = s.login("ada", &ada_password).await;
    let rotated: Value = s
        .post(
            "/auth/refresh",
            None,
            &json!({ "refresh_token": refresh }),
            200,
        )
        .await
        .json()
        .await
        .expect("json");
    s.keep(rotated["access_token"].as_str().expect("access"));
    s.keep(rotated["refresh_token"].as_str().expect("refresh"));
    s.post(
        "/auth/refresh",
        None,
        &json!({ "refresh_token": refresh }),
        401,
    )
    .await;
    let (access, _) = s.login("ada", &ada_password).await;
    s.send(
        s.request(Method::POST, "/auth/logout", Some(&access)),
        204,
        "logout",
    )
    .await;
    let wrong = format!("wrong-{}", random_hex(8));
    s.keep(&wrong);
    // Five failures of `ada` from this address (and others): the sixth attempt waits.
    for name in [
        "ada",
        "ada@example.com",
        "ghost",
        "ghost@example.com",
        "ada",
        "ada",
        "ada",
        "ada",
    ] {
        s.post(
            "/auth/login",
            None,
            &json!({ "username": name, "password": wrong }),
            401,
        )
        .await;
    }
    s.post(
        "/auth/login",
        None,
        &json!({ "username": "ada", "password": ada_password }),
        429,
    )
    .await;

    s.post(
        "/auth/password/forgot",
        None,
        &json!({ "email": "ada@example.com" }),
        202,
    )
    .await;
    let reset = token_of(&sink.reset_mail("ada@example.com").await.reset_link());
    s.keep(&reset);
    let second = format!("second-{}-password", random_hex(8));
    s.keep(&second);
    s.post(
        "/auth/password/reset",
        None,
        &json!({ "token": reset, "new_password": second }),
        204,
    )
    .await;
    let (access, _) = s.login("ada@example.com", &second).await;
    s.login("ada@example.com", &second).await;
    let third = format!("third-{}-password", random_hex(8));
    s.keep(&third);
    let change = json!({ "current_password": second, "new_password": third });
    s.post("/auth/password/change", Some(&access), &change, 204)
        .await;
    let (other, _) = s.login("ada@example.com", &third).await;
    let other_id = {
        let all: Vec<Value> = s
            .send(
                s.request(Method::GET, "/auth/sessions", Some(&other)),
                200,
                "sessions",
            )
            .await
            .json()
            .await
            .expect("json");
        all.iter()
            .find(|x| x["current"] == json!(true))
            .and_then(|x| x["id"].as_i64())
            .expect("id")
    };
    s.send(
        s.request(
            Method::DELETE,
            &format!("/auth/sessions/{other_id}"),
            Some(&access),
        ),
        204,
        "revoke",
    )
    .await;
    s.send(
        s.request(Method::POST, "/auth/logout-all", Some(&access)),
        204,
        "logout-all",
    )
    .await;

    let bob_password = format!("bob-{}-password", random_hex(8));
    s.keep(&bob_password);
    let bob: Value = s
        .post(
            "/auth/signup",
            None,
            &json!({ "email": "bob@example.com", "username": "bob", "password": bob_password }),
            201,
        )
        .await
        .json()
        .await
        .expect("json");
    let bob = bob["id"].as_i64().expect("id");
    let (bobs, _) = s.login("bob", &bob_password).await;
    s.send(
        s.request(Method::POST, "/auth/email/verification", Some(&bobs)),
        202,
        "verification again",
    )
    .await;
    for mail in sink
        .wait_where(2, |m| m.is_to("bob@example.com") && m.is_verification())
        .await
    {
        s.keep(&token_of(&mail.verification_link()));
    }
    let (admin, _) = s.login(ADMIN_USERNAME, GOOD_PASSWORD).await;
    let user = format!("/admin/users/{bob}");
    let calls: Vec<(Method, String, Option<Value>, u16)> = vec![
        (
            Method::PATCH,
            user.clone(),
            Some(json!({ "disabled": true })),
            200,
        ),
        (
            Method::PATCH,
            user.clone(),
            Some(json!({ "disabled": false })),
            200,
        ),
        (Method::DELETE, format!("{user}/sessions"), None, 204),
        (
            Method::POST,
            "/admin/roles".into(),
            Some(json!({ "name": "support", "permissions": ["users:read"] })),
            201,
        ),
        (
            Method::PUT,
            "/admin/roles/support".into(),
            Some(json!({ "permissions": ["roles:read"] })),
            200,
        ),
        (Method::PUT, format!("{user}/roles/support"), None, 204),
        (Method::DELETE, format!("{user}/roles/support"), None, 204),
        (Method::DELETE, "/admin/roles/support".into(), None, 204),
    ];
    for (method, path, body, status) in calls {
        let mut request = s.request(method.clone(), &path, Some(&admin));
        if let Some(body) = body {
            request = request.json(&body);
        }
        s.send(request, status, &format!("{method} {path}")).await;
    }
    // The hashes, while bob's account still exists.
    for hash in hashes(db).await {
        s.keep(&hash);
    }
    s.send(
        s.request(Method::DELETE, &user, Some(&admin)),
        204,
        "delete",
    )
    .await;
}

/// The audit lines of a log, each parsed.
fn audit_lines(lines: &[String]) -> Vec<Map<String, Value>> {
    lines
        .iter()
        .filter(|line| line.contains("\"audience\":\"audit\""))
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("not a JSON object: {line} ({other:?})"),
        })
        .collect()
}

db_tests! {
    async fn a_whole_session_mirrors_each_row_in_one_clean_log_line_and_counts_it(backend: Backend) {
        let db = TestDb::create(backend).await;
        let sink = SmtpSink::start().await;
        let key = format!("audit-log-key-{}", random_hex(24));
        let ada_password = format!("ada-{}-password", random_hex(8));
        let server = Logged::start(&[
            ("RUST_LOG", "debug"),
            ("DATABASE_URL", &db.url()),
            ("JWT_SECRET_KEY", &key),
            ("SMTP_URL", &sink.url()),
            ("ADMIN_EMAIL", ADMIN_EMAIL),
            ("ADMIN_USERNAME", ADMIN_USERNAME),
            ("ADMIN_PASSWORD", GOOD_PASSWORD),
            ("REFRESH_TOKEN_GRACE_SECS", "0"),
        ]);
        let mut s = Session {
            client: Client::new(),
            address: server.address.clone(),
            secrets: vec![key.clone(), ada_password, GOOD_PASSWORD.to_owned()],
        };
        scripted_session(&mut s, &sink, &db).await;
        let metrics = s.send(s.request(reqwest::Method::GET, "/metrics", None), 200, "metrics").await.text().await.expect("text");
        let lines = server.stop();
        let stored = rows(&db).await;

        // Every event happened at least once.
        let seen: std::collections::BTreeSet<&str> = stored.iter().map(|r| r.event.as_str()).collect();
        let missing: Vec<&str> = EVENTS.iter().copied().filter(|e| !seen.contains(e)).collect();
        assert!(missing.is_empty(), "the session covers every event; not: {missing:?}");

        // The counter: exactly the rows of each event, every event listed.
        for event in EVENTS {
            let series = format!("cerego_audit_events_total{{event=\"{event}\"}}");
            assert!(metrics.lines().any(|l| l.starts_with(&format!("{series} "))), "{series} is listed");
            let count = stored.iter().filter(|r| r.event == event).count();
            let count = f64::from(u32::try_from(count).expect("few"));
            assert_eq!(metric_in(&metrics, &series), count, "{series}");
        }

        // The mirror: one line per row, with the row's fields.
        let mut audit = audit_lines(&lines);
        audit.sort_by_key(|line| line["id"].as_i64());
        assert_eq!(audit.len(), stored.len(), "one line per row:\n{}", lines.join("\n"));
        for (line, row) in audit.iter().zip(&stored) {
            let mut want = Map::new();
            want.insert("id".into(), json!(row.id));
            want.insert("occurred_at".into(), json!(crate::audit_helpers::rfc3339_micros(row.occurred_at)));
            want.insert("event".into(), json!(row.event));
            want.insert("outcome".into(), json!(row.outcome));
            for (name, value) in [("actor_user_id", row.actor_user_id.map(Value::from)), ("target_user_id", row.target_user_id.map(Value::from)),
                ("ip", row.ip.clone().map(Value::from)), ("user_agent", row.user_agent.clone().map(Value::from)), ("request_id", row.request_id.clone().map(Value::from))] {
                if let Some(value) = value {
                    want.insert(name.into(), value);
                }
            }
            want.insert("details".into(), serde_json::from_str(&row.details).expect("json"));
            want.insert("prev_hash".into(), json!(row.prev_hash));
            want.insert("hash".into(), json!(row.hash));
            want.insert("audience".into(), json!("audit"));
            want.insert("message".into(), json!("audit event"));
            want.insert("target".into(), json!("cerego::audit"));
            let got: Map<String, Value> = line.iter().filter(|(k, _)| want.contains_key(*k) || FIELDS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(Value::Object(got), Value::Object(want), "the line of row {}", row.id);
            assert!(line["details"].is_object(), "details as an object: {line:?}");
        }

        // No secret in any row or any audit line.
        assert!(s.secrets.len() > 20, "{} secrets", s.secrets.len());
        for secret in s.secrets.iter().filter(|x| x.len() >= 8) {
            for row in &stored {
                assert!(!format!("{row:?}").contains(secret.as_str()), "a secret in row {}: {secret}", row.id);
            }
            for line in &audit {
                assert!(!Value::Object(line.clone()).to_string().contains(secret.as_str()), "a secret in an audit line: {secret}");
            }
        }
    }
}

/// The fields an audit line may carry beside the ones compared (an absent one must be absent).
const FIELDS: [&str; 5] = [
    "actor_user_id",
    "target_user_id",
    "ip",
    "user_agent",
    "request_id",
];

/// `cerego_audit_events_total` of every event on `app`, checking that each series is listed.
async fn counters(app: &crate::helpers::TestApp) -> Vec<f64> {
    let text = app.get("/metrics").await.text().await.expect("text");
    EVENTS
        .iter()
        .map(|event| {
            let series = format!("cerego_audit_events_total{{event=\"{event}\"}}");
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{series} "))),
                "{series} is listed"
            );
            metric_in(&text, &series)
        })
        .collect()
}

/// The rows of each event (in the order of [`EVENTS`]) among `rows`.
fn per_event(rows: &[cerego::store::AuditRecord]) -> Vec<f64> {
    EVENTS
        .iter()
        .map(|event| {
            f64::from(
                u32::try_from(rows.iter().filter(|r| r.event == *event).count()).expect("few"),
            )
        })
        .collect()
}

db_tests! {
    async fn the_counter_goes_up_by_exactly_the_rows_written(backend: Backend) {
        let app = crate::admin_helpers::spawn_admin_app(backend).await;
        let start = counters(&app).await;
        assert_eq!(start, per_event(&rows(&app.db).await), "at start: the bootstrap only");
        assert_eq!(start.iter().sum::<f64>(), 1.0);

        let admin = app.admin_token().await;
        let ada = crate::admin_helpers::id_of(&app.create_user("ada").await);
        assert_eq!(app.signup("ada@example.com", "ada2", GOOD_PASSWORD).await.status(), 409);
        app.token_for("ada").await;
        for name in ["ada", "nobody"] {
            let body = json!({ "username": name, "password": "not the password" });
            assert_eq!(app.login_json(&body).await.status(), 401);
        }
        for disabled in [true, true, false, false] {
            let response = app.patch_user(&admin, ada, &json!({ "disabled": disabled })).await;
            assert_eq!(response.status(), 200);
        }
        let end = counters(&app).await;

        let all = rows(&app.db).await;
        assert_eq!(end, per_event(&all), "each counter is its event's rows");
        let delta: Vec<(&str, f64)> = EVENTS.iter().copied().zip(end.iter().zip(&start).map(|(e, s)| e - s)).filter(|(_, d)| *d != 0.0).collect();
        assert_eq!(delta, [
            ("user.signed_up", 1.0), ("auth.login_succeeded", 2.0), ("auth.login_failed", 2.0),
            ("email.verification_sent", 1.0), ("user.disabled", 1.0), ("user.enabled", 1.0),
        ]);
    }
}
