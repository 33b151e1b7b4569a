//! The audit trail's vocabulary: which security events exist ([`AuditEvent`], names fixed by
//! the API) and how they ended ([`Outcome`]).

use std::fmt;

/// Declares the events once: the variant, its name, and what it records.
macro_rules! audit_events {
    ($($(#[$meta:meta])* $variant:ident = $name:literal,)*) => {
        /// A kind of security event the audit trail records.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum AuditEvent {
            $($(#[$meta])* $variant,)*
        }

        impl AuditEvent {
            /// Every event, in declaration order.
            pub const ALL: &'static [AuditEvent] = &[$(AuditEvent::$variant,)*];

            /// Its name, as stored, sent, logged and documented.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(AuditEvent::$variant => $name,)*
                }
            }

            /// The event named `raw` (exactly), if there is one.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw {
                    $($name => Some(AuditEvent::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

audit_events! {
    /// An account was created by sign-up.
    UserSignedUp = "user.signed_up",
    /// The right password opened a session.
    LoginSucceeded = "auth.login_succeeded",
    /// A login was refused: wrong password or unknown account, or the right password of a
    /// disabled or unverified account.
    LoginFailed = "auth.login_failed",
    /// The login throttle refused an attempt before any password check.
    LoginThrottled = "auth.login_throttled",
    /// The caller ended its own session.
    LoggedOut = "auth.logged_out",
    /// The caller ended every session of its account.
    LoggedOutAll = "auth.logged_out_all",
    /// A session was ended by its owner (by id) or by an admin.
    SessionRevoked = "session.revoked",
    /// A rotated refresh token came back after its grace window: its session was revoked.
    RefreshReuseDetected = "auth.refresh_reuse_detected",
    /// A password-reset link was queued for an account.
    PasswordResetRequested = "password.reset_requested",
    /// A reset link set a new password.
    PasswordResetCompleted = "password.reset_completed",
    /// The signed-in owner changed the password.
    PasswordChanged = "password.changed",
    /// A verification link was queued (at sign-up or on request).
    EmailVerificationSent = "email.verification_sent",
    /// A verification link confirmed the address.
    EmailVerified = "email.verified",
    /// An admin disabled an account.
    UserDisabled = "user.disabled",
    /// An admin enabled an account.
    UserEnabled = "user.enabled",
    /// An admin deleted an account.
    UserDeleted = "user.deleted",
    /// An account was given a role.
    RoleGranted = "role.granted",
    /// A role was taken from an account.
    RoleRevoked = "role.revoked",
    /// A custom role was created.
    RoleCreated = "role.created",
    /// A custom role's description or permissions changed.
    RoleUpdated = "role.updated",
    /// A custom role was deleted.
    RoleDeleted = "role.deleted",
    /// The configured admin account was created, or given `admin`, at start-up or by
    /// `cerego create-admin`.
    AdminBootstrapped = "admin.bootstrapped",
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the action an event records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It was done.
    Success,
    /// It was refused.
    Failure,
}

impl Outcome {
    /// `success` or `failure`, as stored and sent.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    /// The outcome named `raw`, if it is one.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_parses_back_from_its_name() {
        assert_eq!(AuditEvent::ALL.len(), 22);
        for event in AuditEvent::ALL {
            assert_eq!(AuditEvent::parse(event.as_str()), Some(*event));
            let (area, action) = event.as_str().split_once('.').expect("area.action");
            assert!(!area.is_empty() && !action.is_empty());
        }
        assert_eq!(AuditEvent::parse("auth.login"), None);
        assert_eq!(AuditEvent::parse("USER.SIGNED_UP"), None);
    }

    #[test]
    fn outcomes_parse_back() {
        for outcome in [Outcome::Success, Outcome::Failure] {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(Outcome::parse("ok"), None);
    }
}
