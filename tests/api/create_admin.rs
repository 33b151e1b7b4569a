//! `cerego create-admin` from the built binary: the password on standard input, an admin who can
//! log in and use the admin API, idempotent, and a weak password refused with exit 2.

use std::io::Write;
use std::process::{Output, Stdio};

use serde_json::{Value, json};

use crate::admin_helpers::{ADMIN_EMAIL, ADMIN_USERNAME, id_of};
use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestDb, spawn_app, spawn_on, test_settings};
use crate::process::command;

/// Runs `cerego create-admin --email … --username …` on `db` (no signing key, the cheapest
/// bcrypt cost) with `stdin` as its standard input.
fn create_admin(db: &TestDb, email: &str, username: &str, stdin: &str) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = command(&dir)
        .args(["create-admin", "--email", email, "--username", username])
        .env("DATABASE_URL", db.url())
        .env("BCRYPT_COST", "4")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cerego create-admin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write the password");
    child.wait_with_output().expect("cerego create-admin ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a successful run whose one line of output contains `says`.
fn assert_done(output: &Output, says: &str) {
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(says), "{stdout:?} should say {says:?}");
    assert!(
        !stdout.contains(GOOD_PASSWORD) && !stderr.contains(GOOD_PASSWORD),
        "no password in the output"
    );
}

db_tests! {
    /// The command creates an admin (running the migrations itself) who can log in and list
    /// the users; run again, it changes nothing and says so.
    async fn create_admin_makes_an_admin_and_is_idempotent(backend: Backend) {
        let db = TestDb::create(backend).await;

        let first = create_admin(&db, ADMIN_EMAIL, ADMIN_USERNAME, &format!("{GOOD_PASSWORD}\n"));
        assert_done(&first, &format!("created admin account {ADMIN_USERNAME} (id "));
        let settings = test_settings(&db.url());
        let app = spawn_on(db, settings).await;
        let token = app.token_for(ADMIN_USERNAME).await;
        let me = app.me_json(&token).await;
        assert_eq!(me["is_admin"], json!(true), "{me}");
        assert_eq!(me["email"], ADMIN_EMAIL);
        let listed: Value = app.admin_get("/admin/users", &token).await;
        assert_eq!(listed["items"][0]["id"], me["id"]);

        let second = create_admin(&app.db, ADMIN_EMAIL, ADMIN_USERNAME, &format!("{GOOD_PASSWORD}\n"));
        assert_done(&second, &format!("the account with that email (id {}) is already an admin", me["id"]));
        assert_eq!(app.db.scalar("SELECT COUNT(*) FROM users").await, 1);
        assert_eq!(app.db.scalar("SELECT COUNT(*) FROM user_roles WHERE role_name = 'admin'").await, 1);
    }

    /// An account that already has the address is given `admin`; its password is unchanged.
    async fn create_admin_promotes_an_existing_account(backend: Backend) {
        let app = spawn_app(backend).await;
        let id = id_of(&app.create_user("founder").await);
        let hash = app.db.stored_hash("founder@example.com").await;

        // Not while the address is unconfirmed: exit 2 saying why, and nothing changes.
        let output = create_admin(&app.db, "founder@example.com", "founder", "a different fine passphrase\n");
        assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
        assert!(text(&output.stderr).contains("not verified"), "{}", text(&output.stderr));
        assert_eq!(app.db.scalar("SELECT COUNT(*) FROM user_roles WHERE role_name = 'admin'").await, 0);
        app.db
            .execute(
                "UPDATE users SET email_verified_at = created_at WHERE email = $1",
                &["founder@example.com"],
            )
            .await;

        let output = create_admin(&app.db, "founder@example.com", "founder", "a different fine passphrase\n");

        assert_done(&output, &format!("gave the admin role to the existing account with that email (id {id}); its password is unchanged"));
        assert_eq!(app.db.stored_hash("founder@example.com").await, hash);
        let token = app.token_for("founder").await;
        assert_eq!(app.me_json(&token).await["is_admin"], json!(true));
        assert_eq!(app.admin_get("/admin/users", &token).await["items"][0]["id"], json!(id));
    }

    /// A password the policy refuses (or a bad address): exit 2, a message naming the
    /// password, no account.
    async fn create_admin_refuses_a_weak_password(backend: Backend) {
        let db = TestDb::create(backend).await;
        let migrated = command(&tempfile::tempdir().expect("tempdir"))
            .arg("migrate")
            .env("DATABASE_URL", db.url())
            .output()
            .expect("run cerego migrate");
        assert!(migrated.status.success(), "{}", text(&migrated.stderr));

        // Too short, too common, the same as the address (case aside).
        for weak in ["Sh0rt!\n", "password\n", "ROOT@example.com\n"] {
            let output = create_admin(&db, ADMIN_EMAIL, ADMIN_USERNAME, weak);
            let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
            assert_eq!(output.status.code(), Some(2), "{weak:?}: {said}");
            assert!(said.to_lowercase().contains("password"), "{weak:?}: {said}");
        }
        assert!(
            !format!("{:?}", create_admin(&db, ADMIN_EMAIL, ADMIN_USERNAME, "Sh0rt!\n")).contains("Sh0rt!"),
            "the password is not echoed"
        );
        assert_eq!(db.scalar("SELECT COUNT(*) FROM users").await, 0);
        let output = create_admin(&db, "not-an-email", ADMIN_USERNAME, &format!("{GOOD_PASSWORD}\n"));
        assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
        assert_eq!(db.scalar("SELECT COUNT(*) FROM users").await, 0);
    }
}
