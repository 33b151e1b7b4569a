//! Unit tests of key loading, thumbprints, the JWK set and generation.

use super::*;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// The public half of the private key at `path`, as an SPKI PEM.
fn public_pem_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("the key");
    let (label, der) = pkcs8::der::pem::decode_vec(text.as_bytes()).expect("PEM");
    assert_eq!(label, "PRIVATE KEY");
    use pkcs8::EncodePublicKey;
    let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).expect("PKCS#8");
    if info.algorithm.oid == ED25519_OID {
        ed25519_dalek::SigningKey::from_pkcs8_der(&der)
            .expect("Ed25519")
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI")
    } else {
        p256::SecretKey::from_pkcs8_der(&der)
            .expect("P-256")
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI")
    }
}

#[test]
fn the_rfc_7638_example_has_its_published_thumbprint() {
    // RFC 7638 §3.1.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let key = PublicKey::Rsa {
        n: URL_SAFE_NO_PAD.decode(n).expect("n"),
        e: URL_SAFE_NO_PAD.decode("AQAB").expect("e"),
    };
    assert_eq!(
        key.thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn thumbprints_agree_with_the_jwt_library_for_every_algorithm() {
    use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
    for algorithm in [
        KeyAlgorithm::EdDsa,
        KeyAlgorithm::Es256,
        KeyAlgorithm::Rs256,
    ] {
        let dir = dir();
        let made = generate(algorithm, dir.path()).expect("a key");
        let keys = KeySet::load(dir.path(), algorithm).expect("loads");
        assert_eq!(keys.signing_kid(), made.kid);
        let jwk: Jwk = serde_json::from_value(keys.jwks()["keys"][0].clone()).expect("a JWK");
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint"),
            made.kid,
            "{algorithm:?}"
        );
    }
}

#[test]
fn generated_keys_are_private_files_that_sign_and_verify() {
    let dir = dir();
    let made = generate(KeyAlgorithm::EdDsa, &dir.path().join("new")).expect("a key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&made.path)
        .expect("file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(dir.path().join("new"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let text = std::fs::read_to_string(&made.path).expect("text");
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");

    let keys = KeySet::load(&dir.path().join("new"), KeyAlgorithm::EdDsa).expect("loads");
    let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
    header.kid = Some(keys.signing_kid().to_owned());
    let claims = json!({ "sub": "1", "exp": 4_000_000_000u64 });
    let token = jsonwebtoken::encode(&header, &claims, keys.encoding_key()).expect("signs");
    let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    let key = keys.decoding_key(&made.kid).expect("its own kid");
    jsonwebtoken::decode::<Value>(&token, key, &validation).expect("verifies");
}

#[test]
fn the_newest_private_key_signs_and_every_key_verifies() {
    let dir = dir();
    let old = generate(KeyAlgorithm::Es256, dir.path()).expect("old");
    // Another second, so the names sort too.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let new = generate(KeyAlgorithm::Es256, dir.path()).expect("new");
    // A public-only key (of a third private key kept elsewhere) verifies but never signs.
    let elsewhere = self::dir();
    let third = generate(KeyAlgorithm::Es256, elsewhere.path()).expect("third");
    std::fs::write(dir.path().join("zz-public.pem"), public_pem_of(&third.path)).expect("write");

    let keys = KeySet::load(dir.path(), KeyAlgorithm::Es256).expect("loads");
    assert_eq!(keys.signing_kid(), new.kid);
    let kids: Vec<&str> = keys.kids().collect();
    assert_eq!(kids.len(), 3);
    assert_eq!(kids[0], new.kid);
    for kid in [&old.kid, &new.kid, &third.kid] {
        assert!(keys.decoding_key(kid).is_some(), "{kid}");
    }
    assert!(keys.decoding_key("not-ours").is_none());
    let jwks = keys.jwks();
    assert_eq!(jwks["keys"][0]["kid"], new.kid.as_str());
    for jwk in jwks["keys"].as_array().expect("keys") {
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], "ES256");
        assert!(jwk.get("d").is_none(), "no private part: {jwk}");
    }
}

#[test]
fn a_public_key_alone_cannot_sign() {
    let dir = dir();
    let elsewhere = self::dir();
    let key = generate(KeyAlgorithm::EdDsa, elsewhere.path()).expect("a key");
    std::fs::write(dir.path().join("only.pem"), public_pem_of(&key.path)).expect("write");
    let err = KeySet::load(dir.path(), KeyAlgorithm::EdDsa).expect_err("no signer");
    assert!(
        format!("{err:#}").contains("holds no private key"),
        "{err:#}"
    );
    let empty = self::dir();
    let err = KeySet::load(empty.path(), KeyAlgorithm::EdDsa).expect_err("empty");
    assert!(
        format!("{err:#}").contains("cerego keys generate"),
        "{err:#}"
    );
}

#[test]
fn a_key_for_another_algorithm_or_not_a_key_is_refused_naming_the_file() {
    let dir = dir();
    generate(KeyAlgorithm::EdDsa, dir.path()).expect("a key");
    let err = KeySet::load(dir.path(), KeyAlgorithm::Es256).expect_err("wrong algorithm");
    let message = format!("{err:#}");
    assert!(
        message.contains(".pem") && message.contains("Ed25519"),
        "{message}"
    );

    let bad = self::dir();
    std::fs::write(bad.path().join("junk.pem"), "hello").expect("write");
    let err = KeySet::load(bad.path(), KeyAlgorithm::EdDsa).expect_err("junk");
    assert!(format!("{err:#}").contains("junk.pem"), "{err:#}");

    let sec1 = self::dir();
    std::fs::write(
        sec1.path().join("ec.pem"),
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .expect("write");
    let err = KeySet::load(sec1.path(), KeyAlgorithm::Es256).expect_err("SEC1");
    assert!(
        format!("{err:#}").contains("openssl pkcs8 -topk8"),
        "{err:#}"
    );
}

#[test]
fn other_files_and_hidden_ones_are_skipped() {
    let dir = dir();
    let key = generate(KeyAlgorithm::EdDsa, dir.path()).expect("a key");
    std::fs::write(dir.path().join("README"), "not a key").expect("write");
    std::fs::write(dir.path().join(".hidden.pem"), "not a key").expect("write");
    std::fs::create_dir(dir.path().join("..data")).expect("dir");
    let keys = KeySet::load(dir.path(), KeyAlgorithm::EdDsa).expect("loads");
    assert_eq!(keys.kids().collect::<Vec<_>>(), [key.kid.as_str()]);
}

#[test]
fn generated_keys_are_read_by_openssl() {
    // An independent reader of PKCS#8 (OpenSSL 3.0 refuses the v2 form of Ed25519 keys).
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "CI is set but openssl is missing"
        );
        eprintln!("SKIPPED: openssl is missing");
        return;
    }
    for algorithm in [
        KeyAlgorithm::EdDsa,
        KeyAlgorithm::Es256,
        KeyAlgorithm::Rs256,
    ] {
        let dir = dir();
        let key = generate(algorithm, dir.path()).expect("a key");
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key.path)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{algorithm:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The public half OpenSSL derives is the same key.
        std::fs::write(dir.path().join("public.pem"), &out.stdout).expect("write");
        std::fs::remove_file(&key.path).expect("remove the private key");
        let elsewhere = self::dir();
        let signer = generate(algorithm, elsewhere.path()).expect("a signer");
        std::fs::copy(&signer.path, dir.path().join("signer.pem")).expect("copy");
        let keys = KeySet::load(dir.path(), algorithm).expect("loads");
        assert!(keys.decoding_key(&key.kid).is_some(), "{algorithm:?}");
    }
}
