//! The admin use cases: accounts (list, read, disable, delete, end sessions), roles (list,
//! create, change, delete, grant, revoke) and the admin account ensured at start-up. Whether the
//! caller may do any of this is the HTTP layer's check (its permission guard); this layer
//! checks only what the change itself must respect (the last admin, built-in roles).
