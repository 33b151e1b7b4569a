//! Black-box API tests: the real app on a random port, a fresh database per test, HTTP only.
//! Every test runs on SQLite, and again on PostgreSQL when `TEST_DATABASE_URL` is set.

mod admin_helpers;
mod helpers;

mod admin_listing;
mod admin_roles;
mod admin_users;
mod audit_http;
mod authorization;
mod bootstrap;
mod client_ip;
mod commands;
mod connections;
mod create_admin;
mod dashboard;
mod docs;
mod emails;
mod faults;
mod health;
mod hostile;
mod jwt;
mod last_admin;
mod log_hygiene;
mod logged;
mod login;
mod mail_delivery;
mod mail_process;
mod mailflow;
mod me;
mod metrics;
mod overload;
mod password_change;
mod process;
mod rate_limits;
mod recovery;
mod sessions;
mod shared_limits;
mod shutdown;
mod signup;
mod smtp_sink;
mod throttle;
mod verification;
