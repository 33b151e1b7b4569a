//! bcrypt hashing and verification, off the async executor.
//!
//! bcrypt at cost 12 takes about a quarter of a second of one core. Running it on a Tokio worker
//! would stall every other request on that worker, so each call goes to the blocking pool, and a
//! semaphore lets at most one hash per core run at a time (more would only make each one slower).
//! Behind the running hashes a bounded queue waits. A caller that finds the queue full waits a
//! moment (a fraction of a second) for a place; if none frees up it gets [`HashError::Busy`] (a
//! 503 with `Retry-After`), instead of waiting many seconds for a slot.
//!
//! The short wait is what keeps a flood cheap: a client that ignores `Retry-After` and resends at
//! once can make the service answer at most one rejection per connection per wait, instead of as
//! many as the CPU can produce, so the other routes keep the cores.
//!
//! Once bcrypt starts, its slot and queue place belong to the blocking task, not to the request:
//! a client that hangs up mid-login drops the request, but the bcrypt it started runs on, and
//! were the slot given back then, a client hanging up after 50 ms again and again would have
//! dozens of bcrypt running at once (78 to 103 with two slots in the overload test before this
//! was fixed) without ever seeing a 503.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::HashQueueSettings;
use crate::domain::password::MAX_BYTES;
use crate::metrics::{HashOperation, Metrics};

/// The salt-and-hash part of a real bcrypt hash. Prefixed with `$2b$NN$` it makes a well-formed
/// hash of any cost, which no password matches; verifying against it costs exactly what
/// verifying a real hash of that cost does, without hashing anything at start-up.
const DUMMY_SALT_AND_HASH: &str = "202Xc1OuwwCXbMD/6SSOJuKGE96QZe1./SFvsuYi.9r7n2Xy5UGky";

/// Schemes passlib and crypt(3) write, named in logs and metrics when an adopted account's
/// stored hash is one of them; anything else is `other` (or `none` without a `$` prefix), so the
/// metric's label set stays bounded and no part of the hash itself is ever logged.
const FOREIGN_SCHEMES: &[&str] = &[
    "argon2i",
    "argon2d",
    "argon2id",
    "pbkdf2",
    "pbkdf2-sha1",
    "pbkdf2-sha256",
    "pbkdf2-sha512",
    "scrypt",
    "bcrypt-sha256",
    "1",
    "5",
    "6",
];

/// `None` for a stored hash this service can verify (bcrypt of a cost bcrypt allows);
/// otherwise the name of its scheme: a [`FOREIGN_SCHEMES`] entry, `bcrypt` for a damaged
/// bcrypt hash, `other` for another `$scheme$`, `none` for a value with no scheme prefix
/// (such as plain text).
pub fn unsupported_scheme(stored: &str) -> Option<&'static str> {
    match stored.parse::<bcrypt::HashParts>() {
        Ok(parts) if (4..=31).contains(&parts.get_cost()) => return None,
        _ => {}
    }
    let Some(rest) = stored.strip_prefix('$') else {
        return Some("none");
    };
    let scheme = rest.split('$').next().unwrap_or_default();
    if matches!(scheme, "2a" | "2b" | "2x" | "2y") {
        return Some("bcrypt");
    }
    Some(
        FOREIGN_SCHEMES
            .iter()
            .find(|known| **known == scheme)
            .copied()
            .unwrap_or("other"),
    )
}

/// Hashes and verifies passwords with bounded parallelism and a bounded queue.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    dummy_hash: Arc<str>,
    slots: Arc<Semaphore>,
    /// Places for operations admitted (running or waiting for a slot): one running per core
    /// plus the queue.
    places: Arc<Semaphore>,
    /// How long a caller waits for a place when the queue is full.
    place_wait: Duration,
    metrics: Arc<Metrics>,
}

/// Why a hash or verification did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every slot is busy and the queue is full: try again shortly.
    #[error("password hashing queue is full")]
    Busy,
    /// bcrypt or the blocking pool failed (a malformed stored hash, a panicked task).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// A place in the hashing queue. Take it with [`PasswordHasher::admit`] before doing any other
/// work for the request, so a saturated service turns requests away without touching the
/// database. It is given back when the request ends, however it ends; once its bcrypt has
/// started, only when that bcrypt is done.
#[must_use = "an admission is spent by hash or verify"]
pub struct Admission {
    _place: OwnedSemaphorePermit,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher making hashes of `cost`, running as many at once as there are cores, with up
    /// to `queue.per_core` × cores more waiting.
    pub fn new(cost: u32, queue: HashQueueSettings, metrics: Arc<Metrics>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        metrics.set_hash_slots(cores);
        Self {
            cost,
            dummy_hash: format!("$2b${cost:02}${DUMMY_SALT_AND_HASH}").into(),
            slots: Arc::new(Semaphore::new(cores)),
            places: Arc::new(Semaphore::new(cores * (1 + queue.per_core))),
            place_wait: queue.full_wait,
            metrics,
        }
    }

    /// A place in the queue. When the queue is full, waits up to the configured moment for one
    /// (first come, first served), then gives [`HashError::Busy`].
    pub async fn admit(&self) -> Result<Admission, HashError> {
        let permit = match self.places.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                let waited =
                    tokio::time::timeout(self.place_wait, self.places.clone().acquire_owned())
                        .await;
                match waited {
                    Ok(permit) => permit.context("password hasher is shut down")?,
                    Err(_elapsed) => {
                        self.metrics.record_hash_rejected();
                        return Err(HashError::Busy);
                    }
                }
            }
            Err(TryAcquireError::Closed) => {
                return Err(anyhow::anyhow!("password hasher is shut down").into());
            }
        };
        Ok(Admission { _place: permit })
    }

    /// Hashes a password that already passed the policy (so it fits bcrypt's 72 bytes).
    pub async fn hash(
        &self,
        admission: Admission,
        password: SecretString,
    ) -> Result<String, HashError> {
        let cost = self.cost;
        self.run(admission, HashOperation::Hash, move || {
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
        admission: Admission,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let fits = password.expose_secret().len() <= MAX_BYTES;
        let real = stored.filter(|_| fits);
        let known = real.is_some();
        let hash = real.unwrap_or_else(|| self.dummy_hash.to_string());
        let matched = self
            .run(admission, HashOperation::Verify, move || {
                bcrypt::verify(password.expose_secret(), &hash)
                    .context("stored password hash is malformed")
            })
            .await?;
        Ok(known && matched)
    }

    /// Runs `work` on the blocking pool once a slot is free. The admission and the slot move
    /// into the blocking task, so they are held exactly as long as bcrypt runs: a caller that
    /// goes away (the client hung up) while bcrypt runs cannot free them early and let more
    /// bcrypt start than there are slots. A caller that goes away while still waiting for a
    /// slot gives its place back at once, before any work started. The time is recorded by
    /// the blocking task too, so abandoned operations are counted.
    async fn run<T: Send + 'static>(
        &self,
        admission: Admission,
        operation: HashOperation,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        let started = std::time::Instant::now();
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .context("password hasher is shut down")?;
        let metrics = self.metrics.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _held = (admission, slot);
            let running = metrics.hash_running();
            let result = work();
            drop(running);
            metrics.record_hash(operation, started.elapsed());
            result
        })
        .await
        .context("password hashing task failed")?;
        Ok(result?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new("sqlite"))
    }

    /// Starts `count` verifications at once, each asking for its own admission.
    fn verify_at_once(
        hasher: &PasswordHasher,
        count: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<bool, HashError>>> {
        (0..count)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move {
                    let admission = hasher.admit().await?;
                    hasher
                        .verify(admission, SecretString::from("x"), None)
                        .await
                })
            })
            .collect()
    }

    fn queue(per_core: usize, full_wait_ms: u64) -> HashQueueSettings {
        HashQueueSettings {
            per_core,
            full_wait: Duration::from_millis(full_wait_ms),
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_and_a_wrong_password_does_not() {
        let hasher = PasswordHasher::new(4, queue(16, 250), metrics());
        let hash = hasher
            .hash(
                hasher.admit().await.expect("room"),
                SecretString::from("correct horse"),
            )
            .await
            .expect("hash");
        assert!(hash.starts_with("$2b$04$"));
        let ok = hasher.verify(
            hasher.admit().await.expect("room"),
            SecretString::from("correct horse"),
            Some(hash.clone()),
        );
        assert!(ok.await.expect("verify"));
        let wrong = hasher.verify(
            hasher.admit().await.expect("room"),
            SecretString::from("wrong horse"),
            Some(hash),
        );
        assert!(!wrong.await.expect("verify"));
    }

    #[tokio::test]
    async fn unknown_accounts_pay_one_verification_at_the_configured_cost() {
        for cost in [4, 12, 31] {
            let hasher = PasswordHasher::new(cost, queue(16, 250), metrics());
            let parts: bcrypt::HashParts = hasher.dummy_hash.parse().expect("dummy is well formed");
            assert_eq!(parts.get_cost(), cost);
        }
        let hasher = PasswordHasher::new(4, queue(16, 250), metrics());
        let unknown = hasher.verify(
            hasher.admit().await.expect("room"),
            SecretString::from("anything at all"),
            None,
        );
        assert!(!unknown.await.expect("dummy verification runs"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_queue_callers_are_turned_away_at_once() {
        let hasher = PasswordHasher::new(10, queue(0, 0), metrics());
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let calls = verify_at_once(&hasher, cores + 3);
        let mut busy = 0;
        for call in calls {
            match call.await.expect("task") {
                Ok(matched) => assert!(!matched),
                Err(HashError::Busy) => busy += 1,
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert!(busy >= 3, "{busy} of {} turned away", cores + 3);
        assert_eq!(
            hasher.places.available_permits(),
            cores,
            "every admission returned"
        );
        assert!(
            hasher
                .verify(
                    hasher.admit().await.expect("room"),
                    SecretString::from("x"),
                    None
                )
                .await
                .is_ok(),
            "room again"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_finding_the_queue_full_gets_a_place_that_frees_within_the_wait() {
        let hasher = PasswordHasher::new(4, queue(0, 10_000), metrics());
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let calls = verify_at_once(&hasher, cores * 4);
        for call in calls {
            assert!(!call.await.expect("task").expect("admitted after a wait"));
        }
        assert_eq!(hasher.places.available_permits(), cores);
    }

    #[tokio::test]
    async fn passwords_longer_than_bcrypt_reads_never_match() {
        let hasher = PasswordHasher::new(4, queue(16, 250), metrics());
        let long = "x".repeat(72);
        let hash = hasher
            .hash(
                hasher.admit().await.expect("room"),
                SecretString::from(long.clone()),
            )
            .await
            .expect("hash");
        let exact = hasher.verify(
            hasher.admit().await.expect("room"),
            SecretString::from(long.clone()),
            Some(hash.clone()),
        );
        assert!(
            exact.await.expect("verify"),
            "72 bytes is the limit, not past it"
        );
        let longer = format!("{long}y");
        let verified = hasher.verify(
            hasher.admit().await.expect("room"),
            SecretString::from(longer),
            Some(hash),
        );
        assert!(!verified.await.expect("verify"));
    }

    #[test]
    fn only_usable_bcrypt_hashes_have_no_unsupported_scheme() {
        let cases = [
            (
                "$2b$12$hAK2LFmE41dHYcAIWglcSeKL2w.bF5Ka0D85u8qKuE/QxRPOEXNgq",
                None,
            ),
            (
                "$2y$04$hAK2LFmE41dHYcAIWglcSeKL2w.bF5Ka0D85u8qKuE/QxRPOEXNgq",
                None,
            ),
            (
                "$2b$99$hAK2LFmE41dHYcAIWglcSeKL2w.bF5Ka0D85u8qKuE/QxRPOEXNgq",
                Some("bcrypt"),
            ),
            ("$2b$12$short", Some("bcrypt")),
            (
                "$pbkdf2-sha256$29000$N2bsnTNmrFWqFeI8J4Rwbg$Zhb2XoUBvNsCYOnk.Ny8T3GmYZKx8WOG5qvQWHqJGGU",
                Some("pbkdf2-sha256"),
            ),
            (
                "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
                Some("argon2id"),
            ),
            ("$made-up$abc", Some("other")),
            ("hunter2", Some("none")),
            ("", Some("none")),
        ];
        for (stored, scheme) in cases {
            assert_eq!(unsupported_scheme(stored), scheme, "{stored}");
        }
    }
}
