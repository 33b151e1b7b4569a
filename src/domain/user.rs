//! [`User`] and [`UserId`]: an account as the rest of the service sees it.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

use super::{Email, Username};

/// The database id of a user. It is its own type so it cannot be mixed up with other ids.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(i64);

impl UserId {
    /// Wraps an id read from the database or from a verified token.
    pub fn new(id: i64) -> Self {
        Self(id)
    }

    /// The raw id, for SQL parameters and token claims.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

/// The id of a login session. Its own type, so it cannot be swapped for a [`UserId`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SessionId(i64);

impl SessionId {
    /// Wraps an id read from the database or from a verified token.
    pub fn new(id: i64) -> Self {
        Self(id)
    }

    /// The raw id.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}

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
}

/// What sign-up needs to create an account.
#[derive(Debug)]
pub struct NewUser {
    /// The account's e-mail address.
    pub email: Email,
    /// The account's username.
    pub username: Username,
}
