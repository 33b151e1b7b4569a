//! The background sender: claims due messages from the outbox, delivers them, retries. (H-mail.)

use std::sync::Arc;

use super::Mailer;
use crate::auth::clock::Clock;
use crate::store::Db;

impl Mailer {
    /// Delivers the outbox until the task is aborted: at once when woken, else when the next
    /// message is due (and at least every few seconds, for messages other replicas queued).
    pub async fn run(self: Arc<Self>, db: Db, clock: Arc<dyn Clock>) {
        let _ = (db, clock);
        todo!("H-mail")
    }
}
