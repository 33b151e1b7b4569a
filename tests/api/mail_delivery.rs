//! Mail is never lost: with the SMTP server down a request still answers and the message
//! arrives once the server is up; a restart of cerego with undelivered mail in its outbox
//! delivers it afterwards.

use std::time::Duration;

use secrecy::SecretString;

use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestDb, spawn_app_with, spawn_on, test_settings};
use crate::mailflow::{
    NEW_PASSWORD, assert_well_formed, email_of, forgot, login_ok, mail_series, reset, wait_metric,
};
use crate::smtp_sink::{MAIL_WAIT, SmtpSink, free_port, smtp_url, token_of};

const QUEUE_DEPTH: &str = "cerego_mail_queue_depth";
/// How much longer than its delivery deadline (3 × SMTP_TIMEOUT) a sender's lease on a message
/// lasts (`LEASE_MARGIN` in src/mail/sender.rs).
const LEASE_MARGIN: Duration = Duration::from_secs(30);

db_tests! {
    async fn with_the_smtp_server_down_requests_answer_and_the_mail_arrives_once_it_is_up(backend: Backend) {
        let port = free_port();
        let app = spawn_app_with(backend, |s| s.mail.smtp_url = Some(SecretString::from(smtp_url(port)))).await;
        app.create_user("ada").await;
        let ada = email_of("ada");

        // Nothing listens on the port: the request answers all the same.
        let response = forgot(&app, &ada).await;
        assert_eq!(response.status(), 202);
        // The sender tried, and failed, before the server starts.
        let failed = wait_metric(&app, &mail_series("failed_attempts", "password_reset"), |v| v > 0.0).await;
        assert!(failed >= 1.0);
        assert_eq!(app.metric(&mail_series("sent", "password_reset")).await, 0.0);
        // The message waits in the outbox (the depth as of the sender's last pass).
        wait_metric(&app, QUEUE_DEPTH, |v| v >= 1.0).await;

        let sink = SmtpSink::start_on(port).await;

        let mail = sink.reset_mail(&ada).await;
        assert_well_formed(&mail, &ada);
        assert_eq!(
            sink.received().iter().filter(|m| m.is_reset()).count(),
            1,
            "delivered once"
        );
        // The verification mail queued at signup, while the server was down, arrives too.
        sink.verification_mail(&ada).await;
        wait_metric(&app, &mail_series("sent", "password_reset"), |v| v >= 1.0).await;
        wait_metric(&app, &mail_series("sent", "email_verification"), |v| v >= 1.0).await;
        wait_metric(&app, QUEUE_DEPTH, |v| v == 0.0).await;
        let text = app.get("/metrics").await.text().await.expect("metrics");
        assert!(text.contains("# TYPE cerego_mail_failed_attempts counter"), "{text}");

        // The link it carries works.
        let token = token_of(&mail.reset_link());
        assert_eq!(reset(&app, &token, NEW_PASSWORD).await.status(), 204);
        login_ok(&app, "ada", NEW_PASSWORD).await;
    }

    async fn undelivered_mail_is_delivered_after_a_restart(backend: Backend) {
        let port = free_port();
        let dead_url = smtp_url(port);
        // A short SMTP_TIMEOUT keeps the lease of a message short (3 × SMTP_TIMEOUT + 30 s).
        let smtp_timeout = Duration::from_secs(1);
        let app = spawn_app_with(backend, |s| {
            s.mail.smtp_url = Some(SecretString::from(dead_url));
            s.mail.smtp_timeout = smtp_timeout;
        })
        .await;
        app.create_user("ada").await;
        let ada = email_of("ada");
        assert_eq!(forgot(&app, &ada).await.status(), 202);
        wait_metric(&app, &mail_series("failed_attempts", "password_reset"), |v| v > 0.0).await;
        let db: TestDb = app.shut_down_keeping_db().await;
        assert!(
            db.scalar("SELECT count(*) FROM mail_outbox").await >= 1,
            "the message is still in the outbox when cerego stops"
        );

        // The new process sends to a server on another port: only it can deliver there (a
        // sender of the old one that outlived its shutdown would still try the dead port).
        let sink = SmtpSink::start().await;
        assert_ne!(sink.port(), port);
        let mut settings = test_settings(&db.url());
        settings.mail.smtp_url = Some(SecretString::from(sink.url()));
        settings.mail.smtp_timeout = smtp_timeout;
        let app = spawn_on(db, settings).await;

        // A message whose attempt the shutdown cut short stays leased to the old process (3 ×
        // SMTP_TIMEOUT + 30 s, see src/mail/sender.rs): the bound on the wait covers that lease.
        let bound = MAIL_WAIT + smtp_timeout * 3 + LEASE_MARGIN;
        let found = sink.wait_where_within(1, |m| m.is_to(&ada) && m.is_reset(), bound).await;
        let mail = found[0].clone();
        assert_well_formed(&mail, &ada);
        sink.wait_where_within(1, |m| m.is_to(&ada) && m.is_verification(), bound).await;
        let token = token_of(&mail.reset_link());
        assert_eq!(reset(&app, &token, NEW_PASSWORD).await.status(), 204);
        login_ok(&app, "ada", NEW_PASSWORD).await;
        assert_eq!(crate::mailflow::login(&app, "ada", GOOD_PASSWORD).await.status(), 401);
        wait_metric(&app, QUEUE_DEPTH, |v| v == 0.0).await;
        assert_eq!(
            sink.received().iter().filter(|m| m.is_reset()).count(),
            1,
            "delivered once"
        );
    }
}
