//! No request body, however odd, makes the service answer 500.

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{Backend, TestApp, spawn_app_with};

/// A small deterministic generator (xorshift), seeded per run and printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn string(&mut self) -> String {
        const PIECES: [&str; 14] = [
            "a", "Z", "0", "@", ".", " ", "\0", "\u{7f}", "é", "€", "😀", "\"", "\\", "%00",
        ];
        let len = self.below(40);
        (0..len)
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }

    fn value(&mut self) -> Value {
        match self.below(6) {
            0 => Value::Null,
            1 => json!(self.next() as i64),
            2 => json!([self.string()]),
            3 => json!({ "nested": self.string() }),
            _ => json!(self.string()),
        }
    }
}

async fn post_raw(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> u16 {
    app.client
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

db_tests! {
    async fn hostile_bodies_never_cause_a_500(backend: Backend) {
        // Over 80 logins from one address: past RATE_LIMIT_LOGIN_IP, which is not under test.
        let app = spawn_app_with(backend, |s| s.limits.enabled = false).await;
        app.create_user("ada").await;
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let fixed: [(&str, Vec<u8>); 8] = [
            ("application/json", deep.into_bytes()),
            ("application/json", b"\xff\xfe\x00garbage".to_vec()),
            ("application/json", br#"{"email": "a@b.co", "username": "x\u0000y", "password": "p\u0000ssword1"}"#.to_vec()),
            ("application/json", br#"{"username": "ad\u0000a", "password": "x"}"#.to_vec()),
            ("application/json", br#"{"email": "\ud800@x.co", "password": "x"}"#.to_vec()),
            ("application/json", b"1e999999".to_vec()),
            ("application/x-www-form-urlencoded", b"username=%00&password=%ff%fe".to_vec()),
            ("application/x-www-form-urlencoded", b"%%%&&&==".to_vec()),
        ];
        for (content_type, body) in fixed {
            for path in ["/auth/signup", "/auth/login"] {
                let status = post_raw(&app, path, content_type, body.clone()).await;
                assert!(matches!(status, 201 | 401 | 409 | 413 | 422), "{path} {content_type}: {status}");
            }
        }

        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64
            | 1;
        let mut rng = Rng(seed);
        for round in 0..150 {
            let body = json!({
                "email": rng.value(),
                "username": rng.value(),
                "password": rng.value(),
            });
            let path = if round % 2 == 0 { "/auth/signup" } else { "/auth/login" };
            let status = post_raw(&app, path, "application/json", body.to_string().into_bytes()).await;
            assert!(
                matches!(status, 201 | 401 | 409 | 422),
                "seed {seed}, round {round}: {path} {body} gave {status}"
            );
        }
    }
}
