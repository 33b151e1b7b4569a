//! The in-memory store. (skeleton: implemented by the limits-core work)

use super::Throttled;
use super::rate::Rate;
use super::store::GcraOutcome;
use crate::config::ThrottleSettings;

/// Budgets and counters in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryStore {}

impl MemoryStore {
    pub fn gcra(&self, _key: &str, _rate: Rate) -> GcraOutcome {
        todo!()
    }
    pub fn login_attempt(
        &self,
        _pair: &str,
        _account: &str,
        _settings: &ThrottleSettings,
    ) -> Option<Throttled> {
        todo!()
    }
    pub fn clear(&self, _keys: &[String]) {
        todo!()
    }
    pub fn sweep(&self) {}
}
