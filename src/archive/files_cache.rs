//! The files cache: (inode, size, mtime, ctime) of each file backed up,
//! with its chunk list, so an unchanged file costs one `stat`. Kept on the
//! client only (`<cache>/<repo id>/files`), written after a commit.

use super::item::ChunkRef;
use crate::error::{Error, IoContext, Result};
use crate::repo::index::Index;
use crate::sorted_ids::{Keep, Keyed, SortedIds};
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

/// One file's entry as held in memory: fixed size (64 bytes), its chunk
/// list a range of a shared array. A hash map of [`Entry`] took ~220 bytes
/// per file (table slack and a heap allocation per chunk list): 1M files
/// cost ~210 MiB, now ~100 MiB (docs/performance.md, "Many small files").
#[derive(Clone, Copy)]
struct Slot {
    key: Key,
    inode: u64,
    size: u64,
    mtime: i64,
    ctime: i64,
    first: u32,
    count: u32,
    age: u8,
    xattrs: bool,
    seen: bool,
}

impl Keyed for Slot {
    type Key = Key;
    fn key(&self) -> Key {
        self.key
    }
}

/// Entries as they are added (loaded or recorded), with their chunks.
#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    chunks: Vec<ChunkRef>,
}

/// A [`Table`] sorted by key for lookups; of entries with the same key
/// the last added stays.
#[derive(Default)]
struct Sealed {
    slots: SortedIds<Slot>,
    chunks: Vec<ChunkRef>,
}

impl Table {
    fn push(&mut self, key: Key, e: &Entry) -> Result<()> {
        let too_many = || Error::invalid("the files cache has more than 4 billion chunks");
        let first = u32::try_from(self.chunks.len()).map_err(|_| too_many())?;
        let count = u32::try_from(e.chunks.len()).map_err(|_| too_many())?;
        first.checked_add(count).ok_or_else(too_many)?;
        self.chunks.extend_from_slice(&e.chunks);
        self.slots.push(Slot {
            key,
            inode: e.inode,
            size: e.size,
            mtime: e.mtime,
            ctime: e.ctime,
            first,
            count,
            age: e.age,
            xattrs: e.xattrs,
            seen: e.seen,
        });
        Ok(())
    }

    fn seal(self) -> Sealed {
        Sealed {
            slots: SortedIds::new(self.slots, Keep::Last),
            chunks: self.chunks,
        }
    }
}

impl Sealed {
    fn chunks_of(&self, s: &Slot) -> &[ChunkRef] {
        &self.chunks[s.first as usize..(s.first + s.count) as usize]
    }
}

/// The cache file as read: a map from key to [`Entry`], decoded straight
/// into a [`Table`] (no map, no entry kept whole).
impl<'de> Deserialize<'de> for Table {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Table;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of files cache entries")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Table, A::Error> {
                let mut t = Table::default();
                t.slots.reserve(map.size_hint().unwrap_or(0).min(1 << 24));
                while let Some((key, entry)) = map.next_entry::<Key, Entry>()? {
                    t.push(key, &entry).map_err(serde::de::Error::custom)?;
                }
                Ok(t)
            }
        }
        d.deserialize_map(Visit)
    }
}

/// An entry as written: the fields of [`Entry`], in its order, so the file
/// format is unchanged.
#[derive(Serialize)]
struct EntryOut<'a> {
    inode: u64,
    size: u64,
    mtime: i64,
    ctime: i64,
    age: u8,
    chunks: &'a [ChunkRef],
    xattrs: bool,
}

/// The entries to write, from the loaded table and this run's, merged in
/// key order (this run's win).
struct Merged<'a> {
    old: &'a Sealed,
    new: &'a Sealed,
}

impl Merged<'_> {
    fn iter(&self) -> impl Iterator<Item = (&Slot, &Sealed)> + '_ {
        let (mut a, mut b) = (
            self.old.slots.items().iter().peekable(),
            self.new.slots.items().iter().peekable(),
        );
        std::iter::from_fn(move || {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.key < y.key => (a.next()?, self.old),
                (Some(x), Some(y)) if x.key == y.key => {
                    a.next();
                    (b.next()?, self.new)
                }
                (Some(_), Some(_)) | (None, Some(_)) => (b.next()?, self.new),
                (Some(_), None) => (a.next()?, self.old),
                (None, None) => return None,
            };
            Some(next)
        })
        .filter(|(s, _)| s.age < FILES_CACHE_TTL)
    }
}

impl Serialize for Merged<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        ser.collect_map(self.iter().map(|(s, t)| {
            (
                s.key,
                EntryOut {
                    inode: s.inode,
                    size: s.size,
                    mtime: s.mtime,
                    ctime: s.ctime,
                    age: s.age,
                    chunks: t.chunks_of(s),
                    xattrs: s.xattrs,
                },
            )
        }))
    }
}

#[derive(Deserialize)]
struct Stored {
    version: u32,
    entries: Table,
}

#[derive(Serialize)]
struct StoredOut<'a> {
    version: u32,
    entries: Merged<'a>,
}

pub enum Lookup {
    Unknown,
    Changed,
    /// The chunks, and whether the file had xattrs when cached.
    Unchanged(Vec<ChunkRef>, bool),
}

pub struct FilesCache {
    path: PathBuf,
    /// The cache as loaded (sorted; looked up).
    old: Sealed,
    /// Files read in this run (appended; merged in at `save`).
    new: Table,
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
        // files) next to the table it becomes only raised the peak RSS.
        let old = std::fs::File::open(&path)
            .ok()
            .and_then(|f| rmp_serde::from_read::<_, Stored>(std::io::BufReader::new(f)).ok())
            .filter(|s| s.version == FILES_CACHE_VERSION)
            .map(|s| s.entries)
            .unwrap_or_default()
            .seal();
        Self {
            path,
            old,
            new: Table::default(),
        }
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
        let Some(i) = self.old.slots.position(key) else {
            return Lookup::Unknown;
        };
        let e = &mut self.old.slots.items_mut()[i];
        e.seen = true;
        if e.inode != inode || e.size != size || e.mtime != mtime || e.ctime != ctime {
            return Lookup::Changed;
        }
        let e = *e;
        let chunks = self.old.chunks_of(&e);
        if !chunks.iter().all(|c| index.contains(&c.0)) {
            return Lookup::Changed;
        }
        let chunks = chunks.to_vec();
        self.old.slots.items_mut()[i].age = 0;
        Lookup::Unchanged(chunks, e.xattrs)
    }

    /// Records that an unchanged file (`lookup` gave `Unchanged`) has no
    /// xattrs: its entry was written by an older strata, or the file's
    /// xattrs were removed before it was cached. Safe: the xattrs were
    /// read after the `lstat` whose ctime matched the entry's; an xattr
    /// set since then has moved ctime on, and the next lookup says Changed.
    pub fn mark_no_xattrs(&mut self, key: &Key) {
        if let Some(i) = self.old.slots.position(key) {
            self.old.slots.items_mut()[i].xattrs = false;
        }
    }

    /// Remembers a file read in this run (seen, so not aged at `save`).
    pub fn insert(&mut self, key: Key, mut entry: Entry) {
        entry.seen = true;
        entry.age = 0;
        // Past 4 billion chunks in one cache a file is simply not cached
        // (it is read again next time).
        let _ = self.new.push(key, &entry);
    }

    /// Ages entries not seen in this run and writes the cache.
    pub fn save(mut self) -> Result<()> {
        for s in self.old.slots.items_mut() {
            if !s.seen {
                s.age = s.age.saturating_add(1);
            }
        }
        let new = self.new.seal();
        let stored = StoredOut {
            version: FILES_CACHE_VERSION,
            entries: Merged {
                old: &self.old,
                new: &new,
            },
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
fn write_new(path: &Path, stored: &StoredOut) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{BlobId, PackId};
    use crate::repo::pack::PackEntry;

    fn entry(n: u64, chunks: usize) -> Entry {
        Entry {
            inode: n,
            size: n * 10,
            mtime: n as i64 * 1000,
            ctime: n as i64 * 1000 + 1,
            age: 0,
            chunks: (0..chunks)
                .map(|c| {
                    ChunkRef(
                        BlobId(*blake3::hash(&[n as u8, c as u8]).as_bytes()),
                        c as u32,
                    )
                })
                .collect(),
            xattrs: n.is_multiple_of(2),
            seen: false,
        }
    }

    fn index_of(entries: &[(Key, Entry)]) -> Index {
        let mut index = Index::default();
        let blobs: Vec<PackEntry> = entries
            .iter()
            .flat_map(|(_, e)| e.chunks.iter())
            .map(|c| PackEntry {
                ty: crate::crypto::ObjectType::Data,
                id: c.0,
                offset: 0,
                length: 1,
                raw_length: c.1,
            })
            .collect();
        index.add_pack(PackId([7; 32]), &blobs);
        index
    }

    fn unchanged(
        cache: &mut FilesCache,
        k: &Key,
        e: &Entry,
        index: &Index,
    ) -> Option<(Vec<ChunkRef>, bool)> {
        match cache.lookup(k, e.inode, e.size, e.mtime, e.ctime, index) {
            Lookup::Unchanged(c, x) => Some((c, x)),
            _ => None,
        }
    }

    #[test]
    fn every_entry_is_found_after_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<(Key, Entry)> = (0..5000u64)
            .map(|n| {
                (
                    key(format!("dir/file-{n}").as_bytes()),
                    entry(n, (n % 4) as usize),
                )
            })
            .collect();
        let index = index_of(&entries);
        let mut cache = FilesCache::load(dir.path());
        for (k, e) in &entries {
            assert!(matches!(
                cache.lookup(k, e.inode, e.size, e.mtime, e.ctime, &index),
                Lookup::Unknown
            ));
            cache.insert(*k, e.clone());
        }
        cache.save().unwrap();
        let mut cache = FilesCache::load(dir.path());
        for (k, e) in &entries {
            assert_eq!(
                unchanged(&mut cache, k, e, &index),
                Some((e.chunks.clone(), e.xattrs))
            );
            // Any field that differs: changed.
            assert!(matches!(
                cache.lookup(k, e.inode, e.size + 1, e.mtime, e.ctime, &index),
                Lookup::Changed
            ));
        }
        assert!(matches!(
            cache.lookup(&key(b"not there"), 1, 1, 1, 1, &index),
            Lookup::Unknown
        ));
        // A chunk gone from the repository: changed.
        let (k, e) = &entries[3];
        assert!(unchanged(&mut cache, k, e, &Index::default()).is_none());
    }

    #[test]
    fn a_new_entry_replaces_the_old_and_unseen_ones_expire() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(b"a"), key(b"b"));
        let all = [(a, entry(1, 1)), (b, entry(2, 2)), (a, entry(3, 3))];
        let index = index_of(&all);
        let mut cache = FilesCache::load(dir.path());
        cache.insert(a, entry(1, 1));
        cache.insert(b, entry(2, 2));
        cache.save().unwrap();
        // a changed and was read again; b is not seen for TTL runs.
        let mut cache = FilesCache::load(dir.path());
        assert!(matches!(
            cache.lookup(&a, 3, 30, 3000, 3001, &index),
            Lookup::Changed
        ));
        cache.insert(a, entry(3, 3));
        cache.save().unwrap();
        for run in 1..FILES_CACHE_TTL {
            let mut cache = FilesCache::load(dir.path());
            assert_eq!(
                unchanged(&mut cache, &a, &entry(3, 3), &index).map(|c| c.0.len()),
                Some(3),
                "run {run}"
            );
            let mut probe = FilesCache::load(dir.path());
            assert!(
                unchanged(&mut probe, &b, &entry(2, 2), &index).is_some(),
                "run {run}"
            );
            cache.save().unwrap();
        }
        let mut cache = FilesCache::load(dir.path());
        assert!(matches!(
            cache.lookup(&b, 2, 20, 2000, 2001, &index),
            Lookup::Unknown
        ));
        assert!(unchanged(&mut cache, &a, &entry(3, 3), &index).is_some());
    }

    /// The bytes per file quoted in docs/performance.md.
    #[test]
    fn an_entry_takes_64_bytes_plus_its_chunks() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::size_of::<ChunkRef>(), 36);
    }

    #[test]
    fn a_cache_written_as_a_hash_map_loads() {
        // The format before entries were kept sorted: the same MessagePack
        // map, in hash order.
        #[derive(Serialize)]
        struct Old {
            version: u32,
            entries: std::collections::HashMap<Key, Entry>,
        }
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<(Key, Entry)> = (0..300u64)
            .map(|n| (key(&n.to_le_bytes()), entry(n, 2)))
            .collect();
        let index = index_of(&entries);
        let old = Old {
            version: FILES_CACHE_VERSION,
            entries: entries.iter().cloned().collect(),
        };
        std::fs::write(dir.path().join("files"), rmp_serde::to_vec(&old).unwrap()).unwrap();
        let mut cache = FilesCache::load(dir.path());
        for (k, e) in &entries {
            assert_eq!(
                unchanged(&mut cache, k, e, &index),
                Some((e.chunks.clone(), e.xattrs))
            );
        }
    }
}
