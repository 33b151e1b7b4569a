//! Black-box API tests: the real app on a random port, a fresh database per test, HTTP only.
//! Every test runs on SQLite, and again on PostgreSQL when `TEST_DATABASE_URL` is set.

mod helpers;

mod client_ip;
mod commands;
mod connections;
mod dashboard;
mod docs;
mod emails;
mod faults;
mod health;
mod hostile;
mod jwt;
mod log_hygiene;
mod login;
mod me;
mod metrics;
mod overload;
mod process;
mod rate_limits;
mod sessions;
mod shared_limits;
mod shutdown;
mod signup;
mod throttle;
