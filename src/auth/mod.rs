//! Use cases of the auth service: sign-up, login, "who is this token", and account recovery
//! ([`recovery`]). No HTTP, no SQL.

pub mod admin;
pub mod audit;
pub mod clock;
mod flight;
pub mod keys;
pub mod passwords;
pub mod recovery;
mod sessions;
pub mod tokens;

pub use sessions::{Authenticated, ClientInfo, Tokens};

use secrecy::SecretString;

use std::sync::Arc;

use crate::config::{RecoverySettings, SessionSettings};
use crate::domain::{AuditEvent, Email, NewPassword, NewUser, UniqueField, User, UserId};
use crate::limits::{self, Limiter};
use crate::mail::Mailer;
use crate::metrics::{LoginOutcome, Metrics};
use crate::store::{Db, StoreError};
use clock::{Clock, SystemClock};
use passwords::{HashError, PasswordHasher};
use tokens::{TokenKeys, TokenRejection};

/// Why a use case did not succeed, in the words of the auth layer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown account or wrong password: deliberately one case.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Malformed, expired or foreign token, or its user or session is gone; says which, as far
    /// as the client may know.
    #[error("invalid token: {0}")]
    InvalidToken(TokenRejection),
    /// A refresh token that is unknown, used, or whose session ended.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// No such session among the caller's.
    #[error("session not found")]
    SessionNotFound,
    /// Sign-up collided with an existing account.
    #[error("{0:?} already taken")]
    Taken(UniqueField),
    /// The database is not answering (the store's cause, for the log only).
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The login throttle refused the attempt; retry after this long.
    #[error("login throttled")]
    Throttled(std::time::Duration),
    /// A password-reset or e-mail verification token that is unknown, used or expired.
    #[error("invalid or expired token")]
    InvalidAccountToken,
    /// The right password, but `REQUIRE_EMAIL_VERIFICATION` is on and the address is unconfirmed.
    #[error("email not verified")]
    EmailNotVerified,
    /// A verification mail was asked for an address already confirmed.
    #[error("email already verified")]
    EmailAlreadyVerified,
    /// A password change whose current password is wrong.
    #[error("current password is incorrect")]
    WrongCurrentPassword,
    /// A new password (reset or change) that the password policy refuses; reported at
    /// `new_password`.
    #[error("new password refused: {0}")]
    PasswordRefused(crate::domain::PasswordError),
    /// The caller's roles do not grant the permission the route needs.
    #[error("not enough permissions")]
    Forbidden,
    /// The right password, but an admin disabled the account.
    #[error("account disabled")]
    AccountDisabled,
    /// The admin account to ensure (`ADMIN_EMAIL`, `create-admin`) exists but never proved it
    /// receives mail at its address: it is not made an admin.
    #[error("the admin address belongs to an account whose address is not verified")]
    UnverifiedAdminAddress,
    /// An admin change was refused (no such user or role, built-in role, last admin…).
    #[error("refused: {0:?}")]
    Refused(crate::store::Refusal),
    /// Too many logins and sign-ups are waiting for a hashing slot.
    #[error("password hashing is saturated")]
    Busy,
    /// A bug or corrupt data.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<HashError> for AuthError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Busy => Self::Busy,
            HashError::Failed(source) => Self::Unexpected(source),
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(field) => Self::Taken(field),
            StoreError::Unavailable(source) => Self::Unavailable(source),
            StoreError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}

/// Longest login name worth a database lookup (the longest e-mail address).
const MAX_LOGIN_NAME: usize = 254;

/// How a login names its account.
#[derive(Debug)]
pub enum LoginName {
    /// The JSON `email` field.
    Email(String),
    /// The JSON or form `username` field, which may also hold an e-mail address.
    UsernameOrEmail(String),
}

impl LoginName {
    /// The name as the client typed it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Email(name) | Self::UsernameOrEmail(name) => name,
        }
    }
}

/// The auth service: storage, hashing and token keys together.
#[derive(Debug)]
pub struct Auth {
    db: Db,
    hasher: PasswordHasher,
    tokens: TokenKeys,
    sessions: SessionSettings,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// Rate limits and the login throttle.
    limiter: Arc<Limiter>,
    /// E-mail addresses and usernames with a sign-up in flight.
    signups: flight::InFlight,
    /// Composes the mail of sign-up and recovery (queued in the outbox).
    mailer: Arc<Mailer>,
    /// Links, token lifetimes, whether login requires a verified address.
    recovery: RecoverySettings,
    /// What a password-reset request for a known address spends writing, which one for an
    /// unknown address waits instead (see [`Auth::forgot_password`]).
    forgot_write: recovery::WriteTime,
}

impl Auth {
    /// Puts the parts together.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per part, each named"
    )]
    pub fn new(
        db: Db,
        hasher: PasswordHasher,
        tokens: TokenKeys,
        sessions: SessionSettings,
        metrics: Arc<Metrics>,
        limiter: Arc<Limiter>,
        mailer: Arc<Mailer>,
        recovery: RecoverySettings,
    ) -> Self {
        Self {
            db,
            hasher,
            tokens,
            sessions,
            metrics,
            clock: Arc::new(SystemClock),
            limiter,
            signups: flight::InFlight::default(),
            mailer,
            recovery,
            forgot_write: recovery::WriteTime::default(),
        }
    }

    /// The same service reading the time from `clock` (the system clock by default).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The user and session an access token speaks for, if its signature and claims are good
    /// (no database: whether the session is still active is not checked). For keying rate limits.
    pub fn token_claims(&self, token: &str) -> Option<tokens::AccessClaims> {
        self.tokens.verify(token, self.clock.unix_now()).ok()
    }

    /// The public signing keys as a JWK set; `None` under HMAC.
    pub fn jwks(&self) -> Option<serde_json::Value> {
        self.tokens.jwks()
    }

    /// The signing algorithm's JOSE name (`HS256`, `EdDSA`, …).
    pub fn signing_algorithm(&self) -> &'static str {
        self.tokens.algorithm_name()
    }

    /// The signing key's `kid`, under EdDSA, ES256 or RS256.
    pub fn signing_kid(&self) -> Option<&str> {
        self.tokens.signing_kid()
    }

    /// Rate limits and the login throttle.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Creates an account, with a verification token and the mail carrying its link, in one
    /// transaction. Duplicates are caught before hashing (cheap) and again by the unique
    /// indexes (race-proof), so concurrent sign-ups give one account and the rest [`AuthError::Taken`].
    /// Sign-ups of one e-mail address or username take turns (see [`flight`]), so those that
    /// lose to one in flight find its row and answer without hashing a password.
    ///
    /// Audit: `user.signed_up` and `email.verification_sent`, no actor, the new account as
    /// target, written with the account.
    pub async fn signup(
        &self,
        new: NewUser,
        password: NewPassword,
        client: &ClientInfo,
    ) -> Result<User, AuthError> {
        // Always the e-mail address before the username: with one fixed order, two sign-ups
        // can never each hold the name the other waits for.
        let email = (self.signups).join(format!("email:{}", new.email.as_str().to_lowercase()));
        let username = (self.signups).join(format!(
            "username:{}",
            new.username.as_str().to_ascii_lowercase()
        ));
        let _email_turn = email.turn().await;
        let _username_turn = username.turn().await;
        let admission = self.hasher.admit().await?;
        if let Some(field) = self.db.taken(&new.email, &new.username).await? {
            return Err(AuthError::Taken(field));
        }
        let hash = self.hasher.hash(admission, password.into_secret()).await?;
        let (token, mail) = self.signup_verification(new.email.as_str(), new.username.as_str())?;
        let audit = [
            self.success(client, AuditEvent::UserSignedUp),
            self.success(client, AuditEvent::EmailVerificationSent),
        ];
        let user = self
            .db
            .insert_user(&new, &hash, &token, &mail, &audit)
            .await?;
        self.audited(&audit);
        self.mailer.wake();
        tracing::info!(user_id = user.id.get(), "account created");
        Ok(user)
    }

    /// Checks credentials, opens a session and issues its tokens. An unknown account costs the
    /// same bcrypt verification as a known one, so timing does not reveal which accounts exist.
    pub async fn login(
        &self,
        name: LoginName,
        password: SecretString,
        client: &ClientInfo,
    ) -> Result<Tokens, AuthError> {
        // First the brute-force throttle, before the hashing queue, any lookup or password
        // check: a refused attempt costs nothing else. It keys on the name as typed, so its
        // answer is the same for known and unknown accounts. An attempt it lets through counts
        // as a failure until it succeeds (even if the queue below then sheds it with a 503).
        let account = limits::login_key(name.as_str());
        if let Some(ip) = client.ip {
            match self.limiter.login_attempt(&account, ip).await {
                Ok(Ok(())) => {}
                Ok(Err(throttled)) => {
                    tracing::info!(
                        scope = throttled.scope.name(),
                        retry_after_secs = throttled.retry_after.as_secs_f64().ceil(),
                        "login throttled"
                    );
                    // No target and no login name: the throttle refuses before any lookup
                    // (and what was typed may be a password).
                    let entry = self
                        .failure(client, AuditEvent::LoginThrottled)
                        .with("scope", throttled.scope.name());
                    self.record_refusal(entry).await?;
                    return Err(AuthError::Throttled(throttled.retry_after));
                }
                Err(unavailable) => return Err(AuthError::Unavailable(unavailable.into())),
            }
        }
        // Then a place in the hashing queue: a saturated service answers at once, without a
        // database query.
        let admission = self.hasher.admit().await?;
        let credentials = match &name {
            LoginName::Email(raw) => self.by_email(raw).await?,
            LoginName::UsernameOrEmail(raw) if raw.contains('@') => self.by_email(raw).await?,
            // No stored username is that long or holds a control character (PostgreSQL cannot
            // even compare a NUL), so such names are unknown accounts without a query. Other
            // names are looked up as given: accounts adopted from the FastAPI system may predate
            // today's username rules.
            LoginName::UsernameOrEmail(raw)
                if raw.len() > MAX_LOGIN_NAME || raw.chars().any(char::is_control) =>
            {
                None
            }
            LoginName::UsernameOrEmail(raw) => self.db.credentials_by_username(raw).await?,
        };
        let (user_id, names, stored, verified, disabled, roles) = match credentials {
            Some(c) => (
                Some(c.user_id),
                [limits::login_key(&c.email), limits::login_key(&c.username)],
                self.usable_hash(c.user_id, c.hashed_password),
                c.email_verified,
                c.disabled,
                c.roles,
            ),
            None => (None, Default::default(), None, false, false, Vec::new()),
        };
        // Kept to open the session only if the password is still this one (a reset may commit
        // while bcrypt runs; see `Db::create_session`).
        let verified_hash = stored.clone();
        let matched = self.hasher.verify(admission, password, stored).await?;
        match (matched, user_id, verified_hash) {
            (true, Some(user_id), Some(verified_hash)) => {
                // Every name of the account is cleared, not only the one typed: the owner who
                // got their username wrong five times and then logs in by e-mail is not left
                // waiting on the username. (Also when the address is unverified: the password
                // was right, and the owner may be trying again while the mail is on its way.)
                if let Some(ip) = client.ip {
                    let [email, username] = &names;
                    self.limiter
                        .login_succeeded(&[&account, email, username], ip)
                        .await;
                }
                // Only after the right password: a wrong one gets the usual 401, so nobody
                // learns that an account is disabled without its password.
                if disabled {
                    self.metrics.record_login(LoginOutcome::Failure);
                    tracing::info!(user_id = user_id.get(), "login refused: account disabled");
                    self.login_failed(client, Some(user_id), "account_disabled")
                        .await?;
                    return Err(AuthError::AccountDisabled);
                }
                if self.recovery.require_email_verification && !verified {
                    self.metrics.record_login(LoginOutcome::Failure);
                    tracing::info!(user_id = user_id.get(), "login refused: email not verified");
                    self.login_failed(client, Some(user_id), "email_not_verified")
                        .await?;
                    return Err(AuthError::EmailNotVerified);
                }
                self.metrics.record_login(LoginOutcome::Success);
                tracing::info!(user_id = user_id.get(), "login succeeded");
                self.open_session(user_id, &verified_hash, client, &roles)
                    .await
            }
            _ => {
                self.metrics.record_login(LoginOutcome::Failure);
                // A number for a known account, no field at all for an unknown one.
                tracing::info!(user_id = user_id.map(UserId::get), "login failed");
                self.login_failed(client, user_id, "invalid_credentials")
                    .await?;
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// Records `auth.login_failed`: the account as target when the login named a known one,
    /// nothing of the name otherwise (people type passwords into the username field).
    async fn login_failed(
        &self,
        client: &ClientInfo,
        account: Option<UserId>,
        reason: &'static str,
    ) -> Result<(), AuthError> {
        let mut entry = self
            .failure(client, AuditEvent::LoginFailed)
            .with("reason", reason);
        entry.target = account;
        self.record_refusal(entry).await
    }

    /// Writes an event that records no change (a refused attempt) in a transaction of its own.
    /// A database that cannot take it makes the request fail (503) rather than go unrecorded.
    async fn record_refusal(&self, entry: crate::store::AuditEntry) -> Result<(), AuthError> {
        let entries = [entry];
        self.db.append_audit(&entries).await?;
        self.audited(&entries);
        Ok(())
    }

    /// The stored hash if bcrypt can check it. An account adopted from the FastAPI system may
    /// carry another passlib format (or no hash at all): its login then pays the dummy
    /// verification and fails like a wrong password, so the answer reveals nothing, and the
    /// operators learn of it from an error log (the scheme's name, never the hash) and a count.
    fn usable_hash(&self, user_id: UserId, stored: String) -> Option<String> {
        let Some(scheme) = passwords::unsupported_scheme(&stored) else {
            return Some(stored);
        };
        self.metrics.record_hash_unsupported(scheme);
        tracing::error!(
            user_id = user_id.get(),
            scheme,
            "stored password hash is not a bcrypt hash this service can verify; login refused"
        );
        None
    }

    async fn by_email(
        &self,
        raw: &str,
    ) -> Result<Option<crate::store::StoredCredentials>, StoreError> {
        match Email::parse(raw) {
            Ok(email) => self.db.credentials_by_email(&email).await,
            Err(_) => Ok(None),
        }
    }
}
