//! Unit and property tests of [`Email`]: the canonical form, each refusal, and over generated
//! Unicode: idempotence, folding-equivalent spellings, no hidden character surviving.

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
    // A domain of `len` characters: labels of at most 63, ending in `.com`.
    let domain = |len: usize| {
        let mut labels = Vec::new();
        let mut left = len - 4;
        while left > 0 {
            let label = left.min(63);
            labels.push("d".repeat(label));
            left -= label;
            left = left.saturating_sub(1);
        }
        let domain = format!("{}.com", labels.join("."));
        assert_eq!(domain.len(), len, "{domain}");
        domain
    };
    let local = "a".repeat(64);
    let at_limit = format!("{local}@{}", domain(MAX_LEN - 65));
    assert!(Email::parse(&at_limit).is_ok());
    let over = format!("{local}@{}", domain(MAX_LEN - 64));
    assert_eq!(Email::parse(&over), Err(EmailError::TooLong));
    // Counted on the canonical form: 32 decomposed letters are 64 characters as sent, 32 once
    // composed.
    let decomposed = format!("{}@{}", "a\u{301}".repeat(32), domain(MAX_LEN - 40));
    assert!(decomposed.chars().count() > MAX_LEN);
    assert!(Email::parse(&decomposed).is_ok());
    let huge = "a".repeat(MAX_LEN * 16 + 1);
    assert_eq!(Email::parse(&huge), Err(EmailError::TooLong));
}

#[test]
fn the_part_before_the_at_sign_must_be_a_mailbox_the_mailer_accepts() {
    for bad in [
        "a..b@example.com",
        ".ada@example.com",
        "ada.@example.com",
        "a,b@example.com",
        "a;b@example.com",
        "a(b)@example.com",
        "a[b]@example.com",
        "a\\b@example.com",
    ] {
        assert_eq!(Email::parse(bad), Err(EmailError::LocalPart), "{bad}");
    }
    let long = format!("{}@example.com", "a".repeat(65));
    assert_eq!(Email::parse(&long), Err(EmailError::LocalPart));
    for good in [
        "a.b@example.com",
        "ada+tag@example.com",
        "o'brien@example.com",
        "x!#$%&*/=?^_`{|}~-y@example.com",
        "jos\u{e9}@example.com",
    ] {
        let email = Email::parse(good).expect(good);
        let (local, domain) = email.as_str().split_once('@').expect("an @");
        assert!(lettre::Address::new(local, domain).is_ok(), "{good}");
    }
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
        local in "[a-zA-Z0-9_%+-]{1,20}(\\.[a-zA-Z0-9_%+-]{1,19})?",
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
    fn canonically_equivalent_or_upper_cased_spellings_give_the_same_address_or_both_fail(
        raw in "[a-zA-Zａ-ｚＡ-Ｚáé\u{301}\u{308}ßσΣςаБ\u{200B}\u{FEFF}.+-]{1,15}@[a-zA-ZüÜ\u{308}аБ-]{1,12}\\.example",
    ) {
        let nfd = icu_normalizer::DecomposingNormalizer::new_nfd().normalize(&raw).into_owned();
        let parsed = Email::parse(&raw);
        for other in [nfd, raw.to_uppercase()] {
            match (&parsed, Email::parse(&other)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, &b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "{raw:?} gave {a:?} but {other:?} gave {b:?}"),
            }
        }
        if let Ok(email) = parsed {
            prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
            prop_assert!(!email.as_str().chars().any(hidden_char), "{:?}", email);
            prop_assert!(email.as_str().split('@').nth(1).is_some_and(|d| d.is_ascii()));
        }
    }

    #[test]
    fn strings_without_an_at_sign_never_parse(raw in "[^@＠﹫]{0,80}") {
        prop_assert!(Email::parse(&raw).is_err());
    }
}
