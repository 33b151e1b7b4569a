//! Authorization: [`Permission`]s, sets of them ([`Permissions`]) and [`RoleName`]s.
//!
//! A permission is a fixed string (`users:read` …) known to this build; a role is a named set of
//! them, stored in the database. Two roles are built in: [`RoleName::ADMIN`] holds every
//! permission, [`RoleName::USER`] (given to every new account) holds none of them.

use std::fmt;

use super::FieldRule;

/// Declares the permissions once: the variant, its string, and what it allows.
macro_rules! permissions {
    ($($(#[$meta:meta])* $variant:ident = $name:literal,)*) => {
        /// Something a caller may be allowed to do on the admin API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Permission {
            $($(#[$meta])* $variant,)*
        }

        impl Permission {
            /// Every permission, in declaration order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            /// Its string, as stored, sent and documented.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }

            /// The permission named `raw` (exactly, case-sensitive), if this build knows it.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw {
                    $($name => Some(Permission::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

permissions! {
    /// List and read accounts (`GET /admin/users`, `GET /admin/users/{id}`).
    UsersRead = "users:read",
    /// Enable and disable accounts (`PATCH /admin/users/{id}`).
    UsersWrite = "users:write",
    /// Delete accounts (`DELETE /admin/users/{id}`).
    UsersDelete = "users:delete",
    /// End every session of an account (`DELETE /admin/users/{id}/sessions`).
    SessionsRevoke = "sessions:revoke",
    /// List roles (`GET /admin/roles`).
    RolesRead = "roles:read",
    /// Create, change and delete roles, grant and revoke them.
    RolesWrite = "roles:write",
    /// Read the audit trail.
    AuditRead = "audit:read",
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions (a bit each).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Permissions(u32);

impl Permissions {
    /// No permission.
    pub const NONE: Self = Self(0);

    /// Every permission this build knows.
    pub fn all() -> Self {
        Permission::ALL.iter().copied().collect()
    }

    /// Whether `permission` is in the set.
    pub const fn contains(self, permission: Permission) -> bool {
        self.0 & (1 << permission as u8) != 0
    }

    /// The set with `permission` added.
    pub const fn with(self, permission: Permission) -> Self {
        Self(self.0 | (1 << permission as u8))
    }

    /// Whether every permission in the set is also in `other`.
    pub const fn is_subset_of(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The permissions in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(move |p| self.contains(*p))
    }

    /// Their strings, in declaration order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Permission::as_str).collect()
    }

    /// The set named by a list as the store keeps it: names separated by `,`. Names this build
    /// does not know (a newer replica's) are skipped, so they grant nothing here.
    pub fn from_list(list: &str) -> Self {
        list.split(',').filter_map(Permission::parse).collect()
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// Fewest characters in a role name.
pub const ROLE_MIN_LEN: usize = 2;
/// Most characters in a role name.
pub const ROLE_MAX_LEN: usize = 64;
/// Most characters in a role's description.
pub const ROLE_DESCRIPTION_MAX_LEN: usize = 500;

/// A role's name: 2 to 64 of `a-z 0-9 _ . -`, starting with a letter. Lowercase only, so one
/// role has one spelling; never a `,` (the store lists names separated by commas).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleName(String);

/// Why a string is not a [`RoleName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoleNameError {
    /// Fewer than [`ROLE_MIN_LEN`] characters.
    #[error("String should have at least 2 characters")]
    TooShort,
    /// More than [`ROLE_MAX_LEN`] characters.
    #[error("String should have at most 64 characters")]
    TooLong,
    /// A character outside the allowed set, or a first character that is not a letter.
    #[error(
        "Role name may contain only lowercase letters, digits, '_', '.' and '-', and must start with a letter"
    )]
    Pattern,
}

impl FieldRule for RoleNameError {
    fn code(&self) -> &'static str {
        match self {
            Self::TooShort => "string_too_short",
            Self::TooLong => "string_too_long",
            Self::Pattern => "string_pattern_mismatch",
        }
    }
}

impl RoleName {
    /// The built-in role that holds every permission.
    pub const ADMIN: &'static str = "admin";
    /// The built-in role every new account gets; it holds no admin permission.
    pub const USER: &'static str = "user";

    /// Checks `raw` as given.
    pub fn parse(raw: &str) -> Result<Self, RoleNameError> {
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-');
        if !raw.chars().all(allowed) {
            return Err(RoleNameError::Pattern);
        }
        if raw.len() < ROLE_MIN_LEN {
            return Err(RoleNameError::TooShort);
        }
        if raw.len() > ROLE_MAX_LEN {
            return Err(RoleNameError::TooLong);
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(RoleNameError::Pattern);
        }
        Ok(Self(raw.to_owned()))
    }

    /// A name read from the database (trusted: it passed [`RoleName::parse`] when stored, or
    /// is a built-in).
    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    /// `admin`.
    pub fn admin() -> Self {
        Self(Self::ADMIN.to_owned())
    }

    /// `user`.
    pub fn user() -> Self {
        Self(Self::USER.to_owned())
    }

    /// Whether this is `admin`.
    pub fn is_admin(&self) -> bool {
        self.0 == Self::ADMIN
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoleName({})", self.0)
    }
}

/// Role names as the store lists them (separated by `,`), sorted and without duplicates.
pub fn roles_from_list(list: Option<&str>) -> Vec<RoleName> {
    let mut roles: Vec<RoleName> = list
        .unwrap_or("")
        .split(',')
        .filter(|name| !name.is_empty())
        .map(|name| RoleName::from_stored(name.to_owned()))
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// A role as stored: its name, what it is for, what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Its name.
    pub name: RoleName,
    /// What it is for (may be empty).
    pub description: String,
    /// What it allows.
    pub permissions: Permissions,
    /// Whether it is built in (`admin`, `user`): it cannot be changed or deleted.
    pub builtin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_round_trips_through_its_string_and_has_its_own_bit() {
        let mut seen = Permissions::NONE;
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(*p));
            assert!(!seen.contains(*p));
            seen = seen.with(*p);
        }
        assert_eq!(seen, Permissions::all());
        assert_eq!(Permission::parse("Users:Read"), None);
        assert_eq!(Permission::parse(""), None);
    }

    #[test]
    fn lists_parse_skipping_unknown_names() {
        let set = Permissions::from_list("roles:read,nope,users:read,,users:read");
        assert_eq!(set.names(), ["users:read", "roles:read"]);
        assert!(Permissions::from_list("").is_empty());
    }

    #[test]
    fn role_names() {
        for good in ["admin", "user", "support-2", "a.b_c", "ab"] {
            assert!(RoleName::parse(good).is_ok(), "{good}");
        }
        assert_eq!(RoleName::parse("a"), Err(RoleNameError::TooShort));
        assert_eq!(
            RoleName::parse(&"a".repeat(65)),
            Err(RoleNameError::TooLong)
        );
        for bad in ["Admin", "1st", "-x", "a,b", "a b", "rôle", ""] {
            assert!(RoleName::parse(bad).is_err(), "{bad}");
        }
        assert!(RoleName::admin().is_admin() && !RoleName::user().is_admin());
    }

    #[test]
    fn stored_lists_are_sorted_and_deduplicated() {
        let roles = roles_from_list(Some("user,admin,user"));
        let names: Vec<&str> = roles.iter().map(RoleName::as_str).collect();
        assert_eq!(names, ["admin", "user"]);
        assert!(roles_from_list(None).is_empty());
    }
}
