//! Account recovery and e-mail: password reset, e-mail verification and password change. No
//! HTTP, no SQL.
//!
//! Reset and verification tokens are `crg_pr_` / `crg_ev_` plus 256 bits from the operating
//! system's CSPRNG in unpadded base64url; only their SHA-256 is stored. A token is single use
//! (using it deletes its row). Every state change is one transaction that also queues the mail it
//! sends (the outbox), and the sender is woken only after that transaction commits, so a request
//! that is dropped half-way leaves either everything or nothing behind.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::sessions::secs;
use super::{Auth, AuthError, ClientInfo};
use crate::domain::{AuditEvent, Email, NewPassword, SessionId, User};
use crate::limits::login_key;
use crate::metrics::RevokeReason;
use crate::store::{NewAccountToken, PasswordChange, PasswordReset, TokenOwner, TokenPurpose};

/// How every password-reset token starts.
pub const RESET_PREFIX: &str = "crg_pr_";
/// How every e-mail verification token starts.
pub const VERIFICATION_PREFIX: &str = "crg_ev_";
/// Characters of a token after its prefix: 32 bytes in unpadded base64url.
const BODY_LEN: usize = 43;

/// The prefix of tokens of `purpose`.
pub const fn prefix(purpose: TokenPurpose) -> &'static str {
    match purpose {
        TokenPurpose::PasswordReset => RESET_PREFIX,
        TokenPurpose::EmailVerification => VERIFICATION_PREFIX,
    }
}

/// A password-reset or e-mail verification token. `Debug` never shows it.
pub struct AccountToken {
    purpose: TokenPurpose,
    token: SecretString,
}

impl std::fmt::Debug for AccountToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountToken")
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

impl AccountToken {
    /// A fresh token for `purpose` from the operating system's CSPRNG.
    pub fn generate(purpose: TokenPurpose) -> anyhow::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
        Ok(Self::from_bytes(purpose, &bytes))
    }

    fn from_bytes(purpose: TokenPurpose, bytes: &[u8; 32]) -> Self {
        let token = format!("{}{}", prefix(purpose), URL_SAFE_NO_PAD.encode(bytes));
        Self {
            purpose,
            token: token.into(),
        }
    }

    /// A token of `purpose` as a client presented it; `None` if it cannot be one (wrong prefix,
    /// length or alphabet), so such tokens are refused without a query.
    pub fn presented(purpose: TokenPurpose, raw: &str) -> Option<Self> {
        let body = raw.strip_prefix(prefix(purpose))?;
        let well_formed = body.len() == BODY_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| Self {
            purpose,
            token: raw.to_owned().into(),
        })
    }

    /// What the database stores.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.token.expose_secret().as_bytes()).into()
    }

    /// The token string, for the link in the mail only.
    pub fn expose(&self) -> &str {
        self.token.expose_secret()
    }
}

/// A moving average of how long the write of a password-reset request takes (microseconds), so
/// a request for an unknown address can take as long without writing anything.
#[derive(Debug, Default)]
pub(super) struct WriteTime(AtomicU64);

impl WriteTime {
    /// Longest sample counted: a database stalling now and then must not make every request
    /// for an unknown address wait that long.
    const MAX_SAMPLE: Duration = Duration::from_millis(250);

    /// Adds one measured write (an exponential moving average over about eight requests;
    /// concurrent updates may lose a sample, which only slows the average down).
    fn record(&self, took: Duration) {
        let sample = u64::try_from(took.min(Self::MAX_SAMPLE).as_micros()).unwrap_or(0);
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.0.store(new.max(1), Ordering::Relaxed);
    }

    /// The average so far (zero before the first write).
    fn average(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    /// The least time both paths take after the lookup: more than a write takes on an idle
    /// database (about 2 ms on PostgreSQL, less on SQLite), so that before the first write since
    /// start-up, and for the slower writes of a busy moment, an unknown address still answers
    /// no sooner than a known one. A person asking for a reset link does not notice 20 ms.
    const MIN_BUDGET: Duration = Duration::from_millis(20);

    /// How long after the lookup both paths answer: twice the average, and at least
    /// [`Self::MIN_BUDGET`], so nearly every write ends before it.
    fn budget(&self) -> Duration {
        self.average().saturating_mul(2).max(Self::MIN_BUDGET)
    }
}

impl Auth {
    /// A new token of `purpose` living `ttl` from `now`, and its row.
    fn new_account_token(
        &self,
        purpose: TokenPurpose,
        ttl: std::time::Duration,
        now: i64,
    ) -> Result<(AccountToken, NewAccountToken), AuthError> {
        let token = AccountToken::generate(purpose)?;
        let row = NewAccountToken {
            purpose,
            hash: token.hash(),
            created_at: now,
            expires_at: now.saturating_add(secs(ttl)),
        };
        Ok((token, row))
    }

    /// A verification token for a new account and the mail carrying it (sign-up stores both
    /// with the account).
    pub(super) fn signup_verification(
        &self,
        email: &str,
        username: &str,
    ) -> Result<(NewAccountToken, crate::mail::QueuedMail), AuthError> {
        let now = self.now();
        let (token, row) = self.new_account_token(
            TokenPurpose::EmailVerification,
            self.recovery.email_verification_ttl,
            now,
        )?;
        let mail =
            self.mailer
                .email_verification(email, username, token.expose(), now, row.expires_at)?;
        Ok((row, mail))
    }

    /// `POST /auth/password/forgot`: if an account has this address (compared as login compares
    /// it), replaces its earlier reset tokens with a new one and queues the mail with its link,
    /// in one transaction. An unknown address writes nothing and sends nothing; the answer is
    /// the same.
    ///
    /// Time of the two paths: both look the address up (one indexed query), draw a token and
    /// compose (seal) a message. Then both answer at the same deadline after that point: twice
    /// the moving average of the write transaction ([`WriteTime`]: about eight requests, samples
    /// capped at 250 ms), and at least 20 ms. A known address spends it on the write (a row
    /// lock, three statements and a commit: about 2 ms on PostgreSQL, where the commit waits
    /// for the WAL flush, less on SQLite) and waits for the rest; an unknown one writes nothing
    /// and waits for all of it. Both waits end on a timer tick, so the timer's millisecond
    /// granularity does not tell them apart. What still differs: a write slower than the
    /// budget (a database stalling for more than 20 ms, or for more than twice its recent
    /// average) delays its answer by the excess. A write that fails is logged and answered 202
    /// like the rest, since a 503 would single the address out. Mail is never sent inline, so
    /// no SMTP time shows.
    ///
    /// Audit: `password.reset_requested` for a known (enabled) account, no actor, the account
    /// as target, written with the link; nothing for an unknown address.
    pub async fn forgot_password(
        &self,
        email: &Email,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        // A disabled account is answered as an unknown address: no link, the same wait.
        let account = match self.db.credentials_by_email(email).await? {
            Some(account) if account.disabled => {
                tracing::info!(
                    user_id = account.user_id.get(),
                    "password reset refused: account disabled"
                );
                None
            }
            account => account,
        };
        let now = self.now();
        let (token, row) = self.new_account_token(
            TokenPurpose::PasswordReset,
            self.recovery.password_reset_ttl,
            now,
        )?;
        let Some(account) = account else {
            // The same composition as for a known address, thrown away.
            let _ =
                self.mailer
                    .password_reset(email.as_str(), "", token.expose(), now, row.expires_at);
            let deadline = Instant::now() + self.forgot_write.budget();
            tokio::time::sleep_until(deadline.into()).await;
            tracing::info!("password reset requested for an unknown address");
            return Ok(());
        };
        let mail = self.mailer.password_reset(
            &account.email,
            &account.username,
            token.expose(),
            now,
            row.expires_at,
        )?;
        let started = Instant::now();
        let deadline = started + self.forgot_write.budget();
        let audit = self
            .success(client, AuditEvent::PasswordResetRequested)
            .on(account.user_id);
        let written = self
            .db
            .issue_password_reset(account.user_id, &row, &mail, &audit)
            .await;
        self.forgot_write.record(started.elapsed());
        tokio::time::sleep_until(deadline.into()).await;
        match written {
            Ok(()) => {
                self.audited([&audit]);
                self.mailer.wake();
                tracing::info!(user_id = account.user_id.get(), "password reset requested");
            }
            // The lookup answered but the write did not (a failover's read-only moment, a full
            // disk, a lock wait past its timeout). A 503 here, where an unknown address gets
            // 202, would tell that the address has an account; the owner, who gets no mail,
            // asks again. The failure is logged (and the pool logs outages).
            Err(err) => tracing::warn!(
                user_id = account.user_id.get(),
                error = %err,
                "password reset requested but not stored; answered as usual, no mail goes out"
            ),
        }
        Ok(())
    }

    /// The account a presented token of `purpose` belongs to, if it is valid and unexpired; the
    /// token is not used up (the pages behind mail links call this on GET, which mail scanners
    /// pre-fetch).
    async fn token_owner(&self, purpose: TokenPurpose, raw: &str) -> Result<TokenOwner, AuthError> {
        let token = AccountToken::presented(purpose, raw).ok_or(AuthError::InvalidAccountToken)?;
        self.db
            .account_token_owner(&token.hash(), purpose, self.now())
            .await?
            .ok_or(AuthError::InvalidAccountToken)
    }

    /// Whether a password-reset token is valid and unexpired ([`AuthError::InvalidAccountToken`]
    /// if not), without using it up.
    pub async fn check_reset_token(&self, raw: &str) -> Result<(), AuthError> {
        self.token_owner(TokenPurpose::PasswordReset, raw)
            .await
            .map(drop)
    }

    /// Whether an e-mail verification token is valid and unexpired, without using it up.
    pub async fn check_verification_token(&self, raw: &str) -> Result<(), AuthError> {
        self.token_owner(TokenPurpose::EmailVerification, raw)
            .await
            .map(drop)
    }

    /// `POST /auth/password/reset`: sets a new password with a reset token. The new password
    /// must pass the sign-up policy (against the account's e-mail and username). On success,
    /// in one transaction: the token is used up, the password is set, the address counts as
    /// verified, the other reset tokens are deleted, every session is revoked and a "your
    /// password was changed" mail is queued; then the login throttle of the account is cleared
    /// for `ip`.
    ///
    /// Audit: `password.reset_completed`, no actor (the client holds a link, not a session),
    /// the account as target, the sessions revoked in its details.
    pub async fn reset_password(
        &self,
        raw_token: &str,
        new_password: SecretString,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let token = AccountToken::presented(TokenPurpose::PasswordReset, raw_token)
            .ok_or(AuthError::InvalidAccountToken)?;
        let hash = token.hash();
        let owner = self
            .db
            .account_token_owner(&hash, TokenPurpose::PasswordReset, self.now())
            .await?
            .ok_or(AuthError::InvalidAccountToken)?;
        let password = NewPassword::parse(new_password, &[&owner.email, &owner.username])
            .map_err(AuthError::PasswordRefused)?;
        let admission = self.hasher.admit().await?;
        let hashed = self.hasher.hash(admission, password.into_secret()).await?;
        let now = self.now();
        let notice = self
            .mailer
            .password_changed(&owner.email, &owner.username, now)?;
        let reset = PasswordReset {
            token_hash: &hash,
            user: owner.user_id,
            hashed_password: &hashed,
            now,
            notice: &notice,
        };
        let audit = self
            .success(client, AuditEvent::PasswordResetCompleted)
            .on(owner.user_id);
        let Some(revoked) = self.db.reset_password(&reset, &audit).await? else {
            // Used up or expired while the new password was being hashed.
            tracing::info!(
                user_id = owner.user_id.get(),
                "password reset refused: token used or expired meanwhile"
            );
            return Err(AuthError::InvalidAccountToken);
        };
        self.audited([&audit]);
        self.mailer.wake();
        self.metrics
            .record_sessions_revoked(RevokeReason::PasswordReset, revoked);
        tracing::info!(
            user_id = owner.user_id.get(),
            sessions_revoked = revoked,
            "password reset"
        );
        // In a task of its own: the reset has committed, so its follow-up must not depend on
        // the client waiting for the answer (a request's future is dropped when it hangs up).
        let limiter = self.limiter.clone();
        let names = [login_key(&owner.email), login_key(&owner.username)];
        let ip = client.ip;
        let cleared = tokio::spawn(async move {
            let [email, username] = &names;
            if let Some(ip) = ip {
                limiter.login_succeeded(&[email, username], ip).await;
            }
        });
        // The answer waits for it, so a login right after the 204 finds the throttle cleared.
        if let Err(err) = cleared.await {
            tracing::warn!(error = %err, "clearing the login throttle after a reset failed");
        }
        Ok(())
    }

    /// `POST /auth/email/verification`: queues another verification mail for `user`
    /// ([`AuthError::EmailAlreadyVerified`] if the address is confirmed). Earlier verification
    /// tokens keep working until they expire.
    ///
    /// Audit: `email.verification_sent`, by and on `user`.
    pub async fn request_verification(
        &self,
        user: &User,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        if user.email_verified_at.is_some() {
            return Err(AuthError::EmailAlreadyVerified);
        }
        let now = self.now();
        let (token, row) = self.new_account_token(
            TokenPurpose::EmailVerification,
            self.recovery.email_verification_ttl,
            now,
        )?;
        let mail = self.mailer.email_verification(
            &user.email,
            &user.username,
            token.expose(),
            now,
            row.expires_at,
        )?;
        let audit = self
            .success(client, AuditEvent::EmailVerificationSent)
            .by(user.id)
            .on(user.id);
        if !self
            .db
            .issue_email_verification(user.id, &row, &mail, &audit)
            .await?
        {
            return Err(AuthError::EmailAlreadyVerified);
        }
        self.audited([&audit]);
        self.mailer.wake();
        tracing::info!(user_id = user.id.get(), "verification mail requested");
        Ok(())
    }

    /// `POST /auth/email/verify`: uses up a verification token and marks its account's address
    /// verified.
    ///
    /// Audit: `email.verified` (when the address was not verified before), no actor, the
    /// token's owner as target.
    pub async fn verify_email(
        &self,
        raw_token: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let token = AccountToken::presented(TokenPurpose::EmailVerification, raw_token)
            .ok_or(AuthError::InvalidAccountToken)?;
        let audit = self.success(client, AuditEvent::EmailVerified);
        let user = self
            .db
            .verify_email(&token.hash(), self.now(), &audit)
            .await?
            .ok_or(AuthError::InvalidAccountToken)?;
        self.audited([&audit]);
        tracing::info!(user_id = user.get(), "email verified");
        Ok(())
    }

    /// `POST /auth/password/change`: sets a new password for the signed-in `user` who knows the
    /// current one. The new password is checked against the policy first (a 422 costs no
    /// throttle budget and no bcrypt); then the attempt goes through the login throttle (keyed
    /// on the account's e-mail address and `ip`) and the hashing queue, and a wrong current
    /// password is [`AuthError::WrongCurrentPassword`]. On success, in one transaction: the new
    /// hash is stored, every session but `session` is revoked, outstanding reset tokens are
    /// deleted and a "your password was changed" mail is queued.
    ///
    /// Audit: `password.changed`, by and on `user`, the sessions revoked in its details; a
    /// throttled attempt records `auth.login_throttled` on `user`.
    pub async fn change_password(
        &self,
        user: &User,
        session: SessionId,
        current: SecretString,
        new_password: SecretString,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let ip = client
            .ip
            .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        let password = NewPassword::parse(new_password, &[&user.email, &user.username])
            .map_err(AuthError::PasswordRefused)?;
        let email_key = login_key(&user.email);
        match self.limiter.login_attempt(&email_key, ip).await {
            Ok(Ok(())) => {}
            Ok(Err(throttled)) => {
                tracing::info!(
                    user_id = user.id.get(),
                    scope = throttled.scope.name(),
                    retry_after_secs = throttled.retry_after.as_secs_f64().ceil(),
                    "password change throttled"
                );
                let entry = self
                    .failure(client, AuditEvent::LoginThrottled)
                    .by(user.id)
                    .on(user.id)
                    .with("scope", throttled.scope.name())
                    .with("during", "password_change");
                self.record_refusal(entry).await?;
                return Err(AuthError::Throttled(throttled.retry_after));
            }
            Err(unavailable) => return Err(AuthError::Unavailable(unavailable.into())),
        }
        let admission = self.hasher.admit().await?;
        let Some(stored) = self.db.credentials_by_id(user.id).await? else {
            return Err(AuthError::InvalidToken(
                super::tokens::TokenRejection::SessionEnded,
            ));
        };
        let old_hash = stored.hashed_password.clone();
        let usable = self.usable_hash(user.id, stored.hashed_password);
        if !self.hasher.verify(admission, current, usable).await? {
            tracing::info!(
                user_id = user.id.get(),
                "password change refused: current password incorrect"
            );
            return Err(AuthError::WrongCurrentPassword);
        }
        self.limiter
            .login_succeeded(&[&email_key, &login_key(&stored.username)], ip)
            .await;
        let admission = self.hasher.admit().await?;
        let hashed = self.hasher.hash(admission, password.into_secret()).await?;
        let now = self.now();
        let notice = self
            .mailer
            .password_changed(&stored.email, &stored.username, now)?;
        let change = PasswordChange {
            user: user.id,
            keep: session,
            old_hash: &old_hash,
            hashed_password: &hashed,
            now,
            notice: &notice,
        };
        let audit = self
            .success(client, AuditEvent::PasswordChanged)
            .by(user.id)
            .on(user.id);
        let Some(revoked) = self.db.change_password(&change, &audit).await? else {
            // Another change or a reset set a new password meanwhile: the one verified is no
            // longer current.
            tracing::info!(
                user_id = user.id.get(),
                "password change refused: password changed meanwhile"
            );
            return Err(AuthError::WrongCurrentPassword);
        };
        self.audited([&audit]);
        self.mailer.wake();
        self.metrics
            .record_sessions_revoked(RevokeReason::PasswordChange, revoked);
        tracing::info!(
            user_id = user.id.get(),
            session_id = session.get(),
            sessions_revoked = revoked,
            "password changed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_time_is_a_capped_moving_average() {
        let time = WriteTime::default();
        assert_eq!(time.average(), Duration::ZERO);
        time.record(Duration::from_millis(8));
        assert_eq!(time.average(), Duration::from_millis(8));
        time.record(Duration::from_millis(16));
        assert_eq!(time.average(), Duration::from_millis(9));
        for _ in 0..200 {
            time.record(Duration::from_secs(30));
        }
        let capped = time.average();
        assert!(
            capped <= WriteTime::MAX_SAMPLE && capped > Duration::from_millis(240),
            "{capped:?}"
        );
    }

    #[test]
    fn generated_tokens_carry_their_prefix_and_256_bits() {
        for purpose in [TokenPurpose::PasswordReset, TokenPurpose::EmailVerification] {
            let token = AccountToken::generate(purpose).expect("randomness");
            let raw = token.expose();
            assert!(raw.starts_with(prefix(purpose)), "{purpose:?}");
            assert_eq!(raw.len(), 7 + 43);
            let again = AccountToken::presented(purpose, raw).expect("well formed");
            assert_eq!(again.hash(), token.hash());
            assert_ne!(
                AccountToken::generate(purpose).expect("randomness").hash(),
                token.hash()
            );
        }
    }

    #[test]
    fn the_stored_hash_is_the_sha256_of_the_whole_token() {
        let token = AccountToken::from_bytes(TokenPurpose::PasswordReset, &[0u8; 32]);
        assert_eq!(
            token.expose(),
            "crg_pr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        );
        let expected: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        assert_eq!(token.hash(), expected);
    }

    #[test]
    fn a_token_of_the_wrong_purpose_or_shape_is_not_one() {
        let reset = AccountToken::generate(TokenPurpose::PasswordReset).expect("randomness");
        let raw = reset.expose().to_owned();
        let body = &raw[RESET_PREFIX.len()..];
        let refused = [
            String::new(),
            body.to_owned(),
            format!("{VERIFICATION_PREFIX}{body}"),
            format!("crg_rt_{body}"),
            format!("{RESET_PREFIX}{}", &body[1..]),
            format!("{raw}A"),
            format!("{RESET_PREFIX}{}=", &body[1..]),
            format!("{RESET_PREFIX}{}+", &body[1..]),
            format!("{RESET_PREFIX}{}é", &body[2..]),
            format!(" {raw}"),
            raw.to_uppercase(),
        ];
        for candidate in refused {
            assert!(
                AccountToken::presented(TokenPurpose::PasswordReset, &candidate).is_none(),
                "{candidate:?}"
            );
        }
        assert!(AccountToken::presented(TokenPurpose::EmailVerification, &raw).is_none());
        assert!(AccountToken::presented(TokenPurpose::PasswordReset, &raw).is_some());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = AccountToken::generate(TokenPurpose::EmailVerification).expect("randomness");
        let shown = format!("{token:?} {token:#?}");
        assert!(!shown.contains(token.expose()), "{shown}");
        assert!(!shown.contains(VERIFICATION_PREFIX), "{shown}");
    }
}
