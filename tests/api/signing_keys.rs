//! Asymmetric signing (`JWT_ALGORITHM` EdDSA, ES256, RS256 with `JWT_KEYS_DIR`), from outside:
//! keys made by `cerego keys generate` and by `openssl genpkey`, tokens checked by the service and
//! by the `jsonwebtoken` crate holding nothing but the JWK the service publishes, forged tokens
//! refused, the discovery documents, key rotation through restarts on one database, and the
//! start-up refusals of unusable keys.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cerego::config::{Settings, Signing};
use hmac::{Hmac, Mac};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::db_tests;
use crate::helpers::{
    Backend, TEST_SECRET, TestApp, assert_detail, required, spawn_app, spawn_app_with,
};
use crate::me::{INVALID, assert_rejected_with};
use crate::process::command;

/// The asymmetric algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    EdDsa,
    Es256,
    Rs256,
}

impl Alg {
    /// The JOSE name, as `JWT_ALGORITHM` and `--algorithm` spell it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    pub(crate) fn algorithm(self) -> Algorithm {
        match self {
            Self::EdDsa => Algorithm::EdDSA,
            Self::Es256 => Algorithm::ES256,
            Self::Rs256 => Algorithm::RS256,
        }
    }

    /// `openssl genpkey` arguments for a key of this kind.
    fn genpkey_args(self) -> &'static [&'static str] {
        match self {
            Self::EdDsa => &["-algorithm", "ed25519"],
            Self::Es256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Self::Rs256 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        }
    }
}

/// Whether the `openssl` command is installed (skipped locally without it, a failure in CI).
fn openssl_installed() -> bool {
    let installed = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    required(installed, "the openssl command")
}

/// Runs `openssl args…`, asserting success; its standard output.
fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A new private key of `alg` at `path`, made by `openssl genpkey` (PKCS#8 PEM).
fn openssl_genpkey(alg: Alg, path: &Path) {
    let mut args = vec!["genpkey"];
    args.extend_from_slice(alg.genpkey_args());
    let path = path.to_str().expect("UTF-8 path");
    args.extend_from_slice(&["-out", path]);
    openssl(&args);
}

/// What `cerego args…` does with a clean environment (see `process::command`), waiting at most
/// a minute for it to exit.
pub(crate) fn run_cerego(args: &[&str], env: &[(&str, &str)]) -> Output {
    let cwd = tempfile::tempdir().expect("tempdir");
    let mut cmd = command(&cwd);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cerego");
    for _ in 0..600 {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    panic!(
        "cerego {args:?} did not exit within a minute: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `cerego keys generate --algorithm <alg> --out <dir>`: asserts exit 0 and the one line it
/// prints; the new file and the kid it printed.
pub(crate) fn keys_generate(alg: Alg, dir: &Path) -> (PathBuf, String) {
    let out = dir.to_str().expect("UTF-8 path");
    let output = run_cerego(
        &["keys", "generate", "--algorithm", alg.name(), "--out", out],
        &[],
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "keys generate: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .strip_suffix('\n')
        .filter(|line| !line.contains('\n'))
        .unwrap_or_else(|| panic!("one line: {stdout:?}"));
    let (path, kid) = line
        .strip_prefix("wrote ")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|rest| rest.rsplit_once(" (kid "))
        .unwrap_or_else(|| panic!("`wrote PATH (kid KID)`: {line:?}"));
    (PathBuf::from(path), kid.to_owned())
}

/// A port nobody listens on now, so an app's `PUBLIC_BASE_URL` can name its own address before
/// it starts. Chosen at random below the kernel's ephemeral range (32768 and up), so no client
/// socket of a parallel test takes it in the moment between this check and the app's bind.
pub(crate) fn free_port() -> u16 {
    for _ in 0..1000 {
        let random = u16::from_str_radix(&crate::helpers::random_hex(2), 16).expect("hex");
        let port = 20_000 + random % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// Signs with the keys of `dir` under `alg`.
pub(crate) fn with_keys(settings: &mut Settings, alg: Alg, dir: &Path) {
    settings.jwt.signing = Signing::KeysDir {
        algorithm: alg.algorithm(),
        dir: dir.to_owned(),
    };
}

/// Listens on a fixed free port that `PUBLIC_BASE_URL` names, so the discovery document's URLs
/// reach this very app.
pub(crate) fn at_own_url(settings: &mut Settings) {
    let port = free_port();
    settings.port = port;
    settings.public_base_url = format!("http://127.0.0.1:{port}");
}

/// Starts an app on a fresh `backend` database, signing with the keys of `dir`.
pub(crate) async fn spawn_signing(
    backend: Backend,
    alg: Alg,
    dir: &Path,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_with(backend, |settings| {
        with_keys(settings, alg, dir);
        tweak(settings);
    })
    .await
}

/// A JWT's header or payload (`part` 0 or 1), unverified.
pub(crate) fn jwt_part(token: &str, part: usize) -> Value {
    let segment = token.split('.').nth(part).expect("a JWT segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("JSON")
}

/// The `kid` of a token's header.
pub(crate) fn kid_of(token: &str) -> String {
    jwt_part(token, 0)["kid"]
        .as_str()
        .unwrap_or_else(|| panic!("no kid in {}", jwt_part(token, 0)))
        .to_owned()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// The RFC 7638 thumbprint of a public JWK, computed here from its required members.
fn thumbprint(jwk: &Value) -> String {
    let member = |name: &str| {
        jwk[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {jwk}"))
    };
    let canonical = match member("kty") {
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            member("crv"),
            member("x")
        ),
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            member("crv"),
            member("x"),
            member("y")
        ),
        "RSA" => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            member("e"),
            member("n")
        ),
        other => panic!("unexpected kty {other}"),
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The members a public JWK of `alg` may have: its key material, `kid`, `use`, `alg`.
fn public_members(alg: Alg) -> &'static [&'static str] {
    match alg {
        Alg::EdDsa => &["alg", "crv", "kid", "kty", "use", "x"],
        Alg::Es256 => &["alg", "crv", "kid", "kty", "use", "x", "y"],
        Alg::Rs256 => &["alg", "e", "kid", "kty", "n", "use"],
    }
}

/// `GET /.well-known/jwks.json`, asserting a cacheable JSON answer of public keys only, each
/// with its RFC 7638 thumbprint as `kid`; the JWK set.
pub(crate) async fn published_jwks(app: &TestApp, alg: Alg) -> Value {
    let response = app.get("/.well-known/jwks.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_max_age(response.headers());
    let set: Value = response.json().await.expect("json");
    let keys = set["keys"].as_array().expect("keys");
    assert!(!keys.is_empty(), "{set}");
    for jwk in keys {
        let mut members: Vec<&str> = jwk
            .as_object()
            .expect("a JWK is an object")
            .keys()
            .map(String::as_str)
            .collect();
        members.sort_unstable();
        // No "d" (nor "p", "q", "dp", …): nothing private is ever published.
        assert_eq!(members, public_members(alg), "{jwk}");
        assert_eq!(jwk["alg"], alg.name());
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], json!(thumbprint(jwk)), "kid is the thumbprint");
    }
    set
}

/// The kids of a JWK set, in order.
pub(crate) fn kids(set: &Value) -> Vec<String> {
    set["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|jwk| jwk["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// Asserts `Cache-Control: public, max-age=N` with N at least a minute and at most an hour
/// (shorter than any sensible rotation overlap).
fn assert_max_age(headers: &reqwest::header::HeaderMap) {
    let cache = headers["cache-control"].to_str().expect("ASCII");
    let max_age: u64 = cache
        .split(',')
        .find_map(|part| part.trim().strip_prefix("max-age="))
        .unwrap_or_else(|| panic!("no max-age in {cache}"))
        .parse()
        .expect("seconds");
    assert!((60..=3600).contains(&max_age), "{cache}");
    assert!(cache.contains("public"), "{cache}");
}

/// Verifies `token` with the `jsonwebtoken` crate holding nothing but the JWK of `set` its `kid`
/// names; the claims.
pub(crate) fn verify_with_jwks(token: &str, set: &Value, alg: Alg) -> Value {
    let set: JwkSet = serde_json::from_value(set.clone()).expect("a JWK set the crate reads");
    let jwk = set
        .find(&kid_of(token))
        .expect("the token's kid is in the set");
    let key = DecodingKey::from_jwk(jwk).expect("a JWK the crate can verify with");
    let mut validation = Validation::new(alg.algorithm());
    validation.set_required_spec_claims(&["exp", "iat", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap_or_else(|err| panic!("the token verifies with the published JWK: {err}"))
        .claims
}

/// The private key in the PKCS#8 PEM file at `path`, to sign with as `jsonwebtoken` wants it.
pub(crate) fn signer(path: &Path, alg: Alg) -> EncodingKey {
    use pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(path).expect("read the key");
    let (label, der) = pkcs8::der::pem::decode_vec(pem.trim().as_bytes()).expect("PEM");
    assert_eq!(label, "PRIVATE KEY");
    match alg {
        Alg::EdDsa => EncodingKey::from_ed_der(&der),
        Alg::Es256 => EncodingKey::from_ec_der(&der),
        Alg::Rs256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            let key = rsa::RsaPrivateKey::from_pkcs8_der(&der).expect("an RSA key");
            EncodingKey::from_rsa_der(key.to_pkcs1_der().expect("PKCS#1").as_bytes())
        }
    }
}

/// The SPKI PEM of the public half of the private key file at `path`.
pub(crate) fn public_pem(path: &Path, alg: Alg) -> String {
    use pkcs8::DecodePrivateKey;
    use pkcs8::der::pem::LineEnding;
    use spki::EncodePublicKey;
    let pem = std::fs::read_to_string(path).expect("read the key");
    match alg {
        Alg::EdDsa => ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
            .expect("Ed25519")
            .verifying_key()
            .to_public_key_pem(LineEnding::LF),
        Alg::Es256 => p256::SecretKey::from_pkcs8_pem(&pem)
            .expect("P-256")
            .public_key()
            .to_public_key_pem(LineEnding::LF),
        Alg::Rs256 => {
            rsa::RsaPublicKey::from(&rsa::RsaPrivateKey::from_pkcs8_pem(&pem).expect("RSA"))
                .to_public_key_pem(LineEnding::LF)
        }
    }
    .expect("encode the public key")
}

/// `claims` signed with `key` under `alg`, with `kid` in the header when given.
pub(crate) fn mint(alg: Alg, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg.algorithm());
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

/// `header.claims` with an HMAC-SHA256 signature under `key`, whatever the header says.
fn forge_hs256(key: &[u8], header: &Value, claims: &Value) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(message.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{message}.{signature}")
}

/// Checks the public key material of a JWK against what `openssl` reads from the private key
/// file at `path`: the loader and the JWK encoding agree with an independent tool.
fn assert_jwk_matches_openssl(jwk: &Value, path: &Path, alg: Alg) {
    let path = path.to_str().expect("UTF-8 path");
    let field = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().expect(name))
            .expect("base64url")
    };
    match alg {
        Alg::EdDsa | Alg::Es256 => {
            let spki = openssl(&["pkey", "-in", path, "-pubout", "-outform", "DER"]);
            if alg == Alg::EdDsa {
                // SPKI of Ed25519: 12 bytes of algorithm and bit-string header, then x.
                assert_eq!(spki.len(), 44);
                assert_eq!(field("x"), spki[12..]);
                assert_eq!(jwk["crv"], "Ed25519");
            } else {
                // SPKI of P-256: the uncompressed point 04 || x || y closes it.
                let point = &spki[spki.len() - 65..];
                assert_eq!(point[0], 0x04);
                assert_eq!(field("x"), point[1..33]);
                assert_eq!(field("y"), point[33..]);
                assert_eq!(jwk["crv"], "P-256");
            }
        }
        Alg::Rs256 => {
            let text = String::from_utf8(openssl(&["rsa", "-in", path, "-noout", "-modulus"]))
                .expect("UTF-8");
            let modulus = text
                .trim()
                .strip_prefix("Modulus=")
                .expect("Modulus=")
                .to_ascii_lowercase();
            let n: String = field("n").iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(n, modulus.trim_start_matches("00"));
            assert_eq!(jwk["e"], "AQAB");
        }
    }
}

/// Where a test's key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `cerego keys generate`.
    Generated,
    /// `openssl genpkey`.
    OpenSsl,
}

/// The whole life of a token under `alg` with one key from `source`: sign-up and login, the
/// header, `/auth/me`, the published JWK verifying it in another library, refresh, and every
/// forgery refused.
async fn round_trip(backend: Backend, alg: Alg, source: Source) {
    if !openssl_installed() {
        return;
    }
    let keys = tempfile::tempdir().expect("tempdir");
    let (path, printed_kid) = match source {
        Source::Generated => {
            let (path, kid) = keys_generate(alg, keys.path());
            (path, Some(kid))
        }
        Source::OpenSsl => {
            let path = keys.path().join("openssl.pem");
            openssl_genpkey(alg, &path);
            (path, None)
        }
    };
    let app = spawn_signing(backend, alg, keys.path(), |_| {}).await;
    let user = app.create_user("ada").await;
    let id = user["id"].as_i64().expect("id").to_string();
    let (access, refresh) = app.login_pair("ada").await;

    let header = jwt_part(&access, 0);
    assert_eq!(header["alg"], alg.name(), "{header}");
    let kid = kid_of(&access);
    let set = published_jwks(&app, alg).await;
    assert_eq!(kids(&set), vec![kid.clone()], "one key, the signing one");
    assert_jwk_matches_openssl(&set["keys"][0], &path, alg);
    if let Some(printed) = printed_kid {
        assert_eq!(
            printed, kid,
            "keys generate printed the kid the service uses"
        );
    }

    let me = app.me(&access).await;
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.expect("json")["id"], user["id"]);
    let claims = verify_with_jwks(&access, &set, alg);
    assert_eq!(claims["sub"], json!(id));

    let refreshed = app.refresh(&refresh).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.expect("json");
    let access2 = refreshed["access_token"].as_str().expect("access_token");
    assert_eq!(kid_of(access2), kid);
    assert_eq!(app.me(access2).await.status(), 200);
    assert_eq!(verify_with_jwks(access2, &set, alg)["sub"], json!(id));

    forgeries_are_refused(&app, alg, &path, &access, &set).await;
    assert_eq!(
        app.me(&access).await.status(),
        200,
        "the genuine token still works"
    );
}

/// Tokens with the genuine claims of `access` that the service must refuse: signed with the real
/// key but naming no key or another, signed with a foreign key, HMAC under the public key or
/// the service's secret, `alg: none`, another algorithm's label.
async fn forgeries_are_refused(app: &TestApp, alg: Alg, path: &Path, access: &str, set: &Value) {
    let kid = kid_of(access);
    let claims = jwt_part(access, 1);
    let key = signer(path, alg);

    // Control: the test's minting is right, so each refusal below is for its one difference.
    let control = mint(alg, &key, Some(&kid), &claims);
    assert_eq!(app.me(&control).await.status(), 200, "control token");

    let refuse = |token: String, why: &'static str| async move {
        assert_rejected_with(app, &token, INVALID, why).await;
    };
    refuse(mint(alg, &key, None, &claims), "the real key, no kid").await;
    let unknown = URL_SAFE_NO_PAD.encode(Sha256::digest(b"no such key"));
    refuse(
        mint(alg, &key, Some(&unknown), &claims),
        "the real key, unknown kid",
    )
    .await;
    refuse(
        mint(alg, &key, Some(""), &claims),
        "the real key, empty kid",
    )
    .await;

    let foreign_dir = tempfile::tempdir().expect("tempdir");
    let (foreign_path, foreign_kid) = keys_generate(alg, foreign_dir.path());
    let foreign = signer(&foreign_path, alg);
    refuse(
        mint(alg, &foreign, Some(&foreign_kid), &claims),
        "a foreign key, its own kid",
    )
    .await;
    refuse(
        mint(alg, &foreign, Some(&kid), &claims),
        "a foreign key, our kid",
    )
    .await;
    let (_, payload_and_signature) = access.split_once('.').expect("a JWT");
    let relabelled = format!(
        "{}.{payload_and_signature}",
        b64(&json!({ "alg": alg.name(), "typ": "JWT", "kid": foreign_kid }))
    );
    refuse(relabelled, "the genuine signature, the kid swapped").await;

    // Algorithm confusion: HMAC keyed with what anyone can have, the public key.
    let public = public_pem(path, alg);
    let spki_der = STANDARD
        .decode(
            public
                .lines()
                .filter(|line| !line.starts_with("-----"))
                .collect::<String>(),
        )
        .expect("base64");
    let jwk_text = set["keys"][0].to_string();
    for (secret, what) in [
        (public.as_bytes(), "HS256 keyed with the public key's PEM"),
        (&spki_der[..], "HS256 keyed with the public key's DER"),
        (jwk_text.as_bytes(), "HS256 keyed with the published JWK"),
        (TEST_SECRET.as_bytes(), "HS256 keyed with JWT_SECRET_KEY"),
    ] {
        let with_kid = json!({ "alg": "HS256", "typ": "JWT", "kid": kid });
        refuse(forge_hs256(secret, &with_kid, &claims), what).await;
        let without = json!({ "alg": "HS256", "typ": "JWT" });
        refuse(forge_hs256(secret, &without, &claims), what).await;
    }

    // `alg: none`, with and without the genuine signature.
    let signature = access.rsplit('.').next().expect("signature");
    for alg_none in ["none", "None", "NONE"] {
        let head = b64(&json!({ "alg": alg_none, "typ": "JWT", "kid": kid }));
        let unsigned = format!("{head}.{}.", b64(&claims));
        refuse(unsigned, "alg none").await;
        refuse(
            format!("{head}.{}.{signature}", b64(&claims)),
            "alg none, signed",
        )
        .await;
    }

    // The genuine signature under another algorithm's label.
    for other in ["EdDSA", "ES256", "RS256", "PS256", "ES384"] {
        if other == alg.name() {
            continue;
        }
        let head = b64(&json!({ "alg": other, "typ": "JWT", "kid": kid }));
        refuse(
            format!("{head}.{payload_and_signature}"),
            "another algorithm's label",
        )
        .await;
    }
}

db_tests! {
    async fn eddsa_with_a_generated_key(backend: Backend) {
        round_trip(backend, Alg::EdDsa, Source::Generated).await;
    }

    async fn es256_with_a_generated_key(backend: Backend) {
        round_trip(backend, Alg::Es256, Source::Generated).await;
    }

    async fn rs256_with_a_generated_key(backend: Backend) {
        round_trip(backend, Alg::Rs256, Source::Generated).await;
    }

    async fn eddsa_with_an_openssl_key(backend: Backend) {
        round_trip(backend, Alg::EdDsa, Source::OpenSsl).await;
    }

    async fn es256_with_an_openssl_key(backend: Backend) {
        round_trip(backend, Alg::Es256, Source::OpenSsl).await;
    }

    async fn rs256_with_an_openssl_key(backend: Backend) {
        round_trip(backend, Alg::Rs256, Source::OpenSsl).await;
    }
}

db_tests! {
    /// Under HMAC (the default) there is nothing to publish: both documents are 404 as an
    /// unknown path is, and a token naming a key is refused even when the secret signed it.
    async fn hmac_publishes_nothing_and_refuses_a_kid(backend: Backend) {
        let app = spawn_app(backend).await;
        for path in ["/.well-known/jwks.json", "/.well-known/openid-configuration"] {
            assert_detail(app.get(path).await, 404, "Not Found").await;
        }
        assert_detail(app.get("/.well-known/no-such-document").await, 404, "Not Found").await;

        app.create_user("ada").await;
        let access = app.token_for("ada").await;
        assert!(jwt_part(&access, 0).get("kid").is_none(), "no kid under HMAC");
        let claims = jwt_part(&access, 1);
        let plain = json!({ "alg": "HS256", "typ": "JWT" });
        let control = forge_hs256(TEST_SECRET.as_bytes(), &plain, &claims);
        assert_eq!(app.me(&control).await.status(), 200, "control token");
        for kid in [json!("k1"), json!(""), json!(thumbprint(&json!({
            "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([7u8; 32]) })))] {
            let header = json!({ "alg": "HS256", "typ": "JWT", "kid": kid });
            let token = forge_hs256(TEST_SECRET.as_bytes(), &header, &claims);
            assert_rejected_with(&app, &token, INVALID, &format!("HS256 with kid {kid}")).await;
        }
    }
}

/// `GET /.well-known/openid-configuration`, asserting a cacheable JSON answer; the document.
pub(crate) async fn discovery_document(app: &TestApp) -> Value {
    let response = app.get("/.well-known/openid-configuration").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_max_age(response.headers());
    response.json().await.expect("json")
}

db_tests! {
    /// The discovery document names this app's own URLs (`PUBLIC_BASE_URL`): its `jwks_uri`
    /// serves the JWK set and its `token_endpoint` logs in. The issuer is `PUBLIC_BASE_URL`, or
    /// `JWT_ISSUER` when set (which the tokens then carry as `iss`).
    async fn the_discovery_document_leads_to_the_keys(backend: Backend) {
        let keys = tempfile::tempdir().expect("tempdir");
        keys_generate(Alg::Es256, keys.path());
        let app = spawn_signing(backend, Alg::Es256, keys.path(), at_own_url).await;
        let base = app.address.clone();
        let document = discovery_document(&app).await;
        assert_eq!(document["issuer"], json!(base));
        assert_eq!(document["jwks_uri"], json!(format!("{base}/.well-known/jwks.json")));
        assert_eq!(document["token_endpoint"], json!(format!("{base}/auth/login")));
        assert_eq!(document["id_token_signing_alg_values_supported"], json!(["ES256"]));

        let set = published_jwks(&app, Alg::Es256).await;
        let from_uri: Value = app
            .client
            .get(document["jwks_uri"].as_str().expect("jwks_uri"))
            .send()
            .await
            .expect("GET jwks_uri")
            .json()
            .await
            .expect("json");
        assert_eq!(from_uri, set);
        app.create_user("ada").await;
        let login = app
            .client
            .post(document["token_endpoint"].as_str().expect("token_endpoint"))
            .form(&[("username", "ada"), ("password", crate::helpers::GOOD_PASSWORD)])
            .send()
            .await
            .expect("POST token_endpoint");
        assert_eq!(login.status(), 200);
        let token = login.json::<Value>().await.expect("json")["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        assert!(jwt_part(&token, 1).get("iss").is_none(), "no JWT_ISSUER, no iss");
        verify_with_jwks(&token, &set, Alg::Es256);
        let db = app.shut_down_keeping_db().await;

        // With JWT_ISSUER (and a base URL with a trailing slash).
        let mut settings = crate::helpers::test_settings(&db.url());
        with_keys(&mut settings, Alg::Es256, keys.path());
        at_own_url(&mut settings);
        settings.jwt.issuer = Some("https://auth.example.com".to_owned());
        let base = settings.public_base_url.clone();
        settings.public_base_url = format!("{base}/");
        let app = crate::helpers::spawn_on(db, settings).await;
        let document = discovery_document(&app).await;
        assert_eq!(document["issuer"], "https://auth.example.com");
        assert_eq!(document["jwks_uri"], json!(format!("{base}/.well-known/jwks.json")));
        assert_eq!(document["token_endpoint"], json!(format!("{base}/auth/login")));
        let token = app.token_for("ada").await;
        assert_eq!(jwt_part(&token, 1)["iss"], "https://auth.example.com");
        assert_eq!(app.me(&token).await.status(), 200);
        verify_with_jwks(&token, &published_jwks(&app, Alg::Es256).await, Alg::Es256);
    }
}

/// The RFC 7638 §3.1 example key: its thumbprint is the RFC's, `NzbLsXh8…`.
const RFC7638_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0vx7agoebGcQSuuPiLJX
ZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS
oc/BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ/2W+5JsGY4Hc5n9yBXArwl93lqt
7/RN5w6Cf0h4QyQ5v+65YGjQR0/FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0
zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt+bFTWhAI4vMQFh6WeZu0f
M4lFd2NcRwr3XPksINHaQ+G/xBniIqbw0Ls1jF44+csFCur+kEgU8awapJzKnqDK
gwIDAQAB
-----END PUBLIC KEY-----
";
const RFC7638_KID: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

/// A public-only key verifies but never signs, even when it is the newest file; its kid is the
/// RFC 7638 thumbprint the RFC itself gives for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_is_published_with_the_rfc_7638_thumbprint_and_never_signs() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (_, signing_kid) = keys_generate(Alg::Rs256, keys.path());
    std::fs::write(keys.path().join("rfc7638.pem"), RFC7638_PUBLIC_KEY).expect("write");
    // Files that are not keys are skipped: hidden ones, other names, directories.
    std::fs::write(keys.path().join(".hidden.pem"), "not a key").expect("write");
    std::fs::write(keys.path().join("README"), "not a key").expect("write");
    std::fs::create_dir(keys.path().join("old.pem")).expect("mkdir");

    let app = spawn_signing(Backend::Sqlite, Alg::Rs256, keys.path(), |_| {}).await;
    let set = published_jwks(&app, Alg::Rs256).await;
    assert_eq!(kids(&set), [signing_kid.clone(), RFC7638_KID.to_owned()]);
    assert_eq!(set["keys"][1]["e"], "AQAB");
    app.create_user("ada").await;
    assert_eq!(kid_of(&app.token_for("ada").await), signing_kid);
}

/// A token of the user "ada" from `app`, and its refresh token.
async fn ada_pair(app: &TestApp) -> (String, String) {
    app.login_pair("ada").await
}

/// Key rotation as an operator does it, each step a restart on the same database (how every
/// replica picks up a change of `JWT_KEYS_DIR`): add a newer key (it signs; the old key's tokens
/// still verify), keep only the old key's public half (its tokens still verify), remove it
/// (its tokens are refused; the new key's are not).
async fn rotation(backend: Backend, alg: Alg) {
    let keys = tempfile::tempdir().expect("tempdir");
    let (path_a, kid_a) = keys_generate(alg, keys.path());
    let restart = |db: crate::helpers::TestDb| {
        let mut settings = crate::helpers::test_settings(&db.url());
        with_keys(&mut settings, alg, keys.path());
        crate::helpers::spawn_on(db, settings)
    };

    let app = spawn_signing(backend, alg, keys.path(), |_| {}).await;
    app.create_user("ada").await;
    let (token_a, refresh_a) = ada_pair(&app).await;
    assert_eq!(kid_of(&token_a), kid_a);
    assert_eq!(kids(&published_jwks(&app, alg).await), vec![kid_a.clone()]);
    let db = app.shut_down_keeping_db().await;

    // Add B, newer: it signs from the next start; A's tokens still verify.
    let (_, kid_b) = keys_generate(alg, keys.path());
    assert_ne!(kid_a, kid_b);
    let app = restart(db).await;
    let (token_b, _) = ada_pair(&app).await;
    assert_eq!(kid_of(&token_b), kid_b, "the newest key signs");
    assert_eq!(
        app.me(&token_a).await.status(),
        200,
        "A's token still verifies"
    );
    assert_eq!(app.me(&token_b).await.status(), 200);
    let set = published_jwks(&app, alg).await;
    assert_eq!(
        kids(&set),
        [kid_b.clone(), kid_a.clone()],
        "the signing key first"
    );
    verify_with_jwks(&token_a, &set, alg);
    verify_with_jwks(&token_b, &set, alg);
    // A session opened under A refreshes into a token of B.
    let refreshed = app.refresh(&refresh_a).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.expect("json");
    assert_eq!(
        kid_of(refreshed["access_token"].as_str().expect("token")),
        kid_b
    );
    let db = app.shut_down_keeping_db().await;

    // Keep only A's public half; add the public half of a newer key C, which cannot sign.
    std::fs::write(keys.path().join("a-public.pem"), public_pem(&path_a, alg)).expect("write");
    std::fs::remove_file(&path_a).expect("remove A");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let (path_c, kid_c) = keys_generate(alg, elsewhere.path());
    std::fs::write(
        keys.path().join("zz-c-public.pem"),
        public_pem(&path_c, alg),
    )
    .expect("write");
    let app = restart(db).await;
    assert_eq!(
        app.me(&token_a).await.status(),
        200,
        "A's public key verifies"
    );
    assert_eq!(app.me(&token_b).await.status(), 200);
    assert_eq!(
        kid_of(&ada_pair(&app).await.0),
        kid_b,
        "a public key never signs"
    );
    let set = published_jwks(&app, alg).await;
    let listed = kids(&set);
    assert_eq!(listed[0], kid_b, "the signing key first");
    let mut rest = listed[1..].to_vec();
    rest.sort();
    let mut expected = vec![kid_a.clone(), kid_c];
    expected.sort();
    assert_eq!(rest, expected);
    verify_with_jwks(&token_a, &set, alg);
    let db = app.shut_down_keeping_db().await;

    // Remove A: its tokens are refused, B's are not.
    std::fs::remove_file(keys.path().join("a-public.pem")).expect("remove A's public key");
    let app = restart(db).await;
    assert_rejected_with(&app, &token_a, INVALID, "A removed").await;
    assert_eq!(app.me(&token_b).await.status(), 200);
    assert!(!kids(&published_jwks(&app, alg).await).contains(&kid_a));
}

db_tests! {
    async fn rotation_with_eddsa(backend: Backend) {
        rotation(backend, Alg::EdDsa).await;
    }

    async fn rotation_with_rs256(backend: Backend) {
        rotation(backend, Alg::Rs256).await;
    }
}

/// Asserts `cerego` (serve) refused to start with `code` and exactly one line on standard error,
/// `line`.
fn assert_refused_start(env: &[(&str, &str)], code: i32, line: &str) {
    let mut env = env.to_vec();
    env.push(("JWT_SECRET_KEY", TEST_SECRET));
    let output = run_cerego(&[], &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{env:?}: {stderr}");
    assert_eq!(stderr, format!("{line}\n"), "{env:?}");
}

#[test]
fn an_asymmetric_algorithm_without_keys_dir_is_a_setting_error() {
    for alg in [Alg::EdDsa, Alg::Es256, Alg::Rs256] {
        assert_refused_start(
            &[("JWT_ALGORITHM", alg.name())],
            2,
            "cerego: invalid setting JWT_KEYS_DIR: is required with JWT_ALGORITHM EdDSA, ES256 \
             or RS256 (make a key with `cerego keys generate`)",
        );
    }
    let keys = tempfile::tempdir().expect("tempdir");
    let dir = keys.path().to_str().expect("UTF-8");
    assert_refused_start(
        &[("JWT_KEYS_DIR", dir)],
        2,
        "cerego: invalid setting JWT_KEYS_DIR: is only used with JWT_ALGORITHM EdDSA, ES256 or \
         RS256 (HMAC algorithms sign with JWT_SECRET_KEY)",
    );
}

#[test]
fn unusable_keys_stop_start_up_naming_the_directory_or_file() {
    if !openssl_installed() {
        return;
    }
    let keys = tempfile::tempdir().expect("tempdir");
    let dir = keys.path().to_str().expect("UTF-8").to_owned();
    let eddsa = [("JWT_ALGORITHM", "EdDSA"), ("JWT_KEYS_DIR", dir.as_str())];

    // No such directory.
    let missing = format!("{dir}/missing");
    let output = run_cerego(
        &[],
        &[("JWT_ALGORITHM", "EdDSA"), ("JWT_KEYS_DIR", &missing)],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("cerego: cannot read JWT_KEYS_DIR {missing}: ")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // An empty directory, then one with a public key alone.
    assert_refused_start(
        &eddsa,
        1,
        &format!(
            "cerego: JWT_KEYS_DIR {dir} holds no private key (0 PEM files with an Ed25519 key); \
             make one with `cerego keys generate --algorithm EdDSA --out {dir}`"
        ),
    );
    let private = tempfile::tempdir().expect("tempdir");
    let (private_path, _) = keys_generate(Alg::EdDsa, private.path());
    std::fs::write(
        keys.path().join("public.pem"),
        public_pem(&private_path, Alg::EdDsa),
    )
    .expect("write");
    assert_refused_start(
        &eddsa,
        1,
        &format!(
            "cerego: JWT_KEYS_DIR {dir} holds no private key (1 PEM file with an Ed25519 key); \
             make one with `cerego keys generate --algorithm EdDSA --out {dir}`"
        ),
    );
    std::fs::remove_file(keys.path().join("public.pem")).expect("remove");

    // A P-256 key under EdDSA, and an Ed25519 key under ES256.
    let p256 = keys.path().join("p256.pem");
    openssl_genpkey(Alg::Es256, &p256);
    assert_refused_start(
        &eddsa,
        1,
        &format!(
            "cerego: JWT_KEYS_DIR: {}: holds a P-256 (prime256v1) EC key, but JWT_ALGORITHM is \
             EdDSA (it needs an Ed25519 key)",
            p256.display()
        ),
    );
    std::fs::remove_file(&p256).expect("remove");
    let ed = keys.path().join("ed.pem");
    openssl_genpkey(Alg::EdDsa, &ed);
    assert_refused_start(
        &[("JWT_ALGORITHM", "ES256"), ("JWT_KEYS_DIR", dir.as_str())],
        1,
        &format!(
            "cerego: JWT_KEYS_DIR: {}: holds an Ed25519 key, but JWT_ALGORITHM is ES256 (it \
             needs a P-256 (prime256v1) EC key)",
            ed.display()
        ),
    );
    std::fs::remove_file(&ed).expect("remove");

    // SEC1 and PKCS#1 files, as `openssl ecparam -genkey` and `openssl genrsa -traditional`
    // write them.
    let sec1 = keys.path().join("sec1.pem");
    let sec1_text = openssl(&["ecparam", "-genkey", "-name", "prime256v1", "-noout"]);
    assert!(String::from_utf8_lossy(&sec1_text).contains("BEGIN EC PRIVATE KEY"));
    std::fs::write(&sec1, sec1_text).expect("write");
    let es256 = [("JWT_ALGORITHM", "ES256"), ("JWT_KEYS_DIR", dir.as_str())];
    assert_refused_start(
        &es256,
        1,
        &format!(
            "cerego: JWT_KEYS_DIR: {}: a EC PRIVATE KEY block: convert it to PKCS#8 with \
             `openssl pkcs8 -topk8 -nocrypt -in FILE`",
            sec1.display()
        ),
    );
    std::fs::remove_file(&sec1).expect("remove");
    let pkcs1 = keys.path().join("pkcs1.pem");
    let pkcs1_text = openssl(&["genrsa", "-traditional", "2048"]);
    assert!(String::from_utf8_lossy(&pkcs1_text).contains("BEGIN RSA PRIVATE KEY"));
    std::fs::write(&pkcs1, pkcs1_text).expect("write");
    assert_refused_start(
        &[("JWT_ALGORITHM", "RS256"), ("JWT_KEYS_DIR", dir.as_str())],
        1,
        &format!(
            "cerego: JWT_KEYS_DIR: {}: a RSA PRIVATE KEY block: convert it to PKCS#8 with \
             `openssl pkcs8 -topk8 -nocrypt -in FILE`",
            pkcs1.display()
        ),
    );
    std::fs::remove_file(&pkcs1).expect("remove");

    // An RSA key too short for RS256.
    let short = keys.path().join("rsa1024.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        short.to_str().expect("UTF-8"),
    ]);
    assert_refused_start(
        &[("JWT_ALGORITHM", "RS256"), ("JWT_KEYS_DIR", dir.as_str())],
        1,
        &format!(
            "cerego: JWT_KEYS_DIR: {}: an RSA key of 1024 bits: RS256 needs at least 2048",
            short.display()
        ),
    );
}

#[test]
fn keys_generate_writes_a_private_key_only_its_owner_reads() {
    use std::os::unix::fs::PermissionsExt;
    if !openssl_installed() {
        return;
    }
    let parent = tempfile::tempdir().expect("tempdir");
    let out = parent.path().join("keys");
    let (first, kid) = keys_generate(Alg::EdDsa, &out);
    assert_eq!(first.parent(), Some(out.as_path()));
    let name = first
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(name.ends_with(".pem"), "{name}");
    let mode = |path: &Path| std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&first), 0o600, "the key file");
    assert_eq!(mode(&out), 0o700, "the directory it created");
    let text = std::fs::read_to_string(&first).expect("read");
    assert!(
        text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "PKCS#8 PEM: {text}"
    );

    // The printed kid is the RFC 7638 thumbprint of the key as openssl reads it.
    let spki = openssl(&[
        "pkey",
        "-in",
        first.to_str().expect("UTF-8"),
        "-pubout",
        "-outform",
        "DER",
    ]);
    let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&spki[12..]) });
    assert_eq!(thumbprint(&jwk), kid);

    // A second run makes a second key beside the first.
    let (second, kid2) = keys_generate(Alg::EdDsa, &out);
    assert_ne!(first, second);
    assert_ne!(kid, kid2);
    assert_eq!(mode(&second), 0o600);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    let mut expected = vec![first.clone(), second];
    expected.sort();
    assert_eq!(files, expected);
    assert_eq!(
        std::fs::read_to_string(&first).expect("read"),
        text,
        "untouched"
    );
}

#[test]
fn keys_generate_refuses_an_unknown_algorithm() {
    let parent = tempfile::tempdir().expect("tempdir");
    let out = parent.path().join("keys");
    let out_str = out.to_str().expect("UTF-8");
    for algorithm in ["HS256", "ed25519", "ES384", ""] {
        let output = run_cerego(
            &[
                "keys",
                "generate",
                "--algorithm",
                algorithm,
                "--out",
                out_str,
            ],
            &[],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{algorithm}: {stderr}");
        assert!(stderr.contains("--algorithm"), "{algorithm}: {stderr}");
        assert!(output.stdout.is_empty());
    }
    let output = run_cerego(&["keys", "generate", "--algorithm", "EdDSA"], &[]);
    assert_eq!(output.status.code(), Some(2), "no --out");
    assert!(!out.exists(), "nothing was written");
}
