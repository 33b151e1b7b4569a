//! A real SMTP server for the tests: it listens on a local TCP port, speaks the subset of SMTP a
//! client needs to hand over mail (no TLS, no AUTH), and keeps every message it accepts. cerego
//! talks to it exactly as it would to a relay (`SMTP_URL=smtp://127.0.0.1:PORT`, plaintext: a
//! lettre `smtp://` URL without `?tls=` uses no TLS at all).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// How long a test waits for mail before it fails: only a bound, so that a broken build fails
/// instead of hanging (the sender retries every second at most in the tests).
pub const MAIL_WAIT: Duration = Duration::from_secs(30);

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope sender (`MAIL FROM`), without angle brackets.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), without angle brackets.
    pub recipients: Vec<String>,
    /// The message as transmitted, dot-stuffing undone, without the final `.` line.
    pub raw: Vec<u8>,
}

/// What a received message says, parsed with `mail-parser`.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The addresses of the `To` field.
    pub to: Vec<String>,
    /// The decoded `Subject`.
    pub subject: Option<String>,
    /// The raw `Subject` field value, as it was on the wire.
    pub raw_subject: Option<String>,
    /// `Date`, as a Unix timestamp, when it parses.
    pub date: Option<i64>,
    /// `Message-ID`, without angle brackets.
    pub message_id: Option<String>,
    /// The top-level content type, `type/subtype`.
    pub content_type: String,
    /// The `text/plain` parts, decoded.
    pub text: Vec<String>,
    /// The `text/html` parts, decoded.
    pub html: Vec<String>,
    /// How many parts are neither text, HTML nor multipart containers.
    pub other_parts: usize,
}

impl Received {
    /// The message parsed.
    pub fn parse(&self) -> Mail {
        let message = MessageParser::default()
            .parse(&self.raw)
            .unwrap_or_else(|| panic!("not a message: {}", String::from_utf8_lossy(&self.raw)));
        let to = message
            .to()
            .map(|to| {
                to.iter()
                    .filter_map(|a| a.address().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let content_type = message
            .root_part()
            .content_type()
            .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")))
            .unwrap_or_default();
        let (mut text, mut html, mut other_parts) = (Vec::new(), Vec::new(), 0);
        for part in &message.parts {
            match &part.body {
                PartType::Text(body) => text.push(body.to_string()),
                PartType::Html(body) => html.push(body.to_string()),
                PartType::Multipart(_) => {}
                _ => other_parts += 1,
            }
        }
        Mail {
            to,
            subject: message.subject().map(str::to_owned),
            raw_subject: message.header_raw("Subject").map(|s| s.trim().to_owned()),
            date: message.date().map(mail_parser::DateTime::to_timestamp),
            message_id: message.message_id().map(str::to_owned),
            content_type,
            text,
            html,
            other_parts,
        }
    }

    /// The message as text (lossy), for failure messages and substring checks.
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The first link in the text part that carries a token with `prefix` (`crg_pr_`,
    /// `crg_ev_`), if any.
    pub fn link_with(&self, prefix: &str) -> Option<String> {
        self.parse()
            .text
            .iter()
            .find_map(|text| link_in(text, prefix))
    }

    /// The reset link (`…?token=crg_pr_…`) of the text part; panics when there is none.
    pub fn reset_link(&self) -> String {
        self.link_with("crg_pr_")
            .unwrap_or_else(|| panic!("no reset link in:\n{}", self.raw_text()))
    }

    /// The verification link (`…?token=crg_ev_…`) of the text part; panics when there is none.
    pub fn verification_link(&self) -> String {
        self.link_with("crg_ev_")
            .unwrap_or_else(|| panic!("no verification link in:\n{}", self.raw_text()))
    }

    /// Whether the message went to `address` (envelope).
    pub fn is_to(&self, address: &str) -> bool {
        self.recipients.iter().any(|r| r == address)
    }

    /// A reset message: a `crg_pr_` token anywhere in it.
    pub fn is_reset(&self) -> bool {
        self.raw_text().contains("crg_pr_")
    }

    /// A verification message: a `crg_ev_` token anywhere in it.
    pub fn is_verification(&self) -> bool {
        self.raw_text().contains("crg_ev_")
    }

    /// A notice without a token (password changed).
    pub fn is_notice(&self) -> bool {
        !self.is_reset() && !self.is_verification()
    }
}

/// The first `http(s)://…` link in `text` whose query carries `token=<prefix>…`.
pub fn link_in(text: &str, prefix: &str) -> Option<String> {
    let needle = format!("token={prefix}");
    text.split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '(' | ')'))
        .find(|word| word.starts_with("http") && word.contains(&needle))
        .map(|word| word.trim_end_matches(['.', ',', ';']).to_owned())
}

/// The path and query of `link` (`http://host:port/path?query` → `/path?query`), to request it
/// from the test app whatever host the link names.
pub fn path_of(link: &str) -> String {
    let rest = link.split_once("://").map_or(link, |(_, rest)| rest);
    match rest.find('/') {
        Some(slash) => rest[slash..].to_owned(),
        None => "/".to_owned(),
    }
}

/// The token a link carries (the value of its `token` query parameter).
pub fn token_of(link: &str) -> String {
    let query = link.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .unwrap_or_else(|| panic!("no token in {link}"))
        .to_owned()
}

/// A port on 127.0.0.1 that nothing listens on (it was free a moment ago).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// `smtp://127.0.0.1:<port>`: plaintext SMTP in lettre's URL form.
pub fn smtp_url(port: u16) -> String {
    format!("smtp://127.0.0.1:{port}")
}

struct Shared {
    received: Mutex<Vec<Received>>,
    count: watch::Sender<usize>,
    connections: Mutex<Vec<AbortHandle>>,
}

/// The running sink.
pub struct SmtpSink {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// A sink on a random port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// A sink on `port` of 127.0.0.1 (0: a random one).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|err| panic!("the SMTP sink cannot listen on port {port}: {err}"));
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let acceptor = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let handle = tokio::spawn(serve(stream, shared.clone()));
                    shared
                        .connections
                        .lock()
                        .expect("connections")
                        .push(handle.abort_handle());
                }
            }
        });
        Self {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL for `SMTP_URL`.
    pub fn url(&self) -> String {
        smtp_url(self.port)
    }

    /// Every message received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("received").clone()
    }

    /// Waits until at least `n` messages have arrived (at most [`MAIL_WAIT`]); returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_where(n, |_| true).await
    }

    /// Waits until at least `n` of the received messages satisfy `pred` (at most
    /// [`MAIL_WAIT`]); returns those messages, in order.
    pub async fn wait_where(&self, n: usize, pred: impl Fn(&Received) -> bool) -> Vec<Received> {
        self.wait_where_within(n, pred, MAIL_WAIT).await
    }

    /// [`Self::wait_where`] with another bound on the wait.
    pub async fn wait_where_within(
        &self,
        n: usize,
        pred: impl Fn(&Received) -> bool,
        bound: Duration,
    ) -> Vec<Received> {
        let matching =
            || -> Vec<Received> { self.received().into_iter().filter(|m| pred(m)).collect() };
        let mut changes = self.shared.count.subscribe();
        let waited = tokio::time::timeout(bound, changes.wait_for(|_| matching().len() >= n)).await;
        let found = matching();
        assert!(
            waited.is_ok() && found.len() >= n,
            "{n} matching messages expected, {} arrived (of {} in all)",
            found.len(),
            self.received().len()
        );
        found
    }

    /// Waits for the `n`th message to `to` that satisfies `pred`; returns it.
    pub async fn nth_to(&self, to: &str, n: usize, pred: impl Fn(&Received) -> bool) -> Received {
        let found = self.wait_where(n, |m| m.is_to(to) && pred(m)).await;
        found[n - 1].clone()
    }

    /// Waits for the first reset message to `to`.
    pub async fn reset_mail(&self, to: &str) -> Received {
        self.nth_to(to, 1, Received::is_reset).await
    }

    /// Waits for the first verification message to `to`.
    pub async fn verification_mail(&self, to: &str) -> Received {
        self.nth_to(to, 1, Received::is_verification).await
    }

    /// Waits for the first notice (no token) to `to`.
    pub async fn notice_mail(&self, to: &str) -> Received {
        self.nth_to(to, 1, Received::is_notice).await
    }

    /// Stops listening and drops every open connection.
    pub fn stop(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.abort();
        }
        for connection in self
            .shared
            .connections
            .lock()
            .expect("connections")
            .drain(..)
        {
            connection.abort();
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The mail transaction in progress on a connection.
#[derive(Default)]
struct Transaction {
    from: Option<String>,
    recipients: Vec<String>,
}

/// The address inside `<…>` after `keyword` (`MAIL FROM:<a@b> SIZE=10` → `a@b`).
fn path_arg(line: &str, keyword: &str) -> Option<String> {
    let rest = line.get(keyword.len()..)?.trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[..end].to_owned())
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = converse(stream, &shared).await;
}

async fn converse(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    writer.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let mut transaction = Transaction::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let command = text.trim_end_matches(['\r', '\n']);
        let upper = command.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("");
        let reply: &[u8] = match verb {
            "EHLO" => {
                transaction = Transaction::default();
                b"250-sink.test greets you\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n"
            }
            "HELO" => {
                transaction = Transaction::default();
                b"250 sink.test\r\n"
            }
            "MAIL" if upper.starts_with("MAIL FROM:") => match path_arg(command, "MAIL FROM:") {
                Some(from) => {
                    transaction = Transaction {
                        from: Some(from),
                        recipients: Vec::new(),
                    };
                    b"250 2.1.0 OK\r\n"
                }
                None => b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n",
            },
            "RCPT" if upper.starts_with("RCPT TO:") => {
                match (&transaction.from, path_arg(command, "RCPT TO:")) {
                    (None, _) => b"503 5.5.1 MAIL first\r\n",
                    (Some(_), Some(to)) => {
                        transaction.recipients.push(to);
                        b"250 2.1.5 OK\r\n"
                    }
                    (Some(_), None) => b"501 5.5.4 Syntax: RCPT TO:<address>\r\n",
                }
            }
            "DATA" if transaction.recipients.is_empty() => b"503 5.5.1 RCPT first\r\n",
            "DATA" => {
                writer
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let raw = read_data(&mut reader).await?;
                let message = Received {
                    from: transaction.from.take().unwrap_or_default(),
                    recipients: std::mem::take(&mut transaction.recipients),
                    raw,
                };
                let count = {
                    let mut received = shared.received.lock().expect("received");
                    received.push(message);
                    received.len()
                };
                shared.count.send_replace(count);
                b"250 2.0.0 OK queued\r\n"
            }
            "RSET" => {
                transaction = Transaction::default();
                b"250 2.0.0 OK\r\n"
            }
            "NOOP" => b"250 2.0.0 OK\r\n",
            "QUIT" => {
                writer.write_all(b"221 2.0.0 Bye\r\n").await?;
                writer.shutdown().await?;
                return Ok(());
            }
            _ => b"502 5.5.2 Command not implemented\r\n",
        };
        writer.write_all(reply).await?;
    }
}

/// Reads a message after `DATA` up to the line `.`, undoing dot-stuffing.
async fn read_data(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(raw);
        }
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        raw.extend_from_slice(unstuffed);
    }
}

#[tokio::test]
async fn the_sink_speaks_smtp_to_lettre() {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let sink = SmtpSink::start().await;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&sink.url())
        .expect("url")
        .build();
    let message = Message::builder()
        .from("cerego <no-reply@localhost>".parse().expect("from"))
        .to("ada@example.com".parse().expect("to"))
        .subject("Hello")
        .body(".leading dot\r\nsecond line\r\n".to_owned())
        .expect("message");
    transport.send(message).await.expect("sent to the sink");

    let received = sink.wait_for(1).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].from, "no-reply@localhost");
    assert_eq!(received[0].recipients, ["ada@example.com"]);
    let mail = received[0].parse();
    assert_eq!(mail.to, ["ada@example.com"]);
    assert_eq!(mail.subject.as_deref(), Some("Hello"));
    assert!(
        mail.text.iter().any(|t| t.starts_with(".leading dot")),
        "dot-stuffing undone: {mail:?}"
    );
}

#[tokio::test]
async fn the_sink_answers_each_command_as_smtp_says() {
    use tokio::io::AsyncReadExt;

    let sink = SmtpSink::start().await;
    let mut stream = TcpStream::connect(("127.0.0.1", sink.port()))
        .await
        .expect("connect");
    async fn read(stream: &mut TcpStream) -> String {
        let mut buf = vec![0u8; 512];
        let n = stream.read(&mut buf).await.expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
    assert!(read(&mut stream).await.starts_with("220 "));
    let mut exchange = Vec::new();
    for command in [
        "EHLO client.test",
        "RCPT TO:<ada@example.com>",
        "DATA",
        "MAIL FROM:<a@example.com>",
        "RSET",
        "NOOP",
        "VRFY ada",
        "STARTTLS",
        "QUIT",
    ] {
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .expect("write");
        exchange.push((command, read(&mut stream).await));
    }
    let ehlo = &exchange[0].1;
    assert!(
        ehlo.starts_with("250-") && ehlo.contains("8BITMIME"),
        "{ehlo}"
    );
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    let codes: Vec<&str> = exchange
        .iter()
        .skip(1)
        .map(|(_, reply)| &reply[..3])
        .collect();
    assert_eq!(
        codes,
        ["503", "503", "250", "250", "250", "502", "502", "221"]
    );
    assert!(sink.received().is_empty());
}

#[test]
fn links_and_tokens_are_found_in_text() {
    let text =
        "Hello,\n\nopen http://localhost:8000/auth/password/reset?token=crg_pr_AbC-_9 to go on.\n";
    let link = link_in(text, "crg_pr_").expect("a link");
    assert_eq!(
        link,
        "http://localhost:8000/auth/password/reset?token=crg_pr_AbC-_9"
    );
    assert_eq!(path_of(&link), "/auth/password/reset?token=crg_pr_AbC-_9");
    assert_eq!(token_of(&link), "crg_pr_AbC-_9");
    assert_eq!(link_in(text, "crg_ev_"), None);
}
