//! Route handlers, one group per file.

pub mod activity;
pub mod admin;
pub mod auth;
pub mod discovery;
pub mod docs;
pub mod email;
pub mod health;
pub mod metrics;
pub mod recovery;
pub mod sessions;
