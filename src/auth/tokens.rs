//! Tokens: JWT access tokens (verified on every authenticated request) and opaque refresh
//! tokens (presented only to `/auth/refresh`).
//!
//! The access-token verifier accepts exactly the configured algorithm (so `alg: none` and HS/RS
//! confusion are refused before any signature check) and requires `exp`, `iat`, `sub`, `sid` and
//! `jti`. Under HMAC any standard JWT library holding the secret verifies cerego's tokens; under
//! EdDSA, ES256 or RS256 ([`super::keys`]) anyone holding the published JWK set does, and the
//! token names its key in `kid`.
//!
//! It is strict about everything else a token says, because a lax reading is how forged or
//! replayed tokens get in:
//! - The JOSE header may hold only `alg` and `typ` (`"JWT"`). `crit` is refused outright (RFC 7515
//!   §4.1.11: a verifier must refuse extensions it does not understand), and so are the key
//!   selectors `jku`, `jwk`, `x5u`, `x5c`, `x5t`: cerego verifies with its own keys and never
//!   follows them, so a token carrying them was not minted by cerego. `kid` is required under
//!   the asymmetric algorithms and must name one of the keys of `JWT_KEYS_DIR` (the token is
//!   checked with that key alone); under HMAC there is one key and `kid` is refused. The header
//!   is read here from its base64url JSON rather than trusting the library's `Header`, so a
//!   member the library does not model cannot slip through unseen.
//! - Times are checked against the auth service's [`Clock`](super::clock::Clock), not the
//!   library's system clock, with [`LEEWAY_SECS`] of skew: `exp` in the past, `nbf` in the future
//!   or `iat` in the future are refused.
//! - `sub` and `sid` must be canonical positive decimals (`"42"`, never `"+42"`, `"042"` or
//!   `"-1"`), so one id has exactly one spelling.
//!
//! Legacy tokens (`JWT_ACCEPT_LEGACY_UNTIL`): until the cut-over time, [`TokenKeys::verify_legacy`]
//! accepts what the FastAPI system minted, an HMAC token signed with `JWT_SECRET_KEY` with `sub`
//! and `exp` and no `sid`, for `GET /auth/me` alone.
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

use super::keys::{KeyAlgorithm, KeySet};
use crate::config::{JwtSettings, Signing};
use crate::domain::{RoleName, SessionId, UserId};

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat` between the servers that issue and
/// check tokens.
pub const LEEWAY_SECS: i64 = 30;
/// The longest access token worth parsing. Cerego's are about 300 bytes; anything far larger is
/// refused before any base64 or JSON work.
const MAX_TOKEN_LEN: usize = 4096;
/// The only JOSE header members a token may carry (see the module comment); `kid` only under
/// the asymmetric algorithms.
const ALLOWED_HEADER: [&str; 3] = ["alg", "typ", "kid"];
/// How every refresh token starts, so leaked ones are easy to recognise (and scan for).
pub const REFRESH_PREFIX: &str = "crg_rt_";

/// Signs and verifies access tokens, and derives refresh-token successors.
pub struct TokenKeys {
    encoding: EncodingKey,
    verifier: Verifier,
    header: Header,
    validation: Validation,
    ttl: Duration,
    issuer: Option<String>,
    audience: Option<String>,
    rotation_key: [u8; 32],
    legacy: Option<Legacy>,
}

/// What checks signatures.
enum Verifier {
    /// HMAC: the one secret.
    Secret(DecodingKey),
    /// The keys of `JWT_KEYS_DIR`, chosen by `kid`.
    Keys(KeySet),
}

/// How the FastAPI system's tokens are checked, and until when.
struct Legacy {
    decoding: DecodingKey,
    validation: Validation,
    /// Unix seconds; from then on, refused.
    until: i64,
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
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    /// The user's roles when the token was issued, for other services that verify cerego's
    /// tokens themselves. cerego's own routes never read it: they check the roles stored now.
    #[serde(default)]
    roles: Vec<String>,
}

/// What is wrong with a refused access token, as far as its holder may know: the HTTP layer
/// turns it into the `WWW-Authenticate` description, so a client knows whether refreshing helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// Genuine, but past its `exp`: refresh.
    Expired,
    /// Malformed, forged, foreign, or with claims we refuse: refreshing does not help.
    Invalid,
    /// Genuine and unexpired, but its session is over (logged out, revoked, expired, idle) or its
    /// user is gone: log in again.
    SessionEnded,
}

impl std::fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Expired => "expired",
            Self::Invalid => "invalid",
            Self::SessionEnded => "session ended",
        })
    }
}

/// Why a presented token is not accepted: the kind the client is told, and the exact reason,
/// for debug logs only.
#[derive(Debug, thiserror::Error)]
#[error("{kind} access token: {reason}")]
pub struct InvalidToken {
    /// What the client is told.
    pub kind: TokenRejection,
    reason: String,
}

impl InvalidToken {
    fn invalid(reason: impl Into<String>) -> Self {
        Self {
            kind: TokenRejection::Invalid,
            reason: reason.into(),
        }
    }
}

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

/// What a legacy token says: its subject, as the FastAPI system wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyClaims {
    /// `sub`: a user id, a username or an e-mail address.
    pub subject: String,
}

#[derive(Deserialize)]
struct LegacyTokenClaims {
    sub: String,
    exp: u64,
    #[serde(default)]
    sid: Option<serde_json::Value>,
}

impl TokenKeys {
    /// Keys from `settings`, with `secret` (from the settings or the generated key file); under
    /// EdDSA, ES256 or RS256 the keys of `JWT_KEYS_DIR` are read (a bad or missing key fails,
    /// naming the file).
    pub fn new(settings: &JwtSettings, secret: &SecretString) -> anyhow::Result<Self> {
        let bytes = secret.expose_secret().as_bytes();
        let algorithm = settings.signing.algorithm();
        let (encoding, verifier, kid) = match &settings.signing {
            Signing::Secret(_) => (
                EncodingKey::from_secret(bytes),
                Verifier::Secret(DecodingKey::from_secret(bytes)),
                None,
            ),
            Signing::KeysDir { algorithm, dir } => {
                let algorithm = KeyAlgorithm::of(*algorithm)
                    .context("JWT_KEYS_DIR is only used with EdDSA, ES256 or RS256")?;
                let keys = KeySet::load(dir, algorithm)?;
                let kid = keys.signing_kid().to_owned();
                (keys.encoding_key().clone(), Verifier::Keys(keys), Some(kid))
            }
        };
        let mut validation = Validation::new(algorithm);
        let mut required = vec!["exp", "sub"];
        required.extend(settings.issuer.as_ref().map(|_| "iss"));
        required.extend(settings.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        // The library would compare `exp`/`nbf` with the system clock; `verify` checks every time
        // claim against the service's clock instead.
        validation.validate_exp = false;
        validation.validate_nbf = false;
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
        let legacy = settings.accept_legacy_until.map(|until| {
            // The FastAPI system signs with the secret, HS256 unless it was configured
            // otherwise, which its JWT_ALGORITHM (still ours under HMAC) says.
            let legacy_algorithm = match &settings.signing {
                Signing::Secret(algorithm) => *algorithm,
                Signing::KeysDir { .. } => jsonwebtoken::Algorithm::HS256,
            };
            let mut validation = Validation::new(legacy_algorithm);
            validation.set_required_spec_claims(&["exp", "sub"]);
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.validate_aud = false;
            validation.iss = None;
            Legacy {
                decoding: DecodingKey::from_secret(bytes),
                validation,
                until: until.unix_timestamp(),
            }
        });
        let mut header = Header::new(algorithm);
        header.kid = kid;
        Ok(Self {
            encoding,
            verifier,
            header,
            validation,
            ttl: settings.access_token_ttl,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            rotation_key,
            legacy,
        })
    }

    /// The public keys as a JWK set, under EdDSA, ES256 or RS256; `None` under HMAC (nothing
    /// may be published).
    pub fn jwks(&self) -> Option<serde_json::Value> {
        match &self.verifier {
            Verifier::Keys(keys) => Some(keys.jwks()),
            Verifier::Secret(_) => None,
        }
    }

    /// The signing algorithm's JOSE name.
    pub fn algorithm_name(&self) -> &'static str {
        match &self.verifier {
            Verifier::Keys(keys) => keys.algorithm().name(),
            Verifier::Secret(_) => match self.header.alg {
                jsonwebtoken::Algorithm::HS384 => "HS384",
                jsonwebtoken::Algorithm::HS512 => "HS512",
                _ => "HS256",
            },
        }
    }

    /// Whether legacy tokens are configured (`JWT_ACCEPT_LEGACY_UNTIL` is set; it may be past).
    pub fn accepts_legacy(&self) -> bool {
        self.legacy.is_some()
    }

    /// The `kid` of the signing key, under the asymmetric algorithms.
    pub fn signing_kid(&self) -> Option<&str> {
        self.header.kid.as_deref()
    }

    /// Signs an access token issued at `issued_at`, carrying `roles` as its `roles` claim;
    /// `expires_in` counts from `now`. (A refresh replayed within the grace window passes the
    /// roles as they are at the replay, so if they changed since the rotation the replayed
    /// access token differs from the first in its claim alone.) The same arguments always give
    /// the same token, which is how a refresh replayed within the grace
    /// window gets the very same pair again.
    pub fn issue(
        &self,
        user: UserId,
        session: SessionId,
        jti: &str,
        issued_at: i64,
        now: i64,
        roles: &[RoleName],
    ) -> anyhow::Result<AccessToken> {
        let iat = u64::try_from(issued_at).context("issue time before 1970")?;
        let exp = iat + self.ttl.as_secs();
        let claims = Claims {
            sub: user.to_string(),
            sid: session.to_string(),
            jti: jti.to_owned(),
            iat,
            exp,
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            roles: roles.iter().map(|role| role.as_str().to_owned()).collect(),
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.encoding)
            .context("signing an access token failed")?;
        let now = u64::try_from(now.max(issued_at)).unwrap_or(iat);
        Ok(AccessToken {
            token: token.into(),
            expires_in: exp.saturating_sub(now),
        })
    }

    /// What a valid access token says, judged at `now` (seconds since 1970).
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, InvalidToken> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(InvalidToken::invalid("too long"));
        }
        let kid = check_header(token, matches!(self.verifier, Verifier::Keys(_)))?;
        let decoding = match (&self.verifier, kid) {
            (Verifier::Secret(key), _) => key,
            (Verifier::Keys(keys), Some(kid)) => keys
                .decoding_key(&kid)
                .ok_or_else(|| InvalidToken::invalid("kid names none of our keys"))?,
            (Verifier::Keys(_), None) => return Err(InvalidToken::invalid("no kid")),
        };
        let data = jsonwebtoken::decode::<Claims>(token, decoding, &self.validation)
            .map_err(|err| InvalidToken::invalid(format!("{:?}", err.kind())))?;
        let claims = data.claims;
        // Only now is the signature known good, so only now may a client hear "expired".
        let secs = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
        if secs(claims.exp).saturating_add(LEEWAY_SECS) < now {
            return Err(InvalidToken {
                kind: TokenRejection::Expired,
                reason: "exp is past".into(),
            });
        }
        if claims
            .nbf
            .is_some_and(|nbf| secs(nbf) > now.saturating_add(LEEWAY_SECS))
        {
            return Err(InvalidToken::invalid("nbf is in the future"));
        }
        if secs(claims.iat) > now.saturating_add(LEEWAY_SECS) {
            return Err(InvalidToken::invalid("iat is in the future"));
        }
        let id = |raw: &str, what: &str| {
            canonical_id(raw).ok_or_else(|| InvalidToken::invalid(format!("{what} is not an id")))
        };
        Ok(AccessClaims {
            user: UserId::new(id(&claims.sub, "sub")?),
            session: SessionId::new(id(&claims.sid, "sid")?),
        })
    }

    /// What a token of the FastAPI system says, if `JWT_ACCEPT_LEGACY_UNTIL` is set and not yet
    /// past at `now`, and the token is one: HMAC-signed with the secret, unexpired, with `sub` and
    /// no `sid` (a token with `sid` is cerego's own and goes through [`Self::verify`] alone).
    pub fn verify_legacy(&self, token: &str, now: i64) -> Result<LegacyClaims, InvalidToken> {
        let Some(legacy) = &self.legacy else {
            return Err(InvalidToken::invalid("legacy tokens are not accepted"));
        };
        if now >= legacy.until {
            return Err(InvalidToken::invalid("past JWT_ACCEPT_LEGACY_UNTIL"));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(InvalidToken::invalid("too long"));
        }
        check_header(token, false)?;
        let claims =
            jsonwebtoken::decode::<LegacyTokenClaims>(token, &legacy.decoding, &legacy.validation)
                .map_err(|err| InvalidToken::invalid(format!("legacy: {:?}", err.kind())))?
                .claims;
        if claims.sid.is_some() {
            return Err(InvalidToken::invalid("legacy: has sid"));
        }
        let exp = i64::try_from(claims.exp).unwrap_or(i64::MAX);
        if exp.saturating_add(LEEWAY_SECS) < now {
            return Err(InvalidToken {
                kind: TokenRejection::Expired,
                reason: "legacy: exp is past".into(),
            });
        }
        // The FastAPI system's access tokens lived JWT_ACCESS_TOKEN_EXPIRE_MINUTES (the same
        // setting); a token meant to live longer (a reset or verification link's token signed
        // with the same secret) is not an access token.
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        if exp > now.saturating_add(ttl).saturating_add(LEEWAY_SECS) {
            return Err(InvalidToken::invalid(
                "legacy: expires later than an access token can",
            ));
        }
        if claims.sub.is_empty() || claims.sub.len() > 320 {
            return Err(InvalidToken::invalid("legacy: sub is empty or too long"));
        }
        Ok(LegacyClaims {
            subject: claims.sub,
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

/// Refuses a token whose JOSE header holds anything but `alg`, `typ: "JWT"` and, when `with_kid`,
/// `kid` (a short string); returns the `kid`.
fn check_header(token: &str, with_kid: bool) -> Result<Option<String>, InvalidToken> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(InvalidToken::invalid("not three segments"));
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| InvalidToken::invalid("header is not base64url"))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&json)
        .map_err(|_| InvalidToken::invalid("header is not a JSON object"))?;
    if let Some(name) = header
        .keys()
        .find(|k| !ALLOWED_HEADER.contains(&k.as_str()) || (!with_kid && *k == "kid"))
    {
        // The name is the sender's text: a bounded prefix is enough for a debug log.
        let name: String = name.chars().take(32).collect();
        return Err(InvalidToken::invalid(format!(
            "header member {name:?} is not accepted"
        )));
    }
    match header.get("typ") {
        None => {}
        Some(serde_json::Value::String(typ)) if typ.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(InvalidToken::invalid("typ is not JWT")),
    }
    match header.get("kid") {
        None => Ok(None),
        // A thumbprint is 43 characters; anything much longer is not one of ours.
        Some(serde_json::Value::String(kid)) if kid.len() <= 128 => Ok(Some(kid.clone())),
        Some(_) => Err(InvalidToken::invalid("kid is not a short string")),
    }
}

/// `raw` as an id if it is a canonical positive decimal: digits only, no sign, no leading zero.
pub(crate) fn canonical_id(raw: &str) -> Option<i64> {
    let canonical =
        !raw.is_empty() && !raw.starts_with('0') && raw.bytes().all(|b| b.is_ascii_digit());
    canonical.then(|| raw.parse::<i64>().ok()).flatten()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests;
