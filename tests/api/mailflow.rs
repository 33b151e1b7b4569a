//! What the account-recovery tests share: an app whose mail goes to an [`SmtpSink`], the calls
//! of the recovery routes, and the checks every message must pass.

use std::time::Duration;

use cerego::config::Settings;
use reqwest::Response;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_app_with, spawn_app_with_clock};
use crate::smtp_sink::{MAIL_WAIT, Received, SmtpSink, path_of};

/// The one answer of `POST /auth/password/forgot` to every well-formed address.
pub const FORGOT_DETAIL: &str = "If an account exists for that email, a reset link has been sent";
/// The answer to an unknown, used or expired token.
pub const INVALID_TOKEN: &str = "Invalid or expired token";
/// A password that passes the policy and differs from `GOOD_PASSWORD`.
pub const NEW_PASSWORD: &str = "a brand new passphrase for ada";

/// An app (with `tweak` applied) whose mail goes to a fresh sink.
pub async fn spawn_with_sink(
    backend: Backend,
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = spawn_app_with(backend, |s| {
        s.mail.smtp_url = Some(SecretString::from(url));
        tweak(s);
    })
    .await;
    (app, sink)
}

/// Like [`spawn_with_sink`], with a clock that moves only when the test moves it.
pub async fn spawn_with_sink_and_clock(
    backend: Backend,
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = spawn_app_with_clock(backend, |s| {
        s.mail.smtp_url = Some(SecretString::from(url));
        tweak(s);
    })
    .await;
    (app, sink)
}

/// `<username>@example.com`, the address `create_user` signs up with.
pub fn email_of(username: &str) -> String {
    format!("{username}@example.com")
}

/// `POST /auth/password/forgot` for `email`.
pub async fn forgot(app: &TestApp, email: &str) -> Response {
    app.post_json("/auth/password/forgot", &json!({ "email": email }))
        .await
}

/// `POST /auth/password/forgot` for `email`; asserts the 202 and its one body.
pub async fn forgot_ok(app: &TestApp, email: &str) {
    let response = forgot(app, email).await;
    assert_eq!(response.status(), 202, "forgot for {email}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({ "detail": FORGOT_DETAIL }));
}

/// `POST /auth/password/reset` (JSON) with `token` and `new_password`.
pub async fn reset(app: &TestApp, token: &str, new_password: &str) -> Response {
    app.post_json(
        "/auth/password/reset",
        &json!({ "token": token, "new_password": new_password }),
    )
    .await
}

/// `POST /auth/password/change` with the bearer `access`.
pub async fn change(app: &TestApp, access: &str, current: &str, new_password: &str) -> Response {
    app.client
        .post(app.url("/auth/password/change"))
        .bearer_auth(access)
        .json(&json!({ "current_password": current, "new_password": new_password }))
        .send()
        .await
        .expect("request")
}

/// `POST /auth/email/verify` with `token`.
pub async fn verify(app: &TestApp, token: &str) -> Response {
    app.post_json("/auth/email/verify", &json!({ "token": token }))
        .await
}

/// `GET` of a link's path and query on the test app (whatever host the link names).
pub async fn open_link(app: &TestApp, link: &str) -> Response {
    app.get(&path_of(link)).await
}

/// A login with `name` and `password`; returns the answer.
pub async fn login(app: &TestApp, name: &str, password: &str) -> Response {
    app.login_json(&json!({ "username": name, "password": password }))
        .await
}

/// A login that must succeed; returns the access and refresh tokens.
pub async fn login_ok(app: &TestApp, name: &str, password: &str) -> (String, String) {
    let response = login(app, name, password).await;
    assert_eq!(response.status(), 200, "login of {name}");
    let body: Value = response.json().await.expect("json");
    let field = |f: &str| body[f].as_str().expect(f).to_owned();
    (field("access_token"), field("refresh_token"))
}

/// `email_verified` of `/auth/me` for `access`.
pub async fn email_verified(app: &TestApp, access: &str) -> bool {
    let response = app.me(access).await;
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.expect("json");
    me["email_verified"]
        .as_bool()
        .unwrap_or_else(|| panic!("email_verified is a bool: {me}"))
}

/// The `Content-Type` of `response`, or "".
pub fn content_type(response: &Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Asserts an HTML answer with `status`; returns its body.
pub async fn html(response: Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    let kind = content_type(&response);
    assert!(kind.starts_with("text/html"), "{kind}");
    response.text().await.expect("body")
}

/// Asserts that an HTML page loads nothing from anywhere (no scripts, styles or images by URL).
pub fn assert_self_contained(page: &str) {
    let lower = page.to_ascii_lowercase();
    for pattern in [
        "src=\"http",
        "src='http",
        "src=http",
        "url(http",
        "<link",
        "@import",
    ] {
        assert!(
            !lower.contains(pattern),
            "the page loads {pattern:?}: {page}"
        );
    }
}

/// Asserts what every message must be: to `recipient` alone (envelope and `To`), a plain
/// subject, `Date`, a `Message-ID`, multipart with a text and an HTML part, nothing remote.
pub fn assert_well_formed(message: &Received, recipient: &str) {
    let mail = message.parse();
    let raw = message.raw_text();
    assert_eq!(message.recipients, [recipient], "envelope: {raw}");
    assert_eq!(mail.to, [recipient], "To: {raw}");
    let subject = mail.subject.as_deref().unwrap_or("");
    assert!(!subject.trim().is_empty(), "a subject: {raw}");
    let raw_subject = mail.raw_subject.as_deref().unwrap_or("");
    assert!(
        !raw_subject.contains("=?") && !raw_subject.contains('<'),
        "a plain subject: {raw_subject:?}"
    );
    assert!(mail.date.is_some(), "a Date: {raw}");
    let id = mail.message_id.as_deref().unwrap_or("");
    assert!(id.contains('@'), "a Message-ID: {raw}");
    assert!(
        mail.content_type.starts_with("multipart/"),
        "{}",
        mail.content_type
    );
    assert_eq!(mail.text.len(), 1, "one text part: {raw}");
    assert_eq!(mail.html.len(), 1, "one HTML part: {raw}");
    assert_eq!(mail.other_parts, 0, "no attachment or inline image: {raw}");
    let html = mail.html[0].to_ascii_lowercase();
    assert!(!html.contains("<img src=\"http"), "no remote image: {html}");
    assert_self_contained(&mail.html[0]);
}

/// Polls `/metrics` until `series` satisfies `ok` (bounded, so a broken build fails instead of
/// hanging); returns its value.
pub async fn wait_metric(app: &TestApp, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    loop {
        let value = app.metric(series).await;
        if ok(value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The series of a mail metric (`sent`, `failed_attempts`, `expired`) for `kind`.
pub fn mail_series(metric: &str, kind: &str) -> String {
    format!("cerego_mail_{metric}_total{{kind=\"{kind}\"}}")
}
