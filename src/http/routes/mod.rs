//! Route handlers, one group per file.

pub mod auth;
pub mod health;
