//! The Redis store. (skeleton: implemented by the limits-core work)

use std::time::Duration;

use secrecy::SecretString;

use super::Throttled;
use super::rate::Rate;
use super::store::{GcraOutcome, StoreError};
use crate::config::ThrottleSettings;

/// Budgets and counters in Redis.
#[derive(Debug)]
pub struct RedisStore {}

impl RedisStore {
    pub fn new(_url: &SecretString, _timeout: Duration) -> anyhow::Result<Self> {
        todo!()
    }
    pub async fn gcra(&self, _key: &str, _rate: Rate) -> Result<GcraOutcome, StoreError> {
        todo!()
    }
    pub async fn login_attempt(
        &self,
        _pair: &str,
        _account: &str,
        _settings: &ThrottleSettings,
    ) -> Result<Option<Throttled>, StoreError> {
        todo!()
    }
    pub async fn clear(&self, _keys: &[String]) -> Result<(), StoreError> {
        todo!()
    }
    pub fn outage(&self, _err: &StoreError, _admit: bool) {}
}
