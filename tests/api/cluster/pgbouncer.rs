//! Two replicas through PgBouncer in transaction pooling mode (Debian's `pgbouncer`): the core
//! flows work while a handful of server connections is shared by every connection of both
//! replicas' pools.
//!
//! The migrations do not go through PgBouncer (they hold a session advisory lock and change
//! session settings, which transaction pooling cannot keep): `cerego migrate` runs against
//! PostgreSQL first, then the replicas start with `DATABASE_AUTO_MIGRATE=false`. The rest is
//! docs/deployment.md's PgBouncer section: before 1.21 (Debian bookworm ships 1.18) PgBouncer has
//! no prepared-statement support, so the replicas run with `DATABASE_STATEMENT_CACHE_CAPACITY=0`
//! (every use in a transaction that starts by dropping the server connection's prepared
//! statements: the driver still names its statements), and PgBouncer needs nothing more; from
//! 1.21 PgBouncer runs with
//! `max_prepared_statements = 200` and the replicas keep their statement cache. The timeouts
//! cerego sends in the `options` start-up parameter, which PgBouncer must ignore, are set on the
//! database instead.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Url;
use serde_json::{Value, json};
use sqlx::{Connection, Row};

use super::{
    Replica, client, free_port, fresh_secret, get_authed, listening, log_in, post, prerequisites,
    refreshed, running_as_root, shared_env, sign_up, tool,
};
use crate::helpers::{Backend, GOOD_PASSWORD, TestDb, assert_detail, required};

/// Server connections PgBouncer opens per database and user: fewer than the replicas' pools
/// hold between them, so they are shared.
const POOL_SIZE: u32 = 2;
const ADMIN_PASSWORD: &str = "an admin passphrase for the bouncer";

/// `pgbouncer --version`'s (major, minor), or `None` when it is not installed.
fn pgbouncer_version() -> Option<(u32, u32)> {
    let output = Command::new(tool("pgbouncer"))
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.lines().next()?.strip_prefix("PgBouncer ")?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// A `pgbouncer` process in front of the PostgreSQL of `TEST_DATABASE_URL`, in transaction
/// pooling mode, on a port of its own.
struct PgBouncer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PgBouncer {
    fn start(postgres: &Url, prepared_statements: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let root = running_as_root(dir.path());
        let user = postgres.username();
        let mut server = format!(
            "host={} port={} user={user}",
            postgres.host_str().expect("a host"),
            postgres.port().unwrap_or(5432)
        );
        if let Some(password) = postgres.password() {
            server.push_str(&format!(" password={password}"));
        }
        let d = dir.path().display();
        // sqlx sends DateStyle, client_encoding and TimeZone (PgBouncer tracks those),
        // extra_float_digits and, from cerego, `options` (statement_timeout and
        // idle_in_transaction_session_timeout): PgBouncer refuses unknown startup parameters
        // unless told to ignore them, and ignoring `options` drops those two timeouts, which a
        // deployment then sets on the role or database (the test: on its database).
        let config = format!(
            "[databases]\n\
             * = {server}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {d}/userlist.txt\n\
             admin_users = {user}\n\
             pool_mode = transaction\n\
             default_pool_size = {POOL_SIZE}\n\
             max_client_conn = 200\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {d}/pgbouncer.log\n\
             pidfile = {d}/pgbouncer.pid\n\
             {}",
            if prepared_statements {
                "max_prepared_statements = 200\n"
            } else {
                // Nothing more: cerego cleans each server connection it gets (see the module).
                ""
            }
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), config).expect("pgbouncer.ini");
        std::fs::write(
            dir.path().join("userlist.txt"),
            format!("\"{user}\" \"\"\n"),
        )
        .expect("userlist.txt");
        let mut command = Command::new(tool("pgbouncer"));
        if root {
            // PgBouncer refuses to run as root: it switches to `postgres`, which must read its
            // files and write its log and pid there.
            for file in ["pgbouncer.ini", "userlist.txt"] {
                std::fs::set_permissions(
                    dir.path().join(file),
                    std::fs::Permissions::from_mode(0o644),
                )
                .expect("chmod");
            }
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("chmod");
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.path().join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pgbouncer");
        let mut bouncer = Self {
            port,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(port) {
            if let Some(status) = bouncer
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let mut stderr = String::new();
                if let Some(mut err) = bouncer.child.take().and_then(|mut c| c.stderr.take()) {
                    let _ = err.read_to_string(&mut stderr);
                }
                panic!("pgbouncer exited ({status}): {stderr}\n{}", bouncer.log());
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
    }

    /// `postgres` (the URL of the database behind it) with PgBouncer's address instead.
    fn url_for(&self, postgres: &Url) -> String {
        let mut url = postgres.clone();
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(self.port)).expect("port");
        url.to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    /// (clients, servers) of `database` on PgBouncer's admin console (`SHOW POOLS`): client
    /// connections open (active or waiting) and server connections open.
    async fn pool_counts(&self, postgres: &Url, database: &str) -> (i64, i64) {
        let mut admin = postgres.clone();
        admin.set_host(Some("127.0.0.1")).expect("host");
        admin.set_port(Some(self.port)).expect("port");
        admin.set_path("/pgbouncer");
        let mut conn = sqlx::PgConnection::connect(admin.as_str())
            .await
            .unwrap_or_else(|e| panic!("PgBouncer's admin console: {e}\n{}", self.log()));
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe("SHOW POOLS"))
            .fetch_all(&mut conn)
            .await
            .expect("SHOW POOLS");
        // The console's columns are text or integers of one width or another.
        let number = |row: &sqlx::postgres::PgRow, column: &str| -> i64 {
            row.try_get::<i64, _>(column)
                .or_else(|_| row.try_get::<i32, _>(column).map(i64::from))
                .or_else(|_| row.try_get::<i16, _>(column).map(i64::from))
                .ok()
                .or_else(|| row.try_get::<String, _>(column).ok()?.parse().ok())
                .unwrap_or_else(|| panic!("SHOW POOLS: no integer {column}"))
        };
        let count = |row: &sqlx::postgres::PgRow, columns: &[&str]| -> i64 {
            columns.iter().map(|c| number(row, c)).sum()
        };
        let row = rows
            .iter()
            .find(|row| {
                row.try_get::<String, _>("database")
                    .is_ok_and(|d| d == database)
            })
            .unwrap_or_else(|| panic!("no pool for {database} in SHOW POOLS"));
        let clients = count(row, &["cl_active", "cl_waiting"]);
        let servers = count(
            row,
            &["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"],
        );
        let _ = conn.close().await;
        (clients, servers)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_flows_work_through_pgbouncer_in_transaction_mode() {
    if !prerequisites() {
        return;
    }
    let version = pgbouncer_version();
    if !required(version.is_some(), "pgbouncer (apt-get install pgbouncer)") {
        return;
    }
    let prepared_statements = version.is_some_and(|v| v >= (1, 21));
    let db = TestDb::create(Backend::Postgres).await;
    let postgres = Url::parse(&db.url()).expect("TEST_DATABASE_URL is a URL");
    let database = postgres.path().trim_start_matches('/').to_owned();

    // Migrations straight to PostgreSQL, never through PgBouncer.
    let migrate = super::migrate(&db.url());
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    // The two timeouts PgBouncer cannot pass on, as the runbook sets them (on the database here,
    // not on the role, which other tests share).
    db.run_sql(&format!(
        "ALTER DATABASE {database} SET statement_timeout = '5s'; \
         ALTER DATABASE {database} SET idle_in_transaction_session_timeout = '5500ms'"
    ))
    .await;

    let bouncer = PgBouncer::start(&postgres, prepared_statements);
    let mut through = sqlx::PgConnection::connect(&bouncer.url_for(&postgres))
        .await
        .unwrap_or_else(|e| panic!("through PgBouncer: {e}\n{}", bouncer.log()));
    for (setting, value) in [
        ("statement_timeout", "5s"),
        ("idle_in_transaction_session_timeout", "5500ms"),
    ] {
        // The simple protocol: one exchange, one server connection.
        let shown: String = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(&mut through)
            .await
            .expect("SHOW")
            .get(0);
        assert_eq!(shown, value, "{setting} on PgBouncer's server connections");
    }
    let _ = through.close().await;
    let mut env = shared_env(&bouncer.url_for(&postgres), &fresh_secret());
    for (key, value) in [
        ("DATABASE_AUTO_MIGRATE", "false"),
        ("DATABASE_MAX_CONNECTIONS", "4"),
        ("ADMIN_EMAIL", "root@example.com"),
        ("ADMIN_USERNAME", "root"),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD),
    ] {
        env.push((key.to_owned(), value.to_owned()));
    }
    if !prepared_statements {
        env.push((
            "DATABASE_STATEMENT_CACHE_CAPACITY".to_owned(),
            "0".to_owned(),
        ));
    }
    let mut replicas: Vec<Replica> = (0..2)
        .map(|i| Replica::spawn(&format!("replica {i}"), free_port(), env.clone()))
        .collect();
    let client = client();
    for replica in &mut replicas {
        replica.ready(&client).await;
    }
    let [a, b] = [0, 1].map(|i| replicas[i].url(""));

    // Sign-up, login, me and refresh, across the two replicas.
    sign_up(&client, &a, "ada").await;
    let (access, refresh) = log_in(&client, &b, "ada", GOOD_PASSWORD).await;
    let me = get_authed(&client, &format!("{a}/auth/me"), &access).await;
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.expect("json")["username"], "ada");
    let (_, refresh) = refreshed(&client, &a, &refresh).await;
    let (access, _) = refreshed(&client, &b, &refresh).await;

    // Both pools' connections at once, over fewer server connections: /auth/me and refreshes
    // from eight clients, alternating replicas.
    let mut load = Vec::new();
    for task in 0..8 {
        let (client, a, b) = (client.clone(), a.clone(), b.clone());
        let name = format!("load{task}");
        load.push(tokio::spawn(async move {
            sign_up(&client, &a, &name).await;
            let (mut access, mut refresh) = log_in(&client, &b, &name, GOOD_PASSWORD).await;
            for round in 0..15 {
                let base = if (task + round) % 2 == 0 { &a } else { &b };
                let me = get_authed(&client, &format!("{base}/auth/me"), &access).await;
                assert_eq!(me.status(), 200, "{name}, round {round}");
                if round % 3 == 2 {
                    (access, refresh) = refreshed(&client, base, &refresh).await;
                }
            }
        }));
    }
    for task in load {
        task.await.expect("load task");
    }
    let (clients, servers) = bouncer.pool_counts(&postgres, &database).await;
    assert!(
        servers <= i64::from(POOL_SIZE) && clients > servers,
        "{clients} client connections shared {servers} server connections"
    );

    // A password change ends the other sessions; the new password logs in on the other
    // replica.
    let (other, _) = log_in(&client, &a, "ada", GOOD_PASSWORD).await;
    let new_password = "a brand new passphrase for ada";
    let change = post(
        &client,
        &format!("{b}/auth/password/change"),
        Some(&json!({ "current_password": GOOD_PASSWORD, "new_password": new_password })),
        Some(&access),
        None,
    )
    .await;
    assert_eq!(change.status(), 204);
    assert_eq!(
        get_authed(&client, &format!("{a}/auth/me"), &other)
            .await
            .status(),
        401
    );
    let (access, _) = log_in(&client, &a, "ada", new_password).await;

    // Logout on one replica: 401 on both.
    let logout = post(
        &client,
        &format!("{b}/auth/logout"),
        None,
        Some(&access),
        None,
    )
    .await;
    assert_eq!(logout.status(), 204);
    for base in [&a, &b] {
        assert_detail(
            get_authed(&client, &format!("{base}/auth/me"), &access).await,
            401,
            "Could not validate credentials",
        )
        .await;
    }

    // The admin listing (the bootstrap account, created at start-up through PgBouncer).
    let (admin, _) = log_in(&client, &b, "root", ADMIN_PASSWORD).await;
    let listing = get_authed(&client, &format!("{a}/admin/users?limit=100"), &admin).await;
    assert_eq!(listing.status(), 200);
    let listing: Value = listing.json().await.expect("json");
    let names: Vec<&str> = listing["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names.len(), 10, "root, ada and eight load users: {names:?}");
    assert!(
        names.contains(&"ada") && names.contains(&"root"),
        "{names:?}"
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
