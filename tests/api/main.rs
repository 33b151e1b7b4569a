//! Black-box API tests: the real app on a random port, a fresh database per test, HTTP only.
//! Every test runs on SQLite, and again on PostgreSQL when `TEST_DATABASE_URL` is set.

mod helpers;

mod connections;
mod docs;
mod health;
mod hostile;
mod login;
mod me;
mod overload;
mod process;
mod sessions;
mod shutdown;
mod signup;
