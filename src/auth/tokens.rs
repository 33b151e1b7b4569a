//! Tokens: JWT access tokens (verified on every authenticated request) and opaque refresh
//! tokens (presented only to `/auth/refresh`).
//!
//! The access-token verifier accepts exactly the configured algorithm (so `alg: none` and HS/RS
//! confusion are refused before any signature check) and requires `exp`, `sub`, `sid` and `jti`.
//! Any standard JWT library holding the secret verifies cerego's tokens.
//!
//! Refresh tokens are `crg_rt_` plus 256 bits, base64url. Only their SHA-256 is stored. The
//! token issued on a rotation is derived from the presented one with a keyed HMAC, so a replay
//! within the grace window can be answered with the very same successor without storing it.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::JwtSettings;
use crate::domain::{SessionId, UserId};

/// Seconds of clock skew tolerated on `exp` between the servers that issue and check tokens.
const LEEWAY_SECS: u64 = 30;
/// How every refresh token starts, so leaked ones are easy to recognise (and scan for).
pub const REFRESH_PREFIX: &str = "crg_rt_";

/// Signs and verifies access tokens, and derives refresh-token successors, with one secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    header: Header,
    validation: Validation,
    ttl: Duration,
    issuer: Option<String>,
    audience: Option<String>,
    rotation_key: [u8; 32],
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

/// What a valid access token says.
#[derive(Debug, Clone, Copy)]
pub struct AccessClaims {
    /// `sub`.
    pub user: UserId,
    /// `sid`.
    pub session: SessionId,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    jti: String,
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

/// An opaque refresh token. `Debug` never shows it.
pub struct RefreshToken(SecretString);

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken([REDACTED])")
    }
}

impl RefreshToken {
    /// A fresh token from the operating system's CSPRNG.
    pub fn generate() -> anyhow::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
        Ok(Self::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        Self(format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)).into())
    }

    /// A token as a client presented it; `None` if it cannot be one of ours.
    pub fn presented(raw: &str) -> Option<Self> {
        let body = raw.strip_prefix(REFRESH_PREFIX)?;
        (body.len() == 43
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| Self(raw.to_owned().into()))
    }

    /// What the database stores.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.expose_secret().as_bytes()).into()
    }

    /// The token string, for the response body only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A random `jti`: 128 bits, hex.
pub fn new_jti() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

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
        // A separate key for rotation, so the JWT key never signs anything but JWTs.
        let rotation_key = hmac_sha256(bytes, b"cerego/refresh-token-rotation/v1");
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            header: Header::new(settings.algorithm),
            validation,
            ttl: settings.access_token_ttl,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            rotation_key,
        }
    }

    /// Signs an access token issued at `issued_at`; `expires_in` counts from `now`. The same
    /// arguments always give the same token, which is how a refresh replayed within the grace
    /// window gets the very same pair again.
    pub fn issue(
        &self,
        user: UserId,
        session: SessionId,
        jti: &str,
        issued_at: i64,
        now: i64,
    ) -> anyhow::Result<AccessToken> {
        let iat = u64::try_from(issued_at).context("issue time before 1970")?;
        let exp = iat + self.ttl.as_secs();
        let claims = Claims {
            sub: user.to_string(),
            sid: session.to_string(),
            jti: jti.to_owned(),
            iat,
            exp,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.encoding)
            .context("signing an access token failed")?;
        let now = u64::try_from(now.max(issued_at)).unwrap_or(iat);
        Ok(AccessToken {
            token: token.into(),
            expires_in: exp.saturating_sub(now),
        })
    }

    /// What a valid access token says.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, InvalidToken> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| InvalidToken(format!("{:?}", err.kind())))?;
        let id = |raw: &str, what: &str| {
            raw.parse::<i64>()
                .map_err(|_| InvalidToken(format!("{what} is not an id")))
        };
        Ok(AccessClaims {
            user: UserId::new(id(&data.claims.sub, "sub")?),
            session: SessionId::new(id(&data.claims.sid, "sid")?),
        })
    }

    /// The token that replaces `presented` on rotation.
    pub fn successor(&self, presented: &RefreshToken) -> RefreshToken {
        RefreshToken::from_bytes(&hmac_sha256(
            &self.rotation_key,
            presented.expose().as_bytes(),
        ))
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
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

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn an_issued_token_verifies_to_its_user_and_session() {
        let keys = TokenKeys::new(&settings(), &secret());
        let token = keys
            .issue(UserId::new(42), SessionId::new(7), "j", now(), now())
            .expect("sign");
        assert_eq!(token.expires_in, 1800);
        let claims = keys.verify(token.token.expose_secret()).expect("valid");
        assert_eq!(claims.user, UserId::new(42));
        assert_eq!(claims.session, SessionId::new(7));
    }

    #[test]
    fn issuing_is_deterministic() {
        let keys = TokenKeys::new(&settings(), &secret());
        let at = now();
        let a = keys
            .issue(UserId::new(1), SessionId::new(2), "j", at, at)
            .expect("sign");
        let b = keys
            .issue(UserId::new(1), SessionId::new(2), "j", at, at)
            .expect("sign");
        assert_eq!(a.token.expose_secret(), b.token.expose_secret());
    }

    #[test]
    fn another_key_or_issuer_is_refused() {
        let keys = TokenKeys::new(&settings(), &secret());
        let other = TokenKeys::new(&settings(), &SecretString::from("x".repeat(32)));
        let (user, session) = (UserId::new(1), SessionId::new(1));
        let token = other.issue(user, session, "j", now(), now()).expect("sign");
        assert!(keys.verify(token.token.expose_secret()).is_err());

        let mut with_iss = settings();
        with_iss.issuer = Some("cerego".into());
        with_iss.audience = Some("learners".into());
        let strict = TokenKeys::new(&with_iss, &secret());
        let plain = keys.issue(user, session, "j", now(), now()).expect("sign");
        assert!(strict.verify(plain.token.expose_secret()).is_err());
        let good = strict
            .issue(user, session, "j", now(), now())
            .expect("sign");
        assert!(strict.verify(good.token.expose_secret()).is_ok());
    }

    #[test]
    fn refresh_tokens_are_prefixed_random_and_rotate_deterministically() {
        let keys = TokenKeys::new(&settings(), &secret());
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
}
