//! Job secrets at rest: XChaCha20-Poly1305 with a 32-byte key the replicas share.
//!
//! The key comes from `TELEJOB_SECRETS_KEY` (64 hex digits), else the config's
//! `secrets_key_file`, else `<data_dir>/secrets.key`, made (mode 0600) at the first start. Each
//! value is sealed with a random nonce and the job and secret names as associated data, so a
//! ciphertext moved to another job or name does not open.

use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use crate::error::bad;

/// Seals and opens secret values.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

/// A sealed value.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The nonce (24 bytes).
    pub nonce: Vec<u8>,
    /// The ciphertext with its tag.
    pub ciphertext: Vec<u8>,
}

fn aad(job: &str, name: &str) -> Vec<u8> {
    format!("telejob-secret\0{job}\0{name}").into_bytes()
}

impl SecretBox {
    /// The box for `key` (32 bytes).
    pub fn new(key: &[u8; 32]) -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"telejob secrets key id\0");
        h.update(key);
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(key)),
            id: hex::encode(&h.finalize()[..8]),
        }
    }

    /// A fingerprint of the key (not the key): which key a database's secrets were sealed
    /// with, so that a replica with another key is refused at start.
    pub fn key_id(&self) -> String {
        self.id.clone()
    }

    /// Loads the key: `TELEJOB_SECRETS_KEY`, else `file`, else `<data_dir>/secrets.key` (made
    /// when missing).
    ///
    /// # Errors
    ///
    /// A key that is not 64 hex digits, a key file readable by others, or no randomness.
    pub fn load(data_dir: &Path, file: Option<&Path>) -> anyhow::Result<Self> {
        if let Ok(v) = std::env::var("TELEJOB_SECRETS_KEY")
            && !v.trim().is_empty()
        {
            return Ok(Self::new(&parse_key("TELEJOB_SECRETS_KEY", &v)?));
        }
        let (path, setting) = match file {
            Some(f) => (f.to_path_buf(), "config secrets_key_file"),
            None => (
                data_dir.join("secrets.key"),
                "the data directory's secrets.key",
            ),
        };
        if file.is_none() && !path.exists() {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key)
                .map_err(|e| anyhow::anyhow!("no randomness for the secrets key: {e}"))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            std::io::Write::write_all(&mut f, format!("{}\n", hex::encode(key)).as_bytes())?;
        }
        let meta = std::fs::metadata(&path)
            .map_err(|e| bad(format!("{setting} {}: {e}", path.display())))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad(format!(
                "{setting} {} is readable by others: chmod 600 it",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("{setting} {}: {e}", path.display())))?;
        Ok(Self::new(&parse_key(setting, &text)?))
    }

    /// Seals `value` as secret `name` of job `job`.
    ///
    /// # Errors
    ///
    /// No randomness for the nonce.
    pub fn seal(&self, job: &str, name: &str, value: &str) -> anyhow::Result<Sealed> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad(job, name),
                },
            )
            .map_err(|_| anyhow::anyhow!("cannot seal a secret"))?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens secret `name` of job `job`.
    ///
    /// # Errors
    ///
    /// A wrong key, or a value that was changed or moved.
    pub fn open(&self, job: &str, name: &str, s: &Sealed) -> anyhow::Result<String> {
        if s.nonce.len() != 24 {
            anyhow::bail!("secret {name} of {job}: damaged");
        }
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(&s.nonce),
                Payload {
                    msg: &s.ciphertext,
                    aad: &aad(job, name),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "secret {name} of {job} does not open with this server's key (was the key changed?)"
                )
            })?;
        String::from_utf8(plain).map_err(|_| anyhow::anyhow!("secret {name} of {job}: not UTF-8"))
    }
}

fn parse_key(setting: &str, text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32);
    let Some(b) = bytes else {
        return Err(bad(format!(
            "{setting}: the secrets key must be 64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`"
        )));
    };
    let mut key = [0u8; 32];
    key.copy_from_slice(&b);
    Ok(key)
}

/// Changes to a job's secrets: a value sets one, `null` removes it; names not given are kept.
pub type SecretChanges = BTreeMap<String, Option<String>>;

/// The largest secret value.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// The most secrets a job holds.
pub const MAX_SECRETS: usize = 64;
/// The most bytes of secret values a job holds, all together.
pub const MAX_SECRETS_TOTAL_BYTES: usize = 256 * 1024;
/// What sealing adds to a value: XChaCha20-Poly1305's tag.
pub const SEAL_OVERHEAD: u32 = 16;

/// Refuses a job holding more than [`MAX_SECRETS`] secrets or [`MAX_SECRETS_TOTAL_BYTES`].
///
/// # Errors
///
/// [`telejob_core::Error::InvalidJob`] naming `secrets`.
pub fn check_totals(count: usize, bytes: usize) -> telejob_core::Result<()> {
    if count > MAX_SECRETS {
        return Err(telejob_core::Error::invalid(
            "secrets",
            format!(
                "{count} secrets: a job holds at most {MAX_SECRETS}; remove some (null removes one)"
            ),
        ));
    }
    if bytes > MAX_SECRETS_TOTAL_BYTES {
        return Err(telejob_core::Error::invalid(
            "secrets",
            format!(
                "{bytes} bytes of secret values: a job holds at most 256 KiB in all; keep large credentials in a file the job fetches"
            ),
        ));
    }
    Ok(())
}

/// Checks secret names and values.
///
/// # Errors
///
/// A [`telejob_core::Error::InvalidJob`] for `secrets`, naming the secret.
pub fn validate(changes: &SecretChanges) -> telejob_core::Result<()> {
    check_totals(
        changes.values().flatten().count(),
        changes.values().flatten().map(String::len).sum(),
    )?;
    for (k, v) in changes {
        let field = format!("secrets.{k}");
        if let Err(telejob_core::Error::InvalidJob { reason, .. }) =
            telejob_core::job::validate_env_var(k, v.as_deref().unwrap_or("x"))
        {
            return Err(telejob_core::Error::invalid(field, reason));
        }
        if v.as_deref().is_some_and(str::is_empty) {
            return Err(telejob_core::Error::invalid(
                field,
                "the value is empty; give a value, or null to remove the secret",
            ));
        }
        if v.as_deref().is_some_and(|v| v.len() > MAX_SECRET_BYTES) {
            return Err(telejob_core::Error::invalid(
                field,
                "the value is over 64 KiB; keep large credentials in a file the job fetches",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_where_they_were_sealed() {
        let b = SecretBox::new(&[7; 32]);
        let s = b.seal("job-a", "TOKEN", "hunter2").expect("must work");
        assert!(!s.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(b.open("job-a", "TOKEN", &s).expect("must work"), "hunter2");
        assert!(
            b.open("job-b", "TOKEN", &s).is_err(),
            "moved to another job"
        );
        assert!(b.open("job-a", "OTHER", &s).is_err(), "renamed");
        assert!(SecretBox::new(&[8; 32]).open("job-a", "TOKEN", &s).is_err());
    }

    #[test]
    fn the_key_file_is_made_private_and_reused() {
        let dir = tempfile::tempdir().expect("must work");
        let a = SecretBox::load(dir.path(), None).expect("must work");
        let path = dir.path().join("secrets.key");
        assert_eq!(
            std::fs::metadata(&path)
                .expect("must work")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let s = a.seal("j", "K", "v1v1").expect("must work");
        let b = SecretBox::load(dir.path(), None).expect("must work");
        assert_eq!(b.open("j", "K", &s).expect("must work"), "v1v1");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("must work");
        let e = SecretBox::load(dir.path(), None)
            .expect_err("must be refused")
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::write(dir.path().join("bad.key"), "abc").expect("must work");
        std::fs::set_permissions(
            dir.path().join("bad.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("must work");
        let e = SecretBox::load(dir.path(), Some(&dir.path().join("bad.key")))
            .expect_err("must be refused")
            .to_string();
        assert!(e.contains("64 hex digits"), "{e}");
    }
}
