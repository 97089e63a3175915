//! Archives: a named snapshot of file-system trees. The archive object (a
//! blob of type `Archive`) points to the items stream.

pub mod builder;
pub mod compare;
pub mod create;
pub mod extract;
pub mod files_cache;
pub mod fsmeta;
pub mod item;
pub mod nested;
pub mod patterns;
pub mod placeholders;

use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::repo::manifest::{ArchiveRef, ArchiveStats};
use serde::{Deserialize, Serialize};

pub const ARCHIVE_VERSION: u32 = 1;

/// The archive object as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Archive {
    pub version: u32,
    pub name: String,
    pub hostname: String,
    pub username: String,
    #[serde(default)]
    pub comment: String,
    pub command_line: Vec<String>,
    /// RFC 3339 times.
    pub time_start: String,
    pub time_end: String,
    pub items: Vec<BlobId>,
    pub stats: ArchiveStats,
    /// Where an imported archive came from, e.g. `borg:<archive id>` for
    /// `strata import-borg` (which skips archives it finds here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

impl Archive {
    pub fn encode(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(self).map_err(|e| Error::invalid(format!("encoding archive: {e}")))
    }

    /// Decodes an opened archive object; `name` names it in errors.
    pub fn decode(data: &[u8], name: &str) -> Result<Self> {
        let a: Self = rmp_serde::from_slice(data)
            .map_err(|e| Error::corrupt(format!("archive {name}: {e}")))?;
        if a.version != ARCHIVE_VERSION {
            return Err(Error::Unsupported(format!("archive version {}", a.version)));
        }
        Ok(a)
    }

    pub fn load(repo: &Repository, r: &ArchiveRef) -> Result<Self> {
        let data = repo.read_blob(ObjectType::Archive, &r.id)?;
        let a = Self::decode(&data, &r.name)?;
        if a.name != r.name {
            return Err(Error::corrupt(format!(
                "archive {} is stored under the name {}",
                a.name, r.name
            )));
        }
        Ok(a)
    }

    pub fn find(repo: &Repository, name: &str) -> Result<Self> {
        let r = repo
            .manifest()
            .find(name)
            .ok_or_else(|| Error::ArchiveNotFound(name.into()))?;
        Self::load(repo, r)
    }
}

/// Archive names become file-system-neutral labels; refuse control
/// characters and `/` so listings and `REPO::NAME` stay unambiguous.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.contains("::")
        || name.chars().any(char::is_control)
    {
        return Err(Error::invalid(format!(
            "archive name `{name}`: use 1-255 characters without `/`, `::` or control characters"
        )));
    }
    Ok(())
}
