//! [`Email`]: a syntactically valid e-mail address in one canonical form, so two spellings that
//! look alike (or are the same text encoded differently) can never become two accounts.
//!
//! The canonical form, in the order it is reached:
//! 1. white space around the address is trimmed; white space, control characters, invisible
//!    characters (Default_Ignorable_Code_Point and General Category Cf: zero-width space and
//!    joiner, soft hyphen, byte-order mark) and bidirectional controls inside are refused, not
//!    dropped, because a client that sends them is not sending the address its user sees;
//! 2. NFKC normalisation with full Unicode case folding, repeated until stable (the
//!    NFKC_Casefold closure): fullwidth `ＡＤＡ`, decomposed `a\u{301}` and upper case all fold to
//!    one spelling;
//! 3. the domain goes through IDNA (UTS #46, hostname rules, DNS lengths) and is kept as
//!    A-labels (`xn--…`), the form every mail server accepts;
//! 4. the local part and each domain label must each be in one script, allowing only the
//!    combinations UTS #39 calls highly restrictive (Latin with Han and Kana or Hangul), so a
//!    Cyrillic `а` in a Latin name is refused.
//!
//! ICU4X (the Unicode Consortium's own Rust libraries, already used by `idna`) gives the
//! normalisation, case folding and character properties; `unicode-security` the UTS #39 script
//! sets. Nothing here says whether the mailbox exists: that is for a verification mail.

use std::fmt;

use icu_casemap::CaseMapper;
use icu_normalizer::ComposingNormalizer;
use icu_properties::props::{BidiControl, DefaultIgnorableCodePoint, GeneralCategory};
use icu_properties::{CodePointMapData, CodePointSetData};
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use unicode_security::{MixedScript, RestrictionLevel, RestrictionLevelDetection};

use super::FieldRule;

/// Longest address accepted, in characters of the canonical form (RFC 5321's limit on a
/// forward path).
pub const MAX_LEN: usize = 254;

/// An e-mail address in its canonical form (see the module documentation).
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
    /// The part before the `@` is longer than 64 bytes or not valid mailbox syntax (a dot at
    /// either end or two in a row, or a character such as `,;<>()[]\` outside quotes).
    #[error(
        "value is not a valid email address: the part before the @-sign is not valid (at most 64 \
         bytes of letters, digits and !#$%&'*+-/=?^_`{{|}}~, with single dots between them)"
    )]
    LocalPart,
    /// The domain has no dot, an empty label, or is not a valid (internationalised) host name.
    #[error("value is not a valid email address: the part after the @-sign is not a valid domain")]
    Domain,
    /// White space or a control character inside.
    #[error("value is not a valid email address: it contains spaces or control characters")]
    Whitespace,
    /// A right-to-left or other bidirectional control character.
    #[error(
        "value is not a valid email address: it contains a bidirectional control character \
         (such as a right-to-left override)"
    )]
    Bidi,
    /// An invisible or formatting character (ignorable or General Category Cf).
    #[error(
        "value is not a valid email address: it contains an invisible or formatting character \
         (such as a zero-width space or joiner, a soft hyphen or a byte-order mark)"
    )]
    Invisible,
    /// The local part mixes scripts.
    #[error(
        "value is not a valid email address: the part before the @-sign mixes scripts \
         (such as Latin and Cyrillic letters)"
    )]
    MixedScriptLocal,
    /// A domain label mixes scripts.
    #[error(
        "value is not a valid email address: a label of the domain mixes scripts \
         (such as Latin and Cyrillic letters)"
    )]
    MixedScriptDomain,
}

impl FieldRule for EmailError {
    fn code(&self) -> &'static str {
        "value_error.email"
    }
}

impl Email {
    /// Trims, checks and brings `raw` to its canonical form.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        // Normalising can shorten (composing marks) as well as lengthen, so the real limit is
        // checked on the result; this bound only spares work on absurd input.
        if trimmed.len() > MAX_LEN * 16 {
            return Err(EmailError::TooLong);
        }
        refuse_hidden(trimmed)?;
        let folded = nfkc_casefold(trimmed);
        // Folding never introduces these today; checking again keeps that a guarantee.
        refuse_hidden(&folded)?;
        let mut parts = folded.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EmailError::At);
        };
        if local.is_empty() {
            return Err(EmailError::EmptyLocal);
        }
        // What the mailer accepts as a mailbox: an address taken here must be one mail can be
        // sent to (verification, reset), or its owner could never recover the account.
        if !email_address::EmailAddress::is_valid_local_part(local) {
            return Err(EmailError::LocalPart);
        }
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return Err(EmailError::Domain);
        }
        if !one_script(local) {
            return Err(EmailError::MixedScriptLocal);
        }
        let domain = ascii_domain(domain)?;
        let address = format!("{local}@{domain}");
        if address.chars().count() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        Ok(Self(address))
    }

    /// The canonical address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Refuses white space, controls, bidirectional controls and invisible characters.
fn refuse_hidden(s: &str) -> Result<(), EmailError> {
    let bidi = CodePointSetData::new::<BidiControl>();
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let category = CodePointMapData::<GeneralCategory>::new();
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            return Err(EmailError::Whitespace);
        }
        if bidi.contains(c) {
            return Err(EmailError::Bidi);
        }
        if ignorable.contains(c) || category.get(c) == GeneralCategory::Format {
            return Err(EmailError::Invisible);
        }
    }
    Ok(())
}

/// NFKC with full case folding, repeated until nothing changes (NFKC_Casefold's closure; one
/// round is not always enough, e.g. a folded character can decompose compatibly again).
fn nfkc_casefold(s: &str) -> String {
    let nfkc = ComposingNormalizer::new_nfkc();
    let fold = CaseMapper::new();
    let mut current = nfkc.normalize(s).into_owned();
    // Each round either changes nothing or moves towards the fixed point; four is generous
    // (the Unicode data needs two at most).
    for _ in 0..4 {
        let next = nfkc.normalize(&fold.fold_string(&current)).into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// Whether `s` is in one script, or in a combination UTS #39 calls highly restrictive.
/// Characters of no particular script (digits, `.`, `+`, `-`) count for every script.
fn one_script(s: &str) -> bool {
    if s.is_single_script() {
        return true;
    }
    // The restriction level also refuses characters outside the identifier profile; ASCII
    // punctuation is common in local parts and belongs to every script, so leave it out.
    let letters: String = s.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    letters
        .as_str()
        .check_restriction_level(RestrictionLevel::HighlyRestrictive)
}

/// The domain as A-labels, after UTS #46 processing with host-name rules; each label's Unicode
/// form must be in one script.
fn ascii_domain(domain: &str) -> Result<String, EmailError> {
    let uts46 = Uts46::new();
    let ascii = uts46
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::Check,
            DnsLength::Verify,
        )
        .map_err(|_| EmailError::Domain)?;
    // Read the labels back as Unicode, so `xn--` labels sent as such are checked too.
    let (unicode, checked) =
        uts46.to_unicode(ascii.as_bytes(), AsciiDenyList::STD3, Hyphens::Check);
    checked.map_err(|_| EmailError::Domain)?;
    if !unicode.split('.').all(one_script) {
        return Err(EmailError::MixedScriptDomain);
    }
    Ok(ascii.into_owned())
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
mod tests;
