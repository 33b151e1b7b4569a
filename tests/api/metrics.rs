//! `/metrics` as a scraper sees it: its media type, and a label set that a client cannot grow.

use reqwest::Method;

use crate::db_tests;
use crate::helpers::{Backend, spawn_app};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label values of `method` on the request counter, with the summed count of each.
fn methods(text: &str) -> Vec<(String, f64)> {
    let mut found: Vec<(String, f64)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("cerego_http_requests_total{"))
    {
        let method = line
            .split("method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no method label: {line}"))
            .to_owned();
        let count: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no value: {line}"));
        match found.iter_mut().find(|(m, _)| *m == method) {
            Some((_, sum)) => *sum += count,
            None => found.push((method, count)),
        }
    }
    found
}

db_tests! {
    async fn made_up_methods_are_counted_under_one_other_label(backend: Backend) {
        let app = spawn_app(backend).await;
        for n in 1..=50 {
            let method = Method::from_bytes(format!("FOO{n}").as_bytes()).expect("a token");
            let response = app.client.request(method, app.url("/healthz")).send().await.expect("sent");
            assert!(response.status().is_client_error(), "FOO{n}: {}", response.status());
        }
        app.get("/healthz").await;

        let text = app.get("/metrics").await.text().await.expect("text");
        let methods = methods(&text);
        assert!(!text.contains("FOO"), "a made-up method became a label:\n{text}");
        let other = methods.iter().find(|(m, _)| m == "OTHER").map(|(_, n)| *n);
        assert_eq!(other, Some(50.0), "{methods:?}");
        let get = methods.iter().find(|(m, _)| m == "GET").map(|(_, n)| *n);
        assert!(get.is_some_and(|n| n >= 1.0), "a standard method keeps its name: {methods:?}");
        let latency_other = text
            .lines()
            .filter(|l| l.starts_with("cerego_http_request_duration_seconds_count{method=\"OTHER\""))
            .count();
        assert!(latency_other >= 1, "the latency family uses the same label:\n{text}");
    }

    async fn metrics_are_served_as_openmetrics_whatever_the_scraper_asks(backend: Backend) {
        let app = spawn_app(backend).await;
        app.get("/healthz").await;
        // None, what Prometheus sends, and the classic format alone: the body is OpenMetrics
        // in every case, so its media type must say so.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for accept in [None, Some(prometheus), Some("text/plain; version=0.0.4")] {
            let mut request = app.client.get(app.url("/metrics"));
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            let response = request.send().await.expect("metrics");
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], OPENMETRICS, "Accept: {accept:?}");
            let text = response.text().await.expect("text");
            assert!(text.ends_with("# EOF\n"), "OpenMetrics ends in # EOF: {text}");
            assert!(text.contains("# TYPE cerego_http_requests counter\n"), "{text}");
        }
    }
}
