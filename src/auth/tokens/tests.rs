//! Unit tests of token issuing and of every refusal of the strict verifier.

use super::*;

fn settings() -> JwtSettings {
    JwtSettings {
        secret: None,
        signing: crate::config::Signing::Secret(jsonwebtoken::Algorithm::HS256),
        access_token_ttl: Duration::from_secs(1800),
        issuer: None,
        audience: None,
        accept_legacy_until: None,
    }
}

fn secret() -> SecretString {
    SecretString::from("0123456789abcdef0123456789abcdef")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn an_issued_token_verifies_to_its_user_and_session() {
    let keys = TokenKeys::new(&settings(), &secret()).expect("keys");
    let token = keys
        .issue(UserId::new(42), SessionId::new(7), "j", now(), now(), &[])
        .expect("sign");
    assert_eq!(token.expires_in, 1800);
    let claims = keys
        .verify(token.token.expose_secret(), now())
        .expect("valid");
    assert_eq!(claims.user, UserId::new(42));
    assert_eq!(claims.session, SessionId::new(7));
}

#[test]
fn issuing_is_deterministic() {
    let keys = TokenKeys::new(&settings(), &secret()).expect("keys");
    let at = now();
    let a = keys
        .issue(UserId::new(1), SessionId::new(2), "j", at, at, &[])
        .expect("sign");
    let b = keys
        .issue(UserId::new(1), SessionId::new(2), "j", at, at, &[])
        .expect("sign");
    assert_eq!(a.token.expose_secret(), b.token.expose_secret());
}

#[test]
fn another_key_or_issuer_is_refused() {
    let keys = TokenKeys::new(&settings(), &secret()).expect("keys");
    let other = TokenKeys::new(&settings(), &SecretString::from("x".repeat(32))).expect("keys");
    let (user, session) = (UserId::new(1), SessionId::new(1));
    let token = other
        .issue(user, session, "j", now(), now(), &[])
        .expect("sign");
    assert!(keys.verify(token.token.expose_secret(), now()).is_err());

    let mut with_iss = settings();
    with_iss.issuer = Some("cerego".into());
    with_iss.audience = Some("learners".into());
    let strict = TokenKeys::new(&with_iss, &secret()).expect("keys");
    let plain = keys
        .issue(user, session, "j", now(), now(), &[])
        .expect("sign");
    assert!(strict.verify(plain.token.expose_secret(), now()).is_err());
    let good = strict
        .issue(user, session, "j", now(), now(), &[])
        .expect("sign");
    assert!(strict.verify(good.token.expose_secret(), now()).is_ok());
}

#[test]
fn refresh_tokens_are_prefixed_random_and_rotate_deterministically() {
    let keys = TokenKeys::new(&settings(), &secret()).expect("keys");
    let a = RefreshToken::generate().expect("random");
    let b = RefreshToken::generate().expect("random");
    assert!(a.expose().starts_with(REFRESH_PREFIX));
    assert_eq!(a.expose().len(), REFRESH_PREFIX.len() + 43);
    assert_ne!(a.expose(), b.expose());
    assert_eq!(keys.successor(&a).expose(), keys.successor(&a).expose());
    assert_ne!(keys.successor(&a).expose(), a.expose());
    assert!(RefreshToken::presented(a.expose()).is_some());
    assert!(RefreshToken::presented("eyJhbGciOiJIUzI1NiJ9.e30.x").is_none());
    assert!(!format!("{a:?}").contains(a.expose()));
}

/// A token with `header` and `claims`, signed with the test secret (HS256) by hand, so the
/// header can hold anything.
fn forge(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = hmac_sha256(secret().expose_secret().as_bytes(), message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn claims_at(now: i64) -> serde_json::Value {
    serde_json::json!({ "sub": "42", "sid": "7", "jti": "j", "iat": now, "exp": now + 600 })
}

fn hs256() -> serde_json::Value {
    serde_json::json!({ "alg": "HS256", "typ": "JWT" })
}

fn rejection(token: &str, now: i64) -> Option<TokenRejection> {
    let keys = TokenKeys::new(&settings(), &secret()).expect("keys");
    keys.verify(token, now).err().map(|err| err.kind)
}

#[test]
fn a_hand_signed_token_is_accepted_so_the_refusals_below_mean_something() {
    let at = now();
    assert_eq!(rejection(&forge(&hs256(), &claims_at(at)), at), None);
    let no_typ = serde_json::json!({ "alg": "HS256" });
    assert_eq!(rejection(&forge(&no_typ, &claims_at(at)), at), None);
}

#[test]
fn expiry_is_judged_by_the_given_clock_with_the_leeway() {
    let keys = TokenKeys::new(&settings(), &secret()).expect("keys");
    let at = 1_000_000_000; // 2001: the system clock would call this long expired
    let token = keys
        .issue(UserId::new(1), SessionId::new(1), "j", at, at, &[])
        .expect("sign");
    let token = token.token.expose_secret();
    let exp = at + 1800;
    assert!(keys.verify(token, at).is_ok());
    assert!(
        keys.verify(token, exp + LEEWAY_SECS).is_ok(),
        "within the leeway"
    );
    let late = keys
        .verify(token, exp + LEEWAY_SECS + 1)
        .expect_err("expired");
    assert_eq!(late.kind, TokenRejection::Expired);
}

#[test]
fn a_future_nbf_is_refused_beyond_the_leeway() {
    let at = now();
    let mut claims = claims_at(at);
    claims["nbf"] = (at + 3600).into();
    assert_eq!(
        rejection(&forge(&hs256(), &claims), at),
        Some(TokenRejection::Invalid)
    );
    claims["nbf"] = (at + LEEWAY_SECS).into();
    assert_eq!(
        rejection(&forge(&hs256(), &claims), at),
        None,
        "within the leeway"
    );
    claims["nbf"] = "soon".into();
    assert_eq!(
        rejection(&forge(&hs256(), &claims), at),
        Some(TokenRejection::Invalid)
    );
}

#[test]
fn a_future_iat_is_refused_beyond_the_leeway() {
    let at = now();
    let mut claims = claims_at(at);
    claims["iat"] = (at + 86_400).into();
    assert_eq!(
        rejection(&forge(&hs256(), &claims), at),
        Some(TokenRejection::Invalid)
    );
    claims["iat"] = (at + LEEWAY_SECS).into();
    assert_eq!(
        rejection(&forge(&hs256(), &claims), at),
        None,
        "within the leeway"
    );
    let mut no_iat = claims_at(at);
    no_iat.as_object_mut().expect("object").remove("iat");
    assert_eq!(
        rejection(&forge(&hs256(), &no_iat), at),
        Some(TokenRejection::Invalid)
    );
}

#[test]
fn exp_is_still_required() {
    let at = now();
    let mut claims = claims_at(at);
    claims.as_object_mut().expect("object").remove("exp");
    assert_eq!(
        rejection(&forge(&hs256(), &claims), at),
        Some(TokenRejection::Invalid)
    );
}

#[test]
fn crit_and_key_selecting_header_members_are_refused() {
    let at = now();
    let extra = [
        ("crit", serde_json::json!(["exp"])),
        ("kid", "../../dev/null".into()),
        ("jku", "https://attacker.example/jwks.json".into()),
        ("x5u", "https://attacker.example/cert.pem".into()),
        ("jwk", serde_json::json!({ "kty": "oct", "k": "AA" })),
        ("x5c", serde_json::json!(["MIIB"])),
        ("b64", false.into()),
    ];
    for (name, value) in extra {
        let mut header = hs256();
        header[name] = value;
        let token = forge(&header, &claims_at(at));
        assert_eq!(
            rejection(&token, at),
            Some(TokenRejection::Invalid),
            "{name}"
        );
    }
    let odd_typ = serde_json::json!({ "alg": "HS256", "typ": "at+jwt" });
    assert_eq!(
        rejection(&forge(&odd_typ, &claims_at(at)), at),
        Some(TokenRejection::Invalid)
    );
    // The library's own header type would take these too: built with it, still refused.
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.crit = Some(vec!["exp".into()]);
    let token = jsonwebtoken::encode(
        &header,
        &claims_at(at),
        &EncodingKey::from_secret(secret().expose_secret().as_bytes()),
    )
    .expect("sign");
    assert_eq!(rejection(&token, at), Some(TokenRejection::Invalid));
}

#[test]
fn only_canonical_decimal_ids_are_accepted() {
    let at = now();
    for bad in [
        "+1",
        "01",
        "-1",
        "0",
        "",
        " 1",
        "1 ",
        "1.0",
        "1e3",
        "٣",
        "99999999999999999999",
    ] {
        for claim in ["sub", "sid"] {
            let mut claims = claims_at(at);
            claims[claim] = bad.into();
            let token = forge(&hs256(), &claims);
            assert_eq!(
                rejection(&token, at),
                Some(TokenRejection::Invalid),
                "{claim} {bad:?}"
            );
        }
    }
    let mut numeric = claims_at(at);
    numeric["sub"] = 42.into();
    assert_eq!(
        rejection(&forge(&hs256(), &numeric), at),
        Some(TokenRejection::Invalid)
    );
    assert_eq!(canonical_id("9223372036854775807"), Some(i64::MAX));
    assert_eq!(canonical_id("10"), Some(10));
}

#[test]
fn oversized_and_malformed_tokens_are_refused() {
    let at = now();
    let big = forge(
        &hs256(),
        &serde_json::json!({
            "sub": "42", "sid": "7", "jti": "x".repeat(100_000), "iat": at, "exp": at + 600
        }),
    );
    assert_eq!(rejection(&big, at), Some(TokenRejection::Invalid));
    let good = forge(&hs256(), &claims_at(at));
    for bad in ["", "a.b", "a.b.c.d", "!!!.e30.", &format!("{good}.x")] {
        assert_eq!(rejection(bad, at), Some(TokenRejection::Invalid), "{bad}");
    }
}

#[test]
fn the_roles_claim_lists_the_roles_given_and_verifying_ignores_it() {
    let keys = TokenKeys::new(&settings(), &secret()).expect("keys");
    let roles = [RoleName::admin(), RoleName::user()];
    let token = keys
        .issue(UserId::new(3), SessionId::new(4), "j", now(), now(), &roles)
        .expect("sign");
    let payload = token
        .token
        .expose_secret()
        .split('.')
        .nth(1)
        .expect("a payload");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON");
    assert_eq!(claims["roles"], serde_json::json!(["admin", "user"]));
    let none = keys
        .issue(UserId::new(3), SessionId::new(4), "j", now(), now(), &[])
        .expect("sign");
    let payload = none
        .token
        .expose_secret()
        .split('.')
        .nth(1)
        .map(str::to_owned);
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(payload.expect("a payload"))
            .expect("base64url"),
    )
    .expect("JSON");
    assert_eq!(claims["roles"], serde_json::json!([]), "always present");
    // What the claim says grants nothing: `verify` gives the user and session only.
    let claims = keys
        .verify(token.token.expose_secret(), now())
        .expect("valid");
    assert_eq!(
        (claims.user, claims.session),
        (UserId::new(3), SessionId::new(4))
    );
}
