//! The OpenAPI description, the documentation pages and the metrics endpoint.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestApp, spawn_app, spawn_app_with};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Paths a client might guess, beyond those the description lists.
const CANDIDATES: [&str; 12] = [
    "/",
    "/auth",
    "/auth/logout",
    "/auth/refresh",
    "/auth/token",
    "/users",
    "/users/me",
    "/health",
    "/ready",
    "/api",
    "/auth/signup/",
    "/metrics/",
];

async fn spec(app: &TestApp) -> Value {
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// What the router answers for `method path`: anything but 404 and 405 means "served".
async fn serves(app: &TestApp, method: &str, path: &str) -> bool {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let response = app
        .client
        .request(method, app.url(path))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");
    !matches!(response.status().as_u16(), 404 | 405)
}

db_tests! {
    async fn the_router_serves_exactly_the_routes_the_description_lists(backend: Backend) {
        // Signing with a key pair, so that the discovery routes serve (under HMAC they answer
        // 404, which this test could not tell from a missing route).
        let keys = tempfile::tempdir().expect("a keys directory");
        cerego::auth::keys::generate(cerego::auth::keys::KeyAlgorithm::EdDsa, keys.path())
            .expect("a key");
        let app = spawn_app_with(backend, |s| {
            s.jwt.signing = cerego::config::Signing::KeysDir {
                algorithm: jsonwebtoken::Algorithm::EdDSA,
                dir: keys.path().to_owned(),
            };
        })
        .await;
        let spec = spec(&app).await;
        assert_eq!(spec["openapi"], "3.1.0");
        let mut listed = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("item").keys() {
                listed.insert((method.to_uppercase(), path.clone()));
            }
        }

        let mut served = BTreeSet::new();
        let paths: BTreeSet<String> = spec["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .chain(CANDIDATES.iter().map(|p| (*p).to_owned()))
            .collect();
        for path in &paths {
            for method in METHODS {
                if serves(&app, method, path).await {
                    served.insert((method.to_owned(), path.clone()));
                }
            }
        }

        assert_eq!(served, listed);
        let expected: BTreeSet<(String, String)> = [
            ("POST", "/auth/signup"), ("POST", "/auth/login"), ("GET", "/auth/me"),
            ("POST", "/auth/refresh"), ("POST", "/auth/logout"), ("POST", "/auth/logout-all"),
            ("GET", "/auth/sessions"), ("DELETE", "/auth/sessions/{id}"),
            ("POST", "/auth/password/forgot"), ("GET", "/auth/password/reset"),
            ("POST", "/auth/password/reset"), ("POST", "/auth/password/change"),
            ("POST", "/auth/email/verification"), ("GET", "/auth/email/verify"),
            ("POST", "/auth/email/verify"), ("GET", "/auth/activity"),
            ("GET", "/admin/users"), ("GET", "/admin/users/{id}"), ("PATCH", "/admin/users/{id}"),
            ("DELETE", "/admin/users/{id}"), ("DELETE", "/admin/users/{id}/sessions"),
            ("PUT", "/admin/users/{id}/roles/{role}"), ("DELETE", "/admin/users/{id}/roles/{role}"),
            ("GET", "/admin/roles"), ("POST", "/admin/roles"), ("PUT", "/admin/roles/{name}"),
            ("DELETE", "/admin/roles/{name}"), ("GET", "/admin/audit-events"),
            ("GET", "/.well-known/jwks.json"), ("GET", "/.well-known/openid-configuration"),
            ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
        assert_eq!(listed, expected);
    }

    async fn the_description_documents_errors_and_security(backend: Backend) {
        let app = spawn_app(backend).await;
        let spec = spec(&app).await;

        let schemes = &spec["components"]["securitySchemes"];
        assert_eq!(schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"], "/auth/login");
        assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
        let responses = |method: &str, path: &str| spec["paths"][path][method]["responses"].clone();
        for code in ["201", "409", "422", "503"] {
            assert!(responses("post", "/auth/signup").get(code).is_some(), "signup {code}");
        }
        for code in ["200", "401", "422", "503"] {
            assert!(responses("post", "/auth/login").get(code).is_some(), "login {code}");
        }
        for code in ["200", "401", "503"] {
            assert!(responses("get", "/auth/me").get(code).is_some(), "me {code}");
        }
        let login_body = &spec["paths"]["/auth/login"]["post"]["requestBody"]["content"];
        assert!(login_body.get("application/json").is_some());
        assert!(login_body.get("application/x-www-form-urlencoded").is_some());
        assert!(spec["paths"]["/auth/me"]["get"]["security"].is_array());
        assert!(spec["components"]["schemas"]["ValidationError"].is_object());
    }

    async fn documentation_pages_are_served_from_the_binary_alone(backend: Backend) {
        let app = spawn_app(backend).await;

        for path in ["/docs/", "/docs/swagger-initializer.js", "/redoc"] {
            let response = app.get(path).await;
            assert_eq!(response.status(), 200, "{path}");
            let page = response.text().await.expect("text");
            for line in page.lines() {
                let refers = ["src=\"http", "href=\"http", "url(http", "\"https://", "\"http://"];
                assert!(!refers.iter().any(|r| line.contains(r)), "{path} references another host: {line}");
            }
        }
        let script = app.get("/redoc/redoc.standalone.js").await;
        assert_eq!(script.status(), 200);
        assert!(script.headers()["content-type"].to_str().expect("ascii").starts_with("application/javascript"));
        let script = script.text().await.expect("body");
        assert!(script.len() > 500_000);
        assert!(!script.contains("cdn.redoc.ly"), "the bundle loads nothing from Redocly's CDN");
        let swagger_bundle = app.get("/docs/swagger-ui-bundle.js").await;
        assert_eq!(swagger_bundle.status(), 200);
    }

    async fn metrics_move_with_the_traffic(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        app.token_for("ada").await;
        let wrong = app.login_json(&json!({ "username": "ada", "password": "not it at all" })).await;
        assert_eq!(wrong.status(), 401);
        app.get("/auth/me").await;

        let response = app.get("/metrics").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let text = response.text().await.expect("text");
        let value = |needle: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(needle))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no metric line starting with {needle}:\n{text}"))
        };
        assert_eq!(value(r#"cerego_http_requests_total{method="POST",route="/auth/signup",status="201"}"#), 1.0);
        assert_eq!(value(r#"cerego_http_requests_total{method="POST",route="/auth/login",status="200"}"#), 1.0);
        assert_eq!(value(r#"cerego_http_requests_total{method="GET",route="/auth/me",status="401"}"#), 1.0);
        assert_eq!(value(r#"cerego_logins_total{outcome="success"}"#), 1.0);
        assert_eq!(value(r#"cerego_logins_total{outcome="failure"}"#), 1.0);
        assert_eq!(value(r#"cerego_password_hash_duration_seconds_count{operation="hash"}"#), 1.0);
        assert_eq!(value(r#"cerego_password_hash_duration_seconds_count{operation="verify"}"#), 2.0);
        assert!(value(r#"cerego_http_request_duration_seconds_count{method="POST",route="/auth/login"}"#) >= 2.0);
        assert!(value(r#"cerego_db_pool_connections{state="open"}"#) >= 1.0);
        let database = match backend { Backend::Sqlite => "sqlite", Backend::Postgres => "postgres" };
        assert!(text.contains(&format!(r#"database="{database}""#)), "build info names the database");
        assert!(text.contains("cerego_build_info"));
        assert!(!text.contains(GOOD_PASSWORD));
    }
}

db_tests! {
    /// The links clients and stateful testers follow, and a description that says what sessions are.
    async fn the_description_links_sign_up_login_and_the_session_operations(backend: Backend) {
        let app = spawn_app(backend).await;
        let spec = spec(&app).await;
        let description = spec["info"]["description"].as_str().expect("description");
        assert!(description.contains("session"), "{description}");
        let operation_ids: BTreeSet<&str> = spec["paths"].as_object().expect("paths").values()
            .flat_map(|item| item.as_object().expect("item").values())
            .filter_map(|operation| operation["operationId"].as_str())
            .collect();
        let links = |path: &str, status: &str| -> Value {
            spec["paths"][path]["post"]["responses"][status]["links"].clone()
        };
        let signup = links("/auth/signup", "201");
        assert_eq!(signup["Login"]["operationId"], "login");
        assert_eq!(signup["Login"]["requestBody"]["password"], "$request.body#/password");
        for path in ["/auth/login", "/auth/refresh"] {
            let pair = links(path, "200");
            for (name, target) in [("Me", "me"), ("Sessions", "list"), ("Activity", "activity"), ("Logout", "logout"), ("LogoutAll", "logout_all"), ("Refresh", "refresh")] {
                let link = &pair[name];
                let id = link["operationId"].as_str().unwrap_or_else(|| panic!("{path} has no {name} link: {pair}"));
                assert_eq!(id, target);
                assert!(operation_ids.contains(id), "{path} links to an operation that exists: {id}");
            }
            assert_eq!(pair["Me"]["parameters"]["header.Authorization"], "Bearer {$response.body#/access_token}");
            assert_eq!(pair["Refresh"]["requestBody"]["refresh_token"], "$response.body#/refresh_token");
        }
    }
}
