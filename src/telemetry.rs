//! Logging: JSON lines for collectors or plain lines for people, filtered by `RUST_LOG`.
//!
//! What never reaches a log: passwords, hashes, tokens and the signing key. Handlers log ids,
//! routes and outcomes; a request's lines carry its id, method and route template (never the
//! URI, whose query string could carry a secret).
//!
//! A request's context is a task-local value rather than a `tracing` span. A span costs a
//! registry entry, its fields rendered to JSON and parsed again for every line, and bookkeeping
//! on every poll of the request's future; measured on `/auth/me`, span and line together took
//! about a quarter of the service's CPU. The task-local is set once per request and read only
//! when a line is written. A JSON line has the shape tracing-subscriber's JSON format gave it:
//!
//! ```json
//! {"timestamp":"2026-11-26T19:38:56.123456Z","level":"INFO","message":"request finished",
//!  "status":200,"latency_ms":0.41,"target":"cerego::http::middleware",
//!  "span":{"name":"request","request_id":"…","method":"GET","route":"/auth/me"}}
//! ```

use std::fmt::{self, Write as _};
use std::future::Future;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{ConfigError, LogFormat};

/// The target of audit lines (`"audience": "audit"`).
pub const AUDIT_TARGET: &str = "cerego::audit";

/// The field of an audit line that holds the event's details as JSON.
pub const AUDIT_DETAILS: &str = "details";

/// What `RUST_LOG` defaults to.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// What every log line written while a request is handled says about it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The `x-request-id` echoed to the client.
    pub request_id: String,
    /// The HTTP method.
    pub method: String,
    /// The route template (`/auth/me`), or `unmatched`.
    pub route: String,
    /// The client's IP address, as rate limits and sessions see it.
    pub client_ip: String,
}

tokio::task_local! {
    static REQUEST: RequestContext;
}

/// Runs `work` with `context` on every line it logs.
pub async fn in_request<F: Future>(context: RequestContext, work: F) -> F::Output {
    REQUEST.scope(context, work).await
}

/// Installs the global subscriber. Fails if `RUST_LOG` is set but cannot be parsed.
pub fn init(format: LogFormat) -> Result<(), ConfigError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|err| ConfigError {
                var: "RUST_LOG",
                reason: err.to_string(),
            })?
        }
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().event_format(JsonLines))
            .init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().event_format(PlainLines))
            .init(),
    }
    Ok(())
}

/// One JSON object per event: timestamp, level, the event's fields, target and request.
#[derive(Debug, Clone, Copy)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut out: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        out.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut out)?;
        write!(out, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = JsonFields {
            out: &mut out,
            result: Ok(()),
            raw_details: meta.target() == AUDIT_TARGET,
        };
        event.record(&mut fields);
        fields.result?;
        out.write_str(",\"target\":")?;
        json_string(&mut out, meta.target())?;
        REQUEST
            .try_with(|request| {
                out.write_str(",\"span\":{\"name\":\"request\",\"request_id\":")?;
                json_string(&mut out, &request.request_id)?;
                out.write_str(",\"method\":")?;
                json_string(&mut out, &request.method)?;
                out.write_str(",\"route\":")?;
                json_string(&mut out, &request.route)?;
                out.write_str(",\"client_ip\":")?;
                json_string(&mut out, &request.client_ip)?;
                out.write_char('}')
            })
            .unwrap_or(Ok(()))?;
        out.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`.
struct JsonFields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
    /// Whether this is an audit line, whose `details` is written as the object it is.
    raw_details: bool,
}

impl JsonFields<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self
                .out
                .write_char(',')
                .and_then(|()| json_string(self.out, field.name()))
                .and_then(|()| self.out.write_char(':'))
                .and_then(|()| value(self.out));
        }
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // An audit line's `details` is a JSON object already (canonical, made by the store):
        // written as one, so collectors see the same shape as the API. Anything else named so
        // (or text that does not parse) stays a string.
        if self.raw_details
            && field.name() == AUDIT_DETAILS
            && value.starts_with('{')
            && !value.contains(['\n', '\r'])
            && serde_json::from_str::<serde::de::IgnoredAny>(value).is_ok()
        {
            self.field(field, |out| out.write_str(value));
        } else {
            self.field(field, |out| json_string(out, value));
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // Rust prints finite floats without an exponent, which JSON accepts as they are.
        self.field(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| write!(out, "{value}"));
    }
}

/// Writes `value` as a JSON string.
fn json_string(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(&mut *out).write_str(value)?;
    out.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string.
struct Escaped<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, byte) in s.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

/// One readable line per event: time, level, request, target, message and fields.
#[derive(Debug, Clone, Copy)]
pub struct PlainLines;

impl<S, N> FormatEvent<S, N> for PlainLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut out: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        SystemTime.format_time(&mut out)?;
        write!(out, " {:>5} ", meta.level())?;
        REQUEST
            .try_with(|r| {
                write!(
                    out,
                    "{} {} [{} {}] ",
                    r.method, r.route, r.request_id, r.client_ip
                )
            })
            .unwrap_or(Ok(()))?;
        write!(out, "{}: ", meta.target())?;
        ctx.field_format().format_fields(out.by_ref(), event)?;
        writeln!(out)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    fn lines(log: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .with_writer(captured.clone()),
        );
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn every_field_type_gives_valid_json() {
        let awkward = "quote \" backslash \\ newline \n tab \t bell \u{7} del \u{7f} é ✓";
        let logged = lines(|| {
            tracing::info!(
                text = awkward,
                shown = %awkward,
                debugged = ?awkward,
                int = -3i64,
                big = u128::MAX,
                ratio = 0.25f64,
                nan = f64::NAN,
                flag = true,
                "message with {} inside",
                "\"quotes\""
            );
        });
        let line = &logged[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "message with \"quotes\" inside");
        assert_eq!(line["text"], awkward);
        assert_eq!(line["shown"], awkward);
        assert_eq!(line["debugged"], format!("{awkward:?}"));
        assert_eq!(line["int"], -3);
        assert!(line["big"].is_number(), "{line}");
        assert_eq!(line["ratio"], 0.25);
        assert_eq!(line["nan"], Value::Null);
        assert_eq!(line["flag"], true);
        assert_eq!(line["target"], module_path!());
        assert!(line.get("span").is_none(), "{line}");
        let timestamp = line["timestamp"].as_str().expect("timestamp");
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
            .expect("an RFC 3339 timestamp");
    }

    #[tokio::test]
    async fn lines_logged_in_a_request_carry_it() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .with_writer(captured.clone()),
        );
        let _default = tracing::subscriber::set_default(subscriber);
        let context = RequestContext {
            request_id: "abc-1".to_owned(),
            method: "POST".to_owned(),
            route: "/auth/login".to_owned(),
            client_ip: "192.0.2.7".to_owned(),
        };
        in_request(context, async {
            tokio::task::yield_now().await;
            tracing::warn!(user_id = 7, "inside");
        })
        .await;
        tracing::warn!("outside");

        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        let logged: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("json"))
            .collect();
        assert_eq!(
            logged[0]["span"],
            json!({
                "name": "request", "request_id": "abc-1", "method": "POST",
                "route": "/auth/login", "client_ip": "192.0.2.7"
            })
        );
        assert_eq!(logged[0]["user_id"], 7);
        assert!(logged[1].get("span").is_none());
    }
}
