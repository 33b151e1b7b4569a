//! Replicas behave as one service: a session opened through the balancer refreshes on another
//! replica and ends on all of them at once; rate limits and the login throttle are one budget,
//! not one per replica; replicas starting together on a fresh database migrate it once.

use serde_json::{Value, json};

use super::{
    Cluster, Replica, client, free_port, fresh_secret, get_authed, log_in, post, prerequisites,
    refreshed, shared_env, sign_up,
};
use crate::helpers::{Backend, GOOD_PASSWORD, TestDb, assert_detail, assert_refused, rule_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_between_replicas_and_a_logout_ends_it_on_every_one() {
    if !prerequisites() {
        return;
    }
    let cluster = Cluster::start(3, &[]).await;
    let (client, balancer) = (&cluster.client, cluster.nginx.url(""));
    let [a, b, c] = [0, 1, 2].map(|i| cluster.replicas[i].url(""));

    sign_up(client, &balancer, "ada").await;
    let (access, refresh) = log_in(client, &balancer, "ada", GOOD_PASSWORD).await;
    for replica in [&a, &b, &c] {
        let me = get_authed(client, &format!("{replica}/auth/me"), &access).await;
        assert_eq!(me.status(), 200, "the balancer's token at {replica}");
        let body: Value = me.json().await.expect("json");
        assert_eq!(body["username"], "ada");
    }

    // The refresh is pinned to one replica, the next to another: one rotation chain.
    let (_, refresh) = refreshed(client, &b, &refresh).await;
    let (access, refresh) = refreshed(client, &c, &refresh).await;
    for replica in [&a, &b, &c, &balancer] {
        let me = get_authed(client, &format!("{replica}/auth/me"), &access).await;
        assert_eq!(me.status(), 200, "the refreshed token at {replica}");
    }

    // A second session of the same user, which the logout of the first must not end.
    let (other, _) = log_in(client, &c, "ada", GOOD_PASSWORD).await;
    let logout = post(
        client,
        &format!("{a}/auth/logout"),
        None,
        Some(&access),
        None,
    )
    .await;
    assert_eq!(logout.status(), 204);
    // At once, with no wait: every replica asks the one database.
    for replica in [&a, &b, &c, &balancer] {
        assert_detail(
            get_authed(client, &format!("{replica}/auth/me"), &access).await,
            401,
            "Could not validate credentials",
        )
        .await;
        let me = get_authed(client, &format!("{replica}/auth/me"), &other).await;
        assert_eq!(me.status(), 200, "the other session lives on at {replica}");
    }
    for replica in [&b, &c] {
        let again = post(
            client,
            &format!("{replica}/auth/refresh"),
            Some(&json!({ "refresh_token": refresh })),
            None,
            None,
        )
        .await;
        assert_eq!(
            again.status(),
            401,
            "the ended session's refresh at {replica}"
        );
    }
    assert!(
        cluster
            .nginx
            .error_log()
            .lines()
            .all(|l| !l.contains("[error]")),
        "no upstream errors: {}",
        cluster.nginx.error_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_one_budget_across_replicas_and_the_balancer() {
    if !prerequisites() {
        return;
    }
    const BUDGET: u64 = 6;
    let cluster = Cluster::start(
        3,
        &[
            ("RATE_LIMIT_LOGIN_IP", "6/hour"),
            ("LOGIN_BACKOFF_AFTER", "3"),
            ("LOGIN_ACCOUNT_FAILURE_LIMIT", "4"),
        ],
    )
    .await;
    let client = &cluster.client;
    let bases: Vec<String> = cluster
        .replicas
        .iter()
        .map(|r| r.url(""))
        .chain([cluster.nginx.url("")])
        .collect();
    let login = |base: &str, name: &str, address: &str| {
        let url = format!("{base}/auth/login");
        let body = json!({ "username": name, "password": "not the password" });
        let address = address.to_owned();
        async move { post(client, &url, Some(&body), None, Some(&address)).await }
    };

    // One client address spends its budget on every replica in turn, and through nginx (which
    // appends its own hop, 127.0.0.1, a trusted proxy: the client is still 203.0.113.7).
    let client_ip = "203.0.113.7";
    for spent in 1..=BUDGET {
        let base = &bases[(spent as usize - 1) % bases.len()];
        // A name per attempt: only the address's budget is spent, no account's.
        let response = login(base, &format!("nobody{spent}"), client_ip).await;
        let state = rule_state(response.headers(), "login_ip");
        assert_eq!(
            (state.q, state.r),
            (BUDGET, BUDGET - spent),
            "attempt {spent} at {base}: one budget for every replica"
        );
        assert_detail(response, 401, "Incorrect username or password").await;
    }
    for base in &bases {
        let (retry, _) =
            assert_refused(login(base, "nobody", client_ip).await, "Too many requests").await;
        assert!(retry >= 1, "{base}");
    }
    // The budget is the address's, not the balancer's: another client is not refused.
    let response = login(&bases[3], "nobody", "203.0.113.8").await;
    assert_eq!(rule_state(response.headers(), "login_ip").r, BUDGET - 1);
    assert_detail(response, 401, "Incorrect username or password").await;

    // The login throttle too. Its backoff, per account and client address: three failures,
    // each on another replica, and the next attempt waits, wherever it goes.
    sign_up(client, &bases[0], "ada").await;
    let address = "198.51.100.1";
    for base in &bases[..3] {
        let response = login(base, "ada", address).await;
        assert_detail(response, 401, "Incorrect username or password").await;
    }
    for base in &bases[2..] {
        let (retry, _) = assert_refused(
            login(base, "ada", address).await,
            "Too many failed login attempts",
        )
        .await;
        assert!(retry >= 1, "{base}");
    }
    // Its cap per account, from every address: four failures from four addresses on four
    // replicas, and then no address gets a try.
    sign_up(client, &bases[0], "bob").await;
    for (i, base) in bases.iter().enumerate() {
        let response = login(base, "bob", &format!("192.0.2.{i}")).await;
        assert_detail(response, 401, "Incorrect username or password").await;
    }
    for (i, base) in bases.iter().enumerate() {
        let (retry, _) = assert_refused(
            login(base, "bob", &format!("192.0.2.{}", 10 + i)).await,
            "Too many failed login attempts",
        )
        .await;
        assert!(retry > 60, "the cap lasts until its window ends: {retry}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_a_fresh_database_migrate_it_once() {
    if !prerequisites() {
        return;
    }
    let db = TestDb::create(Backend::Postgres).await;
    let env = shared_env(&db.url(), &fresh_secret());
    // Spawned before any is waited for: their migrations run at the same moment.
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::spawn(&format!("replica {i}"), free_port(), env.clone()))
        .collect();
    let client = client();
    for replica in &mut replicas {
        replica.ready(&client).await;
    }

    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("migrations")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        })
        .count();
    let rows = db
        .scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .await;
    assert_eq!(
        usize::try_from(rows).expect("a count"),
        files,
        "each migration recorded once"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM _sqlx_migrations").await,
        rows
    );
    let migrate = super::migrate(&db.url());
    assert!(migrate.status.success());
    let said = String::from_utf8_lossy(&migrate.stdout);
    let expected = format!("applied 0 migrations ({files} already applied)");
    assert!(said.lines().any(|l| l == expected), "{said}");

    // And all three serve the one database.
    let [a, b, c] = [0, 1, 2].map(|i| replicas[i].url(""));
    sign_up(&client, &a, "ada").await;
    let (access, _) = log_in(&client, &b, "ada", GOOD_PASSWORD).await;
    assert_eq!(
        get_authed(&client, &format!("{c}/auth/me"), &access)
            .await
            .status(),
        200
    );
    for replica in &replicas {
        let errors: Vec<Value> = replica
            .json_lines()
            .into_iter()
            .filter(|l| l["level"] == "ERROR")
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", replica.name);
    }
}
