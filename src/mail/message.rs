//! Rendering a message: subject, text and HTML bodies, headers.
//!
//! Every message is `multipart/alternative` with a `text/plain` and a `text/html` part, both
//! UTF-8. The headers are fixed when the message is queued, so a retry repeats them exactly:
//! `Date` is the time it was composed and `Message-ID` the one stored with it (a client that
//! receives a message twice, after a delivery that was cut off, can tell it is the same one).
//! `Auto-Submitted: auto-generated` (RFC 3834) and `X-Auto-Response-Suppress: All` keep
//! vacation responders from answering.
//!
//! The HTML part has inline styles only: no remote image, stylesheet or font, nothing that
//! tells a sender when the message was opened. Every value written into it (username, address,
//! link, sender name) is HTML-escaped, and anything outside ASCII is written as a character
//! reference. The text part carries the link on a line of its own, exactly as it must be
//! opened; when a part is ASCII with lines no longer than RFC 5322 allows it is sent `7bit`, so
//! the link is not split by quoted-printable soft line breaks either.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use lettre::message::header::{ContentTransferEncoding, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};

use super::{MailContent, MailKind};

/// A new `Message-ID` (without angle brackets) at the domain of `from`: 128 random bits in hex.
pub(super) fn new_message_id(from: &Mailbox) -> anyhow::Result<String> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| anyhow!("no random message id: {err}"))?;
    let mut id = String::with_capacity(64);
    for byte in bytes {
        let _ = write!(id, "{byte:02x}");
    }
    let domain = from.email.domain();
    let domain = if domain.is_ascii() {
        domain.to_owned()
    } else {
        idna::domain_to_ascii(domain).map_err(|_| anyhow!("MAIL_FROM has an invalid domain"))?
    };
    id.push('@');
    id.push_str(&domain);
    Ok(id)
}

/// The subject line of each kind (plain ASCII).
pub(super) const fn subject(kind: MailKind) -> &'static str {
    match kind {
        MailKind::PasswordReset => "Reset your password",
        MailKind::EmailVerification => "Confirm your email address",
        MailKind::PasswordChanged => "Your password was changed",
    }
}

/// One queued message, opened, as [`render`] needs it.
#[derive(Debug)]
pub(super) struct Draft<'a> {
    /// What it is.
    pub(super) kind: MailKind,
    /// What it says.
    pub(super) content: &'a MailContent,
    /// The recipient's address.
    pub(super) to: &'a str,
    /// Its `Message-ID`, without angle brackets.
    pub(super) message_id: &'a str,
    /// When it was composed (its `Date`), Unix seconds.
    pub(super) created_at: i64,
    /// When its link stops working, Unix seconds.
    pub(super) expires_at: i64,
}

/// The message `draft` describes, from `from`.
pub(super) fn render(draft: &Draft<'_>, from: &Mailbox) -> anyhow::Result<Message> {
    let to: Address = draft
        .to
        .parse()
        .context("the recipient is not an address lettre accepts")?;
    let site = site_name(from);
    let (text, html) = bodies(draft, &site)?;
    let date =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(draft.created_at).unwrap_or(0));
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(subject(draft.kind))
        .date(date)
        .message_id(Some(format!("<{}>", draft.message_id)))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
            "All".to_owned(),
        ))
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::plain(body(text)))
                .singlepart(SinglePart::html(body(html))),
        )
        .context("cannot build the message")
}

/// The name the messages call the service by: `MAIL_FROM`'s display name, else its domain.
fn site_name(from: &Mailbox) -> String {
    match from.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => from.email.domain().to_owned(),
    }
}

/// The text and the HTML body of `draft`.
fn bodies(draft: &Draft<'_>, site: &str) -> anyhow::Result<(String, String)> {
    let user = draft.content.username.as_str();
    let link = || {
        draft
            .content
            .link
            .as_deref()
            .ok_or_else(|| anyhow!("a {} message without a link", draft.kind.name()))
    };
    let lifetime = lifetime(draft.expires_at.saturating_sub(draft.created_at));
    let mut html = Html::new(subject(draft.kind));
    let text = match draft.kind {
        MailKind::PasswordReset => {
            let link = link()?;
            html.para(&format!("Hello {},", escape(user)));
            html.para(&format!(
                "Someone asked for a new password for your {} account. To choose one, \
                 use the button below.",
                escape(site)
            ));
            html.button(link, "Choose a new password");
            html.para(&format!(
                "The link works for {lifetime}, and only once. If you did not ask for a new \
                 password, ignore this message: your password stays as it is."
            ));
            html.fallback(link);
            format!(
                "Hello {user},\n\
                 \n\
                 Someone asked for a new password for your {site} account.\n\
                 To choose one, open this link:\n\
                 \n\
                 {link}\n\
                 \n\
                 The link works for {lifetime}, and only once.\n\
                 If you did not ask for a new password, ignore this message:\n\
                 your password stays as it is.\n"
            )
        }
        MailKind::EmailVerification => {
            let link = link()?;
            html.para(&format!("Hello {},", escape(user)));
            html.para(&format!(
                "Please confirm that {} is the email address of your {} account.",
                escape(draft.to),
                escape(site)
            ));
            html.button(link, "Confirm my email");
            html.para(&format!(
                "The link works for {lifetime}. If you did not sign up, ignore this message."
            ));
            html.fallback(link);
            format!(
                "Hello {user},\n\
                 \n\
                 Please confirm that {to} is the email address\n\
                 of your {site} account. Open this link:\n\
                 \n\
                 {link}\n\
                 \n\
                 The link works for {lifetime}.\n\
                 If you did not sign up, ignore this message.\n",
                to = draft.to
            )
        }
        MailKind::PasswordChanged => {
            let when = when(draft.created_at);
            html.para(&format!("Hello {},", escape(user)));
            html.para(&format!(
                "The password of your {} account was changed on {when}.",
                escape(site)
            ));
            html.para("If you made this change, there is nothing more to do.");
            html.para(
                "<strong>If it was not you</strong>, reset your password immediately with \
                 \u{201c}Forgot password\u{201d} on the sign-in page: that signs every session \
                 out, including the one that changed it.",
            );
            format!(
                "Hello {user},\n\
                 \n\
                 The password of your {site} account was changed on {when}.\n\
                 \n\
                 If you made this change, there is nothing more to do.\n\
                 \n\
                 If it was not you, reset your password immediately with\n\
                 \"Forgot password\" on the sign-in page: that signs every\n\
                 session out, including the one that changed it.\n"
            )
        }
    };
    let text = format!(
        "{text}\n-- \nThis message was sent automatically by {site}; replies are not read.\n"
    );
    html.para_small(&format!(
        "This message was sent automatically by {}; replies are not read.",
        escape(site)
    ));
    Ok((text, html.finish()))
}

/// How long a link works, in words: minutes up to two hours, then hours up to two days.
fn lifetime(secs: i64) -> String {
    let minutes = (secs / 60).max(1);
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if minutes <= 120 || minutes % 60 != 0 {
        return plural(minutes, "minute");
    }
    let hours = minutes / 60;
    if hours <= 48 || hours % 24 != 0 {
        return plural(hours, "hour");
    }
    plural(hours / 24, "day")
}

/// `at` (Unix seconds) as `2026-11-29 08:30 UTC`.
fn when(at: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_else(|| format!("@{at}"))
}

/// A part's body: `7bit` when it is ASCII with lines of at most 998 characters (RFC 5322), so
/// links stay whole in the raw message; else lettre's choice (quoted-printable or base64).
fn body(text: String) -> Body {
    let seven_bit = text.is_ascii()
        && !text.bytes().any(|b| b == 0 || b == b'\r')
        && text.split('\n').all(|line| line.len() <= 998);
    if seven_bit {
        Body::dangerous_pre_encoded(
            text.replace('\n', "\r\n").into_bytes(),
            ContentTransferEncoding::SevenBit,
        )
    } else {
        Body::new(text)
    }
}

/// `value` for HTML text or a double-quoted attribute: markup characters escaped, anything
/// outside ASCII (or a control character) as a numeric character reference.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let _ = write!(out, "&#x{:x};", u32::from(c));
            }
        }
    }
    out
}

/// The HTML part, built paragraph by paragraph. Arguments are HTML already (escape values
/// first); non-ASCII literals are turned into character references by [`Html::finish`].
struct Html {
    out: String,
}

const PARA_STYLE: &str = "margin:0 0 16px;font-size:16px;line-height:24px;";

impl Html {
    fn new(title: &str) -> Self {
        let mut out = String::with_capacity(4096);
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        let _ = writeln!(out, "<title>{}</title>", escape(title));
        out.push_str("</head>\n");
        out.push_str(
            "<body style=\"margin:0;padding:24px;background-color:#f4f4f5;color:#18181b;\
             font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;\">\n",
        );
        out.push_str(
            "<div style=\"max-width:560px;margin:0 auto;background-color:#ffffff;\
             border-radius:8px;padding:32px;\">\n",
        );
        Self { out }
    }

    fn para(&mut self, html: &str) {
        let _ = writeln!(self.out, "<p style=\"{PARA_STYLE}\">{html}</p>");
    }

    fn para_small(&mut self, html: &str) {
        let _ = writeln!(
            self.out,
            "<p style=\"margin:24px 0 0;font-size:13px;line-height:20px;color:#71717a;\">{html}</p>"
        );
    }

    fn button(&mut self, link: &str, label: &str) {
        let _ = writeln!(
            self.out,
            "<p style=\"margin:24px 0;\"><a href=\"{}\" style=\"display:inline-block;\
             background-color:#2563eb;color:#ffffff;text-decoration:none;padding:12px 20px;\
             border-radius:6px;font-size:16px;font-weight:600;\">{}</a></p>",
            escape(link),
            escape(label)
        );
    }

    /// The link written out, for mail clients that do not show the button.
    fn fallback(&mut self, link: &str) {
        let _ = writeln!(
            self.out,
            "<p style=\"margin:0 0 16px;font-size:13px;line-height:20px;color:#52525b;\">\
             If the button does not work, copy this link into your browser:<br>\n\
             <a href=\"{link}\" style=\"color:#2563eb;word-break:break-all;\">{link}</a></p>",
            link = escape(link)
        );
    }

    fn finish(mut self) -> String {
        self.out.push_str("</div>\n</body>\n</html>\n");
        if self.out.is_ascii() {
            return self.out;
        }
        let mut out = String::with_capacity(self.out.len() + 32);
        for c in self.out.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                let _ = write!(out, "&#x{:x};", u32::from(c));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: &str = "http://localhost:8000/auth/password/reset?token=crg_pr_\
                        AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEfG";

    fn from() -> Mailbox {
        "cerego <no-reply@localhost>".parse().expect("parse")
    }

    fn formatted(kind: MailKind, username: &str, link: Option<&str>) -> String {
        let content = MailContent {
            username: username.to_owned(),
            link: link.map(str::to_owned),
        };
        let draft = Draft {
            kind,
            content: &content,
            to: "ada@example.com",
            message_id: "0123456789abcdef0123456789abcdef@localhost",
            created_at: 1_795_000_000,
            expires_at: 1_795_003_600,
        };
        let message = render(&draft, &from()).expect("render");
        String::from_utf8(message.formatted()).expect("from utf8")
    }

    /// The part whose `Content-Type` starts with `content_type`, without its headers.
    fn part<'a>(raw: &'a str, content_type: &str) -> &'a str {
        let start = raw
            .find(&format!("Content-Type: {content_type}"))
            .unwrap_or_else(|| panic!("no {content_type} part in {raw}"));
        let rest = &raw[start..];
        let body = rest.find("\r\n\r\n").expect("find") + 4;
        let end = rest[body..].find("\r\n--").expect("find") + body;
        &rest[body..end]
    }

    #[test]
    fn message_ids_are_random_at_the_senders_domain() {
        let a = new_message_id(&from()).expect("new message id");
        let b = new_message_id(&from()).expect("new message id");
        assert_ne!(a, b);
        let (local, domain) = a.split_once('@').expect("split once");
        assert_eq!(domain, "localhost");
        assert_eq!(local.len(), 32);
        assert!(local.bytes().all(|b| b.is_ascii_hexdigit()));
        let other: Mailbox = "App <mail@Bücher.example>".parse().expect("parse");
        let id = new_message_id(&other).expect("new message id");
        assert!(id.ends_with("@xn--bcher-kva.example"), "{id}");
    }

    #[test]
    fn reset_mail_has_the_link_in_both_parts_and_the_headers() {
        let raw = formatted(MailKind::PasswordReset, "ada", Some(LINK));
        assert!(raw.contains("Subject: Reset your password\r\n"), "{raw}");
        assert!(
            raw.contains("From: cerego <no-reply@localhost>\r\n"),
            "{raw}"
        );
        assert!(raw.contains("To: ada@example.com\r\n"), "{raw}");
        assert!(
            raw.contains("Message-ID: <0123456789abcdef0123456789abcdef@localhost>\r\n"),
            "{raw}"
        );
        // The `Date` is the time the message was composed, to the second.
        assert!(
            raw.contains("Date: Wed, 18 Nov 2026 11:06:40 +0000\r\n"),
            "{raw}"
        );
        assert!(raw.contains("Auto-Submitted: auto-generated\r\n"), "{raw}");
        assert!(raw.contains("X-Auto-Response-Suppress: All\r\n"), "{raw}");
        assert!(raw.contains("MIME-Version: 1.0\r\n"), "{raw}");
        assert!(
            raw.contains("Content-Type: multipart/alternative;"),
            "{raw}"
        );

        let text = part(&raw, "text/plain; charset=utf-8");
        assert!(
            text.split("\r\n").any(|line| line == LINK),
            "link on a line of its own: {text}"
        );
        assert!(text.contains("60 minutes"), "{text}");
        assert!(text.contains("If you did not ask"), "{text}");
        let html = part(&raw, "text/html; charset=utf-8");
        assert!(html.contains(&format!("href=\"{LINK}\"")), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<link"), "{html}");
        assert!(!html.contains("src="), "{html}");
        assert!(raw.contains("Content-Transfer-Encoding: 7bit"), "{raw}");
    }

    #[test]
    fn html_escapes_the_username_and_the_link() {
        let link = "https://example.com/reset?a=1&token=crg_pr_x\"onmouseover=\"x";
        let raw = formatted(MailKind::PasswordReset, "<b>ada</b>&'", Some(link));
        let html = part(&raw, "text/html; charset=utf-8");
        assert!(!html.contains("<b>ada"), "{html}");
        assert!(
            html.contains("Hello &lt;b&gt;ada&lt;/b&gt;&amp;&#39;,"),
            "{html}"
        );
        assert!(
            html.contains(
                "href=\"https://example.com/reset?a=1&amp;token=crg_pr_x&quot;onmouseover=&quot;x\""
            ),
            "{html}"
        );
        // The text part is not HTML: it says the name as it is.
        let text = part(&raw, "text/plain; charset=utf-8");
        assert!(text.contains("Hello <b>ada</b>&',"), "{text}");
    }

    #[test]
    fn verification_mail() {
        let link = "http://localhost:8000/auth/email/verify?token=crg_ev_abc";
        let content = MailContent {
            username: "ada".to_owned(),
            link: Some(link.to_owned()),
        };
        let draft = Draft {
            kind: MailKind::EmailVerification,
            content: &content,
            to: "ada@example.com",
            message_id: "ab@localhost",
            created_at: 1_795_000_000,
            expires_at: 1_795_000_000 + 86_400,
        };
        let raw = String::from_utf8(render(&draft, &from()).expect("render").formatted())
            .expect("from utf8");
        assert!(
            raw.contains("Subject: Confirm your email address\r\n"),
            "{raw}"
        );
        let text = part(&raw, "text/plain; charset=utf-8");
        assert!(text.split("\r\n").any(|line| line == link), "{text}");
        assert!(text.contains("24 hours"), "{text}");
        let html = part(&raw, "text/html; charset=utf-8");
        assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
    }

    #[test]
    fn password_changed_notice_has_no_link_and_says_when() {
        let raw = formatted(MailKind::PasswordChanged, "ada", None);
        assert!(
            raw.contains("Subject: Your password was changed\r\n"),
            "{raw}"
        );
        let text = part(&raw, "text/plain; charset=utf-8");
        assert!(text.contains("2026-11-18 11:06 UTC"), "{text}");
        assert!(text.contains("reset your password immediately"), "{text}");
        assert!(!text.contains("http"), "{text}");
        let html = part(&raw, "text/html; charset=utf-8");
        assert!(!html.contains("href"), "{html}");
        assert!(html.contains("&#x201c;Forgot password&#x201d;"), "{html}");
    }

    #[test]
    fn a_link_kind_without_a_link_is_an_error() {
        let content = MailContent {
            username: "ada".to_owned(),
            link: None,
        };
        let draft = Draft {
            kind: MailKind::PasswordReset,
            content: &content,
            to: "ada@example.com",
            message_id: "ab@localhost",
            created_at: 0,
            expires_at: 60,
        };
        assert!(render(&draft, &from()).is_err());
    }

    #[test]
    fn non_ascii_recipient_and_name_still_render() {
        let content = MailContent {
            username: "ada".to_owned(),
            link: Some(LINK.to_owned()),
        };
        let draft = Draft {
            kind: MailKind::EmailVerification,
            content: &content,
            to: "josé@example.com",
            message_id: "ab@localhost",
            created_at: 0,
            expires_at: 600,
        };
        let from: Mailbox = "Café <no-reply@localhost>".parse().expect("parse");
        let raw = String::from_utf8(render(&draft, &from).expect("render").formatted())
            .expect("from utf8");
        let html = part(&raw, "text/html; charset=utf-8");
        assert!(html.is_ascii());
        assert!(html.contains("jos&#xe9;@example.com"), "{html}");
        assert!(html.contains("Caf&#xe9;"), "{html}");
    }

    #[test]
    fn lifetimes_in_words() {
        assert_eq!(lifetime(30), "1 minute");
        assert_eq!(lifetime(60), "1 minute");
        assert_eq!(lifetime(900), "15 minutes");
        assert_eq!(lifetime(3600), "60 minutes");
        assert_eq!(lifetime(7200), "120 minutes");
        assert_eq!(lifetime(5 * 3600), "5 hours");
        assert_eq!(lifetime(86_400), "24 hours");
        assert_eq!(lifetime(3 * 86_400), "3 days");
        assert_eq!(lifetime(49 * 3600), "49 hours");
        assert_eq!(lifetime(90 * 60 + 30), "90 minutes");
    }
}
