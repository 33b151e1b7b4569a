//! The `cerego` binary's commands and settings as a user meets them: `migrate` on a fresh
//! database of each kind, `audit verify` on an intact trail, `--help`, blank and out-of-range
//! variables, and the documentation of every variable.

use std::path::Path;
use std::process::Output;

use cerego::config::VARIABLES;

use crate::db_tests;
use crate::helpers::{Backend, TestDb, spawn_app};
use crate::process::command;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The up migrations shipped for `kind` (`postgres` or `sqlite`), counted from the repository
/// so a new migration does not need this test changed.
fn shipped_migrations(kind: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(kind);
    std::fs::read_dir(dir)
        .expect("migrations directory")
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.ends_with(".sql") && !name.ends_with(".down.sql")
        })
        .count()
}

db_tests! {
    /// `migrate` needs no signing key (not even with PostgreSQL), creates the schema, says how
    /// many migrations it applied, and applies none the second time.
    async fn migrate_creates_the_schema_without_a_key_and_counts_what_it_applied(backend: Backend) {
        let db = TestDb::create(backend).await;
        let shipped = shipped_migrations(match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let run = || {
            command(&dir)
                .arg("migrate")
                .env("DATABASE_URL", db.url())
                .output()
                .expect("run cerego migrate")
        };

        let first = run();
        assert!(first.status.success(), "{}", stderr(&first));
        assert!(
            stdout(&first).contains(&format!("applied {shipped} migrations (0 already applied)")),
            "{}",
            stdout(&first)
        );
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM _sqlx_migrations").await,
            i64::try_from(shipped).expect("few")
        );
        for empty_table in [
            db.scalar("SELECT COUNT(*) FROM users").await,
            db.scalar("SELECT COUNT(*) FROM sessions").await,
            db.scalar("SELECT COUNT(*) FROM refresh_tokens").await,
        ] {
            assert_eq!(empty_table, 0);
        }

        let second = run();
        assert!(second.status.success(), "{}", stderr(&second));
        assert!(
            stdout(&second).contains(&format!("applied 0 migrations ({shipped} already applied)")),
            "{}",
            stdout(&second)
        );
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM _sqlx_migrations").await,
            i64::try_from(shipped).expect("few")
        );
    }
}

db_tests! {
    /// `audit verify` on a migrated database without events, then on one the service wrote
    /// events to: exit 0 and one line saying what it checked. It reads only: no signing key.
    async fn audit_verify_passes_an_intact_trail_and_counts_its_events(backend: Backend) {
        let mut app = spawn_app(backend).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let verify = |url: String| {
            command(&dir)
                .args(["audit", "verify"])
                .env("DATABASE_URL", url)
                .output()
                .expect("run cerego audit verify")
        };

        let empty = verify(app.db.url());
        assert!(empty.status.success(), "{}", stderr(&empty));
        assert!(stdout(&empty).contains("audit chain intact: no events\n"), "{}", stdout(&empty));

        app.create_user("ada").await;
        app.token_for("ada").await;
        app.shut_down().await.expect("shut down");
        let events = app.db.scalar("SELECT COUNT(*) FROM audit_events").await;
        assert!(events >= 3, "sign-up, verification mail, login: {events}");
        let intact = verify(app.db.url());
        assert!(intact.status.success(), "{}", stderr(&intact));
        assert!(
            stdout(&intact).contains(&format!("audit chain intact: {events} events (ids 1..{events})\n")),
            "{}",
            stdout(&intact)
        );
    }
}

/// `audit verify` on a database it cannot read exits 2 with one line saying why (1 means a
/// broken chain), and never creates the schema itself.
#[test]
fn audit_verify_exits_2_when_the_trail_cannot_be_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unmigrated = dir.path().join("empty.db");
    std::fs::File::create(&unmigrated).expect("an empty SQLite file");
    // The unmigrated database twice: the first run did not create the schema.
    for url in [
        format!("sqlite://{}", unmigrated.display()),
        format!("sqlite://{}", unmigrated.display()),
        format!("sqlite://{}/missing/dir/cerego.db", dir.path().display()),
    ] {
        let output = command(&dir)
            .args(["audit", "verify"])
            .env("DATABASE_URL", &url)
            .output()
            .expect("run");
        let stderr = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.starts_with("cerego: "), "{url}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one clear message: {stderr}");
        assert!(!stdout(&output).contains("audit chain"), "{url}");
    }
    // A mistyped path to a file that is not there: refused, and no empty database left behind.
    let mistyped = dir.path().join("cerego-typo.db");
    let output = command(&dir)
        .args(["audit", "verify"])
        .env("DATABASE_URL", format!("sqlite://{}", mistyped.display()))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(!mistyped.exists(), "verify created {}", mistyped.display());
}

/// Values that used to crash or silently break the service are refused at start-up, each with
/// one line naming its variable and exit code 2.
#[test]
fn out_of_range_values_stop_start_up_with_a_message_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let huge = "18446744073709551615";
    for (var, value) in [
        // cores × (1 + n) wrapped to 0 places (every login a 503), or panicked in Semaphore::new.
        ("PASSWORD_HASH_QUEUE_PER_CORE", huge),
        ("PASSWORD_HASH_QUEUE_PER_CORE", "4611686018427387904"),
        // Panicked inside sqlx-sqlite, and start-up then blamed DATABASE_URL.
        ("DATABASE_ACQUIRE_TIMEOUT_SECS", huge),
        ("DATABASE_MAX_CONNECTIONS", "0"),
        ("HTTP_IDLE_TIMEOUT_SECS", "0"),
        ("LOG_FORMAT", "xml"),
    ] {
        for subcommand in ["serve", "migrate"] {
            let output = command(&dir)
                .arg(subcommand)
                .env(var, value)
                .output()
                .expect("run");
            let stderr = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{var}={value}: {stderr}");
            assert!(
                stderr.starts_with(&format!("cerego: invalid setting {var}: ")),
                "{var}={value}: {stderr}"
            );
            assert_eq!(stderr.lines().count(), 1, "one clear message: {stderr}");
        }
    }
}

/// `.env` files often hold `VAR=`: every variable set to an empty value means its default.
#[test]
fn empty_variables_count_as_unset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = command(&dir);
    for var in VARIABLES {
        cmd.env(var, "");
    }
    let output = cmd.arg("migrate").output().expect("run");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        dir.path().join("data/cerego.db").exists(),
        "the embedded default database was used"
    );
}

/// `cerego --help` documents every variable, and shows neither the key nor the database
/// password that are set.
#[test]
fn help_lists_every_variable_and_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = "help-must-not-show-this-signing-key-0123456789";
    for args in [&["--help"][..], &["serve", "--help"]] {
        let output = command(&dir)
            .args(args)
            .env("JWT_SECRET_KEY", key)
            .env(
                "DATABASE_URL",
                "postgres://cerego:db-pass-4321@localhost/cerego",
            )
            .output()
            .expect("run");
        assert!(output.status.success(), "{}", stderr(&output));
        let help = stdout(&output);
        for var in VARIABLES {
            assert!(help.contains(&format!("[env: {var}")), "{var}: {help}");
        }
        assert!(help.contains("[default: 8000]"), "{help}");
        assert!(!help.contains(key), "{help}");
        assert!(!help.contains("db-pass-4321"), "{help}");
    }
}

/// `.env.example` and the README's configuration table name every variable the binary reads.
#[test]
fn every_variable_is_documented_in_env_example_and_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join(".env.example")).expect(".env.example");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    for var in VARIABLES {
        assert!(
            example
                .lines()
                .any(|line| line.starts_with(&format!("{var}="))),
            ".env.example lacks {var}"
        );
        assert!(
            readme.contains(&format!("`{var}`")),
            "README's table lacks {var}"
        );
    }
}
