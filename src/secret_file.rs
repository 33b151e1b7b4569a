//! The JWT signing key of the embedded default: generated once, kept beside the SQLite file
//! with mode 0600, so tokens survive restarts without anyone configuring a secret.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use secrecy::SecretString;

/// The key file that belongs to the SQLite database at `db_file`.
pub fn path_for(db_file: &Path) -> PathBuf {
    let mut name = db_file.file_name().unwrap_or_default().to_os_string();
    name.push(".jwt-secret");
    db_file.with_file_name(name)
}

/// Reads the key beside `db_file`, creating it first if needed. With no file (an in-memory
/// database) the key lives only as long as the process.
pub fn load_or_create(db_file: Option<&Path>) -> anyhow::Result<SecretString> {
    let Some(db_file) = db_file else {
        tracing::warn!("JWT_SECRET_KEY is not set: using a key that lasts until the process exits");
        return random_key();
    };
    let path = path_for(db_file);
    let key = random_key_text()?;
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(key.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::warn!(
                path = %path.display(),
                "JWT_SECRET_KEY is not set: generated a signing key and stored it (mode 0600); \
                 set JWT_SECRET_KEY to manage the key yourself"
            );
            Ok(key.into())
        }
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            let stored = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let stored = stored.trim().to_owned();
            anyhow::ensure!(
                stored.len() >= 32,
                "{} holds fewer than 32 bytes: delete it to generate a new key",
                path.display()
            );
            tracing::warn!(path = %path.display(), "JWT_SECRET_KEY is not set: using the stored key");
            Ok(stored.into())
        }
        Err(err) => Err(err).with_context(|| format!("cannot create {}", path.display())),
    }
}

fn random_key() -> anyhow::Result<SecretString> {
    Ok(random_key_text()?.into())
}

/// 32 random bytes from the operating system, hex-encoded (64 characters).
fn random_key_text() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_is_created_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("cerego.db");
        let first = load_or_create(Some(&db)).expect("created");
        let second = load_or_create(Some(&db)).expect("read back");
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert_eq!(first.expose_secret().len(), 64);
        let mode = std::fs::metadata(path_for(&db))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
