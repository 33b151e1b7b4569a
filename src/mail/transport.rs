//! Delivering one rendered message: SMTP with `SMTP_URL`, else an `.eml` file.
//!
//! SMTP goes through lettre's async transport on Tokio with rustls: a new connection per
//! message (no pool: mail is rare, and a pooled connection the relay closed would only fail the
//! next message), every connect, command and reply bounded by `SMTP_TIMEOUT_SECS`. The URL
//! holds the relay's credentials, so it is never printed: not by `Debug`, not in an error.
//!
//! Without `SMTP_URL` each message is written to `MAIL_OUTBOX_DIR` as
//! `<created_at>-<message-id local part>.eml`: first to a `.tmp` file (mode 0600: the links
//! are secrets), flushed to disk, then renamed, so a reader watching for `*.eml` never sees
//! half a message and a retry of the same message replaces its file rather than adding one.

use std::path::{Path, PathBuf};

use lettre::message::Message;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::MailSettings;

/// Where messages go.
pub(super) enum Transport {
    /// An SMTP relay.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in this directory.
    Files(PathBuf),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The URL (and so the relay's password) stays out of every log line.
            Self::Smtp(_) => f.write_str("Smtp(..)"),
            Self::Files(dir) => f.debug_tuple("Files").field(dir).finish(),
        }
    }
}

/// Why a delivery failed. Its text names the failure (the relay's reply, a network or file
/// error), never what the message says; recipient addresses in a relay's reply are masked.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub(super) struct DeliveryError {
    /// The relay refused the message for good (a 5xx reply). It is retried all the same (a
    /// relay may answer 5xx for a passing misconfiguration), until the message expires.
    pub(super) permanent: bool,
    detail: String,
}

impl DeliveryError {
    fn new(permanent: bool, detail: String) -> Self {
        Self { permanent, detail }
    }

    /// A delivery that did not finish within `deadline`.
    pub(super) fn timed_out(deadline: std::time::Duration) -> Self {
        Self::new(
            false,
            format!("delivery did not finish within {}s", deadline.as_secs()),
        )
    }
}

impl Transport {
    /// The transport `settings` ask for. Fails on an `SMTP_URL` lettre cannot use; connects to
    /// nothing yet.
    pub(super) fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        match &settings.smtp_url {
            Some(url) => {
                refuse_plaintext_credentials(url.expose_secret())?;
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    // lettre's error names the problem, not the URL.
                    .map_err(|err| anyhow::anyhow!("{err}"))?
                    .timeout(Some(settings.smtp_timeout))
                    .build();
                Ok(Self::Smtp(transport))
            }
            None => Ok(Self::Files(settings.outbox_dir.clone())),
        }
    }

    /// Delivers `message` (composed at `created_at`, Unix seconds, with `message_id`).
    pub(super) async fn send(
        &self,
        message: &Message,
        created_at: i64,
        message_id: &str,
    ) -> Result<(), DeliveryError> {
        match self {
            Self::Smtp(smtp) => {
                let raw = message.formatted();
                smtp.send_raw(message.envelope(), &raw)
                    .await
                    .map(drop)
                    .map_err(|err| {
                        let detail = mask_addresses(&format!("SMTP: {err}"));
                        DeliveryError::new(err.is_permanent(), detail)
                    })
            }
            Self::Files(dir) => {
                let path = dir.join(file_name(created_at, message_id));
                let raw = message.formatted();
                let write_path = path.clone();
                let written =
                    tokio::task::spawn_blocking(move || write_atomically(&write_path, &raw))
                        .await
                        .map_err(|err| {
                            DeliveryError::new(false, format!("mail file writer failed: {err}"))
                        })?;
                written.map_err(|err| {
                    DeliveryError::new(false, format!("cannot write {}: {err}", path.display()))
                })?;
                tracing::info!(path = %path.display(), "mail written to the outbox directory");
                Ok(())
            }
        }
    }
}

/// Refuses an `SMTP_URL` that would send the relay's user name and password in the clear: with
/// credentials, a relay other than this host must be reached with TLS (`smtps://`) or with
/// `?tls=required` (with `?tls=opportunistic` a man in the middle can strip STARTTLS and read
/// the password). The error names the rule, never the URL.
fn refuse_plaintext_credentials(raw: &str) -> anyhow::Result<()> {
    let Ok(url) = url::Url::parse(raw) else {
        // lettre says what is wrong with it.
        return Ok(());
    };
    let has_credentials = !url.username().is_empty() || url.password().is_some();
    let tls_required = url.scheme() == "smtps"
        || url
            .query_pairs()
            .any(|(name, value)| name == "tls" && value == "required");
    let loopback = match url.host() {
        // `smtp:` is not a scheme the URL standard knows, so its host stays text, addresses too.
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if has_credentials && !tls_required && !loopback {
        anyhow::bail!(
            "it holds a user name and password but would send them unencrypted: use \
             smtps://… or add ?tls=required (plain smtp:// with credentials is allowed only to \
             localhost)"
        );
    }
    Ok(())
}

/// `text` with every word that holds an `@` (an address a relay's reply quoted, in whatever
/// case or form) replaced by `<address>`: the log and the outbox's `last_error` keep the reply,
/// not whom it was about.
pub(super) fn mask_addresses(text: &str) -> String {
    let is_separator = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | '"' | '\'' | ',' | ';' | '(' | ')' | '[' | ']'
            )
    };
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') {
            out.push_str("<address>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_separator(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// `<created_at>-<local part of the Message-ID>.eml`, with anything but `[A-Za-z0-9_-]` in
/// the id replaced (ids are hex, but a path must never come from data unchecked).
pub(super) fn file_name(created_at: i64, message_id: &str) -> String {
    let local = message_id.split('@').next().unwrap_or_default();
    let local: String = local
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{created_at}-{local}.eml")
}

/// Writes `bytes` to `path` by way of `<path>.tmp`: created with the directory (and its
/// parents) if need be, mode 0600, synced, then renamed over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;

    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    create_dir(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` and its parents (those it creates: mode 0700 on Unix).
fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn addresses_in_a_relay_reply_are_masked_in_any_case() {
        assert_eq!(
            super::mask_addresses(
                "SMTP: 550 5.1.1 <ADA@Example.COM>: user unknown, ada@example.com"
            ),
            "SMTP: 550 5.1.1 <<address>>: user unknown, <address>"
        );
        assert_eq!(
            super::mask_addresses("connection refused"),
            "connection refused"
        );
    }

    #[test]
    fn credentials_travel_only_encrypted_except_to_this_host() {
        use super::refuse_plaintext_credentials as check;
        assert!(check("smtp://user:secret@relay.example.com:587").is_err());
        assert!(check("smtp://user:secret@relay.example.com:587?tls=opportunistic").is_err());
        let err = check("smtp://user:secret@relay.example.com").expect_err("refused");
        assert!(!format!("{err:#}").contains("secret"));
        assert!(check("smtp://user:secret@relay.example.com:587?tls=required").is_ok());
        assert!(check("smtps://user:secret@relay.example.com").is_ok());
        assert!(check("smtp://user:secret@localhost:25").is_ok());
        assert!(check("smtp://user:secret@127.0.0.1:25").is_ok());
        assert!(check("smtp://relay.example.com:25").is_ok());
    }

    use secrecy::SecretString;

    use super::*;

    fn settings(smtp_url: Option<&str>, dir: &Path) -> MailSettings {
        MailSettings {
            smtp_url: smtp_url.map(|url| SecretString::from(url.to_owned())),
            smtp_timeout: Duration::from_secs(10),
            from: "cerego <no-reply@localhost>".parse().expect("parse"),
            outbox_dir: dir.to_owned(),
            retry_max: Duration::from_secs(300),
        }
    }

    fn message() -> Message {
        Message::builder()
            .from("cerego <no-reply@localhost>".parse().expect("parse"))
            .to("ada@example.com".parse().expect("parse"))
            .subject("Reset your password")
            .body("secret link".to_owned())
            .expect("body")
    }

    #[test]
    fn debug_does_not_print_the_smtp_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let transport = Transport::new(&settings(
            Some("smtp://user:hunter2@relay.example:587?tls=required"),
            dir.path(),
        ))
        .expect("new");
        let debug = format!("{transport:?}");
        assert_eq!(debug, "Smtp(..)");
    }

    #[test]
    fn an_unusable_url_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Transport::new(&settings(Some("ftp://user:hunter2@relay"), dir.path()))
            .expect_err("an error")
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name(17, "abc123@localhost"), "17-abc123.eml");
        assert_eq!(file_name(17, "../../etc@x"), "17-______etc.eml");
    }

    #[tokio::test]
    async fn files_are_written_whole_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = dir.path().join("a/b");
        let transport = Transport::new(&settings(None, &outbox)).expect("new");
        let message = message();
        transport
            .send(&message, 1000, "abc@localhost")
            .await
            .expect("send");
        // A retry of the same message replaces the file.
        transport
            .send(&message, 1000, "abc@localhost")
            .await
            .expect("send");
        let names: Vec<_> = std::fs::read_dir(&outbox)
            .expect("read dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("into string")
            })
            .collect();
        assert_eq!(names, ["1000-abc.eml"]);
        let path = outbox.join("1000-abc.eml");
        assert_eq!(std::fs::read(&path).expect("read"), message.formatted());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn smtp_failures_are_reported_without_the_body_or_recipient() {
        // A port nobody listens on: connection refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        let dir = tempfile::tempdir().expect("tempdir");
        let transport = Transport::new(&settings(
            Some(&format!("smtp://127.0.0.1:{port}")),
            dir.path(),
        ))
        .expect("new");
        let err = transport
            .send(&message(), 1000, "abc@localhost")
            .await
            .expect_err("an error");
        assert!(!err.permanent);
        let text = err.to_string();
        assert!(text.starts_with("SMTP: "), "{text}");
        assert!(!text.contains("secret link"), "{text}");
        assert!(!text.contains("ada@example.com"), "{text}");
    }
}
