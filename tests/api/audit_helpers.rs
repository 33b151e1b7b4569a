//! What the audit-trail tests share: requests that carry a distinctive `User-Agent` and
//! `x-request-id`, the trail read straight from the database (and what each new row must say),
//! the chain recomputed here from the rows (SHA-256, independently of the service's code), and
//! `cerego audit verify` run as a process.

use std::process::Output;

use cerego::store::AuditRecord;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, TestDb};

/// The 22 events, by their fixed names.
pub const EVENTS: [&str; 22] = [
    "user.signed_up",
    "auth.login_succeeded",
    "auth.login_failed",
    "auth.login_throttled",
    "auth.logged_out",
    "auth.logged_out_all",
    "session.revoked",
    "auth.refresh_reuse_detected",
    "password.reset_requested",
    "password.reset_completed",
    "password.changed",
    "email.verification_sent",
    "email.verified",
    "user.disabled",
    "user.enabled",
    "user.deleted",
    "role.granted",
    "role.revoked",
    "role.created",
    "role.updated",
    "role.deleted",
    "admin.bootstrapped",
];

/// The `prev_hash` of the first row ever written, and the anchor before any purge.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The `User-Agent` a request tagged `tag` sends.
pub fn agent(tag: &str) -> String {
    format!("cerego-audit-test/1.0 ({tag})")
}

/// The `x-request-id` a request tagged `tag` sends.
pub fn request_id(tag: &str) -> String {
    format!("req-{tag}")
}

/// Every row of the trail, oldest first.
pub async fn rows(db: &TestDb) -> Vec<AuditRecord> {
    db.fetch_all(
        "SELECT id, occurred_at, event, actor_user_id, target_user_id, ip, user_agent, \
         request_id, outcome, details, prev_hash, hash FROM audit_events ORDER BY id",
    )
    .await
}

/// The chain's head: `(last_id, last_hash, anchor_id, anchor_hash)`.
pub async fn head(db: &TestDb) -> (i64, String, i64, String) {
    let heads: Vec<(i64, String, i64, String)> = db
        .fetch_all("SELECT last_id, last_hash, anchor_id, anchor_hash FROM audit_chain")
        .await;
    assert_eq!(heads.len(), 1, "audit_chain has one row");
    heads.into_iter().next().expect("one row")
}

impl TestApp {
    /// A request to `path` tagged `tag` (its own `User-Agent` and `x-request-id`), with an
    /// optional bearer token.
    pub fn tagged(
        &self,
        method: Method,
        path: &str,
        tag: &str,
        token: Option<&str>,
    ) -> RequestBuilder {
        let request = self
            .client
            .request(method, self.url(path))
            .header("user-agent", agent(tag))
            .header("x-request-id", request_id(tag));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a tagged request with an optional JSON body; asserts `status` and that the
    /// request id came back.
    pub async fn send_tagged(
        &self,
        method: Method,
        path: &str,
        tag: &str,
        token: Option<&str>,
        body: Option<&Value>,
        status: u16,
    ) -> Response {
        let mut request = self.tagged(method.clone(), path, tag, token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), status, "{method} {path} ({tag})");
        assert_eq!(
            response
                .headers()
                .get("x-request-id")
                .map(|v| v.to_str().expect("ASCII")),
            Some(request_id(tag).as_str()),
            "the request id is echoed"
        );
        response
    }

    /// A tagged sign-up of `username` (`<username>@example.com`, `password`); the new id.
    pub async fn signup_tagged(&self, username: &str, password: &str, tag: &str) -> i64 {
        let body = json!({ "email": format!("{username}@example.com"), "username": username, "password": password });
        let response = self
            .send_tagged(Method::POST, "/auth/signup", tag, None, Some(&body), 201)
            .await;
        let user: Value = response.json().await.expect("json");
        user["id"].as_i64().expect("id")
    }

    /// A tagged login of `name` with `password` answered with `status`.
    pub async fn login_tagged(
        &self,
        name: &str,
        password: &str,
        tag: &str,
        status: u16,
    ) -> Response {
        let body = json!({ "username": name, "password": password });
        self.send_tagged(Method::POST, "/auth/login", tag, None, Some(&body), status)
            .await
    }

    /// A tagged login that succeeds: `(access, refresh, session id)`.
    pub async fn session_tagged(
        &self,
        name: &str,
        password: &str,
        tag: &str,
    ) -> (String, String, i64) {
        let body: Value = self
            .login_tagged(name, password, tag, 200)
            .await
            .json()
            .await
            .expect("json");
        let field = |f: &str| body[f].as_str().expect(f).to_owned();
        let (access, refresh) = (field("access_token"), field("refresh_token"));
        let session = self.current_session(&access).await;
        (access, refresh, session)
    }

    /// The id of the session of `access`, from `GET /auth/sessions`.
    pub async fn current_session(&self, access: &str) -> i64 {
        let response = self.get_authed("/auth/sessions", access).await;
        assert_eq!(response.status(), 200);
        let sessions: Vec<Value> = response.json().await.expect("json");
        sessions
            .iter()
            .find(|s| s["current"] == json!(true))
            .and_then(|s| s["id"].as_i64())
            .unwrap_or_else(|| panic!("no current session in {sessions:?}"))
    }
}

/// What one new row must say.
#[derive(Debug, Clone)]
pub struct Want {
    event: &'static str,
    outcome: &'static str,
    actor: Option<i64>,
    target: Option<i64>,
    details: Value,
    /// The request's tag; `None`: no client (ip, user agent and request id null).
    tag: Option<String>,
}

/// A `success` row of `event`, from the request tagged `tag`.
pub fn success(event: &'static str, tag: &str) -> Want {
    Want {
        event,
        outcome: "success",
        actor: None,
        target: None,
        details: json!({}),
        tag: Some(tag.to_owned()),
    }
}

/// A `failure` row of `event`, from the request tagged `tag`.
pub fn failure(event: &'static str, tag: &str) -> Want {
    Want {
        outcome: "failure",
        ..success(event, tag)
    }
}

impl Want {
    #[must_use]
    pub fn by(mut self, actor: i64) -> Self {
        self.actor = Some(actor);
        self
    }

    #[must_use]
    pub fn on(mut self, target: i64) -> Self {
        self.target = Some(target);
        self
    }

    #[must_use]
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// No client: written by the service itself (start-up, a command).
    #[must_use]
    pub fn no_client(mut self) -> Self {
        self.tag = None;
        self
    }

    fn as_json(&self) -> Value {
        let tag = self.tag.as_deref();
        json!({
            "event": self.event,
            "outcome": self.outcome,
            "actor_user_id": self.actor,
            "target_user_id": self.target,
            "ip": tag.map(|_| "127.0.0.1"),
            "user_agent": tag.map(agent),
            "request_id": tag.map(request_id),
            "details": self.details,
        })
    }
}

/// A row's fields as [`Want`] describes them (details parsed).
pub fn described(row: &AuditRecord) -> Value {
    json!({
        "event": row.event,
        "outcome": row.outcome,
        "actor_user_id": row.actor_user_id,
        "target_user_id": row.target_user_id,
        "ip": row.ip,
        "user_agent": row.user_agent,
        "request_id": row.request_id,
        "details": serde_json::from_str::<Value>(&row.details)
            .unwrap_or_else(|err| panic!("details of row {} are not JSON: {err}", row.id)),
    })
}

/// Reads the trail as it grows: each call returns the rows written since the last.
pub struct Trail {
    seen: i64,
}

impl Trail {
    /// Starts after the rows written so far.
    pub async fn start(db: &TestDb) -> Self {
        Self {
            seen: rows(db).await.last().map_or(0, |r| r.id),
        }
    }

    /// Starts before the first row ever written.
    pub fn from_start() -> Self {
        Self { seen: 0 }
    }

    /// The rows written since the last call, oldest first.
    pub async fn new_rows(&mut self, db: &TestDb) -> Vec<AuditRecord> {
        let new: Vec<AuditRecord> = rows(db)
            .await
            .into_iter()
            .filter(|r| r.id > self.seen)
            .collect();
        if let Some(last) = new.last() {
            self.seen = last.id;
        }
        new
    }

    /// Asserts that exactly `want` was written since the last call, in that order; the rows.
    pub async fn expect(&mut self, db: &TestDb, what: &str, want: &[Want]) -> Vec<AuditRecord> {
        let new = self.new_rows(db).await;
        let got: Vec<Value> = new.iter().map(described).collect();
        let want: Vec<Value> = want.iter().map(Want::as_json).collect();
        assert_eq!(got, want, "{what}: the rows written");
        new
    }

    /// Asserts that nothing was written since the last call.
    pub async fn expect_none(&mut self, db: &TestDb, what: &str) {
        self.expect(db, what, &[]).await;
    }
}

/// The canonical content of a row, as COMMON.md and docs define it, built here without the
/// service's code: `[id,occurred_at,"event",actor,target,ip,user_agent,request_id,"outcome",
/// <details as stored>]`.
pub fn content_of(row: &AuditRecord) -> String {
    let head = json!([
        row.id,
        row.occurred_at,
        row.event,
        row.actor_user_id,
        row.target_user_id,
        row.ip,
        row.user_agent,
        row.request_id,
        row.outcome,
    ])
    .to_string();
    format!(
        "{},{}]",
        head.strip_suffix(']').expect("an array"),
        row.details
    )
}

/// `sha256_hex(prev_hash + "\n" + content)`.
pub fn hash_of(prev_hash: &str, content: &str) -> String {
    let digest = Sha256::digest(format!("{prev_hash}\n{content}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Recomputes the chain from `anchor` (`(anchor_id, anchor_hash)`) over `rows` (oldest first)
/// and asserts every link: consecutive ids from the anchor on, each `prev_hash` the previous
/// row's `hash`, each `hash` recomputed from the row, the head naming the last row.
pub async fn assert_chain_intact(db: &TestDb) -> Vec<AuditRecord> {
    let rows = rows(db).await;
    let (last_id, last_hash, anchor_id, anchor_hash) = head(db).await;
    let mut prev = (anchor_id, anchor_hash.clone());
    for row in &rows {
        assert_eq!(row.id, prev.0 + 1, "ids are consecutive from the anchor");
        assert_eq!(
            row.prev_hash, prev.1,
            "row {} links to the row before it",
            row.id
        );
        assert_eq!(
            row.hash,
            hash_of(&row.prev_hash, &content_of(row)),
            "row {}'s hash",
            row.id
        );
        assert_eq!(row.hash.len(), 64);
        assert!(
            row.hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        prev = (row.id, row.hash.clone());
    }
    assert_eq!((last_id, last_hash), prev, "the head names the newest row");
    rows
}

/// Runs `cerego audit verify` on `db`.
pub fn audit_verify(db: &TestDb) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    crate::process::command(&dir)
        .args(["audit", "verify"])
        .env("DATABASE_URL", db.url())
        .output()
        .expect("run cerego audit verify")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `cerego audit verify` passes, saying `says` (`"N events (ids A..B)"` or
/// `"no events"`) on its first line; the lines after it (what retention purged), if any.
pub fn assert_verify_passes(db: &TestDb, says: &str) -> Vec<String> {
    let output = audit_verify(db);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let mut lines = stdout.trim().lines().map(str::to_owned);
    assert_eq!(
        lines.next().unwrap_or_default(),
        format!("audit chain intact: {says}"),
        "stderr: {stderr}"
    );
    lines.collect()
}

/// Asserts that `cerego audit verify` fails with exit code 1 and names the row in `says`
/// (the break's text, say `"row 5 was altered"`).
pub fn assert_verify_fails(db: &TestDb, says: &str) {
    let output = audit_verify(db);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(says),
        "stderr should name the row ({says:?}): {stderr}"
    );
    assert!(!stdout.contains("intact"), "{stdout}");
}

/// `occurred_at` (Unix µs) in RFC 3339 with six fractional digits and `Z`, computed here.
pub fn rfc3339_micros(micros: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .expect("in range");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

/// A row as `GET /admin/audit-events` shows it.
pub fn api_event(row: &AuditRecord) -> Value {
    json!({
        "id": row.id,
        "occurred_at": rfc3339_micros(row.occurred_at),
        "event": row.event,
        "outcome": row.outcome,
        "actor_user_id": row.actor_user_id,
        "target_user_id": row.target_user_id,
        "ip": row.ip,
        "user_agent": row.user_agent,
        "request_id": row.request_id,
        "details": serde_json::from_str::<Value>(&row.details).expect("details are JSON"),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    })
}

/// A row as `GET /auth/activity` shows it to `viewer`: an admin's (another user's) address and
/// user agent hidden.
pub fn activity_of(row: &AuditRecord, viewer: i64) -> Value {
    let by_admin = row.actor_user_id.is_some_and(|actor| actor != viewer);
    json!({
        "id": row.id,
        "occurred_at": rfc3339_micros(row.occurred_at),
        "event": row.event,
        "outcome": row.outcome,
        "ip": if by_admin { None } else { row.ip.clone() },
        "user_agent": if by_admin { None } else { row.user_agent.clone() },
        "by_admin": by_admin,
        "details": serde_json::from_str::<Value>(&row.details).expect("details are JSON"),
    })
}

/// Every page of `path` (a query already begun with `?`), followed by `next_cursor`; the items
/// in order and the number of pages. Asserts that each page holds at most `limit` items and
/// that only the last has no cursor.
pub async fn walk(app: &TestApp, path: &str, token: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1..=1000 {
        let url = match &cursor {
            Some(cursor) if path.ends_with('?') => format!("{path}cursor={cursor}"),
            Some(cursor) => format!("{path}&cursor={cursor}"),
            None => path.to_owned(),
        };
        let response = app.get_authed(&url, token).await;
        assert_eq!(response.status(), 200, "GET {url}");
        let page: Value = response.json().await.expect("json");
        let keys: Vec<&String> = page.as_object().expect("an object").keys().collect();
        assert_eq!(keys, ["items", "next_cursor"], "{page}");
        let these = page["items"].as_array().expect("items").clone();
        assert!(these.len() <= limit, "{} items, limit {limit}", these.len());
        items.extend(these.clone());
        match &page["next_cursor"] {
            Value::Null => return (items, pages),
            Value::String(next) => {
                assert_eq!(these.len(), limit, "only the last page is short");
                cursor = Some(next.clone());
            }
            other => panic!("next_cursor {other}"),
        }
    }
    panic!("more than 1000 pages");
}
