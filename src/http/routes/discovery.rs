//! `/.well-known/jwks.json` and `/.well-known/openid-configuration`: what other services need to
//! verify cerego's tokens themselves, under EdDSA, ES256 or RS256. Under HMAC there is no public
//! key to publish, and both answer 404 as an unknown path does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::openapi::ErrorDetail;

/// How long clients may cache the documents. A key rotation must keep the old key in
/// `JWT_KEYS_DIR` longer than this plus the access-token lifetime (docs/deployment.md), so a
/// cached set never lacks a key that signed a live token.
pub const MAX_AGE_SECS: u64 = 300;

/// The two documents, serialised once at start-up (the keys are read only then).
#[derive(Debug)]
pub struct Discovery {
    jwks: Bytes,
    configuration: Bytes,
}

impl Discovery {
    /// The documents for the public `jwks`, signed with `algorithm` (its JOSE name), served at
    /// `public_base_url`; the issuer is `JWT_ISSUER` when set, else that URL.
    pub fn new(
        jwks: &Value,
        algorithm: &str,
        public_base_url: &str,
        issuer: Option<&str>,
    ) -> Arc<Self> {
        let base = public_base_url.trim_end_matches('/');
        let configuration = json!({
            "issuer": issuer.unwrap_or(base),
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "token_endpoint": format!("{base}/auth/login"),
            "id_token_signing_alg_values_supported": [algorithm],
            "subject_types_supported": ["public"],
        });
        Arc::new(Self {
            jwks: Bytes::from(jwks.to_string()),
            configuration: Bytes::from(configuration.to_string()),
        })
    }
}

fn document(body: Option<Bytes>) -> Response {
    match body {
        Some(body) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (
                    header::CACHE_CONTROL,
                    format!("public, max-age={MAX_AGE_SECS}"),
                ),
            ],
            body,
        )
            .into_response(),
        None => ApiError::NotFound("Not Found").into_response(),
    }
}

/// `GET /.well-known/jwks.json`: the public keys that verify access tokens.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "discovery",
    summary = "Public signing keys (JWK set)",
    description = "The public keys of `JWT_KEYS_DIR` (RFC 7517), the signing key first; a token's \
        `kid` header names its key (the RFC 7638 thumbprint). `Cache-Control: public, max-age=300`. \
        Under the HMAC algorithms there is no public key, and this answers 404.",
    responses(
        (status = 200, description = "The JWK set", content_type = "application/json",
            headers(("cache-control" = String, description = "`public, max-age=300`")),
            example = json!({ "keys": [{ "crv": "Ed25519", "kty": "OKP",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", "use": "sig", "alg": "EdDSA" }] })),
        (status = 404, description = "Tokens are signed with HMAC: nothing to publish", body = ErrorDetail,
            example = json!({ "detail": "Not Found" })),
    )
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    document(state.discovery.as_ref().map(|d| d.jwks.clone()))
}

/// `GET /.well-known/openid-configuration`: where the keys are, for standard JWT middleware.
#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "discovery",
    summary = "Discovery document",
    description = "A minimal OpenID Provider metadata document (OpenID Connect Discovery 1.0), \
        a JSON object with `issuer` (`JWT_ISSUER`, else `PUBLIC_BASE_URL`), `jwks_uri` \
        (`{PUBLIC_BASE_URL}/.well-known/jwks.json`), `token_endpoint` \
        (`{PUBLIC_BASE_URL}/auth/login`), `id_token_signing_alg_values_supported` (the one \
        `JWT_ALGORITHM`) and `subject_types_supported` (`[\"public\"]`). 404 under the HMAC \
        algorithms.",
    responses(
        (status = 200, description = "The discovery document", content_type = "application/json",
            headers(("cache-control" = String, description = "`public, max-age=300`"))),
        (status = 404, description = "Tokens are signed with HMAC: nothing to discover", body = ErrorDetail,
            example = json!({ "detail": "Not Found" })),
    )
)]
pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    document(state.discovery.as_ref().map(|d| d.configuration.clone()))
}
