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
        assert_eq!(Email::parse("ada@exa_mple.com"), Err(EmailError::Domain));
        assert_eq!(Email::parse("ada@-example.com"), Err(EmailError::Domain));
        let long_label = format!("ada@{}.com", "a".repeat(64));
        assert_eq!(Email::parse(&long_label), Err(EmailError::Domain));
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
    fn invisible_and_bidi_characters_are_refused_wherever_they_are() {
        for hidden in [
            "\u{200B}", "\u{200D}", "\u{00AD}", "\u{FEFF}", "\u{2060}", "\u{180E}",
        ] {
            for raw in [
                format!("uada{hidden}@example.com"),
                format!("{hidden}uada@example.com"),
                format!("uada@exam{hidden}ple.com"),
            ] {
                assert_eq!(Email::parse(&raw), Err(EmailError::Invisible), "{raw:?}");
            }
        }
        for bidi in ["\u{202E}", "\u{202A}", "\u{200F}", "\u{2066}", "\u{061C}"] {
            let raw = format!("{bidi}uada@example.com");
            assert_eq!(Email::parse(&raw), Err(EmailError::Bidi), "{raw:?}");
        }
    }

    #[test]
    fn fullwidth_decomposed_and_upper_case_spellings_fold_to_one() {
        let plain = Email::parse("uáda@example.com").expect("valid");
        for other in [
            "ua\u{301}da@example.com",
            "UÁDA@EXAMPLE.COM",
            "UA\u{301}DA@example.com",
            "ｕáｄａ@ｅｘａｍｐｌｅ．ｃｏｍ",
        ] {
            assert_eq!(Email::parse(other), Ok(plain.clone()), "{other:?}");
        }
        assert_eq!(
            Email::parse("uＡＤＡ@example.com").expect("valid").as_str(),
            "uada@example.com"
        );
        // Full folding, not just lower-casing.
        assert_eq!(
            Email::parse("STRAẞE@example.com").expect("valid").as_str(),
            "strasse@example.com"
        );
    }

    #[test]
    fn internationalised_domains_are_kept_as_a_labels() {
        let email = Email::parse("Ada@Bücher.Example").expect("valid");
        assert_eq!(email.as_str(), "ada@xn--bcher-kva.example");
        assert_eq!(Email::parse("ada@xn--bcher-kva.example"), Ok(email));
    }

    #[test]
    fn mixed_scripts_are_refused_in_the_local_part_and_in_domain_labels() {
        // U+0430 CYRILLIC SMALL LETTER A among Latin letters.
        assert_eq!(
            Email::parse("u\u{430}da@example.com"),
            Err(EmailError::MixedScriptLocal)
        );
        assert_eq!(
            Email::parse("uada@ex\u{430}mple.com"),
            Err(EmailError::MixedScriptDomain)
        );
        // The same label sent already encoded is read back and refused too.
        let encoded = idna::domain_to_ascii("ex\u{430}mple.com").expect("encodes");
        assert_eq!(
            Email::parse(&format!("uada@{encoded}")),
            Err(EmailError::MixedScriptDomain)
        );
        // One script per part is fine, and so are the combinations UTS #39 allows.
        assert!(Email::parse("иван@пример.рф").is_ok());
        assert!(Email::parse("ivan@пример.рф").is_ok());
        assert!(Email::parse("tanaka田中たなか+1@example.jp").is_ok());
    }

    #[test]
    fn length_limit_is_254_characters() {
        let at_limit = format!("{}@example.com", "a".repeat(MAX_LEN - 12));
        assert!(Email::parse(&at_limit).is_ok());
        let over = format!("{}@example.com", "a".repeat(MAX_LEN - 11));
        assert_eq!(Email::parse(&over), Err(EmailError::TooLong));
    }

    /// Characters that fold together: each pair is (a character, another spelling of it).
    const FOLDS: &[(&str, &str)] = &[
        ("a", "A"),
        ("a", "ａ"),
        ("a", "Ａ"),
        ("á", "a\u{301}"),
        ("á", "Á"),
        ("á", "A\u{301}"),
        ("ss", "ß"),
        ("ss", "ẞ"),
        ("σ", "Σ"),
        ("σ", "ς"),
        ("fi", "ﬁ"),
        ("1", "１"),
        ("k", "\u{212A}"),
    ];

    fn hidden_char(c: char) -> bool {
        CodePointSetData::new::<BidiControl>().contains(c)
            || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
            || CodePointMapData::<GeneralCategory>::new().get(c) == GeneralCategory::Format
            || c.is_whitespace()
            || c.is_control()
    }

    proptest! {
        #[test]
        fn generated_valid_addresses_parse(
            local in "[a-zA-Z0-9._%+-]{1,40}",
            labels in proptest::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,18}[a-zA-Z0-9])?", 2..4),
        ) {
            prop_assume!(!labels.iter().any(|l| l.get(2..4) == Some("--")));
            let raw = format!("{local}@{}", labels.join("."));
            let email = Email::parse(&raw).expect("generated address is valid");
            prop_assert_eq!(email.as_str(), raw.to_lowercase());
        }

        #[test]
        fn parsing_is_idempotent(raw in "\\PC{0,80}") {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
                prop_assert_eq!(email.as_str().matches('@').count(), 1);
            }
        }

        #[test]
        fn parsing_generated_unicode_addresses_is_idempotent(
            local in "\\PC{1,20}",
            label in "\\PC{1,20}",
        ) {
            if let Ok(email) = Email::parse(&format!("{local}@{label}.example")) {
                prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
            }
        }

        #[test]
        fn no_hidden_character_survives(raw in "(\\PC|[\u{200B}-\u{200F}\u{202A}-\u{202E}\u{2066}-\u{2069}\u{00AD}\u{FEFF}\u{034F}\u{180E}]|@|\\.){1,60}") {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert!(!email.as_str().chars().any(hidden_char), "{:?}", email);
                prop_assert!(!raw.trim().chars().any(hidden_char), "accepted {:?}", raw);
            }
        }

        #[test]
        fn folding_equivalent_spellings_give_the_same_address_or_both_fail(
            picks in proptest::collection::vec((0..FOLDS.len(), any::<bool>()), 1..12),
            domain_picks in proptest::collection::vec((0..FOLDS.len(), any::<bool>()), 1..8),
        ) {
            let spell = |picks: &[(usize, bool)], variant: bool| -> String {
                picks
                    .iter()
                    .map(|&(i, flip)| if flip == variant { FOLDS[i].1 } else { FOLDS[i].0 })
                    .collect()
            };
            let one = format!("{}@{}.example", spell(&picks, true), spell(&domain_picks, true));
            let other = format!("{}@{}.example", spell(&picks, false), spell(&domain_picks, false));
            match (Email::parse(&one), Email::parse(&other)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "{one:?} gave {a:?} but {other:?} gave {b:?}"),
            }
        }

        #[test]
        fn strings_without_an_at_sign_never_parse(raw in "[^@＠﹫]{0,80}") {
            prop_assert!(Email::parse(&raw).is_err());
        }
    }
}
