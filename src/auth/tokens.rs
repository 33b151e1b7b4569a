//! JWT access tokens: issued at login, verified on every authenticated request.
//!
//! The verifier accepts exactly the configured algorithm (so `alg: none` and HS/RS confusion are
//! refused before any signature check) and requires `exp` and `sub`. Any standard JWT library
//! holding the secret verifies cerego's tokens.

use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::JwtSettings;
use crate::domain::UserId;

/// Seconds of clock skew tolerated on `exp` between the servers that issue and check tokens.
const LEEWAY_SECS: u64 = 30;

/// Signs and verifies access tokens with one key.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    header: Header,
    validation: Validation,
    ttl: Duration,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("algorithm", &self.header.alg)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A signed access token and how long it lives.
pub struct AccessToken {
    /// The compact JWT.
    pub token: SecretString,
    /// Seconds until `exp`.
    pub expires_in: u64,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

/// Why a presented token is not accepted. The HTTP layer answers all of them alike.
#[derive(Debug, thiserror::Error)]
#[error("invalid access token: {0}")]
pub struct InvalidToken(String);

impl TokenKeys {
    /// Keys from `settings`, with `secret` (from the settings or the generated key file).
    pub fn new(settings: &JwtSettings, secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(settings.algorithm);
        let mut required = vec!["exp", "sub"];
        required.extend(settings.issuer.as_ref().map(|_| "iss"));
        required.extend(settings.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        validation.leeway = LEEWAY_SECS;
        match &settings.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            header: Header::new(settings.algorithm),
            validation,
            ttl: settings.access_token_ttl,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        }
    }

    /// Signs an access token for `user`.
    pub fn issue(&self, user: UserId) -> anyhow::Result<AccessToken> {
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.to_string(),
            iat,
            exp: iat + self.ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.encoding)
            .context("signing an access token failed")?;
        Ok(AccessToken {
            token: token.into(),
            expires_in: self.ttl.as_secs(),
        })
    }

    /// The user a valid token speaks for.
    pub fn verify(&self, token: &str) -> Result<UserId, InvalidToken> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| InvalidToken(format!("{:?}", err.kind())))?;
        data.claims
            .sub
            .parse::<i64>()
            .map(UserId::new)
            .map_err(|_| InvalidToken("sub is not a user id".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> JwtSettings {
        JwtSettings {
            secret: None,
            algorithm: jsonwebtoken::Algorithm::HS256,
            access_token_ttl: Duration::from_secs(1800),
            issuer: None,
            audience: None,
        }
    }

    fn secret() -> SecretString {
        SecretString::from("0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn an_issued_token_verifies_to_its_user() {
        let keys = TokenKeys::new(&settings(), &secret());
        let token = keys.issue(UserId::new(42)).expect("sign");
        assert_eq!(token.expires_in, 1800);
        let user = keys.verify(token.token.expose_secret()).expect("valid");
        assert_eq!(user, UserId::new(42));
    }

    #[test]
    fn another_key_or_issuer_is_refused() {
        let keys = TokenKeys::new(&settings(), &secret());
        let other = TokenKeys::new(&settings(), &SecretString::from("x".repeat(32)));
        let token = other.issue(UserId::new(1)).expect("sign");
        assert!(keys.verify(token.token.expose_secret()).is_err());

        let mut with_iss = settings();
        with_iss.issuer = Some("cerego".into());
        with_iss.audience = Some("learners".into());
        let strict = TokenKeys::new(&with_iss, &secret());
        let plain = keys.issue(UserId::new(1)).expect("sign");
        assert!(strict.verify(plain.token.expose_secret()).is_err());
        let good = strict.issue(UserId::new(1)).expect("sign");
        assert_eq!(
            strict.verify(good.token.expose_secret()).expect("valid"),
            UserId::new(1)
        );
    }
}
