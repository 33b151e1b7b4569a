//! [`Email`]: a syntactically valid, normalised e-mail address.

use std::fmt;

use super::FieldRule;

/// Longest address accepted (RFC 5321's limit on a forward path).
pub const MAX_LEN: usize = 254;

/// An e-mail address, trimmed and lower-cased.
///
/// The check is deliberately syntactic (one `@`, a non-empty local part, a dotted domain with
/// no empty labels, no white space or control characters); whether the mailbox exists is for a
/// verification mail to find out, not a parser.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// Why a string is not an [`Email`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Nothing left after trimming.
    #[error("value is not a valid email address: it is empty")]
    Empty,
    /// Longer than [`MAX_LEN`].
    #[error("value is not a valid email address: it is longer than 254 characters")]
    TooLong,
    /// Not exactly one `@`.
    #[error("value is not a valid email address: it must have exactly one @-sign")]
    At,
    /// Nothing before the `@`.
    #[error("value is not a valid email address: there must be something before the @-sign")]
    EmptyLocal,
    /// The domain has no dot, or an empty label.
    #[error("value is not a valid email address: the part after the @-sign is not a valid domain")]
    Domain,
    /// White space or a control character inside.
    #[error("value is not a valid email address: it contains spaces or control characters")]
    Whitespace,
}

impl FieldRule for EmailError {
    fn code(&self) -> &'static str {
        "value_error.email"
    }
}

impl Email {
    /// Trims, lower-cases and checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::Whitespace);
        }
        let normalised = trimmed.to_lowercase();
        if normalised.chars().count() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        let mut parts = normalised.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EmailError::At);
        };
        if local.is_empty() {
            return Err(EmailError::EmptyLocal);
        }
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return Err(EmailError::Domain);
        }
        Ok(Self(normalised))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_addresses_are_trimmed_and_lower_cased() {
        let email = Email::parse("  Ada.Lovelace+tag@Example.CO.uk ").expect("valid");
        assert_eq!(email.as_str(), "ada.lovelace+tag@example.co.uk");
    }

    #[test]
    fn each_rule_has_its_own_error() {
        assert_eq!(Email::parse("   "), Err(EmailError::Empty));
        assert_eq!(Email::parse("ada.example.com"), Err(EmailError::At));
        assert_eq!(Email::parse("a@b@example.com"), Err(EmailError::At));
        assert_eq!(Email::parse("@example.com"), Err(EmailError::EmptyLocal));
        assert_eq!(Email::parse("ada@localhost"), Err(EmailError::Domain));
        assert_eq!(Email::parse("ada@example."), Err(EmailError::Domain));
        assert_eq!(Email::parse("ada@.example.com"), Err(EmailError::Domain));
        assert_eq!(Email::parse("ada@exa..mple.com"), Err(EmailError::Domain));
        assert_eq!(
            Email::parse("ada lovelace@example.com"),
            Err(EmailError::Whitespace)
        );
        assert_eq!(
            Email::parse("ada\u{0}@example.com"),
            Err(EmailError::Whitespace)
        );
    }

    #[test]
    fn length_limit_is_254_characters() {
        let at_limit = format!("{}@example.com", "a".repeat(MAX_LEN - 12));
        assert!(Email::parse(&at_limit).is_ok());
        let over = format!("{}@example.com", "a".repeat(MAX_LEN - 11));
        assert_eq!(Email::parse(&over), Err(EmailError::TooLong));
    }

    proptest! {
        #[test]
        fn generated_valid_addresses_parse(
            local in "[a-zA-Z0-9._%+-]{1,40}",
            labels in proptest::collection::vec("[a-zA-Z0-9-]{1,20}", 2..4),
        ) {
            let raw = format!("{local}@{}", labels.join("."));
            let email = Email::parse(&raw).expect("generated address is valid");
            prop_assert_eq!(email.as_str(), raw.to_lowercase());
        }

        #[test]
        fn parsing_is_idempotent(raw in "\\PC{0,80}") {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
                prop_assert_eq!(email.as_str().matches('@').count(), 1);
                prop_assert!(!email.as_str().chars().any(char::is_whitespace));
            }
        }

        #[test]
        fn strings_without_an_at_sign_never_parse(raw in "[^@]{0,80}") {
            prop_assert!(Email::parse(&raw).is_err());
        }
    }
}
