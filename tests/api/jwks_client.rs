//! An independent JWKS client verifies cerego's tokens: PyJWT's `PyJWKClient` (PyPI `pyjwt[crypto]`,
//! the CI pins it) given nothing but the discovery URL, for EdDSA, ES256 and RS256
//! (`tests/jwks/verify_with_pyjwt.py`). `PYTHON` names the interpreter (default `python3`);
//! without PyJWT the tests are skipped locally and fail in CI.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{Backend, required};
use crate::signing_keys::{
    Alg, at_own_url, jwt_part, keys_generate, kid_of, mint, signer, spawn_signing,
};

/// The script, from the repository.
fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jwks/verify_with_pyjwt.py")
}

fn python() -> String {
    std::env::var("PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// Whether the interpreter has PyJWT with its `crypto` extra (skipped locally without it, a
/// failure in CI).
fn pyjwt_installed() -> bool {
    let installed = Command::new(python())
        .args(["-c", "import jwt, cryptography; print(jwt.__version__)"])
        .output()
        .is_ok_and(|o| o.status.success());
    required(installed, "PyJWT (python3 -m pip install 'pyjwt[crypto]')")
}

/// Runs the script on `token` with `discovery_url`, off the runtime's worker threads (the app
/// it asks is served by this very runtime).
async fn pyjwt_verify(discovery_url: String, token: String) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script())
            .args([&discovery_url, &token])
            .output()
            .expect("run the PyJWT script")
    })
    .await
    .expect("join")
}

/// PyJWT verifies a cerego token of `alg` knowing only the discovery URL, reports its `sub`
/// and `kid`, and refuses the token with a changed payload or signed by a key not published.
async fn pyjwt_verifies(backend: Backend, alg: Alg) {
    if !pyjwt_installed() {
        return;
    }
    let keys = tempfile::tempdir().expect("tempdir");
    let (key_path, _) = keys_generate(alg, keys.path());
    // As the settings make it with a key pair: the tokens' issuer is the discovery document's.
    let app = spawn_signing(backend, alg, keys.path(), |s| {
        at_own_url(s);
        s.jwt.issuer = Some(s.public_base_url.clone());
    })
    .await;
    let user = app.create_user("ada").await;
    let id = user["id"].as_i64().expect("id").to_string();
    let token = app.token_for("ada").await;
    let discovery = app.url("/.well-known/openid-configuration");

    let output = pyjwt_verify(discovery.clone(), token.clone()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let verified: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(verified["sub"], json!(id), "{verified}");
    assert_eq!(verified["kid"], json!(kid_of(&token)), "{verified}");
    assert_eq!(verified["alg"], alg.name(), "{verified}");
    eprintln!(
        "PyJWT {} verified a {} token",
        verified["pyjwt"],
        alg.name()
    );

    // The payload changed (another sub), the signature kept.
    let mut claims = jwt_part(&token, 1);
    claims["sub"] = json!("999");
    let mut parts: Vec<&str> = token.split('.').collect();
    let payload = base64_url(&claims);
    parts[1] = &payload;
    let tampered = parts.join(".");
    let refused = |output: Output, why: &str| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{why}: {stderr}");
        assert!(stderr.starts_with("rejected: "), "{why}: {stderr}");
        assert!(output.stdout.is_empty(), "{why}");
    };
    refused(
        pyjwt_verify(discovery.clone(), tampered).await,
        "tampered payload",
    );

    // Signed by a key the service does not publish (with that key's own kid), and by the
    // service's key naming no published kid.
    let foreign_dir = tempfile::tempdir().expect("tempdir");
    let (foreign_path, foreign_kid) = keys_generate(alg, foreign_dir.path());
    let claims = jwt_part(&token, 1);
    let foreign = mint(
        alg,
        &signer(&foreign_path, alg),
        Some(&foreign_kid),
        &claims,
    );
    refused(
        pyjwt_verify(discovery.clone(), foreign).await,
        "a foreign key",
    );
    let ours = mint(alg, &signer(&key_path, alg), Some(&foreign_kid), &claims);
    refused(pyjwt_verify(discovery, ours).await, "an unpublished kid");
}

fn base64_url(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

db_tests! {
    async fn pyjwt_verifies_eddsa(backend: Backend) {
        pyjwt_verifies(backend, Alg::EdDsa).await;
    }

    async fn pyjwt_verifies_es256(backend: Backend) {
        pyjwt_verifies(backend, Alg::Es256).await;
    }

    async fn pyjwt_verifies_rs256(backend: Backend) {
        pyjwt_verifies(backend, Alg::Rs256).await;
    }
}
