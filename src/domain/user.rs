//! [`User`], [`UserId`], [`Session`] and [`SessionId`]: accounts and sessions as the rest of the
//! service sees them.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

use super::{Email, RoleName, Username};

/// Declares an `i64` database id as its own type, so one kind of id cannot be passed where
/// another is expected.
macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(i64);

        impl $name {
            /// Wraps an id read from the database or from a verified token.
            pub fn new(id: i64) -> Self {
                Self(id)
            }

            /// The raw id, for SQL parameters and token claims.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

id_type!(
    /// The database id of a user.
    UserId
);
id_type!(
    /// The id of a login session (the `sid` claim of its access tokens).
    SessionId
);

/// A stored account, without its password hash (that never leaves the store and auth layers).
#[derive(Debug, Clone)]
pub struct User {
    /// Database id.
    pub id: UserId,
    /// Normalised e-mail address. Rows adopted from the FastAPI system are kept as they were
    /// stored, which is why this is a plain string rather than an [`Email`].
    pub email: String,
    /// Username as given at sign-up.
    pub username: String,
    /// When the account was created.
    pub created_at: OffsetDateTime,
    /// When the account last changed.
    pub updated_at: OffsetDateTime,
    /// When the account proved it receives mail at `email` (a verification link, or a password
    /// reset, was used); `None` until then.
    pub email_verified_at: Option<OffsetDateTime>,
    /// The account's roles, sorted by name.
    pub roles: Vec<RoleName>,
}

impl User {
    /// Whether the account holds the built-in `admin` role.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(RoleName::is_admin)
    }
}

/// An account as the admin API shows it: the [`User`], whether it is disabled and when it last
/// logged in.
#[derive(Debug, Clone)]
pub struct Account {
    /// The account.
    pub user: User,
    /// When an admin disabled it; `None` while it is enabled.
    pub disabled_at: Option<OffsetDateTime>,
    /// When it last opened a session (login); `None` if never since the roles migration.
    pub last_login_at: Option<OffsetDateTime>,
}

/// The unique field of an account that a new account collided with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueField {
    /// Another account has this e-mail address (in its canonical form, case-insensitively).
    Email,
    /// Another account has this username (case-insensitively).
    Username,
}

/// One of a user's sessions, as its owner sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session id (the `sid` claim of its access tokens).
    pub id: SessionId,
    /// When it began (login).
    pub created_at: OffsetDateTime,
    /// The last login or refresh.
    pub last_used_at: OffsetDateTime,
    /// `User-Agent` at login.
    pub user_agent: Option<String>,
    /// Client address at login.
    pub ip: Option<String>,
}

/// What sign-up needs to create an account.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The account's e-mail address.
    pub email: Email,
    /// The account's username.
    pub username: Username,
}
