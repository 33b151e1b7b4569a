//! Asymmetric signing keys (`JWT_ALGORITHM` EdDSA, ES256 or RS256): the PEM files of
//! `JWT_KEYS_DIR`, their key ids, the public JWK set served at `/.well-known/jwks.json`, and
//! `cerego keys generate`.
//!
//! - Every `*.pem` file in the directory is a key: a PKCS#8 private key (`BEGIN PRIVATE KEY`) or
//!   an SPKI public key (`BEGIN PUBLIC KEY`). Hidden files and other names are skipped, so a
//!   Kubernetes secret mount (with its `..data` links) works as it is.
//! - Every key verifies. The newest-created private key signs: the file system's creation time
//!   where it keeps one, else the modification time; equal times go to the greater file name
//!   (`keys generate` names files by their creation time, so names sort by age).
//! - A key's `kid` is its RFC 7638 JWK thumbprint (SHA-256, base64url), so every replica derives
//!   the same id from the same key without any registry, and a copied or renamed file keeps it.
//! - A key must fit the algorithm (Ed25519 for EdDSA, P-256 for ES256, RSA of at least 2048
//!   bits for RS256); anything else stops start-up with a message naming the file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use pkcs8::der::pem::LineEnding;
use pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A key file larger than this is not a key (an RSA 4096 private key is about 3.3 KB).
const MAX_KEY_FILE: u64 = 64 * 1024;
/// The smallest RSA modulus accepted, in bits (RFC 7518 §3.3).
const MIN_RSA_BITS: usize = 2048;
/// The size of the RSA keys `keys generate` makes.
const GENERATED_RSA_BITS: usize = 3072;

/// The asymmetric algorithms, as `JWT_ALGORITHM` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// Ed25519.
    #[value(name = "EdDSA")]
    EdDsa,
    /// ECDSA on P-256.
    #[value(name = "ES256")]
    Es256,
    /// RSA, PKCS#1 v1.5 with SHA-256.
    #[value(name = "RS256")]
    Rs256,
}

impl KeyAlgorithm {
    /// The asymmetric algorithm `algorithm` is, if it is one cerego signs with.
    pub fn of(algorithm: Algorithm) -> Option<Self> {
        match algorithm {
            Algorithm::EdDSA => Some(Self::EdDsa),
            Algorithm::ES256 => Some(Self::Es256),
            Algorithm::RS256 => Some(Self::Rs256),
            _ => None,
        }
    }

    /// The algorithm as the JWT library names it.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::EdDsa => Algorithm::EdDSA,
            Self::Es256 => Algorithm::ES256,
            Self::Rs256 => Algorithm::RS256,
        }
    }

    /// The JOSE name (`alg`).
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    /// What a key for it is, for messages.
    fn key_kind(self) -> &'static str {
        match self {
            Self::EdDsa => "an Ed25519 key",
            Self::Es256 => "a P-256 (prime256v1) EC key",
            Self::Rs256 => "an RSA key of at least 2048 bits",
        }
    }
}

/// The public half of a key: what a JWK publishes and the thumbprint is taken of.
#[derive(Clone, PartialEq, Eq)]
enum PublicKey {
    Ed25519 { x: [u8; 32] },
    P256 { x: Vec<u8>, y: Vec<u8> },
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicKey {
    fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Self::Ed25519 { .. } => KeyAlgorithm::EdDsa,
            Self::P256 { .. } => KeyAlgorithm::Es256,
            Self::Rsa { .. } => KeyAlgorithm::Rs256,
        }
    }

    /// The JWK members RFC 7638 §3.2 requires, in its lexicographic order: the thumbprint's
    /// input, and the start of the published JWK.
    fn required_members(&self) -> BTreeMap<&'static str, String> {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let members: Vec<(&'static str, String)> = match self {
            Self::Ed25519 { x } => vec![
                ("crv", "Ed25519".into()),
                ("kty", "OKP".into()),
                ("x", b64(x)),
            ],
            Self::P256 { x, y } => vec![
                ("crv", "P-256".into()),
                ("kty", "EC".into()),
                ("x", b64(x)),
                ("y", b64(y)),
            ],
            Self::Rsa { n, e } => vec![("e", b64(e)), ("kty", "RSA".into()), ("n", b64(n))],
        };
        members.into_iter().collect()
    }

    /// The RFC 7638 thumbprint: SHA-256 of the required members as JSON with no white space,
    /// in lexicographic order, base64url.
    fn thumbprint(&self) -> String {
        // A BTreeMap of strings serialises exactly so: sorted keys, no spaces, JSON escaping.
        let canonical =
            serde_json::to_string(&self.required_members()).unwrap_or_else(|_| unreachable!());
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    fn decoding_key(&self) -> DecodingKey {
        match self {
            Self::Ed25519 { x } => DecodingKey::from_ed_der(x),
            Self::P256 { x, y } => {
                // The SEC1 uncompressed point the library verifies with.
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                DecodingKey::from_ec_der(&point)
            }
            Self::Rsa { n, e } => DecodingKey::from_rsa_raw_components(n, e),
        }
    }
}

/// One key of the directory.
struct LoadedKey {
    path: PathBuf,
    public: PublicKey,
    /// `Some` for a private key.
    encoding: Option<EncodingKey>,
    created: SystemTime,
}

/// A key that verifies tokens.
struct VerifyingKey {
    kid: String,
    decoding: DecodingKey,
    jwk: Value,
}

/// The keys of `JWT_KEYS_DIR`: one signs, all verify.
pub struct KeySet {
    algorithm: KeyAlgorithm,
    signing_kid: String,
    encoding: EncodingKey,
    verifying: Vec<VerifyingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("algorithm", &self.algorithm.name())
            .field("signing_kid", &self.signing_kid)
            .field(
                "kids",
                &self.verifying.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// Reads every key in `dir` for `algorithm`. Fails, naming the file, on a key that cannot be
    /// read or does not fit the algorithm, and when no private key is there to sign with.
    pub fn load(dir: &Path, algorithm: KeyAlgorithm) -> anyhow::Result<Self> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read JWT_KEYS_DIR {}", dir.display()))?;
        let mut keys: Vec<LoadedKey> = Vec::new();
        for entry in entries {
            let entry =
                entry.with_context(|| format!("cannot read JWT_KEYS_DIR {}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".pem") {
                continue;
            }
            // Follows links (a secret mount's files are links into its `..data`).
            let metadata = std::fs::metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if !metadata.is_file() {
                continue;
            }
            let key = load_key(&path, &metadata, algorithm)
                .with_context(|| format!("JWT_KEYS_DIR: {}", path.display()))?;
            keys.push(key);
        }
        Self::from_keys(keys, algorithm, dir)
    }

    fn from_keys(
        mut keys: Vec<LoadedKey>,
        algorithm: KeyAlgorithm,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        // Newest first; equal times: the greater name first.
        keys.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.path.cmp(&a.path)));
        let Some(signer) = keys.iter().find(|key| key.encoding.is_some()) else {
            bail!(
                "JWT_KEYS_DIR {} holds no private key ({} PEM file{} with {}); make one with \
                 `cerego keys generate --algorithm {} --out {}`",
                dir.display(),
                keys.len(),
                if keys.len() == 1 { "" } else { "s" },
                algorithm.key_kind(),
                algorithm.name(),
                dir.display()
            );
        };
        let signing_kid = signer.public.thumbprint();
        let encoding = signer.encoding.clone().unwrap_or_else(|| unreachable!());
        let mut verifying: Vec<VerifyingKey> = Vec::new();
        for key in &keys {
            let kid = key.public.thumbprint();
            // The same key as a private and a public file, or copied twice: listed once.
            if verifying.iter().any(|known| known.kid == kid) {
                continue;
            }
            let mut jwk: serde_json::Map<String, Value> = key
                .public
                .required_members()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), Value::String(value)))
                .collect();
            jwk.insert("kid".into(), json!(kid));
            jwk.insert("use".into(), json!("sig"));
            jwk.insert("alg".into(), json!(algorithm.name()));
            verifying.push(VerifyingKey {
                decoding: key.public.decoding_key(),
                kid,
                jwk: Value::Object(jwk),
            });
        }
        Ok(Self {
            algorithm,
            signing_kid,
            encoding,
            verifying,
        })
    }

    /// The algorithm every key is for.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The `kid` of the key that signs.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// The key that signs.
    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The key with this `kid`, if it is one of ours.
    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifying
            .iter()
            .find(|key| key.kid == kid)
            .map(|key| &key.decoding)
    }

    /// Every key's id, the signing key's first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.signing_kid.as_str()).chain(
            self.verifying
                .iter()
                .map(|key| key.kid.as_str())
                .filter(|kid| *kid != self.signing_kid),
        )
    }

    /// The public keys as a JWK set (RFC 7517 §5), the signing key first.
    pub fn jwks(&self) -> Value {
        let mut keys: Vec<&Value> = Vec::with_capacity(self.verifying.len());
        keys.extend(
            self.verifying
                .iter()
                .filter(|key| key.kid == self.signing_kid)
                .map(|key| &key.jwk),
        );
        keys.extend(
            self.verifying
                .iter()
                .filter(|key| key.kid != self.signing_kid)
                .map(|key| &key.jwk),
        );
        json!({ "keys": keys })
    }
}

/// When `metadata`'s file was created, as far as the file system says.
fn created(metadata: &std::fs::Metadata) -> SystemTime {
    metadata
        .created()
        .or_else(|_| metadata.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn load_key(
    path: &Path,
    metadata: &std::fs::Metadata,
    algorithm: KeyAlgorithm,
) -> anyhow::Result<LoadedKey> {
    if metadata.len() > MAX_KEY_FILE {
        bail!("larger than {MAX_KEY_FILE} bytes: not a key");
    }
    let text = std::fs::read_to_string(path).context("cannot read it as text")?;
    let (public, encoding) = parse_pem(&text)?;
    if public.algorithm() != algorithm {
        bail!(
            "holds {}, but JWT_ALGORITHM is {} (it needs {})",
            public.algorithm().key_kind(),
            algorithm.name(),
            algorithm.key_kind()
        );
    }
    #[cfg(unix)]
    if encoding.is_some() {
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "a private signing key is readable by other users: chmod 600 it"
            );
        }
    }
    Ok(LoadedKey {
        path: path.to_owned(),
        public,
        encoding,
        created: created(metadata),
    })
}

/// A PEM key: its public half, and the signing key when it is a private one.
fn parse_pem(text: &str) -> anyhow::Result<(PublicKey, Option<EncodingKey>)> {
    let (label, der) = pkcs8::der::pem::decode_vec(text.trim().as_bytes())
        .map_err(|_| anyhow::anyhow!("not a PEM file (one -----BEGIN …----- block)"))?;
    match label {
        "PRIVATE KEY" => parse_private(&der),
        "PUBLIC KEY" => Ok((parse_public(&der)?, None)),
        "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "OPENSSH PRIVATE KEY" => bail!(
            "a {label} block: convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in FILE`"
        ),
        "ENCRYPTED PRIVATE KEY" => {
            bail!("an encrypted key: decrypt it (`openssl pkcs8 -nocrypt -in FILE`)")
        }
        other => bail!("a {other} block, where a PRIVATE KEY or PUBLIC KEY was expected"),
    }
}

const ED25519_OID: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.3.101.112");
const EC_OID: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const RSA_OID: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

fn parse_private(der: &[u8]) -> anyhow::Result<(PublicKey, Option<EncodingKey>)> {
    let info = pkcs8::PrivateKeyInfo::try_from(der)
        .map_err(|err| anyhow::anyhow!("not a PKCS#8 private key: {err}"))?;
    let oid = info.algorithm.oid;
    if oid == ED25519_OID {
        let key = ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map_err(|err| anyhow::anyhow!("not a valid Ed25519 key: {err}"))?;
        let public = PublicKey::Ed25519 {
            x: key.verifying_key().to_bytes(),
        };
        // The library signs from a PKCS#8 document; re-encoded, so a v2 file with its public
        // key attached works too.
        let pkcs8 = key
            .to_pkcs8_der()
            .map_err(|err| anyhow::anyhow!("cannot encode the key: {err}"))?;
        Ok((public, Some(EncodingKey::from_ed_der(pkcs8.as_bytes()))))
    } else if oid == EC_OID {
        let key = p256::SecretKey::from_pkcs8_der(der)
            .map_err(|_| anyhow::anyhow!("not a P-256 key (ES256 needs the prime256v1 curve)"))?;
        let public = p256_public(&key.public_key());
        Ok((public, Some(EncodingKey::from_ec_der(der))))
    } else if oid == RSA_OID {
        let key = rsa::RsaPrivateKey::from_pkcs8_der(der)
            .map_err(|err| anyhow::anyhow!("not a valid RSA key: {err}"))?;
        let public = rsa_public(&rsa::RsaPublicKey::from(&key))?;
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let pkcs1 = key
            .to_pkcs1_der()
            .map_err(|err| anyhow::anyhow!("cannot encode the key: {err}"))?;
        Ok((public, Some(EncodingKey::from_rsa_der(pkcs1.as_bytes()))))
    } else {
        bail!("a private key of an algorithm cerego does not sign with ({oid})")
    }
}

fn parse_public(der: &[u8]) -> anyhow::Result<PublicKey> {
    let info = spki::SubjectPublicKeyInfoRef::try_from(der)
        .map_err(|err| anyhow::anyhow!("not an SPKI public key: {err}"))?;
    let oid = info.algorithm.oid;
    if oid == ED25519_OID {
        let key = ed25519_dalek::VerifyingKey::from_public_key_der(der)
            .map_err(|err| anyhow::anyhow!("not a valid Ed25519 public key: {err}"))?;
        Ok(PublicKey::Ed25519 { x: key.to_bytes() })
    } else if oid == EC_OID {
        let key = p256::PublicKey::from_public_key_der(der).map_err(|_| {
            anyhow::anyhow!("not a P-256 public key (ES256 needs the prime256v1 curve)")
        })?;
        Ok(p256_public(&key))
    } else if oid == RSA_OID {
        let key = rsa::RsaPublicKey::from_public_key_der(der)
            .map_err(|err| anyhow::anyhow!("not a valid RSA public key: {err}"))?;
        rsa_public(&key)
    } else {
        bail!("a public key of an algorithm cerego does not verify ({oid})")
    }
}

fn p256_public(key: &p256::PublicKey) -> PublicKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = key.to_encoded_point(false);
    PublicKey::P256 {
        x: point.x().map(|x| x.to_vec()).unwrap_or_default(),
        y: point.y().map(|y| y.to_vec()).unwrap_or_default(),
    }
}

fn rsa_public(key: &rsa::RsaPublicKey) -> anyhow::Result<PublicKey> {
    use rsa::traits::PublicKeyParts;
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        bail!("an RSA key of {bits} bits: RS256 needs at least {MIN_RSA_BITS}");
    }
    Ok(PublicKey::Rsa {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
    })
}

/// A key `cerego keys generate` wrote.
#[derive(Debug)]
pub struct GeneratedKey {
    /// The new file.
    pub path: PathBuf,
    /// Its `kid`.
    pub kid: String,
}

/// Makes a new private key for `algorithm` in `dir` (created, mode 0700, if missing): a PKCS#8
/// PEM file of mode 0600 named `<UTC time>-<kid prefix>.pem`, never overwriting one.
pub fn generate(algorithm: KeyAlgorithm, dir: &Path) -> anyhow::Result<GeneratedKey> {
    let pem = match algorithm {
        KeyAlgorithm::EdDsa => {
            let mut seed = secrecy::zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut())
                .map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
            // PKCS#8 v1 (RFC 8410 §7: no public key attached), which OpenSSL 3.0 and Python's
            // cryptography read; ed25519-dalek's own encoding is v2, which they refuse.
            ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: *seed,
                public_key: None,
            }
            .to_pkcs8_pem(LineEnding::LF)
        }
        KeyAlgorithm::Es256 => {
            p256::SecretKey::random(&mut rand_core::OsRng).to_pkcs8_pem(LineEnding::LF)
        }
        KeyAlgorithm::Rs256 => rsa::RsaPrivateKey::new(&mut rand_core::OsRng, GENERATED_RSA_BITS)
            .context("RSA key generation failed")?
            .to_pkcs8_pem(LineEnding::LF),
    }
    .map_err(|err| anyhow::anyhow!("cannot encode the key: {err}"))?;
    let (public, _) = parse_pem(&pem)?;
    let kid = public.thumbprint();
    create_private_dir(dir)?;
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .context("cannot format the time")?;
    let path = dir.join(format!("{stamp}-{}.pem", &kid[..8]));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(GeneratedKey { path, kid })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

#[cfg(test)]
mod tests;
