//! The files cache: (inode, size, mtime, ctime) of each file backed up,
//! with its chunk list, so an unchanged file costs one `stat`. Kept on the
//! client only (`<cache>/<repo id>/files`), written after a commit.

use super::item::ChunkRef;
use crate::error::{Error, IoContext, Result};
use crate::id::IdMap;
use crate::repo::index::Index;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Entries unused for this many backups are dropped (borg's default TTL).
pub const FILES_CACHE_TTL: u8 = 20;
pub const FILES_CACHE_VERSION: u32 = 1;

/// The files cache's key of a path: 16 bytes of its BLAKE3 hash.
pub type Key = [u8; 16];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub inode: u64,
    pub size: u64,
    pub mtime: i64,
    pub ctime: i64,
    pub age: u8,
    pub chunks: Vec<ChunkRef>,
    /// False when the file had no extended attributes (nor ACLs) when it
    /// was cached: an unchanged file then needs no `listxattr` either.
    /// Safe because setting or removing an xattr or ACL updates the
    /// inode's ctime, which `lookup` compares. Caches written before this
    /// field existed read as true (xattrs are read, as they always were).
    #[serde(default = "yes")]
    pub xattrs: bool,
    /// Looked up in this run (not stored): entries not seen age at `save`.
    #[serde(skip)]
    pub seen: bool,
}

fn yes() -> bool {
    true
}

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    entries: IdMap<Key, Entry>,
}

pub enum Lookup {
    Unknown,
    Changed,
    /// The chunks, and whether the file had xattrs when cached.
    Unchanged(Vec<ChunkRef>, bool),
}

pub struct FilesCache {
    path: PathBuf,
    entries: IdMap<Key, Entry>,
}

fn key(path: &[u8]) -> Key {
    let h = blake3::hash(path);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

impl FilesCache {
    /// Loads the cache; a missing or unreadable cache is simply empty.
    pub fn load(dir: &Path) -> Self {
        let path = dir.join("files");
        // Decoded as it is read: holding the whole file (~90 MB for 1M
        // files) next to the map it becomes only raised the peak RSS.
        let entries = std::fs::File::open(&path)
            .ok()
            .and_then(|f| rmp_serde::from_read::<_, Stored>(std::io::BufReader::new(f)).ok())
            .filter(|s| s.version == FILES_CACHE_VERSION)
            .map(|s| s.entries)
            .unwrap_or_default();
        Self { path, entries }
    }

    /// The chunks of an unchanged file, if all are still in the repository.
    /// `key` is `key_of(path)`. Any entry found counts as seen (it is not
    /// aged at `save`), as a `seen` set of every looked-up path did before.
    pub fn lookup(
        &mut self,
        key: &Key,
        inode: u64,
        size: u64,
        mtime: i64,
        ctime: i64,
        index: &Index,
    ) -> Lookup {
        let Some(e) = self.entries.get_mut(key) else {
            return Lookup::Unknown;
        };
        e.seen = true;
        if e.inode != inode || e.size != size || e.mtime != mtime || e.ctime != ctime {
            return Lookup::Changed;
        }
        if !e.chunks.iter().all(|c| index.contains(&c.0)) {
            return Lookup::Changed;
        }
        e.age = 0;
        Lookup::Unchanged(e.chunks.clone(), e.xattrs)
    }

    /// Records that an unchanged file (`lookup` gave `Unchanged`) has no
    /// xattrs: its entry was written by an older strata, or the file's
    /// xattrs were removed before it was cached. Safe: the xattrs were
    /// read after the `lstat` whose ctime matched the entry's; an xattr
    /// set since then has moved ctime on, and the next lookup says Changed.
    pub fn mark_no_xattrs(&mut self, key: &Key) {
        if let Some(e) = self.entries.get_mut(key) {
            e.xattrs = false;
        }
    }

    /// Remembers a file read in this run (seen, so not aged at `save`).
    pub fn insert(&mut self, key: Key, mut entry: Entry) {
        entry.seen = true;
        self.entries.insert(key, entry);
    }

    /// Ages entries not seen in this run and writes the cache.
    pub fn save(mut self) -> Result<()> {
        self.entries.retain(|_, e| {
            if !e.seen {
                e.age = e.age.saturating_add(1);
            }
            e.age < FILES_CACHE_TTL
        });
        let stored = Stored {
            version: FILES_CACHE_VERSION,
            entries: self.entries,
        };
        write_new(&self.path, &stored)
    }

    pub fn key_of(path: &[u8]) -> Key {
        key(path)
    }
}

/// `replace_file` for the cache, encoded straight into the temporary file
/// (no second copy of ~90 MB in memory for 1M files): temporary name,
/// fsync, rename, so a crash leaves the old cache or the new one.
fn write_new(path: &Path, stored: &Stored) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let f = std::fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let written = rmp_serde::encode::write(&mut w, stored)
        .map_err(|e| Error::invalid(format!("encoding the files cache: {e}")))
        .and_then(|()| w.flush().ctx(|| format!("writing {}", tmp.display())));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let f = w
        .into_inner()
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e.into_error()))?;
    f.sync_all().ctx(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("renaming {}", path.display()))
}
