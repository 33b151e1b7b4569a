//! The brute-force throttle on logins: a doubling backoff per (login name, client address), a
//! failure cap per login name from every address, the same answers for known and unknown
//! accounts, no password work for a refused attempt, and a success clearing both.
//!
//! Two client addresses are simulated with a trusted proxy (127.0.0.1) and `X-Forwarded-For`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{
    Backend, GOOD_PASSWORD, TestApp, assert_detail, hash_count, retry_after, spawn_app_with,
};

const THROTTLED: &str = "Too many failed login attempts";
const INCORRECT: &str = "Incorrect username or password";

/// A login answer as a client sees it: status, body bytes and `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    body: String,
    retry_after: Option<u64>,
}

impl Answer {
    fn incorrect() -> Self {
        Self::new(401, INCORRECT, None)
    }

    fn throttled(retry_after: u64) -> Self {
        Self::new(429, THROTTLED, Some(retry_after))
    }

    fn new(status: u16, detail: &str, retry_after: Option<u64>) -> Self {
        Self {
            status,
            body: json!({ "detail": detail }).to_string(),
            retry_after,
        }
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = response.text().await.expect("body");
    Answer {
        status,
        body,
        retry_after,
    }
}

/// A login of `name` with `password`, from the client address `from` behind the trusted proxy.
async fn login_from(app: &TestApp, from: &str, name: &str, password: &str) -> reqwest::Response {
    let body = json!({ "username": name, "password": password });
    app.login_with_headers(&[("x-forwarded-for", from)], &body)
        .await
}

async fn wrong_from(app: &TestApp, from: &str, name: &str) -> Answer {
    answer(login_from(app, from, name, "not the password").await).await
}

fn throttled_series(scope: &str) -> String {
    format!("cerego_login_throttled_total{{scope=\"{scope}\"}}")
}

/// Wrong passwords for `name` from one address, paced as a patient attacker would: at once,
/// then after each wait the previous refusal announced.
async fn backoff_sequence(app: &TestApp, name: &str) -> Vec<Answer> {
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(wrong_from(app, "203.0.113.9", name).await);
    }
    for _ in 0..2 {
        let wait = answers.last().and_then(|a| a.retry_after).unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
        answers.push(wrong_from(app, "203.0.113.9", name).await);
        answers.push(wrong_from(app, "203.0.113.9", name).await);
    }
    answers
}

/// Asserts the per-account cap's refusal: within a window of an hour, begun moments ago.
fn assert_capped(capped: &Answer) {
    assert_eq!(
        (capped.status, capped.body.as_str()),
        (429, Answer::throttled(0).body.as_str())
    );
    assert!(
        capped
            .retry_after
            .is_some_and(|s| (3570..=3600).contains(&s)),
        "{capped:?}"
    );
}

/// Wrong passwords for `name`, each from a fresh address, until the account cap refuses one;
/// returns when that refusal says the cap ends (its `Retry-After` from its arrival, plus a
/// margin).
async fn until_capped(app: &TestApp, name: &str) -> Instant {
    for n in 0..10 {
        let response = login_from(app, &format!("10.0.1.{n}"), name, "not the password").await;
        let arrived = Instant::now();
        let this = answer(response).await;
        if this.status == 429 {
            assert_eq!(this.body, Answer::throttled(0).body);
            let retry = this.retry_after.expect("Retry-After");
            assert!((1..=2).contains(&retry), "a window of 2 s: {this:?}");
            return arrived + Duration::from_secs(retry) + Duration::from_millis(250);
        }
        assert_eq!(this, Answer::incorrect());
    }
    panic!("{name} was never capped");
}

db_tests! {
    async fn the_backoff_doubles_alike_for_known_and_unknown_accounts_without_password_work(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            s.trusted_proxies = cerego::config::TrustedProxies(vec!["127.0.0.1/32".parse().expect("cidr")]);
            s.limits.throttle.backoff_after = 2;
            s.limits.throttle.account_failure_limit = 0;
        })
        .await;
        app.create_user("ada").await;

        let (known, unknown) = tokio::join!(backoff_sequence(&app, "ada"), backoff_sequence(&app, "ghost"));

        // Two failures are free; then 1 s, 2 s, 4 s after the last attempt let through. An
        // attempt refused by the throttle is not counted (else the waits would grow faster).
        let expected = [
            Answer::incorrect(),
            Answer::incorrect(),
            Answer::throttled(1),
            Answer::incorrect(),
            Answer::throttled(2),
            Answer::incorrect(),
            Answer::throttled(4),
        ];
        assert_eq!(known, expected, "a known account");
        assert_eq!(unknown, known, "an unknown account answers byte for byte the same");
        let verified = app.metric(&hash_count("verify")).await;
        assert_eq!(verified, 8.0, "only the 401s checked a password");
        assert_eq!(app.metric(&throttled_series("account_ip")).await, 6.0);
        assert_eq!(app.metric(&throttled_series("account")).await, 0.0);
    }

    async fn the_owner_from_another_address_is_not_slowed_by_an_attacker_s_backoff(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            s.trusted_proxies = cerego::config::TrustedProxies(vec!["127.0.0.1/32".parse().expect("cidr")]);
            s.limits.throttle.backoff_after = 2;
            s.limits.throttle.account_failure_limit = 0;
        })
        .await;
        app.create_user("ada").await;
        let attacker = "203.0.113.9";

        for _ in 0..2 {
            assert_eq!(wrong_from(&app, attacker, "ada").await, Answer::incorrect());
        }
        let refused_at = Instant::now();
        assert_eq!(wrong_from(&app, attacker, "ada").await, Answer::throttled(1));
        let verified = app.metric(&hash_count("verify")).await;

        let owner = login_from(&app, "198.51.100.7", "ada", GOOD_PASSWORD).await;
        assert_eq!(owner.status(), 200, "the owner's address has no backoff");
        assert_eq!(app.metric(&hash_count("verify")).await, verified + 1.0, "only the owner's login checked a password");

        // The owner's success clears the owner's address, not the attacker's: after the wait,
        // the attacker's third failure is let through and doubles the next wait. (Had it been
        // cleared, two more failures would be free.)
        tokio::time::sleep_until((refused_at + Duration::from_millis(1_250)).into()).await;
        assert_eq!(wrong_from(&app, attacker, "ada").await, Answer::incorrect());
        let doubled = wrong_from(&app, attacker, "ada").await;
        assert_eq!((doubled.status, doubled.body.as_str()), (429, Answer::throttled(0).body.as_str()));
        assert!(doubled.retry_after.is_some_and(|s| (1..=2).contains(&s)), "{doubled:?}");
        assert_eq!(app.metric(&throttled_series("account_ip")).await, 2.0);
    }

    async fn the_account_cap_refuses_every_address_alike_for_known_and_unknown_accounts(backend: Backend) {
        // A window of an hour: nothing in this test depends on how fast the machine is.
        let app = spawn_app_with(backend, |s| {
            s.trusted_proxies = cerego::config::TrustedProxies(vec!["127.0.0.1/32".parse().expect("cidr")]);
            s.limits.throttle.backoff_after = 0;
            s.limits.throttle.account_failure_limit = 3;
            s.limits.throttle.account_failure_window = Duration::from_secs(3600);
        })
        .await;
        app.create_user("ada").await;

        // A success clears the account's count: two failures, the owner, then three more
        // failures before the cap (without the clearing, the second of them would be refused).
        assert_eq!(wrong_from(&app, "10.0.0.1", "ada").await, Answer::incorrect());
        assert_eq!(wrong_from(&app, "10.0.0.2", "ada").await, Answer::incorrect());
        assert_eq!(login_from(&app, "10.0.0.9", "ada", GOOD_PASSWORD).await.status(), 200);

        let mut answers = Vec::new();
        for name in ["ada", "ghost"] {
            let mut these = Vec::new();
            for from in ["10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"] {
                these.push(wrong_from(&app, from, name).await);
            }
            answers.push(these);
        }
        for these in &answers {
            assert_eq!(&these[..3], [Answer::incorrect(), Answer::incorrect(), Answer::incorrect()]);
            assert_capped(&these[3]);
        }
        // The owner too, from an address that never failed: the cap is the account's.
        assert_capped(&answer(login_from(&app, "10.0.0.9", "ada", GOOD_PASSWORD).await).await);
        let verified = app.metric(&hash_count("verify")).await;
        assert_eq!(verified, 2.0 + 1.0 + 6.0, "refused attempts checked no password");
        assert_eq!(app.metric(&throttled_series("account")).await, 3.0);
    }

    async fn the_account_cap_ends_with_its_window(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            s.trusted_proxies = cerego::config::TrustedProxies(vec!["127.0.0.1/32".parse().expect("cidr")]);
            s.limits.throttle.backoff_after = 0;
            s.limits.throttle.account_failure_limit = 2;
            s.limits.throttle.account_failure_window = Duration::from_secs(2);
        })
        .await;
        app.create_user("ada").await;

        // Each name capped, and each refusal's end noted as it announced it: the window began
        // at the name's first counted failure, whenever a slow machine sent it.
        let (ada, ghost) = tokio::join!(until_capped(&app, "ada"), until_capped(&app, "ghost"));
        tokio::time::sleep_until(ada.max(ghost).into()).await;

        let owner = login_from(&app, "10.0.0.9", "ada", GOOD_PASSWORD).await;
        assert_eq!(owner.status(), 200, "the window ended: the owner is in");
        assert_eq!(wrong_from(&app, "10.0.0.3", "ghost").await, Answer::incorrect(), "the unknown account's window ended too");
    }

    async fn a_success_clears_the_backoff_of_every_name_of_the_account(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            s.limits.throttle.backoff_after = 2;
            s.limits.throttle.account_failure_limit = 0;
        })
        .await;
        app.create_user("ada").await;
        let wrong = |name: &str| json!({ "username": name, "password": "not the password" });

        assert_detail(app.login_json(&wrong("ada")).await, 401, INCORRECT).await;
        assert_eq!(app.login_json(&json!({ "username": "ada", "password": GOOD_PASSWORD })).await.status(), 200);
        // Counted afresh: without the clearing, the next failure would already be refused.
        assert_detail(app.login_json(&wrong("ada")).await, 401, INCORRECT).await;
        assert_detail(app.login_json(&wrong("ADA")).await, 401, INCORRECT).await;
        assert_detail(app.login_json(&wrong("ada")).await, 429, THROTTLED).await;

        // The e-mail address is another login name, with its own backoff: not slowed.
        let by_email = app
            .login_json(&json!({ "email": "ada@example.com", "password": GOOD_PASSWORD }))
            .await;
        assert_eq!(by_email.status(), 200);
        // ...and its success cleared the username's backoff as well.
        let by_name = app.login_json(&json!({ "username": "ada", "password": GOOD_PASSWORD })).await;
        assert_eq!(by_name.status(), 200, "a success clears every name of the account");
    }

    /// The login name is lower-cased a character at a time, as PostgreSQL's `lower()` does (`İ`,
    /// U+0130, is `i`; `Σ` is `σ` wherever it stands): each pair below is one name with one
    /// backoff, for a known account and unknown ones alike.
    async fn a_name_in_another_case_shares_the_backoff(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            s.limits.throttle.backoff_after = 2;
            s.limits.throttle.account_failure_limit = 0;
        })
        .await;
        app.create_user("ida").await;
        let sequence = async |lower: &str, upper: &str| {
            let mut answers = Vec::new();
            for name in [lower, lower, upper, lower] {
                answers.push(answer(app.login_json(&json!({ "username": name, "password": "not the password" })).await).await);
            }
            answers
        };

        let (known, unknown, sigma) = tokio::join!(
            sequence("ida", "İda"),
            sequence("ivo", "İVO"),
            sequence("οδοσ", "ΟΔΟΣ"),
        );

        let expected = [Answer::incorrect(), Answer::incorrect(), Answer::throttled(1), Answer::throttled(1)];
        assert_eq!(known, expected, "ida, then İda: one name");
        assert_eq!(unknown, known, "an unknown name answers the same");
        assert_eq!(sigma, known, "οδοσ, then ΟΔΟΣ: one name");
        assert_eq!(app.metric(&hash_count("verify")).await, 6.0, "only the 401s checked a password");
    }

    async fn racing_attempts_cannot_slip_past_the_backoff(backend: Backend) {
        let app = spawn_app_with(backend, |s| {
            s.limits.throttle.backoff_after = 2;
            s.limits.throttle.account_failure_limit = 0;
        })
        .await;
        app.create_user("ada").await;

        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (client, url) = (app.client.clone(), app.url("/auth/login"));
            attempts.spawn(async move {
                let body = json!({ "username": "ada", "password": "not the password" });
                let response = client.post(url).json(&body).send().await.expect("request");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.expect("json"))
            });
        }
        let answers = attempts.join_all().await;

        let passed = answers.iter().filter(|(status, _)| *status == 401).count();
        assert_eq!(passed, 2, "exactly the free failures got a password check: {answers:?}");
        assert!(
            answers.iter().all(|(status, body)| *status == 401 || (*status == 429 && body["detail"] == THROTTLED)),
            "{answers:?}"
        );
        assert_eq!(app.metric(&hash_count("verify")).await, 2.0);
    }
}
