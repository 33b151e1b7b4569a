//! Rendering a message: subject, text and HTML bodies, headers. (H-mail fills this in.)

use lettre::message::Mailbox;

/// A new `Message-ID` (without angle brackets) at the domain of `from`.
pub(super) fn new_message_id(from: &Mailbox) -> anyhow::Result<String> {
    let _ = from;
    todo!("H-mail")
}
