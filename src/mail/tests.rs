//! The sender against a real database (a temporary SQLite file; also a PostgreSQL database of
//! its own when `TEST_DATABASE_URL` is set): `.eml` files, delivery to a small SMTP server,
//! expiry, seals that no longer open, failed SMTP attempts, and claims that two senders cannot
//! both win.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::{MailKind, Mailer};
use crate::auth::clock::{Clock, ManualClock};
use crate::config::{DatabaseSettings, MailSettings, RecoverySettings};
use crate::metrics::Metrics;
use crate::store::{self, Db};

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    outbox: PathBuf,
    clock: Arc<ManualClock>,
    metrics: Arc<Metrics>,
    /// The PostgreSQL database to drop afterwards: admin URL and name.
    postgres: Option<(String, String)>,
}

/// A migrated SQLite database in a temporary directory.
async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    fixture(dir, url, None).await
}

/// A migrated PostgreSQL database of its own on `TEST_DATABASE_URL`'s server, if it is set.
async fn postgres() -> Option<Fixture> {
    use sqlx::Connection as _;

    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        // In CI the PostgreSQL half is part of what a green run claims: never skip it there.
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "CI is set but TEST_DATABASE_URL is not: the PostgreSQL half must run in CI"
        );
        eprintln!("TEST_DATABASE_URL is not set: PostgreSQL case skipped");
        return None;
    };
    let mut bytes = [0_u8; 8];
    getrandom::fill(&mut bytes).expect("fill");
    let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("cerego_mail_test_{name}");
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("execute");
    admin.close().await.expect("close");
    let mut url = url::Url::parse(&admin_url).expect("parse");
    url.set_path(&name);
    let dir = tempfile::tempdir().expect("tempdir");
    Some(fixture(dir, url.to_string(), Some((admin_url, name))).await)
}

async fn fixture(
    dir: tempfile::TempDir,
    url: String,
    postgres: Option<(String, String)>,
) -> Fixture {
    let settings = DatabaseSettings {
        url: Some(SecretString::from(url)),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(3),
        auto_migrate: true,
        query_timeout: Duration::from_secs(5),
        statement_cache_capacity: 100,
    };
    let (db, _) = store::connect(&settings).expect("connect");
    store::migrate(&db).await.expect("migrate");
    Fixture {
        outbox: dir.path().join("outbox"),
        _dir: dir,
        db,
        clock: Arc::new(ManualClock::starting_now()),
        metrics: Arc::new(Metrics::new("test")),
        postgres,
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        use sqlx::Connection as _;

        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside a runtime: drop the database from a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
    }
}

/// `#[tokio::test]`s `sqlite` and `postgres` (skipped without `TEST_DATABASE_URL`) in a module
/// named after the scenario `$name`, an `async fn(Fixture)`.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::sqlite().await).await;
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(fx) = super::postgres().await {
                        super::$name(fx).await;
                    }
                }
            }
        )*
    };
}

on_both_databases!(
    files_transport_delivers_and_empties_the_outbox,
    expired_and_unopenable_mail_is_given_up,
    a_failed_smtp_attempt_is_recorded_and_retried_later,
    a_claim_is_won_once_and_lasts_its_lease,
    claims_respect_the_limit_and_skip_unknown_kinds,
    smtp_transport_delivers_to_a_real_smtp_server,
    concurrent_claims_never_share_a_message,
);

fn mail_settings(smtp_url: Option<String>, outbox: &Path) -> MailSettings {
    MailSettings {
        smtp_url: smtp_url.map(SecretString::from),
        smtp_timeout: Duration::from_secs(2),
        from: "cerego <no-reply@localhost>".parse().expect("parse"),
        outbox_dir: outbox.to_owned(),
        retry_max: Duration::from_secs(300),
    }
}

fn recovery() -> RecoverySettings {
    RecoverySettings {
        password_reset_url: "http://localhost:8000/auth/password/reset".to_owned(),
        email_verification_url: "http://localhost:8000/auth/email/verify".to_owned(),
        password_reset_ttl: Duration::from_secs(3600),
        email_verification_ttl: Duration::from_secs(86_400),
        require_email_verification: false,
    }
}

fn mailer(fx: &Fixture, smtp_url: Option<String>, key: u8) -> Arc<Mailer> {
    Arc::new(
        Mailer::new(
            &mail_settings(smtp_url, &fx.outbox),
            &recovery(),
            &[key; 32],
            fx.metrics.clone(),
        )
        .expect("new"),
    )
}

/// Polls `check` every 20 ms for up to 10 s.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    files.sort();
    files
}

fn metric(metrics: &Metrics, prefix: &str) -> String {
    metrics
        .render((0, 0))
        .lines()
        .filter(|line| line.contains(prefix) && !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn files_transport_delivers_and_empties_the_outbox(fx: Fixture) {
    let mailer = mailer(&fx, None, 7);
    let now = fx.clock.unix_now();
    let reset = mailer
        .password_reset("ada@example.com", "ada", "crg_pr_secret", now, now + 3600)
        .expect("password reset");
    let changed = mailer
        .password_changed("ada@example.com", "ada", now)
        .expect("password changed");
    fx.db
        .enqueue_mail_for_test(&reset)
        .await
        .expect("enqueue mail for test");
    fx.db
        .enqueue_mail_for_test(&changed)
        .await
        .expect("enqueue mail for test");

    let clock: Arc<dyn Clock> = fx.clock.clone();
    let task = tokio::spawn(mailer.clone().run(fx.db.clone(), clock));
    eventually("two .eml files", async || eml_files(&fx.outbox).len() == 2).await;
    eventually("an empty outbox", async || {
        fx.db
            .outbox_rows_for_test()
            .await
            .expect("outbox rows for test")
            .is_empty()
    })
    .await;
    eventually("queue depth 0", async || {
        metric(&fx.metrics, "mail_queue_depth").ends_with(" 0")
    })
    .await;
    task.abort();

    let files = eml_files(&fx.outbox);
    let names: Vec<String> = files
        .iter()
        .map(|path| {
            path.file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let local = |id: &str| id.split('@').next().expect("next").to_owned();
    let mut expected = vec![
        format!("{now}-{}.eml", local(&reset.message_id)),
        format!("{now}-{}.eml", local(&changed.message_id)),
    ];
    expected.sort();
    assert_eq!(names, expected);
    let reset_file = files
        .iter()
        .find(|path| path.to_string_lossy().contains(&local(&reset.message_id)))
        .expect("find");
    let raw = std::fs::read_to_string(reset_file).expect("read to string");
    assert!(raw.contains("Subject: Reset your password\r\n"), "{raw}");
    assert!(raw.contains(&format!("Message-ID: <{}>\r\n", reset.message_id)));
    assert!(
        raw.contains("\r\nhttp://localhost:8000/auth/password/reset?token=crg_pr_secret\r\n"),
        "{raw}"
    );
    let sent = metric(&fx.metrics, "mail_sent");
    assert!(sent.contains("kind=\"password_reset\"} 1"), "{sent}");
    assert!(sent.contains("kind=\"password_changed\"} 1"), "{sent}");
}

async fn expired_and_unopenable_mail_is_given_up(fx: Fixture) {
    let now = fx.clock.unix_now();
    let mailer = mailer(&fx, None, 7);
    let expired = mailer
        .password_reset(
            "ada@example.com",
            "ada",
            "crg_pr_old",
            now - 7200,
            now - 3600,
        )
        .expect("password reset");
    // Sealed under another key: the signing secret changed since it was queued.
    let other_key = self::mailer(&fx, None, 9)
        .email_verification("bob@example.com", "bob", "crg_ev_x", now, now + 3600)
        .expect("email verification");
    fx.db
        .enqueue_mail_for_test(&expired)
        .await
        .expect("enqueue mail for test");
    fx.db
        .enqueue_mail_for_test(&other_key)
        .await
        .expect("enqueue mail for test");

    let clock: Arc<dyn Clock> = fx.clock.clone();
    let task = tokio::spawn(mailer.clone().run(fx.db.clone(), clock));
    eventually("an empty outbox", async || {
        fx.db
            .outbox_rows_for_test()
            .await
            .expect("outbox rows for test")
            .is_empty()
    })
    .await;
    task.abort();
    assert!(eml_files(&fx.outbox).is_empty());
    let expired = metric(&fx.metrics, "mail_expired");
    assert!(expired.contains("kind=\"password_reset\"} 1"), "{expired}");
    assert!(
        expired.contains("kind=\"email_verification\"} 1"),
        "{expired}"
    );
    assert!(!metric(&fx.metrics, "mail_sent").contains("} 1"));
}

async fn a_failed_smtp_attempt_is_recorded_and_retried_later(fx: Fixture) {
    // Nobody listens here: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    let mailer = mailer(&fx, Some(format!("smtp://127.0.0.1:{port}")), 7);
    let now = fx.clock.unix_now();
    let mail = mailer
        .password_reset("ada@example.com", "ada", "crg_pr_secret", now, now + 3600)
        .expect("password reset");
    fx.db
        .enqueue_mail_for_test(&mail)
        .await
        .expect("enqueue mail for test");

    let clock: Arc<dyn Clock> = fx.clock.clone();
    let task = tokio::spawn(mailer.clone().run(fx.db.clone(), clock));
    eventually("a failed attempt", async || {
        fx.db
            .outbox_rows_for_test()
            .await
            .expect("outbox rows for test")[0]
            .attempts
            == 1
    })
    .await;
    let row = &fx
        .db
        .outbox_rows_for_test()
        .await
        .expect("outbox rows for test")[0];
    assert_eq!(row.locked_until, 0);
    assert_eq!(row.next_attempt_at, now + 1, "first retry after 1 s");
    let error = row.last_error.as_deref().expect("an error is kept");
    assert!(error.starts_with("SMTP: "), "{error}");
    assert!(!error.contains("crg_pr_secret"), "{error}");
    assert!(metric(&fx.metrics, "mail_failed_attempts").contains("kind=\"password_reset\"} 1"));

    // The clock stands still, so the message is not due again: no second attempt.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fx.db
            .outbox_rows_for_test()
            .await
            .expect("outbox rows for test")[0]
            .attempts,
        1
    );
    // Once it is due, the sender (which looks at least every few seconds) tries again, and
    // the wait doubles.
    fx.clock.advance(Duration::from_secs(1));
    mailer.wake();
    eventually("a second failed attempt", async || {
        fx.db
            .outbox_rows_for_test()
            .await
            .expect("outbox rows for test")[0]
            .attempts
            == 2
    })
    .await;
    let row = &fx
        .db
        .outbox_rows_for_test()
        .await
        .expect("outbox rows for test")[0];
    assert_eq!(row.next_attempt_at, now + 1 + 2);
    task.abort();
}

async fn a_claim_is_won_once_and_lasts_its_lease(fx: Fixture) {
    let mailer = mailer(&fx, None, 7);
    let now = fx.clock.unix_now();
    let mail = mailer
        .password_reset("ada@example.com", "ada", "crg_pr_secret", now, now + 3600)
        .expect("password reset");
    fx.db
        .enqueue_mail_for_test(&mail)
        .await
        .expect("enqueue mail for test");

    let first = fx
        .db
        .claim_mail(now, now + 60, 4)
        .await
        .expect("claim mail");
    assert_eq!(first.len(), 1);
    let claimed = &first[0];
    assert_eq!(claimed.kind, MailKind::PasswordReset);
    assert_eq!(claimed.recipient, "ada@example.com");
    assert_eq!(claimed.message_id, mail.message_id);
    assert_eq!(claimed.payload, mail.payload);
    assert_eq!(claimed.created_at, now);
    assert_eq!(claimed.expires_at, now + 3600);
    assert_eq!(claimed.attempts, 0);
    // Another sender, now or until the lease runs out, gets nothing.
    assert!(
        fx.db
            .claim_mail(now, now + 60, 4)
            .await
            .expect("claim mail")
            .is_empty()
    );
    assert!(
        fx.db
            .claim_mail(now + 59, now + 119, 4)
            .await
            .expect("claim mail")
            .is_empty()
    );
    let status = fx.db.outbox_status().await.expect("outbox status");
    assert_eq!(status.depth, 1);
    assert_eq!(
        status.next_due,
        Some(now + 60),
        "claimable when the lease ends"
    );

    // After the lease, another sender takes it over; the first one's late failure report
    // does not release the second one's lease.
    let second = fx
        .db
        .claim_mail(now + 60, now + 120, 4)
        .await
        .expect("claim mail");
    assert_eq!(second.len(), 1);
    assert!(
        !fx.db
            .record_mail_failure(claimed, now + 61, "late")
            .await
            .expect("record mail failure")
    );
    assert!(
        fx.db
            .record_mail_failure(&second[0], now + 62, &"é".repeat(400))
            .await
            .expect("record mail failure")
    );
    let row = &fx
        .db
        .outbox_rows_for_test()
        .await
        .expect("outbox rows for test")[0];
    assert_eq!(row.attempts, 1);
    assert_eq!(row.next_attempt_at, now + 62);
    assert_eq!(row.locked_until, 0);
    assert_eq!(row.last_error.as_deref(), Some("é".repeat(256).as_str()));
    assert!(
        fx.db
            .claim_mail(now + 61, now + 121, 4)
            .await
            .expect("claim mail")
            .is_empty(),
        "not due before its next attempt"
    );
    assert_eq!(
        fx.db
            .claim_mail(now + 62, now + 122, 4)
            .await
            .expect("claim mail")
            .len(),
        1
    );

    fx.db.delete_mail(claimed.id).await.expect("delete mail");
    let status = fx.db.outbox_status().await.expect("outbox status");
    assert_eq!(status.depth, 0);
    assert_eq!(status.next_due, None);
}

async fn claims_respect_the_limit_and_skip_unknown_kinds(fx: Fixture) {
    let mailer = mailer(&fx, None, 7);
    let now = fx.clock.unix_now();
    for n in 0..3 {
        let mail = mailer
            .password_changed(&format!("u{n}@example.com"), "user", now)
            .expect("password changed");
        fx.db
            .enqueue_mail_for_test(&mail)
            .await
            .expect("enqueue mail for test");
    }
    let mut future = mailer
        .password_changed("z@example.com", "user", now)
        .expect("password changed");
    future.message_id = "future@localhost".to_owned();
    fx.db
        .enqueue_mail_for_test(&future)
        .await
        .expect("enqueue mail for test");
    store::dispatch!(&fx.db, conn => sqlx::query(
        "UPDATE mail_outbox SET kind = 'from_a_newer_release' WHERE message_id = 'future@localhost'"
    )
    .execute(conn)
    .await
    .map(drop))
    .expect("kind updated");

    assert_eq!(
        fx.db
            .claim_mail(now, now + 60, 2)
            .await
            .expect("claim mail")
            .len(),
        2
    );
    assert_eq!(
        fx.db
            .claim_mail(now, now + 60, 4)
            .await
            .expect("claim mail")
            .len(),
        1
    );
    assert!(
        fx.db
            .claim_mail(now, now + 60, 4)
            .await
            .expect("claim mail")
            .is_empty()
    );
    let status = fx.db.outbox_status().await.expect("outbox status");
    assert_eq!(status.depth, 4);
    assert_eq!(
        status.next_due,
        Some(now + 60),
        "the unknown kind is not waited for"
    );
}

/// A minimal SMTP server that accepts one message per connection and hands over the envelope
/// recipients and the data.
async fn smtp_sink() -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<(Vec<String>, String)>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 sink ESMTP\r\n").await?;
                let mut rcpt = Vec::new();
                while let Some(line) = lines.next_line().await? {
                    let upper = line.to_ascii_uppercase();
                    if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        write.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
                    } else if upper.starts_with("RCPT TO:") {
                        rcpt.push(line[8..].trim().to_owned());
                        write.write_all(b"250 OK\r\n").await?;
                    } else if upper == "DATA" {
                        write.write_all(b"354 go on\r\n").await?;
                        let mut data = String::new();
                        while let Some(line) = lines.next_line().await? {
                            if line == "." {
                                break;
                            }
                            data.push_str(&line);
                            data.push_str("\r\n");
                        }
                        let _ = tx.send((std::mem::take(&mut rcpt), data));
                        write.write_all(b"250 queued\r\n").await?;
                    } else if upper == "QUIT" {
                        write.write_all(b"221 bye\r\n").await?;
                        break;
                    } else {
                        write.write_all(b"250 OK\r\n").await?;
                    }
                }
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (port, rx)
}

async fn smtp_transport_delivers_to_a_real_smtp_server(fx: Fixture) {
    let (port, mut received) = smtp_sink().await;
    let mailer = mailer(&fx, Some(format!("smtp://127.0.0.1:{port}")), 7);
    let now = fx.clock.unix_now();
    let mail = mailer
        .email_verification("ada@example.com", "ada", "crg_ev_secret", now, now + 86_400)
        .expect("email verification");
    fx.db
        .enqueue_mail_for_test(&mail)
        .await
        .expect("enqueue mail for test");

    let clock: Arc<dyn Clock> = fx.clock.clone();
    let task = tokio::spawn(mailer.clone().run(fx.db.clone(), clock));
    let (rcpt, data) = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("timeout")
        .expect("a message");
    assert_eq!(rcpt, ["<ada@example.com>"]);
    assert!(
        data.contains("Subject: Confirm your email address\r\n"),
        "{data}"
    );
    assert!(data.contains(&format!("Message-ID: <{}>\r\n", mail.message_id)));
    assert!(
        data.contains("\r\nhttp://localhost:8000/auth/email/verify?token=crg_ev_secret\r\n"),
        "{data}"
    );
    eventually("an empty outbox", async || {
        fx.db
            .outbox_rows_for_test()
            .await
            .expect("outbox rows for test")
            .is_empty()
    })
    .await;
    task.abort();
    assert!(eml_files(&fx.outbox).is_empty(), "no file with SMTP");
    assert!(metric(&fx.metrics, "mail_sent").contains("kind=\"email_verification\"} 1"));
}

async fn concurrent_claims_never_share_a_message(fx: Fixture) {
    let mailer = mailer(&fx, None, 7);
    let now = fx.clock.unix_now();
    for n in 0..40 {
        let mail = mailer
            .password_changed(&format!("u{n}@example.com"), "user", now)
            .expect("password changed");
        fx.db
            .enqueue_mail_for_test(&mail)
            .await
            .expect("enqueue mail for test");
    }
    // Four senders claim at once, each as many as it can.
    let claims = (0..4).map(|_| {
        let db = fx.db.clone();
        tokio::spawn(async move { db.claim_mail(now, now + 60, 40).await.expect("claim mail") })
    });
    let mut ids = Vec::new();
    for claim in claims {
        ids.extend(claim.await.expect("query").into_iter().map(|mail| mail.id));
    }
    let claimed = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), claimed, "a message was claimed twice");
    assert_eq!(claimed, 40, "every message was claimed by someone");
}
