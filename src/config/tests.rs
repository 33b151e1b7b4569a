//! The settings declarations: defaults, ranges, messages and `--help`, driven through the same
//! clap command and checks as `cerego` (with flags here, since clap reads variables from the
//! process environment; `tests/api/process.rs` runs the binary with real variables).

use super::*;

/// `--flag=value` for a variable, as clap names it.
fn flag(var: &str, value: &str) -> String {
    format!("--{}={value}", var.to_ascii_lowercase().replace('_', "-"))
}

/// The command with its environment reading switched off, so the test runner's own variables
/// cannot leak in.
fn isolated() -> clap::Command {
    settings_command().mut_args(|arg| arg.env(None::<&str>))
}

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let argv = std::iter::once("cerego".to_owned())
        .chain(pairs.iter().map(|(var, value)| flag(var, value)));
    match parse::<SettingsArgs, _>(isolated(), argv) {
        Ok(args) => args.into_settings(),
        Err(ParseError::Setting(err)) => Err(err),
        Err(ParseError::Usage(err)) => panic!("not a settings error: {err}"),
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    let s = settings(&[]).expect("defaults are valid");
    assert_eq!(s.host.to_string(), "0.0.0.0");
    assert_eq!(s.port, 8000);
    assert_eq!(s.request_timeout, Duration::from_secs(30));
    assert_eq!(s.http.header_read_timeout, Duration::from_secs(10));
    assert_eq!(s.http.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.http.body_read_timeout, Duration::from_secs(10));
    assert_eq!(s.http.max_connections, 10_000);
    assert!(s.database.url.is_none());
    assert_eq!(s.database.max_connections, 10);
    assert_eq!(s.database.acquire_timeout, Duration::from_secs(3));
    assert_eq!(s.database.query_timeout, Duration::from_secs(5));
    assert!(s.database.auto_migrate);
    assert!(s.jwt.secret.is_none());
    assert_eq!(
        s.jwt.signing,
        Signing::Secret(jsonwebtoken::Algorithm::HS256)
    );
    assert_eq!(s.jwt.access_token_ttl, Duration::from_secs(1800));
    assert_eq!((s.jwt.issuer, s.jwt.audience), (None, None));
    assert_eq!(s.sessions.refresh_grace, Duration::from_secs(10));
    assert_eq!(s.sessions.lifetime, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(s.sessions.idle_timeout, Duration::from_secs(14 * 24 * 3600));
    assert_eq!(s.sessions.purge_interval, Duration::from_secs(3600));
    assert_eq!(s.bcrypt_cost, 12);
    assert_eq!(s.hash_queue.per_core, 16);
    assert_eq!(s.hash_queue.full_wait, Duration::from_millis(250));
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(s.audit_retention, Some(Duration::from_secs(365 * 86_400)));
}

#[test]
fn an_audit_retention_of_zero_keeps_events_forever() {
    let s = settings(&[("AUDIT_RETENTION_DAYS", "0")]).expect("valid");
    assert_eq!(s.audit_retention, None);
    let s = settings(&[("AUDIT_RETENTION_DAYS", "30")]).expect("valid");
    assert_eq!(s.audit_retention, Some(Duration::from_secs(30 * 86_400)));
}

#[test]
fn an_empty_value_counts_as_unset() {
    let blank: Vec<(&str, &str)> = VARIABLES.iter().map(|var| (*var, "")).collect();
    let s = settings(&blank).expect("blank values are defaults");
    assert_eq!(s.port, 8000);
    assert_eq!(s.bcrypt_cost, 12);
    assert!(s.database.auto_migrate);
    assert_eq!(s.log_format, LogFormat::Json);
    assert!(s.database.url.is_none() && s.jwt.secret.is_none() && s.jwt.issuer.is_none());
    let spaced = settings(&[("PORT", " 9000 "), ("JWT_AUDIENCE", "  ")]).expect("valid");
    assert_eq!(
        s.jwt.signing,
        Signing::Secret(jsonwebtoken::Algorithm::HS256)
    );
    assert_eq!((spaced.port, spaced.jwt.audience), (9000, None));
}

#[test]
fn values_are_read() {
    let key = "k".repeat(32);
    let s = settings(&[
        ("DATABASE_URL", "postgres://localhost/cerego"),
        ("JWT_SECRET_KEY", &key),
        ("JWT_ALGORITHM", "HS512"),
        ("DATABASE_AUTO_MIGRATE", "off"),
        ("LOG_FORMAT", "pretty"),
        ("HOST", "::1"),
        ("PASSWORD_HASH_QUEUE_PER_CORE", "0"),
        ("JWT_ISSUER", "cerego"),
    ])
    .expect("valid");
    assert_eq!(
        s.jwt.signing,
        Signing::Secret(jsonwebtoken::Algorithm::HS512)
    );
    assert!(!s.database.auto_migrate);
    assert_eq!(s.log_format, LogFormat::Pretty);
    assert_eq!(s.host.to_string(), "::1");
    assert_eq!(s.hash_queue.per_core, 0);
    assert_eq!(s.jwt.issuer.as_deref(), Some("cerego"));
}

#[test]
fn postgres_requires_a_secret_key() {
    let err = settings(&[("DATABASE_URL", "postgres://localhost/cerego")]).expect_err("no key");
    assert_eq!(err.var, "JWT_SECRET_KEY");
    let key = "k".repeat(32);
    let pg = [
        ("DATABASE_URL", "postgres://localhost/cerego"),
        ("JWT_SECRET_KEY", key.as_str()),
    ];
    assert!(settings(&pg).is_ok());
}

#[test]
fn each_bad_value_names_its_variable() {
    let huge = "18446744073709551615"; // u64::MAX: overflowed cores × (1 + n), panicked sqlx
    let cases = [
        ("JWT_SECRET_KEY", "too-short"),
        ("JWT_ALGORITHM", "none"),
        ("JWT_ALGORITHM", "PS256"),
        ("JWT_ACCESS_TOKEN_EXPIRE_MINUTES", "0"),
        ("JWT_ACCESS_TOKEN_EXPIRE_MINUTES", "1441"),
        ("BCRYPT_COST", "3"),
        ("BCRYPT_COST", "twelve"),
        ("PASSWORD_HASH_QUEUE_PER_CORE", "-1"),
        ("PASSWORD_HASH_QUEUE_PER_CORE", "1025"),
        ("PASSWORD_HASH_QUEUE_PER_CORE", huge),
        ("PASSWORD_HASH_QUEUE_PER_CORE", "99999999999999999999999"),
        ("PASSWORD_HASH_QUEUE_FULL_WAIT_MS", "-1"),
        ("PASSWORD_HASH_QUEUE_FULL_WAIT_MS", "5001"),
        ("DATABASE_ACQUIRE_TIMEOUT_SECS", huge),
        ("DATABASE_ACQUIRE_TIMEOUT_SECS", "301"),
        ("DATABASE_ACQUIRE_TIMEOUT_SECS", "0"),
        ("DATABASE_QUERY_TIMEOUT_SECS", "0"),
        ("PORT", "70000"),
        ("PORT", "http"),
        ("HOST", "not-an-ip"),
        ("LOG_FORMAT", "xml"),
        ("DATABASE_URL", "mysql://localhost/x"),
        ("DATABASE_AUTO_MIGRATE", "maybe"),
        ("DATABASE_MAX_CONNECTIONS", "0"),
        ("DATABASE_MAX_CONNECTIONS", "1001"),
        ("REQUEST_TIMEOUT_SECS", "0"),
        ("REQUEST_TIMEOUT_SECS", "1.5"),
        ("SESSION_LIFETIME_SECS", "0"),
        ("SESSION_IDLE_TIMEOUT_SECS", "315360001"),
        ("SESSION_PURGE_INTERVAL_SECS", "86401"),
        ("REFRESH_TOKEN_GRACE_SECS", "soon"),
        ("REFRESH_TOKEN_GRACE_SECS", "301"),
        ("HTTP_HEADER_READ_TIMEOUT_SECS", "0"),
        ("HTTP_IDLE_TIMEOUT_SECS", "3601"),
        ("HTTP_BODY_READ_TIMEOUT_SECS", "301"),
        ("HTTP_MAX_CONNECTIONS", "0"),
    ];
    for (var, value) in cases {
        let err = settings(&[(var, value)]).expect_err(var);
        assert_eq!(err.var, var, "{value}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("invalid setting {var}: ")),
            "{message}"
        );
        assert_eq!(message.lines().count(), 1, "{message}");
    }
}

#[test]
fn the_refresh_grace_must_be_shorter_than_the_idle_timeout() {
    let err = settings(&[
        ("REFRESH_TOKEN_GRACE_SECS", "120"),
        ("SESSION_IDLE_TIMEOUT_SECS", "120"),
    ])
    .expect_err("grace as long as the idle timeout");
    assert_eq!(err.var, "REFRESH_TOKEN_GRACE_SECS");
    assert!(
        err.to_string().contains("SESSION_IDLE_TIMEOUT_SECS"),
        "{err}"
    );
}

/// Each range written in a help text is the one enforced: both ends accepted, one past either
/// refused.
#[test]
fn each_documented_range_is_the_enforced_one() {
    let cmd = isolated();
    let mut checked = 0;
    for arg in cmd.get_arguments() {
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let Some((before, after)) = help.split_once("..=") else {
            continue;
        };
        let digits_end = |s: &str| s.chars().rev().take_while(char::is_ascii_digit).count();
        let min: u64 = before[before.len() - digits_end(before)..]
            .parse()
            .expect("min");
        let max_len = after.chars().take_while(char::is_ascii_digit).count();
        let max: u64 = after[..max_len].parse().expect("max");
        let var = arg
            .get_long()
            .expect("long")
            .to_ascii_uppercase()
            .replace('-', "_");
        for ok in [min, max] {
            settings(&[(&var, &ok.to_string())]).unwrap_or_else(|e| panic!("{var}={ok}: {e}"));
        }
        let mut outside = vec![max + 1];
        outside.extend(min.checked_sub(1));
        for bad in outside {
            let err = settings(&[(&var, &bad.to_string())]).expect_err(&var);
            assert_eq!(err.var, var);
        }
        checked += 1;
    }
    assert_eq!(checked, 29, "every numeric setting documents its range");
}

#[test]
fn help_lists_every_variable_with_its_default() {
    let cmd = settings_command();
    let envs: Vec<String> = cmd
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect();
    assert_eq!(envs, VARIABLES, "VARIABLES lists the declarations in order");
    for arg in cmd.get_arguments() {
        let env = arg.get_env().expect("every setting has a variable");
        let long = arg.get_long().expect("every setting has a flag");
        assert_eq!(
            long.to_ascii_uppercase().replace('-', "_"),
            env.to_string_lossy()
        );
    }
    let help = settings_command().render_long_help().to_string();
    for var in VARIABLES {
        assert!(help.contains(&format!("[env: {var}")), "{var} in:\n{help}");
    }
    assert!(help.contains("[default: 8000]"), "{help}");
    assert!(help.contains("[default: HS256]"), "{help}");
    assert!(help.contains("- pretty:"), "the values are listed: {help}");
}

#[test]
fn the_secret_is_never_in_debug_output() {
    let key = "super-secret-key-that-is-long-enough-1234";
    let url = "postgres://cerego:db-password-9876@localhost/cerego";
    let argv = [
        "cerego".to_owned(),
        flag("JWT_SECRET_KEY", key),
        flag("DATABASE_URL", url),
    ];
    let args: SettingsArgs = parse(isolated(), argv).expect("valid");
    assert!(!format!("{args:?}").contains(key));
    assert!(!format!("{args:?}").contains("db-password-9876"));
    let s = args.into_settings().expect("valid");
    assert!(!format!("{s:?}").contains(key));
    assert!(!format!("{s:?}").contains("db-password-9876"));
}

#[test]
fn migrate_needs_only_the_database_settings() {
    let argv = ["cerego", "--database-url=postgres://localhost/cerego"];
    let args: SettingsArgs = parse(isolated(), argv).expect("valid");
    let database = args.database().expect("no key needed");
    assert!(database.url.is_some());
    assert_eq!(
        args.into_settings().expect_err("serve needs it").var,
        "JWT_SECRET_KEY"
    );
}

#[test]
fn the_admin_account_needs_all_three_settings_each_passing_the_sign_up_rules() {
    assert!(settings(&[]).expect("valid").admin.is_none());
    let good = [
        ("ADMIN_EMAIL", "Root@Example.com"),
        ("ADMIN_USERNAME", "root"),
        ("ADMIN_PASSWORD", "Zebra quartz 8 lanterns"),
    ];
    let admin = settings(&good).expect("valid").admin.expect("an admin");
    assert_eq!(admin.account.email.as_str(), "root@example.com");
    assert_eq!(admin.account.username.as_str(), "root");
    for missing in 0..3 {
        let mut two = good.to_vec();
        let (var, _) = two.remove(missing);
        let err = settings(&two).expect_err("refused");
        assert_eq!(err.var, var);
    }
    for (var, bad) in [
        ("ADMIN_EMAIL", "not-an-address"),
        ("ADMIN_USERNAME", "x"),
        ("ADMIN_PASSWORD", "12345678"),
        // The password policy's own rule: not the e-mail address or username.
        ("ADMIN_PASSWORD", "ROOT@example.com"),
    ] {
        let mut pairs = good.to_vec();
        pairs.retain(|(v, _)| *v != var);
        pairs.push((var, bad));
        let err = settings(&pairs).expect_err(bad);
        assert_eq!(err.var, var, "{bad}");
        assert!(
            !err.to_string().contains(bad) || var != "ADMIN_PASSWORD",
            "{err}"
        );
    }
    let debug = format!("{:?}", settings(&good).expect("valid"));
    assert!(!debug.contains("quartz 8 lanterns"), "{debug}");
}

#[test]
fn asymmetric_algorithms_need_a_keys_dir_and_hmac_refuses_one() {
    let err = settings(&[("JWT_ALGORITHM", "EdDSA")]).expect_err("no JWT_KEYS_DIR");
    assert_eq!(err.var, "JWT_KEYS_DIR");
    assert!(err.to_string().contains("cerego keys generate"), "{err}");
    let err = settings(&[("JWT_KEYS_DIR", "/etc/cerego/keys")]).expect_err("HMAC with a dir");
    assert_eq!(err.var, "JWT_KEYS_DIR");
    for (name, algorithm) in [
        ("EdDSA", jsonwebtoken::Algorithm::EdDSA),
        ("ES256", jsonwebtoken::Algorithm::ES256),
        ("RS256", jsonwebtoken::Algorithm::RS256),
    ] {
        let s = settings(&[("JWT_ALGORITHM", name), ("JWT_KEYS_DIR", "/keys")]).expect(name);
        // The discovery document's issuer, which verifiers match against `iss`.
        assert_eq!(s.jwt.issuer.as_deref(), Some("http://localhost:8000"));
        assert_eq!(
            s.jwt.signing,
            Signing::KeysDir {
                algorithm,
                dir: "/keys".into()
            }
        );
    }
}

#[test]
fn the_legacy_cut_over_is_an_rfc_3339_time_or_unset() {
    let s = settings(&[]).expect("defaults");
    assert_eq!(s.jwt.accept_legacy_until, None);
    let s = settings(&[("JWT_ACCEPT_LEGACY_UNTIL", "2027-01-31T12:00:00+01:00")]).expect("valid");
    assert_eq!(
        s.jwt.accept_legacy_until,
        Some(time::macros::datetime!(2027-01-31 11:00:00 UTC))
    );
    for bad in ["tomorrow", "2027-01-31", "1700000000"] {
        let err = settings(&[("JWT_ACCEPT_LEGACY_UNTIL", bad)]).expect_err(bad);
        assert_eq!(err.var, "JWT_ACCEPT_LEGACY_UNTIL");
    }
}

#[test]
fn shutdown_grace_and_the_statement_cache_have_their_defaults() {
    let s = settings(&[]).expect("defaults");
    assert_eq!(s.shutdown_grace, Duration::from_secs(30));
    assert_eq!(s.database.statement_cache_capacity, 100);
    let s = settings(&[
        ("SHUTDOWN_GRACE_SECS", "5"),
        ("DATABASE_STATEMENT_CACHE_CAPACITY", "0"),
    ])
    .expect("valid");
    assert_eq!(s.shutdown_grace, Duration::from_secs(5));
    assert_eq!(s.database.statement_cache_capacity, 0);
}

#[test]
fn with_a_key_pair_the_issuer_defaults_to_the_public_base_url() {
    let s = settings(&[
        ("JWT_ALGORITHM", "EdDSA"),
        ("JWT_KEYS_DIR", "/keys"),
        ("PUBLIC_BASE_URL", "https://auth.example.com/"),
    ])
    .expect("valid");
    assert_eq!(s.jwt.issuer.as_deref(), Some("https://auth.example.com"));
    let s = settings(&[
        ("JWT_ALGORITHM", "EdDSA"),
        ("JWT_KEYS_DIR", "/keys"),
        ("JWT_ISSUER", "cerego"),
    ])
    .expect("valid");
    assert_eq!(s.jwt.issuer.as_deref(), Some("cerego"));
    // HMAC keeps the FastAPI system's tokens: no `iss` unless configured.
    assert_eq!(settings(&[]).expect("defaults").jwt.issuer, None);
}
