//! Abuse protection: rate limits by route class and key, and the brute-force throttle on logins.
//! No HTTP here: the HTTP layer says which [`Rule`] applies to a request and with which key, and
//! turns a refusal into a 429.
//!
//! Rate limits are GCRA (a burst of `N`, refilled evenly over the period). The login throttle
//! keeps, per (account, IP), consecutive failures and a doubling backoff, and per account the
//! failures within a window. Budgets live in this process's memory, or with `REDIS_URL` in Redis
//! (one atomic script per decision, every key with an expiry) so replicas share them. Keys are
//! HMACs of what they count (an IP, a user id, a login name: people type passwords into the
//! username field), so no store holds one in the clear and every key has the same size.

mod gcra;
mod memory;
pub mod rate;
mod redis_store;
mod store;
mod throttle;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{LimitSettings, ThrottleSettings};
use crate::metrics::Metrics;
pub use rate::Rate;
use store::{Store, StoreError};

/// A rate-limit rule: which requests it counts and by what key. Adding a route class is a
/// variant here, its name, its setting (in `config::args`) and one line in the HTTP layer's
/// route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// `POST /auth/login` per client IP (`RATE_LIMIT_LOGIN_IP`).
    LoginIp,
    /// `POST /auth/login` per login name (`RATE_LIMIT_LOGIN_ACCOUNT`).
    LoginAccount,
    /// `POST /auth/signup` per client IP (`RATE_LIMIT_SIGNUP_IP`).
    SignupIp,
    /// `POST /auth/refresh` per client IP (`RATE_LIMIT_REFRESH_IP`).
    RefreshIp,
    /// Every other route with a valid access token, per user (`RATE_LIMIT_API_USER`).
    ApiUser,
    /// Every other route without one, per client IP (`RATE_LIMIT_API_IP`).
    ApiIp,
    /// `POST /auth/password/forgot` and `POST /auth/email/verification` per client IP
    /// (`RATE_LIMIT_RECOVERY_IP`).
    RecoveryIp,
    /// The same routes per e-mail address (`RATE_LIMIT_RECOVERY_ACCOUNT`): mail to one address.
    RecoveryAccount,
}

impl Rule {
    /// Every rule, in the order of the settings.
    pub const ALL: [Self; 8] = [
        Self::LoginIp,
        Self::LoginAccount,
        Self::SignupIp,
        Self::RefreshIp,
        Self::ApiUser,
        Self::ApiIp,
        Self::RecoveryIp,
        Self::RecoveryAccount,
    ];

    /// The rule's name: the policy name in `RateLimit-Policy` and the `rule` label of metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::LoginIp => "login_ip",
            Self::LoginAccount => "login_account",
            Self::SignupIp => "signup_ip",
            Self::RefreshIp => "refresh_ip",
            Self::ApiUser => "api_user",
            Self::ApiIp => "api_ip",
            Self::RecoveryIp => "recovery_ip",
            Self::RecoveryAccount => "recovery_account",
        }
    }

    /// The prefix of the rule's store keys. Each kind of entry has its own, so a GCRA value and
    /// a throttle hash can never land on the same Redis key (a `WRONGTYPE` error there would
    /// turn every check into a store failure).
    pub const fn namespace(self) -> &'static str {
        match self {
            Self::LoginIp => "rate:login_ip",
            Self::LoginAccount => "rate:login_account",
            Self::SignupIp => "rate:signup_ip",
            Self::RefreshIp => "rate:refresh_ip",
            Self::ApiUser => "rate:api_user",
            Self::ApiIp => "rate:api_ip",
            Self::RecoveryIp => "rate:recovery_ip",
            Self::RecoveryAccount => "rate:recovery_account",
        }
    }

    /// The environment variable that sets the rule's rate.
    pub const fn setting(self) -> &'static str {
        match self {
            Self::LoginIp => "RATE_LIMIT_LOGIN_IP",
            Self::LoginAccount => "RATE_LIMIT_LOGIN_ACCOUNT",
            Self::SignupIp => "RATE_LIMIT_SIGNUP_IP",
            Self::RefreshIp => "RATE_LIMIT_REFRESH_IP",
            Self::ApiUser => "RATE_LIMIT_API_USER",
            Self::ApiIp => "RATE_LIMIT_API_IP",
            Self::RecoveryIp => "RATE_LIMIT_RECOVERY_IP",
            Self::RecoveryAccount => "RATE_LIMIT_RECOVERY_ACCOUNT",
        }
    }
}

/// Store-key prefix of the login throttle's per-(account, IP) entries.
const THROTTLE_PAIR: &str = "throttle:pair";
/// Store-key prefix of the login throttle's per-account entries.
const THROTTLE_ACCOUNT: &str = "throttle:account";

/// The outcome of one rate-limit check, with what the `RateLimit` header field reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The rule checked.
    pub rule: Rule,
    /// Its rate.
    pub rate: Rate,
    /// Whether the request may go on.
    pub allowed: bool,
    /// Requests still allowed right now (after this one, if it was allowed).
    pub remaining: u32,
    /// Until the bucket is full again (whole seconds, rounded up, in the header field).
    pub reset: Duration,
    /// Until a refused request may be retried; zero when allowed.
    pub retry_after: Duration,
}

/// Which part of the login throttle refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleScope {
    /// The backoff of one account from one client IP.
    AccountIp,
    /// The failure cap of one account from every IP.
    Account,
}

impl ThrottleScope {
    /// The `scope` label of `cerego_login_throttled_total`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::AccountIp => "account_ip",
            Self::Account => "account",
        }
    }
}

/// A login attempt the throttle refused, before any password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Which part refused it.
    pub scope: ThrottleScope,
    /// How long until an attempt is allowed again (at least one second in the header).
    pub retry_after: Duration,
}

/// The store failed and `RATE_LIMIT_FAIL_OPEN` is false: the request gets a 503.
#[derive(Debug, thiserror::Error)]
#[error("the rate-limit store is unavailable")]
pub struct Unavailable;

/// Rate limits and the login throttle, with their store.
#[derive(Debug)]
pub struct Limiter {
    enabled: bool,
    rates: crate::config::Rates,
    throttle: ThrottleSettings,
    fail_open: bool,
    store: Store,
    /// Key of the HMAC that turns what is counted into a store key.
    key: Vec<u8>,
    metrics: Arc<Metrics>,
}

impl Limiter {
    /// The limiter for `settings`; `key` (derived from the token-signing secret, so every replica
    /// has the same) keys the HMAC of store keys. Nothing is connected yet: an unreachable Redis
    /// does not stop start-up (calls fail, and fail open or closed, until it answers).
    pub fn new(
        settings: &LimitSettings,
        key: &[u8],
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let store = match &settings.redis_url {
            Some(url) => Store::redis(url, settings.redis_timeout)?,
            None => Store::memory(),
        };
        Ok(Self {
            enabled: settings.enabled,
            rates: settings.rates,
            throttle: settings.throttle,
            fail_open: settings.fail_open,
            store,
            key: key.to_vec(),
            metrics,
        })
    }

    /// Whether any limit applies (`RATE_LIMIT_ENABLED`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `rule`'s rate, or `None` when it is off (or every limit is).
    pub fn rate(&self, rule: Rule) -> Option<Rate> {
        self.rates.get(rule).filter(|_| self.enabled)
    }

    /// The store's name (`memory` or `redis`), for logs and metrics.
    pub fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// Takes one request from `key`'s budget under `rule`. `None` when the rule is off, or the
    /// store failed and the request is admitted anyway (logged and counted).
    pub async fn check(&self, rule: Rule, key: &str) -> Result<Option<Decision>, Unavailable> {
        let Some(rate) = self.rate(rule) else {
            return Ok(None);
        };
        let store_key = self.store_key(rule.namespace(), &[key.as_bytes()]);
        match self.store.gcra(&store_key, rate).await {
            Ok(outcome) => {
                self.metrics.record_rate_limit(rule.name(), outcome.allowed);
                Ok(Some(Decision {
                    rule,
                    rate,
                    allowed: outcome.allowed,
                    remaining: outcome.remaining,
                    reset: outcome.reset,
                    retry_after: outcome.retry_after,
                }))
            }
            Err(err) => self.store_failed(err).map(|()| None),
        }
    }

    /// Asks the login throttle whether `account` (a normalised login name, see [`login_key`])
    /// may try a password from `ip`. An allowed attempt is counted as a failure at once, so
    /// attempts racing each other cannot slip past the backoff; [`Self::login_succeeded`] clears
    /// it. `Ok(Err(_))` is a refusal.
    pub async fn login_attempt(
        &self,
        account: &str,
        ip: IpAddr,
    ) -> Result<Result<(), Throttled>, Unavailable> {
        let throttle = self.throttle;
        if !self.enabled || (throttle.backoff_after == 0 && throttle.account_failure_limit == 0) {
            return Ok(Ok(()));
        }
        let ip = ip_key(ip);
        let pair = self.store_key(THROTTLE_PAIR, &[account.as_bytes(), ip.as_bytes()]);
        let whole = self.store_key(THROTTLE_ACCOUNT, &[account.as_bytes()]);
        match self.store.login_attempt(&pair, &whole, &throttle).await {
            Ok(None) => Ok(Ok(())),
            Ok(Some(throttled)) => {
                self.metrics.record_login_throttled(throttled.scope.name());
                Ok(Err(throttled))
            }
            Err(err) => self.store_failed(err).map(Ok),
        }
    }

    /// A login to the account known by `accounts` (every name it can be logged in with) from
    /// `ip` succeeded: clears that (account, IP) backoff and the account's failure count. A
    /// store failure is logged and counted only.
    pub async fn login_succeeded(&self, accounts: &[&str], ip: IpAddr) {
        if !self.enabled {
            return;
        }
        let ip = ip_key(ip);
        let mut keys = Vec::with_capacity(accounts.len() * 2);
        for account in accounts {
            keys.push(self.store_key(THROTTLE_PAIR, &[account.as_bytes(), ip.as_bytes()]));
            keys.push(self.store_key(THROTTLE_ACCOUNT, &[account.as_bytes()]));
        }
        if let Err(err) = self.store.clear(&keys).await {
            // Clearing never refuses the login it follows.
            let _ = self.store_failed_with(err, true);
        }
    }

    /// Drops expired entries of the in-memory store (nothing to do with Redis, whose keys
    /// expire on their own). The app calls this periodically.
    pub fn sweep(&self) {
        self.store.sweep();
    }

    fn store_failed(&self, err: StoreError) -> Result<(), Unavailable> {
        self.store_failed_with(err, self.fail_open)
    }

    fn store_failed_with(&self, err: StoreError, admit: bool) -> Result<(), Unavailable> {
        self.metrics
            .record_rate_limit_store_error(self.store.name(), admit);
        self.store.outage(&err, admit);
        if admit { Ok(()) } else { Err(Unavailable) }
    }

    /// `namespace:` and the HMAC of `parts` (each length-prefixed, so parts cannot run into each
    /// other), in unpadded base64url.
    fn store_key(&self, namespace: &str, parts: &[&[u8]]) -> String {
        use base64::Engine as _;
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes a key of any length")
        };
        mac.update(namespace.as_bytes());
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        let digest = mac.finalize().into_bytes();
        // 128 bits: collisions are out of reach, and keys stay short.
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
        format!("{namespace}:{encoded}")
    }
}

/// The key an IP address is counted under: an IPv4 address (or one mapped into IPv6) as it is,
/// an IPv6 address by its /64 network, which is what one customer line or host usually gets
/// (counting single IPv6 addresses would give each client 2^64 budgets).
pub fn ip_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let network = std::net::Ipv6Addr::new(
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            );
            format!("{network}/64")
        }
    }
}

/// The name a login is counted under: an e-mail address in its canonical form when it is one,
/// anything else trimmed and lower-cased character by character (usernames are unique
/// case-insensitively). Each character gets its simple lower-case mapping, as PostgreSQL's
/// `lower()` in the account lookup does: `İ` (U+0130) becomes `i` (not `i` and a combining dot)
/// and `Σ` is always `σ`, so two spellings that find the same account share one key.
pub fn login_key(name: &str) -> String {
    match crate::domain::Email::parse(name) {
        Ok(email) => email.as_str().to_owned(),
        Err(_) => name.trim().chars().map(simple_lowercase).collect(),
    }
}

/// `c`'s simple (one-character) lower-case mapping. Rust's `char::to_lowercase` gives the full
/// mapping, which differs only for U+0130; final sigma is contextual only in `str::to_lowercase`.
fn simple_lowercase(c: char) -> char {
    if c == '\u{130}' {
        return 'i';
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(one), None) => one,
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_network_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        assert_eq!(ip_key(a), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(ip_key(mapped), "192.0.2.7");
    }

    #[test]
    fn every_kind_of_entry_has_its_own_key_prefix() {
        let mut prefixes: Vec<&str> = Rule::ALL.iter().map(|rule| rule.namespace()).collect();
        prefixes.extend([THROTTLE_PAIR, THROTTLE_ACCOUNT]);
        let count = prefixes.len();
        prefixes.sort_unstable();
        prefixes.dedup();
        assert_eq!(prefixes.len(), count, "{prefixes:?}");
        for prefix in &prefixes {
            for other in &prefixes {
                assert!(prefix == other || !other.starts_with(&format!("{prefix}:")));
            }
        }
    }

    #[test]
    fn login_names_are_keyed_case_insensitively() {
        assert_eq!(login_key("Ada@Example.COM"), login_key("ada@example.com"));
        assert_eq!(login_key(" Ada "), "ada");
        assert_ne!(login_key("ada"), login_key("ada@example.com"));
        // As PostgreSQL's lower() folds them in the account lookup.
        assert_eq!(login_key("\u{130}da"), login_key("ida"));
        assert_eq!(login_key("ΟΔΟΣ"), "οδοσ");
        assert_eq!(login_key("ÅSA"), "åsa");
    }
}
