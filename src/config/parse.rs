//! Reading [`SettingsArgs`] with clap, and the two things clap does not do the way `.env` users
//! expect: an empty value (`PORT=`) counts as unset, so the default applies (clap takes it as a
//! value), and a bad value is reported as one line naming the variable ([`ConfigError`]) rather
//! than clap's usage text.

use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::ops::RangeInclusive;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Command, FromArgMatches};
use secrecy::SecretString;

use ipnet::IpNet;

use super::args::{SettingsArgs, VARIABLES};
use super::{ConfigError, TrustedProxies};
use crate::limits::Rate;

/// A command that reads the settings alone (no subcommands).
pub fn settings_command() -> Command {
    SettingsArgs::augment_args(Command::new("cerego"))
}

/// Why the command line or the environment could not be used.
#[derive(Debug)]
pub enum ParseError {
    /// A setting's value is bad: one line naming the variable.
    Setting(ConfigError),
    /// Anything else clap reports (an unknown flag), or a request for `--help` / `--version`:
    /// `clap::Error::exit` prints it and exits as clap does.
    Usage(clap::Error),
}

/// Parses `args` with `cmd` (which holds [`SettingsArgs`], read from the environment as its
/// arguments say) into `T`, turning a bad setting into a [`ConfigError`] naming its variable.
pub fn parse<T, I>(cmd: Command, args: I) -> Result<T, ParseError>
where
    T: FromArgMatches,
    I: IntoIterator,
    I::Item: Into<OsString> + Clone,
{
    cmd.try_get_matches_from(args)
        .and_then(|matches| T::from_arg_matches(&matches))
        .map_err(|err| match setting_error(&err) {
            Some(err) => ParseError::Setting(err),
            None => ParseError::Usage(err),
        })
}

/// The variable and the reason of a value clap refused, if the refused value is a setting's.
fn setting_error(err: &clap::Error) -> Option<ConfigError> {
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    // clap names the argument as `--port <PORT>`.
    let flag = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let wanted = flag.to_ascii_uppercase().replace('-', "_");
    let var = VARIABLES.iter().copied().find(|var| *var == wanted)?;
    let reason = match err.kind() {
        ErrorKind::ValueValidation => std::error::Error::source(err)?.to_string(),
        ErrorKind::InvalidValue => {
            let got = match err.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(value)) => format!(" (got {value:?})"),
                _ => String::new(),
            };
            match err.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(valid)) => {
                    format!("must be one of {}{got}", valid.join(", "))
                }
                _ => format!("is not an accepted value{got}"),
            }
        }
        _ => return None,
    };
    Some(ConfigError { var, reason })
}

/// A whole number within `range`, stored as `T`; a blank value means the default.
pub(super) fn bounded<T>(
    range: RangeInclusive<u64>,
) -> BlankIsDefault<impl TypedValueParser<Value = T>>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    BlankIsDefault(move |raw: &str| -> Result<T, String> {
        let (min, max) = (*range.start(), *range.end());
        let outside = || format!("must be a whole number between {min} and {max} (got {raw:?})");
        let value: u64 = raw.trim().parse().map_err(|_| outside())?;
        if !range.contains(&value) {
            return Err(outside());
        }
        T::try_from(value).map_err(|_| outside())
    })
}

pub(super) fn ip_address(raw: &str) -> Result<IpAddr, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("must be an IP address such as 0.0.0.0 or ::1 (got {raw:?})"))
}

/// A rate setting's value: `None` is `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSetting(pub Option<Rate>);

pub(super) fn rate(raw: &str) -> Result<RateSetting, String> {
    Rate::parse(raw).map(RateSetting)
}

/// `TRUSTED_PROXIES`: comma-separated CIDRs or single addresses; empty is none.
pub(super) fn trusted_proxies(raw: &str) -> Result<TrustedProxies, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<IpNet>()
                .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    format!(
                        "must be comma-separated CIDRs or IP addresses such as \
                         10.0.0.0/8, 192.168.1.10 or fd00::/8 (got {part:?})"
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(TrustedProxies)
}

/// `PUBLIC_BASE_URL`: an absolute http(s) URL without query or fragment, kept without its
/// trailing slash (paths are appended to it).
pub(super) fn base_url(raw: &str) -> Result<String, String> {
    let url = absolute_http_url(raw)?;
    if url.query().is_some() {
        return Err(format!("must not hold a ?query (got {raw:?})"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `PASSWORD_RESET_URL`, `EMAIL_VERIFICATION_URL`: an absolute http(s) URL without fragment (it
/// may hold a query; the token is appended as one more parameter).
pub(super) fn page_url(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Ok(String::new());
    }
    absolute_http_url(raw).map(String::from)
}

fn absolute_http_url(raw: &str) -> Result<url::Url, String> {
    let bad =
        || format!("must be an absolute http:// or https:// URL without a #fragment (got {raw:?})");
    let url = url::Url::parse(raw.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.fragment().is_some()
    {
        return Err(bad());
    }
    Ok(url)
}

/// `MAIL_FROM`: `address` or `Name <address>`.
pub(super) fn mailbox(raw: &str) -> Result<lettre::message::Mailbox, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("must be an e-mail address or \"Name <address>\" (got {raw:?})"))
}

/// A path; blank is kept as an empty path, which the caller takes as unset (clap's own parser
/// refuses an empty value).
pub(super) fn path(raw: &str) -> Result<std::path::PathBuf, std::convert::Infallible> {
    Ok(std::path::PathBuf::from(raw.trim()))
}

/// An optional RFC 3339 time (`2027-01-31T00:00:00Z`); blank is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalTime(pub Option<time::OffsetDateTime>);

/// Parses an [`OptionalTime`].
pub(super) fn rfc3339(raw: &str) -> Result<OptionalTime, String> {
    if raw.trim().is_empty() {
        return Ok(OptionalTime(None));
    }
    time::OffsetDateTime::parse(raw.trim(), &time::format_description::well_known::Rfc3339)
        .map(|time| OptionalTime(Some(time)))
        .map_err(|_| format!("must be an RFC 3339 time such as 2027-01-31T00:00:00Z (got {raw:?})"))
}

/// Secrets are kept wrapped from the moment they are read, so no `Debug` can print them.
pub(super) fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

/// Parses like the parser it wraps, except that a blank value (`.env` files often hold `PORT=`)
/// counts as unset: the argument's default is parsed instead. clap itself takes an empty
/// variable as a value.
#[derive(Clone)]
pub(super) struct BlankIsDefault<P>(pub(super) P);

impl<P: TypedValueParser> TypedValueParser for BlankIsDefault<P> {
    type Value = P::Value;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let blank = value.to_str().is_some_and(|v| v.trim().is_empty());
        match arg.and_then(|arg| arg.get_default_values().first()) {
            Some(default) if blank => self.0.parse_ref(cmd, arg, default),
            _ => self.0.parse_ref(cmd, arg, value),
        }
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.0.possible_values()
    }
}
