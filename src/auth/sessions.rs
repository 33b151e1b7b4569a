//! Sessions: opened at login, extended by refresh-token rotation, ended by logout, revocation,
//! reuse of a rotated token, idle timeout or absolute lifetime.

use super::tokens::{AccessToken, RefreshToken, TokenRejection, new_jti};
use super::{Auth, AuthError};
use crate::domain::AuditEvent;
use crate::domain::{Permissions, RoleName, Session, SessionId, User, UserId};
use crate::metrics::RevokeReason;
use crate::store::{AuditEntry, NewSession, Rotation, TokenRecord};

/// What a login or a refresh hands out.
#[derive(Debug)]
pub struct Tokens {
    /// The access token.
    pub access: AccessToken,
    /// The refresh token that replaces the presented one (or the first, at login).
    pub refresh: RefreshToken,
    /// Seconds the refresh token stays usable if not used (idle timeout, capped by the session's
    /// absolute end).
    pub refresh_expires_in: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Who is calling, as recorded with a new session and in the audit trail.
#[derive(Debug, Default, Clone)]
pub struct ClientInfo {
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// The client's address (the TCP peer, or as trusted proxies forwarded it).
    pub ip: Option<std::net::IpAddr>,
    /// The request's `x-request-id` (as echoed to the client).
    pub request_id: Option<String>,
}

/// A verified access token whose session is active, and its user.
#[derive(Debug)]
pub struct Authenticated {
    /// The token's user.
    pub user: User,
    /// The token's session.
    pub session: SessionId,
    /// What the user's roles allow, read with the session (never from the token's claims).
    pub permissions: Permissions,
}

/// `d` in whole seconds, as the store counts time.
pub(super) fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Auth {
    /// Now, by the service's clock, in the store's unit.
    pub(super) fn now(&self) -> i64 {
        self.clock.unix_now()
    }

    fn idle_cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(secs(self.sessions.idle_timeout))
    }

    /// The tokens for a session, counting lifetimes from `now`; the access token's `roles` claim
    /// lists `roles`.
    #[expect(
        clippy::too_many_arguments,
        reason = "each part of the token pair, named"
    )]
    fn tokens_for(
        &self,
        user: UserId,
        session: SessionId,
        record: &TokenRecord,
        refresh: RefreshToken,
        expires_at: i64,
        now: i64,
        roles: &[RoleName],
    ) -> Result<Tokens, AuthError> {
        let access = self
            .tokens
            .issue(user, session, &record.jti, record.issued_at, now, roles)?;
        let until_end = expires_at.saturating_sub(now);
        let refresh_expires_in = until_end.min(secs(self.sessions.idle_timeout)).max(0);
        Ok(Tokens {
            access,
            refresh,
            refresh_expires_in: u64::try_from(refresh_expires_in).unwrap_or(0),
        })
    }

    /// Opens a session for `user` (holding `roles`), whose password hash `verified_hash` the
    /// login just checked, and issues its first tokens. If the password was reset or changed since the check, no
    /// session is opened: [`AuthError::InvalidCredentials`], as for a wrong password.
    pub(super) async fn open_session(
        &self,
        user: UserId,
        verified_hash: &str,
        client: &ClientInfo,
        roles: &[RoleName],
    ) -> Result<Tokens, AuthError> {
        let now = self.now();
        let refresh = RefreshToken::generate()?;
        let record = TokenRecord {
            hash: refresh.hash(),
            jti: new_jti()?,
            issued_at: now,
        };
        let expires_at = now.saturating_add(secs(self.sessions.lifetime));
        let user_agent = client.user_agent.as_deref().map(|ua| cut(ua, 512));
        let ip = client.ip.map(|ip| ip.to_string());
        let new = NewSession {
            user,
            now,
            expires_at,
            user_agent,
            ip: ip.as_deref(),
            verified_hash,
        };
        let audit = self
            .success(client, AuditEvent::LoginSucceeded)
            .by(user)
            .on(user);
        let Some(session) = self.db.create_session(&new, &record, &audit).await? else {
            tracing::info!(
                user_id = user.get(),
                "login refused: the password changed while it was being checked"
            );
            self.login_failed(client, Some(user), "invalid_credentials")
                .await?;
            return Err(AuthError::InvalidCredentials);
        };
        self.audited([&audit]);
        self.metrics.record_session_opened();
        tracing::info!(
            user_id = user.get(),
            session_id = session.get(),
            "session opened"
        );
        self.tokens_for(user, session, &record, refresh, expires_at, now, roles)
    }

    /// Rotates a refresh token. Presenting a used one again within the grace window returns the
    /// same successor pair; later, it revokes that session (and only that one) and fails.
    ///
    /// Metrics: a rotation counts as refreshed; a replay within the grace window does not (it
    /// hands out the pair already counted, so `cerego_sessions_refreshed_total` counts refresh
    /// tokens issued, not requests); a reuse counts one session revoked for `refresh_reuse`.
    ///
    /// Audit: a reuse records `auth.refresh_reuse_detected` (no actor, the session's owner as
    /// target) with the revocation; a rotation or replay records nothing.
    pub async fn refresh(&self, presented: &str, client: &ClientInfo) -> Result<Tokens, AuthError> {
        let presented = RefreshToken::presented(presented).ok_or(AuthError::InvalidRefreshToken)?;
        let successor = self.tokens.successor(&presented);
        let now = self.now();
        let record = TokenRecord {
            hash: successor.hash(),
            jti: new_jti()?,
            issued_at: now,
        };
        let grace = secs(self.sessions.refresh_grace);
        let reuse = self.failure(client, AuditEvent::RefreshReuseDetected);
        let rotation = self
            .db
            .rotate_refresh_token(
                &presented.hash(),
                &record,
                self.idle_cutoff(now),
                grace,
                &reuse,
            )
            .await?;
        match rotation {
            Rotation::Rotated {
                user,
                session,
                expires_at,
                roles,
            } => {
                self.metrics.record_session_refreshed();
                tracing::info!(
                    user_id = user.get(),
                    session_id = session.get(),
                    "refresh token rotated"
                );
                self.tokens_for(user, session, &record, successor, expires_at, now, &roles)
            }
            Rotation::Replayed {
                user,
                session,
                expires_at,
                jti,
                issued_at,
                roles,
            } => {
                tracing::info!(
                    user_id = user.get(),
                    session_id = session.get(),
                    "refresh replayed within grace"
                );
                let record = TokenRecord {
                    hash: record.hash,
                    jti,
                    issued_at,
                };
                self.tokens_for(user, session, &record, successor, expires_at, now, &roles)
            }
            Rotation::Reused { user, session } => {
                self.audited([&reuse]);
                self.metrics
                    .record_sessions_revoked(RevokeReason::RefreshReuse, 1);
                tracing::warn!(
                    user_id = user.get(),
                    session_id = session.get(),
                    "rotated refresh token reused: session revoked"
                );
                Err(AuthError::InvalidRefreshToken)
            }
            Rotation::Invalid => Err(AuthError::InvalidRefreshToken),
        }
    }

    /// The user and session an access token speaks for, if the session is still active.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, AuthError> {
        let claims = self.tokens.verify(token, self.now()).map_err(|err| {
            tracing::debug!(%err, "access token refused");
            AuthError::InvalidToken(err.kind)
        })?;
        self.authenticate_claims(claims).await
    }

    /// [`Self::authenticate`] for claims already verified (`token_claims`): only whether the
    /// session is still active, and its user.
    pub async fn authenticate_claims(
        &self,
        claims: super::tokens::AccessClaims,
    ) -> Result<Authenticated, AuthError> {
        let now = self.now();
        let (user, permissions) = self
            .db
            .user_in_session(claims.user, claims.session, now, self.idle_cutoff(now))
            .await?
            .ok_or(AuthError::InvalidToken(TokenRejection::SessionEnded))?;
        Ok(Authenticated {
            user,
            session: claims.session,
            permissions,
        })
    }

    /// Whether `GET /auth/me` may try a token as a legacy one (`JWT_ACCEPT_LEGACY_UNTIL` set).
    pub fn accepts_legacy_tokens(&self) -> bool {
        self.tokens.accepts_legacy()
    }

    /// The user a token of the FastAPI system speaks for (`JWT_ACCEPT_LEGACY_UNTIL`, before the
    /// cut-over; see [`super::tokens::TokenKeys::verify_legacy`]). Its `sub` may be the user id,
    /// the username or the e-mail address, as that system wrote it; a numeric `sub` that is one
    /// account's id and another's username is refused rather than guessed. A disabled or deleted
    /// account is refused as its sessions are.
    pub async fn authenticate_legacy(&self, token: &str) -> Result<User, AuthError> {
        let claims = self
            .tokens
            .verify_legacy(token, self.now())
            .map_err(|err| {
                tracing::debug!(%err, "legacy token refused");
                AuthError::InvalidToken(err.kind)
            })?;
        let subject = claims.subject.as_str();
        let by_id = match super::tokens::canonical_id(subject) {
            Some(id) => self.db.credentials_by_id(UserId::new(id)).await?,
            None => None,
        };
        let by_name = if subject.contains('@') {
            self.db.credentials_by_stored_email(subject).await?
        } else {
            self.db.credentials_by_username(subject).await?
        };
        let account = match (by_id, by_name) {
            (Some(id), Some(name)) if id.user_id != name.user_id => {
                tracing::warn!(
                    id_account = id.user_id.get(),
                    name_account = name.user_id.get(),
                    "legacy token refused: its sub is one account's id and another's username"
                );
                return Err(AuthError::InvalidToken(TokenRejection::Invalid));
            }
            (Some(account), _) | (None, Some(account)) => account,
            (None, None) => return Err(AuthError::InvalidToken(TokenRejection::SessionEnded)),
        };
        if account.disabled {
            return Err(AuthError::InvalidToken(TokenRejection::SessionEnded));
        }
        let user = self
            .db
            .user_by_id(account.user_id)
            .await?
            .ok_or(AuthError::InvalidToken(TokenRejection::SessionEnded))?;
        self.metrics.record_legacy_token_accepted();
        tracing::debug!(user_id = user.id.get(), "legacy token accepted on /auth/me");
        Ok(user)
    }

    /// Ends one of `user`'s sessions (`DELETE /auth/sessions/{id}`; counted as `revoked`;
    /// audited as `session.revoked`).
    pub async fn revoke_session(
        &self,
        user: UserId,
        session: SessionId,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let audit = self.success(client, AuditEvent::SessionRevoked);
        self.end_session(user, session, RevokeReason::Revoked, audit)
            .await
    }

    /// Ends the caller's own session (`POST /auth/logout`; counted as `logout`; audited as
    /// `auth.logged_out`).
    pub async fn logout(
        &self,
        user: UserId,
        session: SessionId,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let audit = self.success(client, AuditEvent::LoggedOut);
        self.end_session(user, session, RevokeReason::Logout, audit)
            .await
    }

    /// Ends one of `user`'s sessions, counts it under `reason` and records `audit` (by and on
    /// `user`) with it.
    async fn end_session(
        &self,
        user: UserId,
        session: SessionId,
        reason: RevokeReason,
        audit: AuditEntry,
    ) -> Result<(), AuthError> {
        let audit = audit.by(user).on(user);
        if self
            .db
            .revoke_session(user, session, self.now(), &audit)
            .await?
        {
            self.audited([&audit]);
            self.metrics.record_sessions_revoked(reason, 1);
            tracing::info!(
                user_id = user.get(),
                session_id = session.get(),
                "session revoked"
            );
            Ok(())
        } else {
            Err(AuthError::SessionNotFound)
        }
    }

    /// Ends every session of `user`. Counts, under `logout_all`, the sessions the store revoked:
    /// every one not revoked before, including any that had already expired or gone idle but
    /// were not yet purged (the store's count; 0 if there were none).
    /// Audited as `auth.logged_out_all`, with the count.
    pub async fn revoke_all_sessions(
        &self,
        user: UserId,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let audit = self
            .success(client, AuditEvent::LoggedOutAll)
            .by(user)
            .on(user);
        let count = self
            .db
            .revoke_all_sessions(user, self.now(), &audit)
            .await?;
        self.audited([&audit]);
        self.metrics
            .record_sessions_revoked(RevokeReason::LogoutAll, count);
        tracing::info!(user_id = user.get(), count, "all sessions revoked");
        Ok(())
    }

    /// `user`'s active sessions.
    pub async fn sessions_of(&self, user: UserId) -> Result<Vec<Session>, AuthError> {
        let now = self.now();
        Ok(self
            .db
            .active_sessions(user, now, self.idle_cutoff(now))
            .await?)
    }

    /// Deletes sessions that can never be used again, and expired password-reset and
    /// verification tokens (with any of their mail still queued); returns how many sessions.
    pub async fn purge_sessions(&self) -> Result<u64, AuthError> {
        let now = self.now();
        let sessions = self.db.purge_sessions(now, self.idle_cutoff(now)).await?;
        let tokens = self.db.purge_account_tokens(now).await?;
        if tokens > 0 {
            tracing::info!(count = tokens, "expired account tokens purged");
        }
        Ok(sessions)
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(super) fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
