//! Delivering one rendered message: SMTP with `SMTP_URL`, else an `.eml` file. (H-mail.)

use crate::config::MailSettings;

/// Where messages go.
#[derive(Debug)]
pub(super) enum Transport {
    /// `.eml` files in this directory.
    Files(std::path::PathBuf),
}

impl Transport {
    pub(super) fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        Ok(Self::Files(settings.outbox_dir.clone()))
    }
}
