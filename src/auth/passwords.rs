//! bcrypt hashing and verification, off the async executor.
//!
//! bcrypt at cost 12 takes about a quarter of a second of one core. Running it on a Tokio worker
//! would stall every other request on that worker, so each call goes to the blocking pool, and a
//! semaphore lets at most one hash per core run at a time (more would only make each one slower).

use std::sync::Arc;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::domain::password::MAX_BYTES;

/// The salt-and-hash part of a real bcrypt hash. Prefixed with `$2b$NN$` it makes a well-formed
/// hash of any cost, which no password matches; verifying against it costs exactly what
/// verifying a real hash of that cost does, without hashing anything at start-up.
const DUMMY_SALT_AND_HASH: &str = "202Xc1OuwwCXbMD/6SSOJuKGE96QZe1./SFvsuYi.9r7n2Xy5UGky";

/// Hashes and verifies passwords with bounded parallelism.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    dummy_hash: Arc<str>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher making hashes of `cost`, running as many at once as there are cores.
    pub fn new(cost: u32) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            cost,
            dummy_hash: format!("$2b${cost:02}${DUMMY_SALT_AND_HASH}").into(),
            slots: Arc::new(Semaphore::new(cores)),
        }
    }

    /// The bcrypt cost of new hashes.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Hashes a password that already passed the policy (so it fits bcrypt's 72 bytes).
    pub async fn hash(&self, password: SecretString) -> anyhow::Result<String> {
        let cost = self.cost;
        self.run(move || {
            let password = password.expose_secret().as_bytes();
            // bcrypt reads 72 bytes; the sign-up policy refuses longer passwords, and this
            // check keeps the hasher honest on its own.
            anyhow::ensure!(password.len() <= MAX_BYTES, "password longer than 72 bytes");
            bcrypt::hash(password, cost).context("bcrypt could not hash the password")
        })
        .await
    }

    /// Checks `password` against `stored`; with no stored hash (unknown account), or a password
    /// longer than bcrypt reads (which no stored hash can match), it verifies against a dummy
    /// hash of the configured cost and answers `false`, so every case takes the same time.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> anyhow::Result<bool> {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let matched = self
            .run(
                move || match bcrypt::non_truncating_verify(password.expose_secret(), &hash) {
                    Ok(matched) => Ok(matched),
                    Err(bcrypt::BcryptError::Truncation(_)) => Ok(false),
                    Err(err) => {
                        Err(anyhow::Error::new(err).context("stored password hash is malformed"))
                    }
                },
            )
            .await?;
        Ok(known && matched)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let _slot = self
            .slots
            .acquire()
            .await
            .context("password hasher is shut down")?;
        tokio::task::spawn_blocking(work)
            .await
            .context("password hashing task failed")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_and_a_wrong_password_does_not() {
        let hasher = PasswordHasher::new(4);
        let hash = hasher
            .hash(SecretString::from("correct horse"))
            .await
            .expect("hash");
        assert!(hash.starts_with("$2b$04$"));
        let ok = hasher.verify(SecretString::from("correct horse"), Some(hash.clone()));
        assert!(ok.await.expect("verify"));
        let wrong = hasher.verify(SecretString::from("wrong horse"), Some(hash));
        assert!(!wrong.await.expect("verify"));
    }

    #[tokio::test]
    async fn unknown_accounts_pay_one_verification_at_the_configured_cost() {
        for cost in [4, 12, 31] {
            let hasher = PasswordHasher::new(cost);
            let parts: bcrypt::HashParts = hasher.dummy_hash.parse().expect("dummy is well formed");
            assert_eq!(parts.get_cost(), cost);
        }
        let hasher = PasswordHasher::new(4);
        let unknown = hasher.verify(SecretString::from("anything at all"), None);
        assert!(!unknown.await.expect("dummy verification runs"));
    }

    #[tokio::test]
    async fn passwords_longer_than_bcrypt_reads_never_match() {
        let hasher = PasswordHasher::new(4);
        let long = "x".repeat(72);
        let hash = hasher
            .hash(SecretString::from(long.clone()))
            .await
            .expect("hash");
        let longer = format!("{long}y");
        let verified = hasher.verify(SecretString::from(longer), Some(hash));
        assert!(!verified.await.expect("verify"));
    }
}
