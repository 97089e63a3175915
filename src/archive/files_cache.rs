//! The files cache: (inode, size, mtime, ctime) of each file backed up,
//! with its chunk list, so an unchanged file costs one `stat`. Kept on the
//! client only (`<cache>/<repo id>/files`), written after a commit.

use super::item::ChunkRef;
use crate::error::Result;
use crate::repo::client::replace_file;
use crate::repo::index::Index;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Entries unused for this many backups are dropped (borg's default TTL).
pub const FILES_CACHE_TTL: u8 = 20;
pub const FILES_CACHE_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub inode: u64,
    pub size: u64,
    pub mtime: i64,
    pub ctime: i64,
    pub age: u8,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    entries: HashMap<[u8; 16], Entry>,
}

pub enum Lookup {
    Unknown,
    Changed,
    Unchanged(Vec<ChunkRef>),
}

pub struct FilesCache {
    path: PathBuf,
    entries: HashMap<[u8; 16], Entry>,
}

fn key(path: &[u8]) -> [u8; 16] {
    let h = blake3::hash(path);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

impl FilesCache {
    /// Loads the cache; a missing or unreadable cache is simply empty.
    pub fn load(dir: &Path) -> Self {
        let path = dir.join("files");
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|d| rmp_serde::from_slice::<Stored>(&d).ok())
            .filter(|s| s.version == FILES_CACHE_VERSION)
            .map(|s| s.entries)
            .unwrap_or_default();
        Self { path, entries }
    }

    /// The chunks of an unchanged file, if all are still in the repository.
    pub fn lookup(
        &mut self,
        path: &[u8],
        inode: u64,
        size: u64,
        mtime: i64,
        ctime: i64,
        index: &Index,
    ) -> Lookup {
        let Some(e) = self.entries.get_mut(&key(path)) else {
            return Lookup::Unknown;
        };
        if e.inode != inode || e.size != size || e.mtime != mtime || e.ctime != ctime {
            return Lookup::Changed;
        }
        if !e.chunks.iter().all(|c| index.contains(&c.0)) {
            return Lookup::Changed;
        }
        e.age = 0;
        Lookup::Unchanged(e.chunks.clone())
    }

    pub fn insert(&mut self, path: &[u8], entry: Entry) {
        self.entries.insert(key(path), entry);
    }

    /// Ages entries not seen in this run and writes the cache.
    pub fn save(mut self, seen: &std::collections::HashSet<[u8; 16]>) -> Result<()> {
        self.entries.retain(|k, e| {
            if !seen.contains(k) {
                e.age = e.age.saturating_add(1);
            }
            e.age < FILES_CACHE_TTL
        });
        let stored = Stored {
            version: FILES_CACHE_VERSION,
            entries: self.entries,
        };
        let data = rmp_serde::to_vec(&stored).unwrap_or_default();
        replace_file(&self.path, &data)
    }

    pub fn key_of(path: &[u8]) -> [u8; 16] {
        key(path)
    }
}
