//! The `config` file: plaintext JSON naming the format, repository id,
//! encryption mode and chunker parameters. Written once at `init`.

use crate::chunker::{CHUNKER_ALGORITHM, ChunkerParams};
use crate::crypto::{Cipher, Mode};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub const FORMAT_NAME: &str = "strata-repository";
pub const FORMAT_VERSION: u32 = 1;
pub const CONFIG_FILE: &str = "config";
/// Packs are closed once they reach this size.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
pub const MIN_PACK_SIZE: u32 = 1024 * 1024;
pub const MAX_PACK_SIZE: u32 = 1024 * 1024 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerConfig {
    pub algorithm: String,
    #[serde(flatten)]
    pub params: ChunkerParams,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    /// 32 random bytes, hex: names the repository in caches and key files.
    pub id: String,
    pub encryption: Mode,
    pub cipher: Option<Cipher>,
    pub chunker: ChunkerConfig,
    pub pack_size: u32,
    /// Only for `none` repositories: the public chunker seed (hex). Keyed
    /// repositories derive the seed from the master secret instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_chunker_seed: Option<String>,
    /// Nothing in the repository is ever deleted: `delete`/`prune` only
    /// write new manifest generations (old ones stay, as tombstones of the
    /// dropped archives), and `compact` refuses. The store enforces this
    /// too when it serves the repository (see the SSH issue).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub append_only: bool,
    pub created: String,
}

impl RepoConfig {
    pub fn new(mode: Mode, cipher: Option<Cipher>, chunker: ChunkerParams) -> Result<Self> {
        let mut id = [0u8; 32];
        crate::crypto::random_bytes(&mut id)?;
        let public_chunker_seed = if mode.has_key() {
            None
        } else {
            let mut seed = [0u8; 32];
            crate::crypto::random_bytes(&mut seed)?;
            Some(hex::encode(seed))
        };
        Ok(Self {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id: hex::encode(id),
            encryption: mode,
            cipher: if mode.encrypts() { cipher } else { None },
            chunker: ChunkerConfig {
                algorithm: CHUNKER_ALGORITHM.into(),
                params: chunker,
            },
            pack_size: DEFAULT_PACK_SIZE,
            public_chunker_seed,
            append_only: false,
            created: chrono::Utc::now().to_rfc3339(),
        })
    }

    pub fn parse(data: &[u8], location: &str) -> Result<Self> {
        let c: Self = serde_json::from_slice(data)
            .map_err(|e| Error::corrupt(format!("config of {location}: {e}")))?;
        if c.format != FORMAT_NAME {
            return Err(Error::NotARepository(location.into()));
        }
        if c.version != FORMAT_VERSION {
            return Err(Error::Unsupported(format!(
                "{location} has format version {}, this strata reads version {FORMAT_VERSION}: upgrade strata",
                c.version
            )));
        }
        if c.chunker.algorithm != CHUNKER_ALGORITHM {
            return Err(Error::Unsupported(format!(
                "chunker `{}`",
                c.chunker.algorithm
            )));
        }
        let mut id = [0u8; 32];
        if c.id.len() != 64
            || hex::decode_to_slice(&c.id, &mut id).is_err()
            || hex::encode(id) != c.id
        {
            return Err(Error::corrupt(format!(
                "config of {location}: repository id is not 64 lower-case hex digits"
            )));
        }
        c.chunker.params.validate()?;
        if !(MIN_PACK_SIZE..=MAX_PACK_SIZE).contains(&c.pack_size) {
            return Err(Error::corrupt(format!(
                "config of {location}: pack size {}",
                c.pack_size
            )));
        }
        if c.encryption.encrypts() && c.cipher.is_none() {
            return Err(Error::corrupt(format!(
                "config of {location}: encrypted without a cipher"
            )));
        }
        Ok(c)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn public_seed(&self) -> Result<[u8; 32]> {
        let hexs = self
            .public_chunker_seed
            .as_deref()
            .ok_or_else(|| Error::corrupt("config: `none` repository without a chunker seed"))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(hexs, &mut seed)
            .map_err(|_| Error::corrupt("config: chunker seed"))?;
        Ok(seed)
    }
}
