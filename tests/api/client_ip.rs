//! The client IP: the TCP peer, unless the peer is a trusted proxy, whose `Forwarded` /
//! `X-Forwarded-For` then name the client (the rightmost address that is not itself trusted).
//! Rate budgets, sessions and the request log all use that one address.

use cerego::config::TrustedProxies;
use cerego::limits::Rule;
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{
    Backend, GOOD_PASSWORD, TestApp, assert_refused, only_limits, rate, rule_state, spawn_app_with,
};

fn loopback_trusted() -> TrustedProxies {
    TrustedProxies(vec!["127.0.0.1/32".parse().expect("cidr")])
}

/// Logs ada in with `headers`; returns the IP her new session records.
async fn session_ip(app: &TestApp, headers: &[(&str, &str)]) -> String {
    let body = json!({ "username": "ada", "password": GOOD_PASSWORD });
    let login = app.login_with_headers(headers, &body).await;
    assert_eq!(login.status(), 200, "{headers:?}");
    let token = login.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let sessions = app.get_authed("/auth/sessions", &token).await;
    assert_eq!(sessions.status(), 200);
    let sessions: Vec<Value> = sessions.json().await.expect("json");
    let current = sessions
        .iter()
        .find(|s| s["current"] == true)
        .expect("the current session is listed");
    current["ip"].as_str().expect("ip").to_owned()
}

/// The `login_ip` budget left after one more failed login with `headers`, or `None` when refused.
async fn login_ip_left(app: &TestApp, headers: &[(&str, &str)]) -> Option<u64> {
    let body = json!({ "username": "nobody", "password": "not the password" });
    let response = app.login_with_headers(headers, &body).await;
    if response.status() == 429 {
        assert_refused(response, "Too many requests").await;
        return None;
    }
    assert_eq!(response.status(), 401, "{headers:?}");
    Some(rule_state(response.headers(), "login_ip").r)
}

db_tests! {
    async fn forged_forwarding_headers_from_an_untrusted_peer_change_nothing(backend: Backend) {
        let app = spawn_app_with(backend, |s| only_limits(s, &[(Rule::LoginIp, rate("4/minute"))])).await;
        app.create_user("ada").await;

        let forged = [("x-forwarded-for", "203.0.113.9"), ("forwarded", "for=198.51.100.1")];
        assert_eq!(session_ip(&app, &forged).await, "127.0.0.1");
        // One budget, whatever each request claims to come from.
        assert_eq!(login_ip_left(&app, &[("x-forwarded-for", "203.0.113.10")]).await, Some(2));
        assert_eq!(login_ip_left(&app, &[("forwarded", "for=\"[2001:db8::1]:4711\"")]).await, Some(1));
        assert_eq!(login_ip_left(&app, &[("x-forwarded-for", "127.0.0.1, 198.51.100.2")]).await, Some(0));
        assert_eq!(login_ip_left(&app, &[("x-forwarded-for", "198.51.100.3")]).await, None);
        assert_eq!(login_ip_left(&app, &[]).await, None);
    }

    async fn behind_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            only_limits(s, &[(Rule::LoginIp, rate("2/minute"))]);
            s.trusted_proxies = loopback_trusted();
        })
        .await;
        app.create_user("ada").await;

        for (header, value, client) in [
            ("x-forwarded-for", "198.51.100.7", "198.51.100.7"),
            // A client can write anything on the left; the proxy appends what it saw.
            ("x-forwarded-for", "10.1.1.1, 198.51.100.8", "198.51.100.8"),
            // A trusted hop on the right is skipped.
            ("x-forwarded-for", "198.51.100.9,127.0.0.1", "198.51.100.9"),
            ("forwarded", "for=\"[2001:db8::1]:4711\"", "2001:db8::1"),
            ("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("forwarded", "for=192.0.2.61, for=\"[2001:db8::2]\"", "2001:db8::2"),
        ] {
            assert_eq!(session_ip(&app, &[(header, value)]).await, client, "{header}: {value}");
        }
        // Without a forwarding header the proxy itself is the client.
        assert_eq!(session_ip(&app, &[]).await, "127.0.0.1");

        // Each forwarded address has a budget of its own.
        let a = [("x-forwarded-for", "203.0.113.1")];
        let b = [("x-forwarded-for", "203.0.113.2")];
        assert_eq!(login_ip_left(&app, &a).await, Some(1));
        assert_eq!(login_ip_left(&app, &a).await, Some(0));
        assert_eq!(login_ip_left(&app, &a).await, None);
        assert_eq!(login_ip_left(&app, &b).await, Some(1));
        // A forged left-hand entry does not buy a fresh budget.
        assert_eq!(login_ip_left(&app, &[("x-forwarded-for", "198.51.100.50, 203.0.113.1")]).await, None);

        // IPv6 clients are counted by their /64.
        let same_64 = |host: &str| format!("for=\"[2001:db8:1:2::{host}]\"");
        let (first, second, third) = (same_64("a"), same_64("b"), same_64("c"));
        assert_eq!(login_ip_left(&app, &[("forwarded", &first)]).await, Some(1));
        assert_eq!(login_ip_left(&app, &[("forwarded", &second)]).await, Some(0));
        assert_eq!(login_ip_left(&app, &[("forwarded", &third)]).await, None);
        let other_64 = [("forwarded", "for=\"[2001:db8:1:3::a]\"")];
        assert_eq!(login_ip_left(&app, &other_64).await, Some(1));
    }
}

/// The request log line names the same client IP as the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_names_the_forwarded_client() {
    let mut server = crate::process::start(|cmd| {
        cmd.env("BCRYPT_COST", "4")
            .env("JWT_SECRET_KEY", crate::helpers::TEST_SECRET)
            .env("TRUSTED_PROXIES", "127.0.0.1/32");
    });
    let client = reqwest::Client::new();
    for (request_id, forwarded) in [("forwarded-1", Some("198.51.100.7")), ("direct-1", None)] {
        let mut request = client
            .post(format!("{}/auth/login", server.address))
            .header("x-request-id", request_id)
            .json(&json!({ "username": "nobody", "password": GOOD_PASSWORD }));
        if let Some(forwarded) = forwarded {
            request = request.header("x-forwarded-for", forwarded);
        }
        assert_eq!(request.send().await.expect("login").status(), 401);
    }

    let lines = server.stop_and_read_json();
    for (request_id, client_ip) in [("forwarded-1", "198.51.100.7"), ("direct-1", "127.0.0.1")] {
        let finished = lines
            .iter()
            .find(|l| l["message"] == "request finished" && l["span"]["request_id"] == request_id)
            .unwrap_or_else(|| panic!("{request_id} is logged: {lines:#?}"));
        // On the line itself or on the request's span.
        let logged = finished
            .get("client_ip")
            .or_else(|| finished["span"].get("client_ip"))
            .unwrap_or_else(|| panic!("no client_ip: {finished}"));
        assert_eq!(logged, client_ip, "{finished}");
    }
}
