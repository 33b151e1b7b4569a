//! Sealing what a queued message says before it is stored in the outbox.
//!
//! A queued reset link is as good as a password for as long as it is valid, so the outbox does
//! not keep it in the clear: [`Seal::seal`] encrypts the [`MailContent`] (as JSON) with
//! ChaCha20-Poly1305 under the outbox key (derived from the signing secret, so every replica
//! opens what any replica sealed). The stored form is `nonce (12 random bytes) || ciphertext`.
//!
//! The message's `Message-ID` and recipient are the associated data: they stay readable in their
//! own columns, but a row whose recipient (or id) was edited no longer opens, so a copy of a
//! sealed payload cannot be redirected to another address.
//!
//! A random 96-bit nonce per message is safe far beyond any volume of mail this service sends
//! (the birthday bound is around 2^48 messages under one key).

use anyhow::{Context, anyhow};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};

use super::MailContent;

/// Bytes of nonce in front of the ciphertext.
const NONCE_LEN: usize = 12;

/// ChaCha20-Poly1305 under the outbox key.
pub(super) struct Seal {
    cipher: ChaCha20Poly1305,
}

impl Seal {
    /// A seal under `key`.
    pub(super) fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(&Key::from(*key)),
        }
    }

    /// `content`, sealed and bound to `message_id` and `recipient`.
    pub(super) fn seal(
        &self,
        message_id: &str,
        recipient: &str,
        content: &MailContent,
    ) -> anyhow::Result<Vec<u8>> {
        let plain = serde_json::to_vec(content).context("cannot serialise mail content")?;
        let mut nonce = [0_u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|err| anyhow!("no random nonce: {err}"))?;
        let aad = associated_data(message_id, recipient);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| anyhow!("cannot seal mail content"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The content `payload` was sealed with, if it was sealed under this key for exactly this
    /// `message_id` and `recipient` and not altered since.
    pub(super) fn open(
        &self,
        message_id: &str,
        recipient: &str,
        payload: &[u8],
    ) -> anyhow::Result<MailContent> {
        let Some((nonce, sealed)) = payload.split_first_chunk::<NONCE_LEN>() else {
            return Err(anyhow!("sealed mail payload is too short"));
        };
        let aad = associated_data(message_id, recipient);
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(*nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                anyhow!(
                    "sealed mail payload does not open (sealed under another key, or the row was \
                     altered)"
                )
            })?;
        serde_json::from_slice(&plain).context("sealed mail payload is not mail content")
    }
}

/// `message_id`, a NUL, `recipient`: neither may contain a NUL, so no two pairs give the same
/// bytes.
fn associated_data(message_id: &str, recipient: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(message_id.len() + 1 + recipient.len());
    aad.extend_from_slice(message_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(recipient.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> MailContent {
        MailContent {
            username: "ada".to_owned(),
            link: Some("http://localhost:8000/auth/password/reset?token=crg_pr_abc".to_owned()),
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef@localhost";
    const TO: &str = "ada@example.com";

    #[test]
    fn round_trip() {
        let seal = Seal::new(&[7; 32]);
        let sealed = seal.seal(ID, TO, &content()).expect("seal");
        assert_eq!(seal.open(ID, TO, &sealed).expect("open"), content());
        let none = MailContent {
            username: "bob".to_owned(),
            link: None,
        };
        let sealed = seal.seal(ID, TO, &none).expect("seal");
        assert_eq!(seal.open(ID, TO, &sealed).expect("open"), none);
    }

    #[test]
    fn the_link_is_not_stored_in_the_clear_and_nonces_differ() {
        let seal = Seal::new(&[7; 32]);
        let a = seal.seal(ID, TO, &content()).expect("seal");
        let b = seal.seal(ID, TO, &content()).expect("seal");
        assert_ne!(a, b);
        let needle = b"crg_pr_abc";
        assert!(!a.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn tampered_payload_fails() {
        let seal = Seal::new(&[7; 32]);
        let sealed = seal.seal(ID, TO, &content()).expect("seal");
        for at in [0, NONCE_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(seal.open(ID, TO, &bad).is_err(), "flipped byte {at}");
        }
        assert!(seal.open(ID, TO, &sealed[..NONCE_LEN]).is_err());
        assert!(seal.open(ID, TO, &[]).is_err());
    }

    #[test]
    fn other_recipient_or_message_id_fails() {
        let seal = Seal::new(&[7; 32]);
        let sealed = seal.seal(ID, TO, &content()).expect("seal");
        assert!(seal.open(ID, "eve@example.com", &sealed).is_err());
        assert!(
            seal.open("ffff@localhost", TO, &sealed).is_err(),
            "other message id"
        );
    }

    #[test]
    fn other_key_fails() {
        let sealed = Seal::new(&[7; 32]).seal(ID, TO, &content()).expect("seal");
        assert!(Seal::new(&[8; 32]).open(ID, TO, &sealed).is_err());
    }
}
