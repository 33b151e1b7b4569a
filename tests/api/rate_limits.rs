//! Rate limits over HTTP: each rule refuses past its quota with 429, `Retry-After` and the
//! `RateLimit` fields, costs no password work when it refuses, and recovers; `off` and
//! `RATE_LIMIT_ENABLED=false` disable; the probes are never limited; a classroom behind one
//! address gets through the defaults; a stolen token that spends its user's budget cannot stop
//! the owner from ending its session.
//!
//! Timing: a test that counts requests uses quotas per hour (`every(3, 3600)`: one request
//! refills every 20 minutes), so however slowly a loaded machine sends a burst, nothing refills
//! and every `r` is exact. Recovery is tested apart, on a short rate: requests until one is
//! refused, then a wait of that refusal's `Retry-After` (plus a margin) counted from its arrival,
//! never from an assumed start.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cerego::limits::Rule;
use reqwest::Response;
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{
    Backend, GOOD_PASSWORD, RuleState, TestApp, assert_detail, assert_no_rate_limit_fields,
    assert_refused, default_limits, every, hash_count, limited_series, metric_total_in,
    only_limits, rate_limits, rule_names, rule_state, spawn_app, spawn_app_with,
};

const TOO_MANY: &str = "Too many requests";
const INCORRECT: &str = "Incorrect username or password";
/// How far an answer's `t` or `Retry-After` may fall short of its ideal (the time since the
/// requests it counts began) before the test calls it wrong: far more than any test here takes,
/// far less than the hour windows it is used with.
const SLACK_SECS: u64 = 30;
/// Added to a `Retry-After` before the retry (the field is whole seconds, rounded up, so this
/// only covers timer granularity).
const MARGIN: Duration = Duration::from_millis(250);

fn wrong(name: &str) -> Value {
    json!({ "username": name, "password": "not the password" })
}

/// `quota` requests per hour: one refills every `3600 / quota` seconds, never during a test.
fn per_hour(quota: u32) -> Option<cerego::limits::Rate> {
    every(quota, 3600)
}

/// The short rate of the recovery tests: one request per two seconds. A refusal's `Retry-After`
/// is then 1 or 2; a service that announced less than it must would be caught by the retry.
fn short() -> Option<cerego::limits::Rate> {
    every(1, 2)
}

/// Asserts that `state` reports the quota `q` per `w` seconds with exactly `r` left, and a `t`
/// that the `q - r` requests counted (all within the last few seconds) leave: the bucket is full
/// again `(q - r) * w / q` seconds after the first of them.
fn assert_state(state: RuleState, q: u64, w: u64, r: u64) {
    assert_eq!((state.q, state.w, state.r), (q, w, r), "{state:?}");
    let full = ((q - r) * w).div_ceil(q);
    assert!(
        state.t >= 1 && (full.saturating_sub(SLACK_SECS)..=full).contains(&state.t),
        "t should be a little under {full}: {state:?}"
    );
}

/// Asserts that a refusal's `Retry-After` is a little under `interval` seconds: one request
/// refills every `interval` seconds, and the burst that spent the budget began moments ago.
fn assert_retry(retry: u64, interval: u64) {
    assert!(
        (interval.saturating_sub(SLACK_SECS)..=interval).contains(&retry),
        "Retry-After should be a little under {interval}: {retry}"
    );
}

/// Asserts that an answer that is not a 429 reports exactly `rules`.
fn assert_rules(response: &Response, rules: &[&str]) {
    assert_ne!(response.status(), 429, "{} was refused", response.url());
    assert_eq!(
        rule_names(response.headers()),
        rules,
        "{:?}",
        response.headers()
    );
}

/// Waits out the refusal `refused`: its `Retry-After` plus [`MARGIN`], counted from now (its
/// arrival), whatever happened before.
async fn wait_out(refused: Response, detail: &str) {
    let arrived = Instant::now();
    let (retry, _) = assert_refused(refused, detail).await;
    assert!(
        retry <= 2,
        "one request refills every 2 s: Retry-After {retry}"
    );
    tokio::time::sleep_until((arrived + Duration::from_secs(retry) + MARGIN).into()).await;
}

/// Sends `send` until an answer is refused, then waits that refusal out. On a short rate, how
/// many get through first depends on how fast the machine sends; every one must succeed.
async fn spend_and_wait_out(mut send: impl AsyncFnMut() -> Response) {
    for _ in 0..10 {
        let response = send().await;
        if response.status() == 429 {
            return wait_out(response, TOO_MANY).await;
        }
        assert!(
            response.status().is_success(),
            "{}: {}",
            response.url(),
            response.status()
        );
    }
    panic!("ten requests at once, none refused by a rate of one per two seconds");
}

/// The session id (`sid` claim) of an access token.
fn session_of(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json");
    claims["sid"].as_str().expect("sid").to_owned()
}

async fn delete_session(app: &TestApp, token: &str, id: &str) -> Response {
    app.client
        .delete(app.url(&format!("/auth/sessions/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// `POST /auth/refresh` answered 200: the rotated refresh token.
async fn rotated(response: Response) -> String {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["refresh_token"].as_str().expect("rotated").to_owned()
}

db_tests! {
    async fn login_ip_refuses_past_its_quota_before_reading_the_body(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            only_limits(s, &[(Rule::LoginIp, per_hour(3)), (Rule::LoginAccount, per_hour(10))]);
        })
        .await;
        app.create_user("ada").await;

        for (n, name) in ["amy", "bea", "cat"].into_iter().enumerate() {
            let response = app.login_json(&wrong(name)).await;
            // Both rules of a login are reported, the address's first.
            assert_rules(&response, &["login_ip", "login_account"]);
            assert_state(rule_state(response.headers(), "login_ip"), 3, 3600, 2 - n as u64);
            assert_state(rule_state(response.headers(), "login_account"), 10, 3600, 9);
            assert_detail(response, 401, INCORRECT).await;
        }
        let verified = app.metric(&hash_count("verify")).await;
        assert_eq!(verified, 3.0, "each failed login paid one verification");

        let refused = app.login_json(&json!({ "username": "ada", "password": GOOD_PASSWORD })).await;
        let (retry, limits) = assert_refused(refused, TOO_MANY).await;
        assert_retry(retry, 1200);
        // Refused by the address before the body was read: the login name was never counted.
        assert_eq!(limits.len(), 1, "{limits:?}");
        assert_eq!(limits[0].0, "login_ip");
        assert_state(limits[0].1, 3, 3600, 0);
        // Not even a malformed body is read.
        let garbage = app
            .client
            .post(app.url("/auth/login"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("request");
        assert_refused(garbage, TOO_MANY).await;
        assert_eq!(app.metric(&hash_count("verify")).await, verified, "a refused login does no bcrypt work");
        assert_eq!(app.metric(&limited_series("login_ip")).await, 2.0);
        let allowed = r#"cerego_rate_limit_decisions_total{rule="login_ip",decision="allowed"}"#;
        let limited = r#"cerego_rate_limit_decisions_total{rule="login_ip",decision="limited"}"#;
        assert_eq!(app.metric(allowed).await, 3.0);
        assert_eq!(app.metric(limited).await, 2.0);
    }

    async fn login_account_counts_one_name_in_any_case_and_spares_the_others(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            only_limits(s, &[(Rule::LoginIp, per_hour(100)), (Rule::LoginAccount, per_hour(2))]);
            // The throttle keeps its defaults: it counts the same names, and must not disturb
            // the rule's budget.
            s.limits.throttle = default_limits().throttle;
        })
        .await;
        app.create_user("ada").await;

        let first = app.login_json(&wrong("ada")).await;
        assert_rules(&first, &["login_ip", "login_account"]);
        assert_state(rule_state(first.headers(), "login_account"), 2, 3600, 1);
        assert_state(rule_state(first.headers(), "login_ip"), 100, 3600, 99);
        let second = app.login_json(&wrong(" ADA ")).await;
        assert_state(rule_state(second.headers(), "login_account"), 2, 3600, 0);
        assert_detail(second, 401, INCORRECT).await;
        let verified = app.metric(&hash_count("verify")).await;

        // The right password does not help: the name's budget is spent, in any case or form.
        let refused = app.login_form(&[("username", "Ada"), ("password", GOOD_PASSWORD)]).await;
        let (retry, limits) = assert_refused(refused, TOO_MANY).await;
        assert_retry(retry, 1800);
        let names: Vec<&str> = limits.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["login_ip", "login_account"]);
        assert_state(limits[1].1, 2, 3600, 0);
        assert_eq!(app.metric(&hash_count("verify")).await, verified, "a refused login does no bcrypt work");

        // A body that does not parse names no account: only the address is counted.
        let unparsed = app.login_json(&json!({ "password": "no name" })).await;
        assert_rules(&unparsed, &["login_ip"]);
        assert_eq!(unparsed.status(), 422);
        // Another name has its own budget.
        let other = app.login_json(&wrong("bob")).await;
        assert_state(rule_state(other.headers(), "login_account"), 2, 3600, 1);
        assert_detail(other, 401, INCORRECT).await;
        // An e-mail address is counted in its canonical form.
        for email in ["Eve@Example.COM", "eve@example.com"] {
            let response = app.login_json(&json!({ "email": email, "password": "not the password" })).await;
            assert_detail(response, 401, INCORRECT).await;
        }
        let eve = app.login_json(&json!({ "email": " EVE@example.com", "password": "x" })).await;
        assert_refused(eve, TOO_MANY).await;
        assert_eq!(app.metric(&limited_series("login_account")).await, 2.0);
        assert_eq!(app.metric(&limited_series("login_ip")).await, 0.0);
    }

    async fn signup_ip_refuses_past_its_quota_without_hashing(backend: Backend) {
        let app = spawn_app_with(backend, |s| only_limits(s, &[(Rule::SignupIp, per_hour(2))])).await;

        for (n, name) in ["amy", "bea"].into_iter().enumerate() {
            let response = app.signup(&format!("{name}@example.com"), name, GOOD_PASSWORD).await;
            assert_rules(&response, &["signup_ip"]);
            assert_state(rule_state(response.headers(), "signup_ip"), 2, 3600, 1 - n as u64);
            assert_eq!(response.status(), 201);
        }
        let hashed = app.metric(&hash_count("hash")).await;
        assert_eq!(hashed, 2.0);

        let refused = app.signup("cat@example.com", "cat", GOOD_PASSWORD).await;
        let (retry, limits) = assert_refused(refused, TOO_MANY).await;
        assert_retry(retry, 1800);
        assert_eq!(limits.len(), 1, "{limits:?}");
        assert_state(limits[0].1, 2, 3600, 0);
        let invalid = app.post_json("/auth/signup", &json!({ "email": 5 })).await;
        assert_refused(invalid, TOO_MANY).await;
        assert_eq!(app.metric(&hash_count("hash")).await, hashed, "a refused sign-up hashes nothing");
        assert_eq!(app.db.scalar("SELECT count(*) FROM users").await, 2);
        assert_eq!(app.metric(&limited_series("signup_ip")).await, 2.0);

        // The other routes' rules are off: no fields there.
        let login = app.login_json(&json!({ "username": "amy", "password": GOOD_PASSWORD })).await;
        assert_no_rate_limit_fields(login.headers(), "login with its rules off");
        assert_eq!(login.status(), 200);
    }

    async fn refresh_ip_refuses_past_its_quota(backend: Backend) {
        let app = spawn_app_with(backend, |s| only_limits(s, &[(Rule::RefreshIp, per_hour(2))])).await;
        app.create_user("ada").await;
        let (_, mut refresh) = app.login_pair("ada").await;

        for r in [1, 0] {
            let response = app.refresh(&refresh).await;
            assert_rules(&response, &["refresh_ip"]);
            assert_state(rule_state(response.headers(), "refresh_ip"), 2, 3600, r);
            refresh = rotated(response).await;
        }
        let (retry, limits) = assert_refused(app.refresh(&refresh).await, TOO_MANY).await;
        assert_retry(retry, 1800);
        assert_eq!(limits.len(), 1, "{limits:?}");
        assert_eq!(limits[0].0, "refresh_ip");
        assert_eq!(app.metric(&limited_series("refresh_ip")).await, 1.0);
        assert_eq!(app.metric("cerego_sessions_refreshed_total").await, 2.0, "the refused refresh rotated nothing");
    }

    async fn api_user_counts_each_user_apart_across_routes(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            only_limits(s, &[(Rule::ApiUser, per_hour(3)), (Rule::ApiIp, per_hour(100))]);
        })
        .await;
        app.create_user("ada").await;
        app.create_user("bob").await;
        let ada = app.token_for("ada").await;
        let bob = app.token_for("bob").await;

        for (path, r) in [("/auth/me", 2), ("/auth/sessions", 1), ("/auth/me", 0)] {
            let response = app.get_authed(path, &ada).await;
            assert_rules(&response, &["api_user"]);
            assert_state(rule_state(response.headers(), "api_user"), 3, 3600, r);
            assert_eq!(response.status(), 200, "{path}");
        }
        for path in ["/auth/me", "/auth/sessions", "/openapi.json", "/no/such/route"] {
            let (retry, limits) = assert_refused(app.get_authed(path, &ada).await, TOO_MANY).await;
            assert_retry(retry, 1200);
            assert_eq!(limits.len(), 1, "{path}: {limits:?}");
            assert_eq!(limits[0].0, "api_user", "{path}");
            assert_state(limits[0].1, 3, 3600, 0);
        }

        // Another user, and requests without a valid token, have budgets of their own.
        let response = app.me(&bob).await;
        assert_state(rule_state(response.headers(), "api_user"), 3, 3600, 2);
        assert_eq!(response.status(), 200);
        for (token, r) in [(None, 99), (Some("not.a.token"), 98), (Some(&ada[..ada.len() - 2]), 97)] {
            let mut request = app.client.get(app.url("/auth/me"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("request");
            assert_rules(&response, &["api_ip"]);
            assert_state(rule_state(response.headers(), "api_ip"), 100, 3600, r);
            assert_eq!(response.status(), 401, "{token:?}");
        }
        assert_eq!(app.metric(&limited_series("api_user")).await, 4.0);
    }

    async fn api_ip_limits_unauthenticated_routes_and_never_the_probes(backend: Backend) {
        let app = spawn_app_with(backend, |s| only_limits(s, &[(Rule::ApiIp, per_hour(3))])).await;
        app.create_user("ada").await;
        let ada = app.token_for("ada").await;

        for (path, status, r) in [("/openapi.json", 200, 2), ("/no/such/route", 404, 1), ("/auth/me", 401, 0)] {
            let response = app.get(path).await;
            assert_rules(&response, &["api_ip"]);
            assert_state(rule_state(response.headers(), "api_ip"), 3, 3600, r);
            assert_eq!(response.status(), status, "{path}");
        }
        for path in ["/openapi.json", "/no/such/route", "/docs/"] {
            let (retry, limits) = assert_refused(app.get(path).await, TOO_MANY).await;
            assert_retry(retry, 1200);
            assert_eq!(limits.len(), 1);
            assert_state(limits[0].1, 3, 3600, 0);
        }
        // The probes are never limited and carry no fields, however spent the budget.
        for _ in 0..5 {
            for path in ["/healthz", "/readyz", "/metrics"] {
                let response = app.get(path).await;
                assert_no_rate_limit_fields(response.headers(), path);
                assert_eq!(response.status(), 200, "{path}");
            }
        }
        // A request with a valid token is counted per user (here: off), not per address.
        let me = app.me(&ada).await;
        assert_no_rate_limit_fields(me.headers(), "api_user is off");
        assert_eq!(me.status(), 200);
        assert_eq!(app.metric(&limited_series("api_ip")).await, 3.0);
    }

    /// The routes that end a session (logout, logout-all, deleting a session) answer to
    /// `api_user` keyed by the token's session; every other authenticated request by its user. A
    /// thief spending the user's budget cannot stop the owner, logged in again, from ending the
    /// thief's session.
    async fn a_stolen_token_spending_the_user_s_budget_cannot_stop_the_owner_ending_sessions(backend: Backend) {
        let app = spawn_app_with(backend, |s| only_limits(s, &[(Rule::ApiUser, per_hour(3))])).await;
        app.create_user("ada").await;
        let (stolen, stolen_refresh) = app.login_pair("ada").await;

        for r in [2, 1, 0] {
            let response = app.me(&stolen).await;
            assert_state(rule_state(response.headers(), "api_user"), 3, 3600, r);
            assert_eq!(response.status(), 200);
        }
        let (retry, limits) = assert_refused(app.me(&stolen).await, TOO_MANY).await;
        assert_retry(retry, 1200);
        assert_eq!(limits.len(), 1, "{limits:?}");

        // The owner logs in again: a new session, but the user's budget is spent for all else.
        let owner = app.token_for("ada").await;
        for path in ["/auth/me", "/auth/sessions"] {
            let (_, limits) = assert_refused(app.get_authed(path, &owner).await, TOO_MANY).await;
            assert_eq!(limits[0].0, "api_user", "{path}");
            assert_state(limits[0].1, 3, 3600, 0);
        }

        // Ending sessions is counted per session: the owner's is fresh.
        let deleted = delete_session(&app, &owner, &session_of(&stolen)).await;
        assert_rules(&deleted, &["api_user"]);
        assert_state(rule_state(deleted.headers(), "api_user"), 3, 3600, 2);
        assert_eq!(deleted.status(), 204, "the owner ends the thief's session");
        assert_detail(app.refresh(&stolen_refresh).await, 401, "Invalid refresh token").await;
        let logout = app.post_authed("/auth/logout", &owner).await;
        assert_state(rule_state(logout.headers(), "api_user"), 3, 3600, 1);
        assert_eq!(logout.status(), 204, "logout from the new session");

        let (other, other_refresh) = app.login_pair("ada").await;
        let (_, limits) = assert_refused(app.me(&other).await, TOO_MANY).await;
        assert_eq!(limits[0].0, "api_user", "still the user's budget");
        let everywhere = app.post_authed("/auth/logout-all", &other).await;
        assert_rules(&everywhere, &["api_user"]);
        assert_state(rule_state(everywhere.headers(), "api_user"), 3, 3600, 2);
        assert_eq!(everywhere.status(), 204, "logout-all from a new session");
        assert_detail(app.refresh(&other_refresh).await, 401, "Invalid refresh token").await;

        // Each session's own budget is still a limit.
        let spare = app.token_for("ada").await;
        for r in [2, 1, 0] {
            let response = delete_session(&app, &spare, "999999").await;
            assert_state(rule_state(response.headers(), "api_user"), 3, 3600, r);
            assert_detail(response, 404, "Session not found").await;
        }
        let (retry, limits) = assert_refused(delete_session(&app, &spare, "999999").await, TOO_MANY).await;
        assert_retry(retry, 1200);
        assert_eq!(limits[0].0, "api_user");
        let (_, limits) = assert_refused(app.post_authed("/auth/logout", &spare).await, TOO_MANY).await;
        assert_eq!(limits[0].0, "api_user");
    }

    async fn a_rule_that_is_off_is_neither_checked_nor_reported(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            s.limits.rates.set(Rule::LoginAccount, None);
            s.limits.rates.set(Rule::ApiIp, None);
            s.limits.rates.set(Rule::ApiUser, per_hour(1));
        })
        .await;
        app.create_user("ada").await;

        let login = app.login_json(&json!({ "username": "ada", "password": GOOD_PASSWORD })).await;
        assert_rules(&login, &["login_ip"]);
        assert_state(rule_state(login.headers(), "login_ip"), 60, 60, 59);
        let token = login.json::<Value>().await.expect("json")["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        for _ in 0..5 {
            let response = app.get("/openapi.json").await;
            assert_no_rate_limit_fields(response.headers(), "api_ip is off");
            assert_eq!(response.status(), 200);
        }
        let me = app.me(&token).await;
        assert_rules(&me, &["api_user"]);
        assert_eq!(me.status(), 200);
        let (retry, _) = assert_refused(app.me(&token).await, TOO_MANY).await;
        assert_retry(retry, 3600);
        let signup = app.signup("bob@example.com", "bob", GOOD_PASSWORD).await;
        assert_state(rule_state(signup.headers(), "signup_ip"), 100, 3600, 98);
    }

    async fn rate_limit_enabled_false_turns_every_limit_and_the_throttle_off(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            for rule in Rule::ALL {
                s.limits.rates.set(rule, every(1, 3600));
            }
            s.limits.throttle.backoff_after = 1;
            s.limits.throttle.account_failure_limit = 1;
            s.limits.enabled = false;
        })
        .await;

        let mut answers = Vec::new();
        for name in ["amy", "bea", "cat"] {
            answers.push(app.signup(&format!("{name}@example.com"), name, GOOD_PASSWORD).await);
        }
        for _ in 0..4 {
            answers.push(app.login_json(&wrong("amy")).await);
        }
        let (access, mut refresh) = app.login_pair("amy").await;
        for _ in 0..3 {
            let response = app.refresh(&refresh).await;
            assert_no_rate_limit_fields(response.headers(), "refresh");
            refresh = response.json::<Value>().await.expect("json")["refresh_token"]
                .as_str()
                .expect("rotated")
                .to_owned();
        }
        for _ in 0..3 {
            answers.push(app.me(&access).await);
            answers.push(app.get("/openapi.json").await);
        }

        for response in answers {
            assert_no_rate_limit_fields(response.headers(), response.url().path());
            assert!(
                matches!(response.status().as_u16(), 200 | 201 | 401),
                "{}: {}",
                response.url().path(),
                response.status()
            );
        }
        let metrics = app.get("/metrics").await.text().await.expect("text");
        assert!(!metrics.contains("cerego_rate_limited_total{"), "nothing was refused: {metrics}");
        assert!(!metrics.contains("cerego_login_throttled_total{"), "{metrics}");
    }

    /// Under the documented defaults (`default_limits`, what `spawn_app` uses), a class of 40
    /// behind one school address signs up, logs in, refreshes and looks at its account at once.
    async fn a_classroom_of_forty_behind_one_address_gets_through_the_defaults(backend: Backend) {
        let app = spawn_app(backend).await;
        let statuses = classroom(&app.client, &app.address).await;
        assert_eq!(statuses.len(), 40);
        assert!(statuses.iter().all(|s| *s == [201, 200, 200, 200]), "{statuses:?}");
        assert_eq!(app.metric_total("cerego_rate_limited_total").await, 0.0);
    }
}

// Recovery: each rule on a short rate, its budget spent; after the refusal's `Retry-After`, the
// same request is served.
db_tests! {
    async fn login_ip_recovers_once_its_retry_after_has_passed(backend: Backend) {
        let app = spawn_app_with(backend, |s| only_limits(s, &[(Rule::LoginIp, short())])).await;
        app.create_user("ada").await;
        let good = json!({ "username": "ada", "password": GOOD_PASSWORD });

        spend_and_wait_out(async || app.login_json(&good).await).await;

        let response = app.login_json(&good).await;
        assert_state(rule_state(response.headers(), "login_ip"), 1, 2, 0);
        assert_eq!(response.status(), 200, "login_ip recovered");
    }

    async fn login_account_recovers_once_its_retry_after_has_passed(backend: Backend) {
        let app = spawn_app_with(backend, |s| only_limits(s, &[(Rule::LoginAccount, short())])).await;
        app.create_user("ada").await;

        let good = json!({ "username": "ada", "password": GOOD_PASSWORD });
        spend_and_wait_out(async || app.login_json(&good).await).await;

        let response = app.login_json(&json!({ "username": "ADA", "password": GOOD_PASSWORD })).await;
        assert_state(rule_state(response.headers(), "login_account"), 1, 2, 0);
        assert_eq!(response.status(), 200, "login_account recovered");
    }

    async fn signup_ip_recovers_once_its_retry_after_has_passed(backend: Backend) {
        let app = spawn_app_with(backend, |s| only_limits(s, &[(Rule::SignupIp, short())])).await;
        let mut n = 0;

        spend_and_wait_out(async || {
            n += 1;
            app.signup(&format!("user{n}@example.com"), &format!("user{n}"), GOOD_PASSWORD)
                .await
        })
        .await;

        let response = app.signup("last@example.com", "last", GOOD_PASSWORD).await;
        assert_state(rule_state(response.headers(), "signup_ip"), 1, 2, 0);
        assert_eq!(response.status(), 201, "signup_ip recovered");
    }

    async fn refresh_ip_recovers_once_its_retry_after_has_passed(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            only_limits(s, &[(Rule::RefreshIp, short())]);
            // No replay window: a refresh token presented twice is a reuse, so the retry below can
            // only pass if the refused request never used the token.
            s.sessions.refresh_grace = Duration::ZERO;
        })
        .await;
        app.create_user("ada").await;
        let (_, mut refresh) = app.login_pair("ada").await;

        for _ in 0..10 {
            let response = app.refresh(&refresh).await;
            if response.status() == 429 {
                wait_out(response, TOO_MANY).await;
                let response = app.refresh(&refresh).await;
                assert_state(rule_state(response.headers(), "refresh_ip"), 1, 2, 0);
                assert_eq!(response.status(), 200, "refresh_ip recovered, and the refused token was not used");
                return;
            }
            refresh = rotated(response).await;
        }
        panic!("refresh_ip never refused");
    }

    async fn api_user_recovers_once_its_retry_after_has_passed(backend: Backend) {
        let app = spawn_app_with(backend, |s| only_limits(s, &[(Rule::ApiUser, short())])).await;
        app.create_user("ada").await;
        let token = app.token_for("ada").await;

        spend_and_wait_out(async || app.me(&token).await).await;

        let response = app.me(&token).await;
        assert_state(rule_state(response.headers(), "api_user"), 1, 2, 0);
        assert_eq!(response.status(), 200, "api_user recovered");
    }

    async fn api_ip_recovers_once_its_retry_after_has_passed(backend: Backend) {
        let app = spawn_app_with(backend, |s| only_limits(s, &[(Rule::ApiIp, short())])).await;

        spend_and_wait_out(async || app.get("/openapi.json").await).await;

        let response = app.get("/openapi.json").await;
        assert_state(rule_state(response.headers(), "api_ip"), 1, 2, 0);
        assert_eq!(response.status(), 200, "api_ip recovered");
    }
}

/// 40 students at once, each signing up, logging in, refreshing and calling `/auth/me`; every
/// answer carries the fields of its rules. Returns each student's statuses.
async fn classroom(client: &reqwest::Client, address: &str) -> Vec<[u16; 4]> {
    let mut students = tokio::task::JoinSet::new();
    for n in 0..40 {
        let (client, address) = (client.clone(), address.to_owned());
        students.spawn(async move {
            let name = format!("student{n}");
            let signup = client
                .post(format!("{address}/auth/signup"))
                .json(&json!({ "email": format!("{name}@school.example"), "username": name, "password": GOOD_PASSWORD }))
                .send()
                .await
                .expect("signup");
            assert_eq!(rule_names(signup.headers()), ["signup_ip"]);
            let signed_up = signup.status().as_u16();
            let login = client
                .post(format!("{address}/auth/login"))
                .form(&[("username", name.as_str()), ("password", GOOD_PASSWORD)])
                .send()
                .await
                .expect("login");
            assert_eq!(rule_names(login.headers()), ["login_ip", "login_account"]);
            let logged_in = login.status().as_u16();
            let body: Value = login.json().await.expect("json");
            let refreshed = client
                .post(format!("{address}/auth/refresh"))
                .json(&json!({ "refresh_token": body["refresh_token"] }))
                .send()
                .await
                .expect("refresh");
            assert_eq!(rule_names(refreshed.headers()), ["refresh_ip"]);
            let me = client
                .get(format!("{address}/auth/me"))
                .bearer_auth(body["access_token"].as_str().unwrap_or_default())
                .send()
                .await
                .expect("me");
            assert_eq!(rule_names(me.headers()), ["api_user"]);
            [signed_up, logged_in, refreshed.status().as_u16(), me.status().as_u16()]
        });
    }
    students.join_all().await
}

/// The same class against the real binary started with no `RATE_LIMIT_*`, `LOGIN_*` or
/// `TRUSTED_PROXIES` variable at all: the shipped defaults, whatever the tests' copy says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classroom_of_forty_gets_through_the_binary_s_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("cerego.db").display());
    let server = crate::faults::Cerego::start(&url);
    let client = reqwest::Client::new();

    let statuses = classroom(&client, &server.address).await;

    assert!(
        statuses.iter().all(|s| *s == [201, 200, 200, 200]),
        "{statuses:?}"
    );
    let metrics = client
        .get(format!("{}/metrics", server.address))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        metric_total_in(&metrics, "cerego_rate_limited_total"),
        0.0,
        "{metrics}"
    );
    let probe = client
        .get(format!("{}/openapi.json", server.address))
        .send()
        .await
        .expect("openapi");
    let limits = rate_limits(probe.headers());
    assert_eq!(limits.len(), 1, "the defaults are on: {limits:?}");
    assert_eq!(
        (limits[0].1.q, limits[0].1.w),
        (300, 60),
        "RATE_LIMIT_API_IP defaults to 300/minute"
    );
}
