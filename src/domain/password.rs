//! [`NewPassword`]: a password that meets the sign-up policy.
//!
//! The policy follows NIST SP 800-63B: a minimum length, no composition rules, and a check
//! against a list of common passwords (Django's list of 20,000, shipped in `assets/`).

use std::collections::HashSet;
use std::sync::LazyLock;

use secrecy::{ExposeSecret, SecretString};

use super::FieldRule;

/// Fewest characters in a password.
pub const MIN_CHARS: usize = 8;
/// bcrypt reads at most 72 bytes; longer passwords are refused rather than silently cut.
pub const MAX_BYTES: usize = 72;

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../assets/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

/// Whether `candidate` (compared case-insensitively) is on the shipped common-password list.
pub fn is_common_password(candidate: &str) -> bool {
    COMMON.contains(candidate.to_lowercase().as_str())
}

/// A password accepted for a new account. It is never printed: `Debug` is redacted.
#[derive(Clone)]
pub struct NewPassword(SecretString);

/// Why a password is refused at sign-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Fewer than [`MIN_CHARS`] characters.
    #[error("String should have at least 8 characters")]
    TooShort,
    /// More than [`MAX_BYTES`] bytes of UTF-8.
    #[error("Password must be at most 72 bytes of UTF-8")]
    TooLong,
    /// On the common-password list.
    #[error("This password is too common")]
    Common,
    /// The same as the username or the e-mail address.
    #[error("Password must not be the same as the username or email")]
    SameAsIdentity,
}

impl FieldRule for PasswordError {
    fn code(&self) -> &'static str {
        match self {
            Self::TooShort => "string_too_short",
            Self::TooLong => "string_too_long",
            Self::Common => "value_error.password_common",
            Self::SameAsIdentity => "value_error.password_similar",
        }
    }
}

impl NewPassword {
    /// Checks `raw` against the policy; `identities` are the username and e-mail as submitted.
    pub fn parse(raw: SecretString, identities: &[&str]) -> Result<Self, PasswordError> {
        let text = raw.expose_secret();
        if text.chars().count() < MIN_CHARS {
            return Err(PasswordError::TooShort);
        }
        if text.len() > MAX_BYTES {
            return Err(PasswordError::TooLong);
        }
        let lowered = text.to_lowercase();
        if identities
            .iter()
            .any(|id| id.trim().to_lowercase() == lowered)
        {
            return Err(PasswordError::SameAsIdentity);
        }
        if is_common_password(text) {
            return Err(PasswordError::Common);
        }
        Ok(Self(raw))
    }

    /// The secret, for the hasher only.
    pub fn into_secret(self) -> SecretString {
        self.0
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(raw: &str, ids: &[&str]) -> Result<NewPassword, PasswordError> {
        NewPassword::parse(SecretString::from(raw), ids)
    }

    #[test]
    fn shipped_list_is_large_and_contains_well_known_passwords() {
        assert!(COMMON.len() >= 10_000, "list has {}", COMMON.len());
        assert!(is_common_password("password"));
        assert!(is_common_password("PassWord1"));
        assert!(is_common_password("iloveyou"));
        assert!(!is_common_password("correct horse battery staple"));
    }

    #[test]
    fn each_rule_has_its_own_error() {
        assert_eq!(parse("short", &[]).err(), Some(PasswordError::TooShort));
        assert_eq!(
            parse(&"x".repeat(73), &[]).err(),
            Some(PasswordError::TooLong)
        );
        assert_eq!(parse("baseball", &[]).err(), Some(PasswordError::Common));
        assert_eq!(
            parse("Ada_Lovelace", &["ada_lovelace", "ada@example.com"]).err(),
            Some(PasswordError::SameAsIdentity)
        );
        assert_eq!(
            parse("ADA@EXAMPLE.COM", &["ada_lovelace", " ada@example.com"]).err(),
            Some(PasswordError::SameAsIdentity)
        );
        assert!(parse("correct horse battery", &["ada", "ada@example.com"]).is_ok());
    }

    #[test]
    fn length_counts_characters_but_the_limit_counts_bytes() {
        // Seven two-byte characters and a digit: eight characters, fifteen bytes.
        assert!(parse("ééééééé1", &[]).is_ok());
        // 24 three-byte characters = 72 bytes: accepted; one more character is 75 bytes.
        assert!(parse(&"€".repeat(24), &[]).is_ok());
        assert_eq!(
            parse(&"€".repeat(25), &[]).err(),
            Some(PasswordError::TooLong)
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let password = parse("correct horse battery", &[]).expect("valid");
        assert!(!format!("{password:?}").contains("horse"));
    }

    proptest! {
        #[test]
        fn accepted_passwords_respect_the_bounds(raw in "\\PC{0,90}") {
            if parse(&raw, &[]).is_ok() {
                prop_assert!(raw.chars().count() >= MIN_CHARS);
                prop_assert!(raw.len() <= MAX_BYTES);
                prop_assert!(!is_common_password(&raw));
            }
        }
    }
}
