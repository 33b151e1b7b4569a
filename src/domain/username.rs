//! [`Username`]: a public handle, 3 to 32 characters of `A-Z a-z 0-9 _ . -`.

use std::fmt;

use super::FieldRule;

/// Fewest characters in a username.
pub const MIN_LEN: usize = 3;
/// Most characters in a username.
pub const MAX_LEN: usize = 32;

/// A username as the user typed it; uniqueness is case-insensitive, display keeps the case.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

/// Why a string is not a [`Username`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Fewer than [`MIN_LEN`] characters.
    #[error("String should have at least 3 characters")]
    TooShort,
    /// More than [`MAX_LEN`] characters.
    #[error("String should have at most 32 characters")]
    TooLong,
    /// A character outside the allowed set, or a first character that is not a letter or digit.
    #[error(
        "Username may contain only letters, digits, '_', '.' and '-', and must start with a letter or digit"
    )]
    Pattern,
}

impl FieldRule for UsernameError {
    fn code(&self) -> &'static str {
        match self {
            Self::TooShort => "string_too_short",
            Self::TooLong => "string_too_long",
            Self::Pattern => "string_pattern_mismatch",
        }
    }
}

impl Username {
    /// Checks `raw` as given (no trimming: a space is simply not allowed).
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if !raw.chars().all(allowed) {
            return Err(UsernameError::Pattern);
        }
        // All characters are ASCII from here, so bytes are characters.
        if raw.len() < MIN_LEN {
            return Err(UsernameError::TooShort);
        }
        if raw.len() > MAX_LEN {
            return Err(UsernameError::TooLong);
        }
        if !raw.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(UsernameError::Pattern);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The username as given at sign-up.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in [
            "ada",
            "Ada_Lovelace",
            "a.b-c",
            "0xdeadbeef",
            &"x".repeat(32),
        ] {
            assert_eq!(Username::parse(ok).expect(ok).as_str(), ok);
        }
    }

    #[test]
    fn rejects_each_rule() {
        assert_eq!(Username::parse("ab"), Err(UsernameError::TooShort));
        assert_eq!(
            Username::parse(&"x".repeat(33)),
            Err(UsernameError::TooLong)
        );
        assert_eq!(Username::parse("_ada"), Err(UsernameError::Pattern));
        assert_eq!(Username::parse(".ada"), Err(UsernameError::Pattern));
        assert_eq!(Username::parse("ada lovelace"), Err(UsernameError::Pattern));
        assert_eq!(Username::parse("ada@home"), Err(UsernameError::Pattern));
        assert_eq!(Username::parse("adé"), Err(UsernameError::Pattern));
        assert_eq!(Username::parse(""), Err(UsernameError::TooShort));
    }

    proptest! {
        #[test]
        fn generated_valid_usernames_parse(raw in "[A-Za-z0-9][A-Za-z0-9_.-]{2,31}") {
            let name = Username::parse(&raw).expect("valid");
            prop_assert_eq!(name.as_str(), raw.as_str());
        }

        #[test]
        fn parsed_usernames_never_contain_an_at_sign(raw in "\\PC{0,40}") {
            if let Ok(name) = Username::parse(&raw) {
                prop_assert!(!name.as_str().contains('@'));
                prop_assert!((MIN_LEN..=MAX_LEN).contains(&name.as_str().len()));
            }
        }
    }
}
