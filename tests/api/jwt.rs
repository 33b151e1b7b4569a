//! The JWT attack suite: hostile access tokens against the running service, over HTTP. Each is
//! signed (or not) the way an attacker would, often with the right key, and each must get a 401
//! with the usual body and the right `WWW-Authenticate` description, while the genuine token of
//! the same session keeps working. Tokens the library refuses to build are made by hand
//! (base64url and HMAC-SHA256).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::db_tests;
use crate::helpers::{Backend, TEST_SECRET, TestApp, spawn_app_with, spawn_app_with_clock};
use crate::me::{EXPIRED, INVALID, SESSION_ENDED, assert_rejected_with};

/// A logged-in user: the genuine token and what it says.
struct Victim {
    token: String,
    sub: String,
    sid: String,
}

impl Victim {
    async fn log_in(app: &TestApp) -> Self {
        app.create_user("ada").await;
        let token = app.token_for("ada").await;
        let payload = token.split('.').nth(1).expect("payload");
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("claims");
        let field = |name: &str| claims[name].as_str().expect(name).to_owned();
        Self {
            sub: field("sub"),
            sid: field("sid"),
            token,
        }
    }

    /// Claims like the genuine token's, issued at `now`.
    fn claims(&self, now: i64) -> Value {
        json!({ "sub": self.sub, "sid": self.sid, "jti": "attack", "iat": now, "exp": now + 600 })
    }

    async fn still_works(&self, app: &TestApp) {
        assert_eq!(
            app.me(&self.token).await.status(),
            200,
            "the genuine token works"
        );
    }
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn hmac(key: &[u8], message: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(message.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// `header.claims` signed with HMAC-SHA256 under `key`, whatever the header says.
fn forge_with(key: &[u8], header: &Value, claims: &Value) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let signature = hmac(key, &message);
    format!("{message}.{signature}")
}

/// `header.claims` signed with the service's own key.
fn forge(header: &Value, claims: &Value) -> String {
    forge_with(TEST_SECRET.as_bytes(), header, claims)
}

fn hs256() -> Value {
    json!({ "alg": "HS256", "typ": "JWT" })
}

db_tests! {
    async fn alg_none_is_refused_with_or_without_a_signature(backend: Backend) {
        let app = spawn_app_with_clock(backend, |_| {}).await;
        let victim = Victim::log_in(&app).await;
        let payload = b64(&victim.claims(app.clock_now()));
        let signature = victim.token.rsplit('.').next().expect("signature");

        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = b64(&json!({ "alg": alg, "typ": "JWT" }));
            assert_rejected_with(&app, &format!("{header}.{payload}."), INVALID, alg).await;
            let signed = format!("{header}.{payload}.{signature}");
            assert_rejected_with(&app, &signed, INVALID, "alg none with a signature").await;
            assert_rejected_with(&app, &format!("{header}.{payload}"), INVALID, "two segments").await;
        }
        victim.still_works(&app).await;
    }

    async fn algorithm_confusion_is_refused(backend: Backend) {
        let app = spawn_app_with_clock(backend, |_| {}).await;
        let victim = Victim::log_in(&app).await;
        let claims = victim.claims(app.clock_now());

        // An HMAC under the real secret, labelled as an asymmetric algorithm.
        for alg in ["RS256", "PS256", "ES256", "EdDSA", "HS384", "HS512"] {
            let token = forge(&json!({ "alg": alg, "typ": "JWT" }), &claims);
            assert_rejected_with(&app, &token, INVALID, alg).await;
        }
        // The classic RS→HS confusion: a public key (all an attacker would have) as HMAC secret.
        let public_key = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let token = forge_with(public_key.as_bytes(), &hs256(), &claims);
        assert_rejected_with(&app, &token, INVALID, "public key as HMAC secret").await;
        let token = forge_with(b"", &hs256(), &claims);
        assert_rejected_with(&app, &token, INVALID, "empty HMAC secret").await;

        assert_eq!(app.me(&forge(&hs256(), &claims)).await.status(), 200, "control");
        victim.still_works(&app).await;
    }

    async fn key_selecting_and_critical_headers_are_refused(backend: Backend) {
        let app = spawn_app_with_clock(backend, |_| {}).await;
        let victim = Victim::log_in(&app).await;
        let claims = victim.claims(app.clock_now());
        let attacker_key = b"attacker-controlled-key-of-32-bytes!!";
        let injected = [
            ("kid", json!("../../../../dev/null")),
            ("kid", json!("x' UNION SELECT 'attacker-controlled-key-of-32-bytes!!")),
            ("jku", json!("https://attacker.example/.well-known/jwks.json")),
            ("x5u", json!("https://attacker.example/cert.pem")),
            ("jwk", json!({ "kty": "oct", "k": URL_SAFE_NO_PAD.encode(attacker_key) })),
            ("crit", json!(["exp"])),
            ("crit", json!(["cerego-extension"])),
        ];
        for (name, value) in injected {
            let mut header = hs256();
            header[name] = value.clone();
            // Signed with the key the header points at (the attack) ...
            let token = forge_with(attacker_key, &header, &claims);
            assert_rejected_with(&app, &token, INVALID, &format!("{name} {value}")).await;
            let token = forge_with(b"", &header, &claims);
            assert_rejected_with(&app, &token, INVALID, &format!("{name} {value}, empty key")).await;
            // ... and even with the right key: cerego never mints these members.
            let token = forge(&header, &claims);
            assert_rejected_with(&app, &token, INVALID, &format!("{name} {value}, right key")).await;
        }
        victim.still_works(&app).await;
    }

    async fn time_claims_are_checked_against_the_services_clock(backend: Backend) {
        let app = spawn_app_with_clock(backend, |_| {}).await;
        let victim = Victim::log_in(&app).await;
        // The app's clock stands still from here on, so the boundaries are exact.
        app.advance_clock(Duration::from_secs(3600));
        let now = app.clock_now();
        let with = |changes: Value| {
            let mut claims = victim.claims(now);
            for (name, value) in changes.as_object().expect("object") {
                if value.is_null() {
                    claims.as_object_mut().expect("object").remove(name);
                } else {
                    claims[name] = value.clone();
                }
            }
            forge(&hs256(), &claims)
        };

        assert_rejected_with(&app, &with(json!({ "exp": null })), INVALID, "no exp").await;
        assert_rejected_with(&app, &with(json!({ "exp": now - 31 })), EXPIRED, "exp past the 30 s leeway").await;
        assert_rejected_with(&app, &with(json!({ "exp": now - 86_400 })), EXPIRED, "exp a day ago").await;
        assert_rejected_with(&app, &with(json!({ "exp": "soon" })), INVALID, "exp not a number").await;
        assert_rejected_with(&app, &with(json!({ "nbf": now + 3600 })), INVALID, "nbf an hour ahead").await;
        assert_rejected_with(&app, &with(json!({ "nbf": now + 31 })), INVALID, "nbf past the leeway").await;
        assert_rejected_with(&app, &with(json!({ "iat": now + 86_400 })), INVALID, "iat a day ahead").await;
        assert_rejected_with(&app, &with(json!({ "iat": now + 31 })), INVALID, "iat past the leeway").await;
        assert_rejected_with(&app, &with(json!({ "iat": null })), INVALID, "no iat").await;
        // The service's clock is an hour ahead of the system's: its judgement, not the system's.
        let system_now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert_rejected_with(&app, &with(json!({ "exp": system_now + 60 })), EXPIRED, "exp by the app's clock").await;

        for (changes, why) in [
            (json!({ "exp": now - 30 }), "exp within the leeway"),
            (json!({ "nbf": now + 30 }), "nbf within the leeway"),
            (json!({ "iat": now + 30 }), "iat within the leeway"),
            (json!({ "nbf": now - 60 }), "nbf past"),
        ] {
            assert_eq!(app.me(&with(changes)).await.status(), 200, "{why}");
        }
    }

    async fn sub_and_sid_must_be_canonical_decimals(backend: Backend) {
        let app = spawn_app_with_clock(backend, |_| {}).await;
        let victim = Victim::log_in(&app).await;
        let now = app.clock_now();
        let spellings = [
            format!("+{}", victim.sub),
            format!("0{}", victim.sub),
            format!("00{}", victim.sub),
            format!(" {}", victim.sub),
            "-1".to_owned(),
            "0".to_owned(),
        ];
        for claim in ["sub", "sid"] {
            for spelling in &spellings {
                let mut claims = victim.claims(now);
                let value = if claim == "sid" { spelling.replace(&victim.sub, &victim.sid) } else { spelling.clone() };
                claims[claim] = value.clone().into();
                assert_rejected_with(&app, &forge(&hs256(), &claims), INVALID, &format!("{claim} {value:?}")).await;
            }
        }
        let mut numeric = victim.claims(now);
        numeric["sub"] = victim.sub.parse::<i64>().expect("decimal").into();
        assert_rejected_with(&app, &forge(&hs256(), &numeric), INVALID, "sub as a JSON number").await;
        assert_eq!(app.me(&forge(&hs256(), &victim.claims(now))).await.status(), 200, "control");
    }

    async fn issuer_and_audience_are_enforced_when_configured(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            s.jwt.issuer = Some("https://auth.cerego.test".into());
            s.jwt.audience = Some("learners".into());
        })
        .await;
        let victim = Victim::log_in(&app).await;
        victim.still_works(&app).await;
        let now = app.clock_now();
        let with = |iss: Option<&str>, aud: Option<Value>| {
            let mut claims = victim.claims(now);
            if let Some(iss) = iss {
                claims["iss"] = iss.into();
            }
            if let Some(aud) = aud {
                claims["aud"] = aud;
            }
            forge(&hs256(), &claims)
        };
        let (iss, aud) = ("https://auth.cerego.test", json!("learners"));

        assert_eq!(app.me(&with(Some(iss), Some(aud.clone()))).await.status(), 200, "control");
        assert_rejected_with(&app, &with(Some("https://evil.test"), Some(aud.clone())), INVALID, "wrong iss").await;
        assert_rejected_with(&app, &with(None, Some(aud.clone())), INVALID, "no iss").await;
        assert_rejected_with(&app, &with(Some(iss), Some(json!("admins"))), INVALID, "wrong aud").await;
        assert_rejected_with(&app, &with(Some(iss), None), INVALID, "no aud").await;
        assert_rejected_with(&app, &with(None, None), INVALID, "neither").await;
    }

    async fn tokens_of_one_kind_are_refused_as_the_other(backend: Backend) {
        let app = spawn_app_with_clock(backend, |_| {}).await;
        app.create_user("ada").await;
        let (access, refresh) = app.login_pair("ada").await;

        assert_rejected_with(&app, &refresh, INVALID, "a refresh token as an access token").await;
        let response = app.refresh(&access).await;
        assert_eq!(response.status(), 401, "an access token at /auth/refresh");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, json!({ "detail": "Invalid refresh token" }));

        assert_eq!(app.me(&access).await.status(), 200);
        assert_eq!(app.refresh(&refresh).await.status(), 200);
    }

    async fn a_100_kb_token_is_refused(backend: Backend) {
        let app = spawn_app_with_clock(backend, |_| {}).await;
        let victim = Victim::log_in(&app).await;
        let padded = |bytes: usize| {
            let mut claims = victim.claims(app.clock_now());
            claims["pad"] = "x".repeat(bytes).into();
            forge(&hs256(), &claims)
        };

        // 100 KB is past the 64 KiB request head: refused before any token check, in JSON.
        for (token, why) in [(padded(100 * 1024), "100 KB, correctly signed"), ("A".repeat(100 * 1024), "100 KB of junk")] {
            assert!(token.len() >= 100 * 1024);
            let response = app.me(&token).await;
            assert_eq!(response.status(), 431, "{why}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body, json!({ "detail": "Request Header Fields Too Large" }), "{why}");
        }
        // Within the head limit but far over any token cerego mints: refused before decoding.
        assert_rejected_with(&app, &padded(32 * 1024), INVALID, "32 KB, correctly signed").await;
        assert_rejected_with(&app, &"A".repeat(32 * 1024), INVALID, "32 KB of junk").await;
        victim.still_works(&app).await;
    }

    async fn a_genuine_token_of_an_ended_session_is_refused(backend: Backend) {
        let app = spawn_app_with_clock(backend, |_| {}).await;
        let victim = Victim::log_in(&app).await;
        let (other, _) = app.login_pair("ada").await;

        assert_eq!(app.post_authed("/auth/logout", &victim.token).await.status(), 204);

        assert_rejected_with(&app, &victim.token, SESSION_ENDED, "logged out").await;
        // Re-signed with fresh times, it is still the ended session.
        let resigned = forge(&hs256(), &victim.claims(app.clock_now()));
        assert_rejected_with(&app, &resigned, SESSION_ENDED, "same session, new token").await;
        assert_eq!(app.me(&other).await.status(), 200, "the other session lives");
        // Every authenticated route answers alike; with no token at all, no error code.
        let again = app.post_authed("/auth/logout", &victim.token).await;
        assert_eq!(again.status(), 401);
        assert_eq!(again.headers()["www-authenticate"], SESSION_ENDED);
        let anonymous = app.client.get(app.url("/auth/sessions")).send().await.expect("request");
        assert_eq!(anonymous.status(), 401);
        assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
        let body: Value = anonymous.json().await.expect("json");
        assert_eq!(body, json!({ "detail": "Could not validate credentials" }));
    }
}
