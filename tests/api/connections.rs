//! Connections as an attacker or a careless client holds them: silent, slowloris, idle
//! keep-alive, over the cap, malformed heads hyper answers itself, trickled bodies, smuggling
//! headers, and requests abandoned mid-way. Raw TCP where the HTTP client would hide it.
//! Bounds on timings are 3x the configured timeout, as the issue asks.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestApp, spawn_app_with};

const SECOND: Duration = Duration::from_secs(1);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Everything the server sends until it closes the connection, or `None` if it is still open
/// after `bound`. A reset counts as closed.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read_all).await.ok()?;
    Some(received)
}

/// Sends `request` (from a task, so a server that answers before reading it all cannot block
/// us) and returns the status and JSON body of the response.
async fn exchange(app: &TestApp, request: Vec<u8>) -> (u16, String, Value) {
    let stream = connect(app).await;
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut received = Vec::new();
    let _ = tokio::time::timeout(10 * SECOND, reader.read_to_end(&mut received)).await;
    drop(writing.await);
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let status = head
        .get(9..12)
        .expect("a status")
        .parse()
        .expect("a number");
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, head.to_ascii_lowercase(), body)
}

/// The value of the sample `series` (name and labels as exposed) on `/metrics`, 0 if absent.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

async fn app_with_timeouts(header: u64, idle: u64) -> TestApp {
    spawn_app_with(Backend::Sqlite, |s| {
        s.http.header_read_timeout = Duration::from_secs(header);
        s.http.idle_timeout = Duration::from_secs(idle);
        s.http.body_read_timeout = SECOND;
    })
    .await
}

const HEADER_TIMEOUTS: &str = r#"cerego_http_connections_closed_total{reason="header_timeout"}"#;
const IDLE_TIMEOUTS: &str = r#"cerego_http_connections_closed_total{reason="idle_timeout"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let app = app_with_timeouts(1, 60).await;
    let mut silent = connect(&app).await;

    let received = read_until_closed(&mut silent, 3 * SECOND).await;

    assert_eq!(
        received,
        Some(vec![]),
        "closed within 3 s, nothing answered"
    );
    assert_eq!(metric(&app, HEADER_TIMEOUTS).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_connection_is_closed_after_the_header_read_timeout() {
    let app = app_with_timeouts(1, 60).await;
    let (mut reader, mut writer) = connect(&app).await.into_split();
    let trickle = tokio::spawn(async move {
        let _ = writer
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await;
        // A header line every 0.5 s: each read brings bytes, the head is never finished.
        for _ in 0..20 {
            tokio::time::sleep(SECOND / 2).await;
            if writer.write_all(b"X-Slow: 1\r\n").await.is_err() {
                break;
            }
        }
    });

    let mut received = Vec::new();
    let closed = tokio::time::timeout(3 * SECOND, reader.read_to_end(&mut received)).await;

    assert!(closed.is_ok(), "still open after 3 s");
    assert!(received.is_empty(), "the unfinished request was served");
    assert_eq!(metric(&app, HEADER_TIMEOUTS).await, 1.0);
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // The header timeout is far longer, so only the idle timeout can close it in time.
    let app = app_with_timeouts(30, 1).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");

    let received = read_until_closed(&mut stream, 3 * SECOND)
        .await
        .expect("closed within 3 s");

    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "served first: {text}");
    assert!(!text.to_ascii_lowercase().contains("connection: close"));
    assert_eq!(metric(&app, IDLE_TIMEOUTS).await, 1.0);
    assert_eq!(metric(&app, HEADER_TIMEOUTS).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_served_while_idle_sockets_hold_every_connection() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.http.max_connections = 20;
        s.http.header_read_timeout = SECOND;
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(connect(&app).await);
    }

    // A fresh client: its connection waits in the backlog until a silent one is timed out.
    let client = reqwest::Client::builder()
        .timeout(10 * SECOND)
        .build()
        .expect("client");
    let response = client.get(app.url("/healthz")).send().await;

    assert_eq!(response.expect("served").status(), 200);
    for mut socket in idle {
        let received = read_until_closed(&mut socket, 3 * SECOND).await;
        assert_eq!(
            received,
            Some(vec![]),
            "idle socket closed, nothing answered"
        );
    }
    let limit = "cerego_http_connection_limit_reached_total";
    assert!(metric(&app, limit).await >= 1.0, "the cap was reached");
    assert_eq!(metric(&app, HEADER_TIMEOUTS).await, 20.0);
    // Left open: at most the served client's keep-alive and the one asking for the metrics.
    // A closed connection's task counts itself out just after the close a client sees.
    let mut open = metric(&app, "cerego_http_connections_open").await;
    for _ in 0..50 {
        if open <= 2.0 {
            break;
        }
        tokio::time::sleep(SECOND / 10).await;
        open = metric(&app, "cerego_http_connections_open").await;
    }
    assert!(open <= 2.0, "{open} connections still counted open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_hyper_answers_itself_have_json_bodies() {
    let app = app_with_timeouts(10, 60).await;
    let huge = format!(
        "GET /auth/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let many: String = (0..200).map(|i| format!("X-Header-{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let nul = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n".to_vec();
    let cases = [
        (huge.into_bytes(), 431, "Request Header Fields Too Large"),
        (many.into_bytes(), 431, "Request Header Fields Too Large"),
        (nul, 400, "Bad Request"),
    ];

    for (request, status, detail) in cases {
        let (got, head, body) = exchange(&app, request).await;

        assert_eq!(got, status);
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(body["detail"], detail);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_past_the_body_read_timeout_gets_408() {
    let app = app_with_timeouts(10, 60).await;
    assert_a_trickled_body_gets_408(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_even_when_the_request_timeout_is_shorter() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.request_timeout = SECOND;
        s.http.body_read_timeout = 10 * SECOND;
    })
    .await;
    assert_a_trickled_body_gets_408(&app).await;
}

/// Sends a login head and then a byte every quarter second; expects 408 JSON within 3 s.
async fn assert_a_trickled_body_gets_408(app: &TestApp) {
    let (mut reader, mut writer) = connect(app).await.into_split();
    let trickle = tokio::spawn(async move {
        let head = "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
        let _ = writer.write_all(head.as_bytes()).await;
        for _ in 0..30 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(SECOND / 4).await;
        }
    });

    let mut received = Vec::new();
    let answered = tokio::time::timeout(3 * SECOND, reader.read_to_end(&mut received)).await;

    assert!(answered.is_ok(), "no answer within 3 s");
    let text = String::from_utf8_lossy(&received);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let body: Value = serde_json::from_str(body).expect("json");
    assert_eq!(body["detail"], "Request Timeout");
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_content_length_and_transfer_encoding_gets_400() {
    let app = app_with_timeouts(10, 60).await;
    let lengths = [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
    ];
    for both in lengths {
        let request = format!(
            "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{both}\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
        );

        let (status, head, body) = exchange(&app, request.into_bytes()).await;

        assert_eq!(status, 400, "{both}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(body["detail"].is_string(), "{body}");
    }
    // The same body framed one way only is an ordinary (failed) login.
    let chunked = "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let (status, _, _) = exchange(&app, chunked.as_bytes().to_vec()).await;
    assert_eq!(status, 422);
}

db_tests! {
    async fn a_login_whose_client_goes_away_is_counted_as_cancelled(backend: Backend) {
        // Cost 12 keeps the login hashing long after the client has gone.
        let app = spawn_app_with(backend, |s| s.bcrypt_cost = 12).await;
        app.create_user("ada").await;
        let body = serde_json::json!({ "username": "ada", "password": GOOD_PASSWORD }).to_string();
        let request = format!(
            "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = connect(&app).await;
        stream.write_all(request.as_bytes()).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(stream);

        let series = r#"cerego_http_requests_cancelled_total{method="POST",route="/auth/login"}"#;
        let mut cancelled = 0.0;
        for _ in 0..50 {
            cancelled = metric(&app, series).await;
            if cancelled > 0.0 {
                break;
            }
            tokio::time::sleep(SECOND / 10).await;
        }

        assert_eq!(cancelled, 1.0);
        let finished = r#"cerego_http_requests_total{method="POST",route="/auth/login",status="200"}"#;
        assert_eq!(metric(&app, finished).await, 0.0, "the abandoned login is not counted as answered");
    }
}
