//! The manifest: the list of archives. Each change writes a new file
//! `manifest/<generation>`; readers take the highest generation, and
//! clients remember the highest they have seen to detect rollback.

use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN};
use serde::{Deserialize, Serialize};

pub const MANIFEST_VERSION: u32 = 1;
/// Manifest file names are the generation as 20 decimal digits, so they sort.
pub const MANIFEST_NAME_DIGITS: usize = 20;
/// How many older manifest generations are kept after a write.
pub const MANIFEST_KEEP: usize = 3;

/// Totals kept per archive so `info` and `--stats` need not read archives.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchiveStats {
    pub files: u64,
    pub original_size: u64,
    pub compressed_size: u64,
    /// Bytes this archive added to the repository when it was created.
    pub deduplicated_size: u64,
    pub chunks: u64,
    pub unique_chunks: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchiveRef {
    pub name: String,
    pub id: BlobId,
    /// RFC 3339 start time.
    pub time: String,
    pub hostname: String,
    pub username: String,
    pub stats: ArchiveStats,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub version: u32,
    pub generation: u64,
    pub timestamp: String,
    pub archives: Vec<ArchiveRef>,
}

impl Manifest {
    pub fn empty() -> Self {
        Self {
            version: MANIFEST_VERSION,
            generation: 0,
            timestamp: String::new(),
            archives: vec![],
        }
    }

    pub fn find(&self, name: &str) -> Option<&ArchiveRef> {
        self.archives.iter().find(|a| a.name == name)
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(self).map_err(|e| Error::invalid(format!("encoding manifest: {e}")))
    }

    pub fn decode(data: &[u8], name: &str) -> Result<Self> {
        let m: Self = rmp_serde::from_slice(data)
            .map_err(|e| Error::corrupt(format!("manifest {name}: {e}")))?;
        if m.version != MANIFEST_VERSION {
            return Err(Error::Unsupported(format!(
                "manifest version {}",
                m.version
            )));
        }
        Ok(m)
    }
}

pub fn file_name(generation: u64) -> String {
    format!("{generation:0width$}", width = MANIFEST_NAME_DIGITS)
}

pub fn parse_file_name(name: &str) -> Option<u64> {
    (name.len() == MANIFEST_NAME_DIGITS && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// The associated-data id of a manifest binds its generation, so a file
/// renamed to another generation fails to open.
pub fn aad_id(generation: u64) -> [u8; ID_LEN] {
    let mut id = [0u8; ID_LEN];
    id[..8].copy_from_slice(&generation.to_le_bytes());
    id
}
