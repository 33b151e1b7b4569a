//! The Grafana dashboard shipped in `docs/grafana/cerego.json` against what `/metrics` exports:
//! every metric name its queries use must be a series Prometheus will hold, and the session
//! counters its "Sessions" row plots must count what their names say.

use std::collections::BTreeSet;
use std::time::Duration;

use cerego::limits::{Rate, Rule};
use secrecy::SecretString;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestApp, spawn_app_with, spawn_app_with_clock};

/// The dashboard as shipped (a missing or moved file fails the build of this test).
const DASHBOARD: &str = include_str!("../../docs/grafana/cerego.json");

/// Keys whose string values are PromQL: panel targets (`expr`) and template variables (`query`,
/// `definition`, e.g. `label_values(cerego_build_info, instance)`).
const QUERY_KEYS: [&str; 3] = ["expr", "query", "definition"];

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every `cerego_…` metric name in `promql`. The whole identifier is taken (so a typo in upper
/// case is reported as written, not cut short), and only where an identifier starts (so a label
/// value such as `"not_cerego_x"` is not one).
fn names_in(promql: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = promql;
    let mut before: Option<char> = None;
    while let Some(at) = rest.find("cerego_") {
        let prev = rest[..at].chars().next_back().or(before);
        let tail = &rest[at..];
        let len = tail.find(|c| !is_name_char(c)).unwrap_or(tail.len());
        if !prev.is_some_and(is_name_char) {
            names.push(tail[..len].to_owned());
        }
        before = tail[..len].chars().next_back();
        rest = &tail[len..];
    }
    names
}

/// Every metric name any query of `dashboard` uses.
fn dashboard_names(dashboard: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, key: Option<&str>, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(v, Some(k), out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, key, out)),
            Value::String(text) if key.is_some_and(|k| QUERY_KEYS.contains(&k)) => {
                out.extend(names_in(text));
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(dashboard, None, &mut out);
    out
}

/// The series names Prometheus stores from an OpenMetrics exposition: each sample's name, and
/// for every family (a `# TYPE` line, which prometheus-client writes even for a family with no
/// sample yet, e.g. `cerego_rate_limited` before the first 429) the names its type gives its
/// samples. A counter family is named without `_total` and its samples only with it, so the bare
/// family name of a counter or a histogram is not a series a query can use.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                panic!("malformed TYPE line: {line}");
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_count", "_sum"],
                "gaugehistogram" => &["_bucket", "_gcount", "_gsum"],
                "summary" => &["", "_count", "_sum"],
                "info" => &["_info"],
                // gauge, stateset, unknown
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The names `dashboard` uses that `exposition` does not export.
fn missing(dashboard: &Value, exposition: &str) -> Vec<String> {
    let exported = exported_names(exposition);
    dashboard_names(dashboard)
        .into_iter()
        .filter(|name| !exported.contains(name))
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("docs/grafana/cerego.json is JSON")
}

/// A sample's value in `text` (`series` is the name with its labels as rendered), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Whether the server closes `stream` (or resets it) within `bound`.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> bool {
    let drain = async {
        let mut buf = [0u8; 1024];
        while let Ok(1..) = stream.read(&mut buf).await {}
    };
    tokio::time::timeout(bound, drain).await.is_ok()
}

/// Sends a login and goes away while it hashes; waits until the server has counted it.
async fn abandon_a_login(app: &TestApp) {
    let body = serde_json::json!({ "username": "ada", "password": GOOD_PASSWORD }).to_string();
    let request = format!(
        "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = connect(app).await;
    stream.write_all(request.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);
    for _ in 0..50 {
        let text = app.get("/metrics").await.text().await.expect("text");
        if text.contains("cerego_http_requests_cancelled_total{") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the abandoned login was never counted as cancelled");
}

#[test]
fn names_are_taken_whole_and_only_from_queries() {
    let dashboard = serde_json::json!({
        "panels": [{
            "title": "cerego_in_a_title",
            "targets": [{
                "expr": "sum(rate(cerego_made_up_total{rule=\"x_cerego_no\"}[5m])) / cerego_Typo_total",
                "legendFormat": "cerego_in_a_legend",
            }],
        }],
        "templating": {"list": [{"query": {"query": "label_values(cerego_build_info, instance)"}}]},
    });
    let names: Vec<String> = dashboard_names(&dashboard).into_iter().collect();
    assert_eq!(
        names,
        [
            "cerego_Typo_total",
            "cerego_build_info",
            "cerego_made_up_total"
        ]
    );
}

#[test]
fn a_name_counts_as_exported_only_in_the_form_its_type_gives_it() {
    // A counter and a histogram with no sample yet (what prometheus-client writes for them),
    // a counter and a gauge with samples.
    let exposition = "# HELP cerego_quiet Nothing yet.\n# TYPE cerego_quiet counter\n\
        # HELP cerego_wait Nothing yet.\n# TYPE cerego_wait histogram\n\
        # HELP cerego_busy Some.\n# TYPE cerego_busy counter\ncerego_busy_total{rule=\"a\"} 3\n\
        # HELP cerego_up Now.\n# TYPE cerego_up gauge\ncerego_up 1\n# EOF\n";
    let query = |expr: &str| serde_json::json!({ "panels": [{ "targets": [{ "expr": expr }] }] });
    for good in [
        "cerego_quiet_total",
        "cerego_busy_total",
        "cerego_up",
        "histogram_quantile(0.9, sum by (le) (rate(cerego_wait_bucket[5m])))",
        "cerego_wait_count / cerego_wait_sum",
    ] {
        assert_eq!(
            missing(&query(good), exposition),
            Vec::<String>::new(),
            "{good}"
        );
    }
    for (bad, name) in [
        ("rate(cerego_made_up_total[5m])", "cerego_made_up_total"),
        ("cerego_quiet", "cerego_quiet"),
        ("cerego_busy", "cerego_busy"),
        ("cerego_wait", "cerego_wait"),
        ("cerego_up_total", "cerego_up_total"),
        ("cerego_busy_count", "cerego_busy_count"),
    ] {
        assert_eq!(missing(&query(bad), exposition), [name], "{bad}");
    }
}

#[test]
fn the_dashboard_is_importable_with_a_prometheus_input() {
    let dashboard = dashboard();
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    assert_eq!(dashboard["uid"], "cerego");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().expect("an id")), "{panel}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{target}");
            assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
    // What the issue asks the dashboard to show.
    let names = dashboard_names(&dashboard);
    for needed in [
        "cerego_http_requests_total",
        "cerego_http_request_duration_seconds_bucket",
        "cerego_logins_total",
        "cerego_rate_limited_total",
        "cerego_rate_limit_store_errors_total",
        "cerego_login_throttled_total",
        "cerego_password_hash_running",
        "cerego_password_hash_slots",
        "cerego_password_hash_rejected_total",
        "cerego_sessions_opened_total",
        "cerego_sessions_refreshed_total",
        "cerego_sessions_revoked_total",
    ] {
        assert!(
            names.contains(needed),
            "the dashboard does not plot {needed}"
        );
    }
}

db_tests! {
    async fn every_metric_the_dashboard_queries_is_exported(backend: Backend) {
        // prometheus-client writes a family only once it has a sample (no HELP/TYPE lines
        // before), so every family the dashboard plots is made to count something: a silent
        // connection, a login abandoned mid-hash, a throttled login, a 429 and, on a second app
        // whose Redis does not answer, a store error.
        let app = spawn_app_with(backend, |s| {
            s.bcrypt_cost = 12;
            s.http.header_read_timeout = Duration::from_secs(1);
            s.limits.rates.set(Rule::ApiIp, Rate::parse("1/minute").expect("a rate"));
            s.limits.throttle.backoff_after = 1;
        })
        .await;
        let mut silent = connect(&app).await;
        app.create_user("ada").await;
        let (token, refresh) = app.login_pair("ada").await;
        assert_eq!(app.me(&token).await.status(), 200);
        let refreshed: Value = app.refresh(&refresh).await.json().await.expect("json");
        let token = refreshed["access_token"].as_str().expect("a token");
        assert_eq!(app.post_authed("/auth/logout", token).await.status(), 204);
        // Before any failure, so the throttle does not refuse it without hashing.
        abandon_a_login(&app).await;
        // An unknown account: the throttle answers it like a known one.
        // Until one is throttled: each failure doubles the wait before the next attempt (1 s,
        // 2 s, …), and a hash that takes longer than the wait (a loaded machine) lets that
        // attempt through to fail again.
        let wrong = serde_json::json!({ "username": "nobody", "password": "not the password" });
        let mut throttled = false;
        for _ in 0..8 {
            if app.login_json(&wrong).await.status() == 429 {
                throttled = true;
                break;
            }
        }
        assert!(throttled, "a failed login was throttled");
        for _ in 0..2 {
            app.get("/auth/me").await;
        }
        let closed = read_until_closed(&mut silent, Duration::from_secs(3)).await;
        assert!(closed, "the silent connection is closed after the header read timeout");
        let mut text = app.get("/metrics").await.text().await.expect("text");

        let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = unused.local_addr().expect("bound").port();
        drop(unused);
        let dead = spawn_app_with(backend, |s| {
            s.limits.redis_url = Some(SecretString::from(format!("redis://127.0.0.1:{port}")));
            s.limits.redis_timeout = Duration::from_millis(100);
        })
        .await;
        dead.get("/auth/me").await;
        text.push_str(&dead.get("/metrics").await.text().await.expect("text"));

        let dashboard = dashboard();
        let used = dashboard_names(&dashboard);
        assert!(used.len() >= 15, "{used:?}");
        let missing = missing(&dashboard, &text);
        assert!(
            missing.is_empty(),
            "the dashboard queries metrics /metrics does not export: {missing:?}\n{text}"
        );
    }

    async fn session_counters_count_logins_rotations_and_each_revocation(backend: Backend) {
        let app = spawn_app_with_clock(backend, |s| {
            s.limits.enabled = false;
            s.sessions.refresh_grace = Duration::from_secs(10);
        })
        .await;
        app.create_user("ada").await;
        let metrics = || async { app.get("/metrics").await.text().await.expect("text") };
        let revoked = |text: &str, reason: &str| {
            sample(text, &format!("cerego_sessions_revoked_total{{reason=\"{reason}\"}}"))
        };

        // A login opens one; a rotation is counted, its replay within the grace window is not;
        // the rotated token presented after the window revokes its session.
        let (_, first) = app.login_pair("ada").await;
        assert_eq!(app.refresh(&first).await.status(), 200);
        assert_eq!(app.refresh(&first).await.status(), 200, "a replay within the grace window");
        let text = metrics().await;
        assert_eq!(sample(&text, "cerego_sessions_opened_total"), 1.0, "{text}");
        assert_eq!(sample(&text, "cerego_sessions_refreshed_total"), 1.0, "{text}");
        app.advance_clock(Duration::from_secs(11));
        assert_eq!(app.refresh(&first).await.status(), 401, "a reuse after it");
        assert_eq!(revoked(&metrics().await, "refresh_reuse"), 1.0);

        // DELETE /auth/sessions/{id} of another session, then logout of this one.
        let (token, _) = app.login_pair("ada").await;
        let (other, _) = app.login_pair("ada").await;
        let sessions: Value = app
            .client
            .get(app.url("/auth/sessions"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        let other_id = sessions
            .as_array()
            .expect("a list")
            .iter()
            .filter(|s| s["current"] == false)
            .map(|s| s["id"].as_i64().expect("id"))
            .max()
            .expect("the other session");
        let deleted = app
            .client
            .delete(app.url(&format!("/auth/sessions/{other_id}")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(deleted.status(), 204);
        assert_eq!(app.me(&other).await.status(), 401);
        assert_eq!(app.post_authed("/auth/logout", &token).await.status(), 204);
        let text = metrics().await;
        assert_eq!(revoked(&text, "revoked"), 1.0, "DELETE /auth/sessions/{{id}}:\n{text}");
        assert_eq!(
            revoked(&text, "logout"),
            1.0,
            "POST /auth/logout (the route must call Auth::logout):\n{text}"
        );

        // logout-all counts each session it ended: three open ones, none of the four ended.
        let mut last = String::new();
        for _ in 0..3 {
            last = app.login_pair("ada").await.0;
        }
        assert_eq!(app.post_authed("/auth/logout-all", &last).await.status(), 204);
        let text = metrics().await;
        assert_eq!(revoked(&text, "logout_all"), 3.0, "{text}");
        assert_eq!(sample(&text, "cerego_sessions_opened_total"), 6.0, "{text}");
        assert_eq!(sample(&text, "cerego_sessions_refreshed_total"), 1.0, "{text}");
        assert_eq!(revoked(&text, "refresh_reuse"), 1.0, "{text}");

        // A login with a wrong password opens nothing.
        let wrong = app
            .login_json(&serde_json::json!({ "username": "ada", "password": format!("{GOOD_PASSWORD}!") }))
            .await;
        assert_eq!(wrong.status(), 401);
        assert_eq!(sample(&metrics().await, "cerego_sessions_opened_total"), 6.0);
    }
}
