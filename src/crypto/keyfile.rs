//! The key file: the repository's master secret sealed under a key derived
//! from the passphrase with Argon2id. Format in docs/FORMAT.md ("Key file").

use super::{Cipher, MASTER_SECRET_LEN, Mode, random_bytes};
use crate::error::{Error, Result};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use serde::{Deserialize, Serialize};

pub const KEYFILE_VERSION: u32 = 1;
pub const KEY_AAD_PREFIX: &[u8] = b"strata key file v1 ";
pub const XNONCE_LEN: usize = 24;
/// Most Argon2 memory a key file may ask for: 1 GiB, 16 times the default,
/// and what a 2 GiB Raspberry Pi can still give (4 GiB, the earlier bound,
/// cannot even be mapped by a 32-bit process).
pub const KDF_MAX_MEMORY_KIB: u32 = 1024 * 1024;
pub const KDF_MAX_ITERATIONS: u32 = 64;
pub const KDF_MAX_PARALLELISM: u32 = 16;

/// Argon2id cost parameters, stored in the key file so they can be raised later.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub algorithm: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: String,
}

impl KdfParams {
    /// 64 MiB, 3 passes: about 0.2 s on a desktop core, 1–2 s on a Pi 4.
    pub fn default_cost() -> (u32, u32, u32) {
        (64 * 1024, 3, 1)
    }

    /// Test-only cost (`STRATA_INSECURE_FAST_KDF=1`): never for real keys.
    pub fn insecure_test_cost() -> (u32, u32, u32) {
        (1024, 1, 1)
    }
}

/// The secret content of a key file.
#[derive(Serialize, Deserialize)]
pub struct KeyPayload {
    pub repository_id: String,
    pub mode: Mode,
    pub cipher: Option<Cipher>,
    /// Hex of the 64-byte master secret.
    pub master: String,
}

impl KeyPayload {
    pub fn master_bytes(&self) -> Result<Vec<u8>> {
        let m = hex::decode(&self.master).map_err(|_| Error::corrupt("key payload master"))?;
        if m.len() != MASTER_SECRET_LEN {
            return Err(Error::corrupt("key payload master length"));
        }
        Ok(m)
    }
}

/// The key file as stored (JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub repository_id: String,
    pub created: String,
    pub kdf: KdfParams,
    /// Hex of: 24-byte XChaCha20 nonce || ciphertext || 16-byte tag.
    pub sealed: String,
}

impl KeyFile {
    pub fn seal(payload: &KeyPayload, passphrase: &[u8], cost: (u32, u32, u32)) -> Result<Self> {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt)?;
        let kdf = KdfParams {
            algorithm: "argon2id".into(),
            memory_kib: cost.0,
            iterations: cost.1,
            parallelism: cost.2,
            salt: hex::encode(salt),
        };
        let kek = derive_kek(&kdf, passphrase)?;
        let mut nonce = [0u8; XNONCE_LEN];
        random_bytes(&mut nonce)?;
        let mut buf = serde_json::to_vec(payload).map_err(|e| Error::invalid(e.to_string()))?;
        let aad = key_aad(&payload.repository_id);
        let cipher = XChaCha20Poly1305::new(&kek.into());
        let tag = cipher
            .encrypt_inout_detached(&nonce.into(), &aad, buf.as_mut_slice().into())
            .map_err(|_| Error::invalid("key encryption failed"))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&buf);
        sealed.extend_from_slice(&tag);
        Ok(Self {
            version: KEYFILE_VERSION,
            repository_id: payload.repository_id.clone(),
            created: chrono::Utc::now().to_rfc3339(),
            kdf,
            sealed: hex::encode(sealed),
        })
    }

    /// Decrypts the payload; a wrong passphrase gives `WrongPassphrase(repo)`.
    pub fn unlock(&self, passphrase: &[u8], repo: &str) -> Result<KeyPayload> {
        if self.version != KEYFILE_VERSION {
            return Err(Error::Unsupported(format!(
                "key file version {}",
                self.version
            )));
        }
        let kek = derive_kek(&self.kdf, passphrase)?;
        let sealed = hex::decode(&self.sealed).map_err(|_| Error::corrupt("key file (hex)"))?;
        if sealed.len() < XNONCE_LEN + 16 {
            return Err(Error::corrupt("key file too short"));
        }
        let (nonce, rest) = sealed.split_at(XNONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        let nonce: [u8; XNONCE_LEN] = nonce.try_into().map_err(|_| Error::corrupt("key nonce"))?;
        let tag: [u8; 16] = tag.try_into().map_err(|_| Error::corrupt("key tag"))?;
        let mut buf = ct.to_vec();
        let cipher = XChaCha20Poly1305::new(&kek.into());
        cipher
            .decrypt_inout_detached(
                &nonce.into(),
                &key_aad(&self.repository_id),
                buf.as_mut_slice().into(),
                &tag.into(),
            )
            .map_err(|_| Error::WrongPassphrase(repo.to_string()))?;
        let payload: KeyPayload =
            serde_json::from_slice(&buf).map_err(|_| Error::corrupt("key payload"))?;
        if payload.repository_id != self.repository_id {
            return Err(Error::corrupt("key file belongs to another repository"));
        }
        Ok(payload)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn from_json(data: &[u8], what: &str) -> Result<Self> {
        serde_json::from_slice(data).map_err(|e| Error::corrupt(format!("key file {what}: {e}")))
    }
}

fn key_aad(repo_id: &str) -> Vec<u8> {
    let mut aad = KEY_AAD_PREFIX.to_vec();
    aad.extend_from_slice(repo_id.as_bytes());
    aad
}

pub(crate) fn derive_kek(kdf: &KdfParams, passphrase: &[u8]) -> Result<[u8; 32]> {
    if kdf.algorithm != "argon2id" {
        return Err(Error::Unsupported(format!(
            "key derivation `{}`",
            kdf.algorithm
        )));
    }
    // Bound the cost a hostile key file (a repokey comes from the store) can
    // demand: no more memory than a Raspberry Pi can give, 64 passes.
    if kdf.memory_kib > KDF_MAX_MEMORY_KIB
        || kdf.iterations > KDF_MAX_ITERATIONS
        || kdf.parallelism > KDF_MAX_PARALLELISM
    {
        return Err(Error::corrupt("key file asks for absurd KDF parameters"));
    }
    let salt = hex::decode(&kdf.salt).map_err(|_| Error::corrupt("key file salt"))?;
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|e| Error::corrupt(format!("key file KDF parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(passphrase, &salt, &mut out)
        .map_err(|e| Error::corrupt(format!("key derivation: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_asking_for_more_than_the_kdf_bounds_is_refused_before_allocating() {
        let p = KeyPayload {
            repository_id: "ab".into(),
            mode: Mode::Repokey,
            cipher: Some(Cipher::Aes256Gcm),
            master: hex::encode([1u8; 64]),
        };
        let mut kf = KeyFile::seal(&p, b"right", KdfParams::insecure_test_cost()).unwrap();
        kf.kdf.memory_kib = KDF_MAX_MEMORY_KIB + 1;
        let err = kf.unlock(b"right", "r").err().unwrap().to_string();
        assert!(err.contains("absurd KDF parameters"), "{err}");
    }

    #[test]
    fn wrong_passphrase_is_reported() {
        let p = KeyPayload {
            repository_id: "ab".into(),
            mode: Mode::Repokey,
            cipher: Some(Cipher::Aes256Gcm),
            master: hex::encode([1u8; 64]),
        };
        let kf = KeyFile::seal(&p, b"right", KdfParams::insecure_test_cost()).unwrap();
        assert!(kf.unlock(b"right", "r").is_ok());
        assert!(matches!(
            kf.unlock(b"wrong", "r"),
            Err(Error::WrongPassphrase(_))
        ));
    }
}
