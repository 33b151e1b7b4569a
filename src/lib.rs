//! cerego: sign-up, login and current-user for learning products, on PostgreSQL or an embedded
//! SQLite file — a drop-in for the FastAPI auth design its clients and database were built for.
//!
//! A request flows inward: [`http`] (extract, turn input into [`domain`] types, shape the
//! response) → [`auth`] (rules, hashing, tokens) → [`store`] (SQL only). [`domain`] depends on
//! nothing of ours; [`http`] is the only module that knows axum. [`app`] wires the parts from
//! [`config`] and serves them.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod http;
pub mod limits;
pub mod mail;
pub mod metrics;
pub mod outage;
pub mod readiness;
pub mod secret_file;
pub mod store;
pub mod telemetry;
