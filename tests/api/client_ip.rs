//! The client IP: the TCP peer, unless the peer is a trusted proxy, whose forwarding header
//! (`TRUSTED_PROXY_HEADER`: `X-Forwarded-For` by default, or `Forwarded`; never both) then names
//! the client: the rightmost address that is not itself trusted. Rate budgets, sessions and the
//! request log all use that one address.
//!
//! Budgets are per hour, so none refills during a test.

use cerego::config::{ProxyHeader, Settings, TrustedProxies};
use cerego::limits::Rule;
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{
    Backend, GOOD_PASSWORD, TestApp, assert_refused, every, only_limits, random_hex, rule_state,
    spawn_app_with,
};

/// Trusts the loopback proxy (every test request comes from 127.0.0.1), reading `header`.
fn behind_loopback(s: &mut Settings, header: ProxyHeader) {
    s.trusted_proxies = TrustedProxies(vec!["127.0.0.1/32".parse().expect("cidr")]);
    s.trusted_proxy_header = header;
}

/// Logs ada in with `headers` (raw bytes: a value need not be UTF-8); returns the IP her new
/// session records.
async fn session_ip_raw(app: &TestApp, headers: &[(&str, &[u8])]) -> String {
    let mut request = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({ "username": "ada", "password": GOOD_PASSWORD }));
    for (name, value) in headers {
        let value = reqwest::header::HeaderValue::from_bytes(value).expect("a header value");
        request = request.header(*name, value);
    }
    let login = request.send().await.expect("request");
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

/// Logs ada in with `headers`; returns the IP her new session records.
async fn session_ip(app: &TestApp, headers: &[(&str, &str)]) -> String {
    let raw: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    session_ip_raw(app, &raw).await
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

/// An address from 10.0.0.0/8 no other request of the test uses.
fn random_address() -> String {
    let bytes = random_hex(3);
    let octet = |i: usize| u8::from_str_radix(&bytes[2 * i..2 * i + 2], 16).expect("hex");
    format!("10.{}.{}.{}", octet(0), octet(1), octet(2))
}

db_tests! {
    async fn forged_forwarding_headers_from_an_untrusted_peer_change_nothing(backend: Backend) {
        let app = spawn_app_with(backend, |s| only_limits(s, &[(Rule::LoginIp, every(4, 3600))])).await;
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

    async fn behind_a_trusted_proxy_x_forwarded_for_names_the_client(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            only_limits(s, &[(Rule::LoginIp, every(2, 3600))]);
            behind_loopback(s, ProxyHeader::XForwardedFor);
        })
        .await;
        app.create_user("ada").await;

        for (value, client) in [
            ("198.51.100.7", "198.51.100.7"),
            // A client can write anything on the left; the proxy appends what it saw.
            ("10.1.1.1, 198.51.100.8", "198.51.100.8"),
            // A trusted hop on the right is skipped.
            ("198.51.100.9,127.0.0.1", "198.51.100.9"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            assert_eq!(session_ip(&app, &[("x-forwarded-for", value)]).await, client, "{value}");
        }
        // Without the header the proxy itself is the client; `Forwarded` is not read.
        assert_eq!(session_ip(&app, &[]).await, "127.0.0.1");
        assert_eq!(session_ip(&app, &[("forwarded", "for=192.0.2.60")]).await, "127.0.0.1");

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
        for (host, left) in [("a", Some(1)), ("b", Some(0)), ("c", None)] {
            let address = format!("2001:db8:1:2::{host}");
            assert_eq!(login_ip_left(&app, &[("x-forwarded-for", &address)]).await, left, "{address}");
        }
        assert_eq!(login_ip_left(&app, &[("x-forwarded-for", "2001:db8:1:3::a")]).await, Some(1));
    }

    async fn with_trusted_proxy_header_forwarded_only_forwarded_names_the_client(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            only_limits(s, &[(Rule::LoginIp, every(2, 3600))]);
            behind_loopback(s, ProxyHeader::Forwarded);
        })
        .await;
        app.create_user("ada").await;

        for (value, client) in [
            ("for=\"[2001:db8::1]:4711\"", "2001:db8::1"),
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("for=192.0.2.61, for=\"[2001:db8::2]\"", "2001:db8::2"),
            ("for=192.0.2.62, for=127.0.0.1", "192.0.2.62"),
        ] {
            assert_eq!(session_ip(&app, &[("forwarded", value)]).await, client, "{value}");
        }
        assert_eq!(session_ip(&app, &[]).await, "127.0.0.1");
        assert_eq!(session_ip(&app, &[("x-forwarded-for", "198.51.100.7")]).await, "127.0.0.1");

        let a = [("forwarded", "for=203.0.113.1")];
        assert_eq!(login_ip_left(&app, &a).await, Some(1));
        assert_eq!(login_ip_left(&app, &a).await, Some(0));
        assert_eq!(login_ip_left(&app, &a).await, None);
        // IPv6 clients are counted by their /64.
        for (host, left) in [("a", Some(1)), ("b", Some(0)), ("c", None)] {
            let value = format!("for=\"[2001:db8:1:2::{host}]\"");
            assert_eq!(login_ip_left(&app, &[("forwarded", &value)]).await, left, "{value}");
        }
    }

    /// A proxy appends to its one header and passes a client's own copy of the other through:
    /// that copy, different on every request here, names nothing and buys no fresh budget.
    async fn a_client_s_own_copy_of_the_other_header_is_ignored(backend: Backend) {
        for (header, genuine, forged) in [
            (ProxyHeader::XForwardedFor, ("x-forwarded-for", "198.51.100.7".to_owned()), "forwarded"),
            (ProxyHeader::Forwarded, ("forwarded", "for=198.51.100.7".to_owned()), "x-forwarded-for"),
        ] {
            let app = spawn_app_with(backend, |s| {
                only_limits(s, &[(Rule::LoginIp, every(3, 3600))]);
                behind_loopback(s, header);
            })
            .await;
            app.create_user("ada").await;
            let with_forged = || {
                let address = random_address();
                let value = match forged {
                    "forwarded" => format!("for={address}"),
                    _ => address,
                };
                [(genuine.0, genuine.1.clone()), (forged, value)]
            };

            let headers = with_forged();
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(session_ip(&app, &headers).await, "198.51.100.7", "{header:?}: {headers:?}");
            for left in [Some(1), Some(0), None] {
                let headers = with_forged();
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                assert_eq!(login_ip_left(&app, &headers).await, left, "{header:?}: {headers:?}");
            }
        }
    }

    /// The header is split on `,` as bytes: an element that is not UTF-8, or not an address,
    /// spoils only itself. Walking from the right, the client is the first address not trusted;
    /// garbage stops the walk at the nearest trusted hop.
    async fn a_garbage_element_spoils_only_itself(backend: Backend) {
        let mut wrong = Vec::new();
        for (header, cases) in [
            (ProxyHeader::XForwardedFor, &[
                (&b"\xff, 198.51.100.7"[..], "198.51.100.7"),
                (b"not an address, 198.51.100.8", "198.51.100.8"),
                // A quote the client wrote opens nothing: X-Forwarded-For has no quoted strings.
                (b"\"198.51.100.99, 198.51.100.9", "198.51.100.9"),
                (b"198.51.100.1, \xff", "127.0.0.1"),
                (b"198.51.100.1, \xff, 127.0.0.1", "127.0.0.1"),
            ][..]),
            (ProxyHeader::Forwarded, &[
                (&b"for=\"\xff\", for=192.0.2.60"[..], "192.0.2.60"),
                (b"for=192.0.2.61, for=\xff", "127.0.0.1"),
                // A quote the client left open must not swallow what the proxy appended after it.
                (b"for=\"198.51.100.99, for=192.0.2.62", "192.0.2.62"),
            ][..]),
        ] {
            let app = spawn_app_with(backend, |s| behind_loopback(s, header)).await;
            app.create_user("ada").await;
            let name = match header {
                ProxyHeader::XForwardedFor => "x-forwarded-for",
                ProxyHeader::Forwarded => "forwarded",
            };
            for (value, client) in cases {
                let ip = session_ip_raw(&app, &[(name, value)]).await;
                if ip != *client {
                    wrong.push(format!("{name}: {} gave {ip}, not {client}", value.escape_ascii()));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}

/// The request log line names the same client IP as the session, from the header
/// `TRUSTED_PROXY_HEADER` names (unset: `X-Forwarded-For`), whatever the other one says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_names_the_forwarded_client() {
    for (setting, forwarded_client) in [(None, "198.51.100.7"), (Some("forwarded"), "192.0.2.60")] {
        let mut server = crate::process::start(|cmd| {
            cmd.env("BCRYPT_COST", "4")
                .env("JWT_SECRET_KEY", crate::helpers::TEST_SECRET)
                .env("TRUSTED_PROXIES", "127.0.0.1/32");
            if let Some(setting) = setting {
                cmd.env("TRUSTED_PROXY_HEADER", setting);
            }
        });
        let client = reqwest::Client::new();
        for (request_id, forwarded) in [("forwarded-1", true), ("direct-1", false)] {
            let mut request = client
                .post(format!("{}/auth/login", server.address))
                .header("x-request-id", request_id)
                .json(&json!({ "username": "nobody", "password": GOOD_PASSWORD }));
            if forwarded {
                request = request
                    .header("x-forwarded-for", "198.51.100.7")
                    .header("forwarded", "for=192.0.2.60");
            }
            assert_eq!(request.send().await.expect("login").status(), 401);
        }

        let lines = server.stop_and_read_json();
        for (request_id, client_ip) in
            [("forwarded-1", forwarded_client), ("direct-1", "127.0.0.1")]
        {
            let finished = lines
                .iter()
                .find(|l| {
                    l["message"] == "request finished" && l["span"]["request_id"] == request_id
                })
                .unwrap_or_else(|| panic!("{request_id} is logged: {lines:#?}"));
            // On the line itself or on the request's span.
            let logged = finished
                .get("client_ip")
                .or_else(|| finished["span"].get("client_ip"))
                .unwrap_or_else(|| panic!("no client_ip: {finished}"));
            assert_eq!(
                logged, client_ip,
                "TRUSTED_PROXY_HEADER={setting:?}: {finished}"
            );
        }
    }
}
