//! Sealing a message's content for the outbox. (H-mail fills this in.)

use super::MailContent;

/// ChaCha20-Poly1305 under the outbox key.
pub(super) struct Seal;

impl Seal {
    pub(super) fn new(key: &[u8; 32]) -> Self {
        let _ = key;
        Self
    }

    /// `content`, sealed and bound to `message_id` and `recipient`.
    pub(super) fn seal(
        &self,
        message_id: &str,
        recipient: &str,
        content: &MailContent,
    ) -> anyhow::Result<Vec<u8>> {
        let _ = (message_id, recipient, content);
        todo!("H-mail")
    }
}
