//! A repository inside an archive: the directory `<name>/` of a replica
//! archive (see `ops::replicate`) served, read-only, as a backend. Every
//! command that reads a repository (list, info, extract, check) then works
//! on "knode01 as replicated to pi-family on 2026-11-22", fetching only the
//! chunks of the nested files it reads.

use super::Archive;
use super::item::{ChunkRef, ItemsReader, KIND_FILE};
use crate::backend::{Backend, FileInfo, FileKind, Space, Traffic};
use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::repo::manifest::ArchiveRef;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Outer chunks kept decoded: a nested pack is read blob by blob, and each
/// outer chunk (at most the chunker's 8 MiB maximum) holds several blobs.
const CHUNK_CACHE: usize = 4;

struct NestedFile {
    size: u64,
    modified: i64,
    chunks: Vec<ChunkRef>,
    /// Offset of each chunk in the file.
    starts: Vec<u64>,
}

pub struct NestedBackend {
    outer: Repository,
    location: String,
    identity: String,
    files: HashMap<(FileKind, String), NestedFile>,
    cache: Mutex<VecDeque<(BlobId, std::sync::Arc<Vec<u8>>)>>,
    /// Plaintext bytes of outer chunks fetched (what restoring cost).
    fetched: AtomicU64,
}

/// Where a path below the repository directory lives: its kind and name.
fn kind_of(rel: &str) -> Option<(FileKind, String)> {
    let (dir, name) = match rel.split_once('/') {
        None => return (rel == "config").then(|| (FileKind::Config, rel.to_string())),
        Some(x) => x,
    };
    let kind = match dir {
        "keys" => FileKind::Key,
        "index" => FileKind::Index,
        "manifest" => FileKind::Manifest,
        "data" => {
            let (_, pack) = name.split_once('/')?;
            return (!pack.contains('/')).then(|| (FileKind::Pack, pack.to_string()));
        }
        _ => return None, // locks/ and anything unknown
    };
    (!name.contains('/')).then(|| (kind, name.to_string()))
}

impl NestedBackend {
    /// Serves directory `dir` of archive `archive` of `outer` (opened by the
    /// caller, usually with a shared lock).
    pub fn open(outer: Repository, archive: &ArchiveRef, dir: &str) -> Result<Self> {
        let a = Archive::load(&outer, archive)?;
        let prefix = format!("{dir}/");
        let mut files = HashMap::new();
        for item in ItemsReader::new(&outer, a.items) {
            let item = item?;
            if item.kind != KIND_FILE || item.link.is_some() {
                continue;
            }
            let path = item.path_lossy();
            let Some(rel) = path.strip_prefix(&prefix) else {
                continue;
            };
            let Some(key) = kind_of(rel) else { continue };
            let mut starts = Vec::with_capacity(item.chunks.len());
            let mut at = 0u64;
            for c in &item.chunks {
                starts.push(at);
                at += c.1 as u64;
            }
            files.insert(
                key,
                NestedFile {
                    size: item.size,
                    modified: item.mtime / 1_000_000_000,
                    chunks: item.chunks,
                    starts,
                },
            );
        }
        if !files.contains_key(&(FileKind::Config, "config".to_string())) {
            return Err(Error::NotARepository(format!(
                "{}::{} has no repository `{dir}` (see `strata list {}::{}` for what it holds)",
                outer.location(),
                archive.name,
                outer.location(),
                archive.name
            )));
        }
        Ok(Self {
            location: format!("{dir} in {}::{}", outer.location(), archive.name),
            identity: format!(
                "replica:{}::{}/{dir}",
                outer.backend().identity(),
                archive.name
            ),
            outer,
            files,
            cache: Mutex::new(VecDeque::new()),
            fetched: AtomicU64::new(0),
        })
    }

    fn file(&self, kind: FileKind, name: &str) -> Result<&NestedFile> {
        self.files.get(&(kind, name.to_string())).ok_or_else(|| {
            Error::io(
                format!("{}/{name} in {}", kind.dir(), self.location),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
    }

    fn chunk(&self, c: &ChunkRef) -> Result<std::sync::Arc<Vec<u8>>> {
        if let Ok(cache) = self.cache.lock()
            && let Some((_, d)) = cache.iter().find(|(id, _)| *id == c.0)
        {
            return Ok(d.clone());
        }
        let data = std::sync::Arc::new(self.outer.read_blob(ObjectType::Data, &c.0)?);
        if data.len() != c.1 as usize {
            return Err(Error::corrupt(format!(
                "a chunk of {} has {} bytes, its item says {}",
                self.location,
                data.len(),
                c.1
            )));
        }
        self.fetched.fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() == CHUNK_CACHE {
                cache.pop_front();
            }
            cache.push_back((c.0, data.clone()));
        }
        Ok(data)
    }

    fn denied(&self) -> Error {
        Error::ReadOnly(format!(
            "{} is a replica, read-only: restore it with `strata restore-repo` to write to it",
            self.location
        ))
    }
}

impl Backend for NestedBackend {
    fn location(&self) -> &str {
        &self.location
    }
    fn identity(&self) -> String {
        self.identity.clone()
    }
    /// Reads map to whole outer chunks, kept in a small cache, and the
    /// outer repository caches whole packs when its store is remote: the
    /// nested repository itself reads exact ranges, so a sparse restore
    /// fetches only what it touches.
    fn high_latency(&self) -> bool {
        false
    }
    fn read_only(&self) -> bool {
        true
    }
    fn create(&self) -> Result<()> {
        Err(self.denied())
    }
    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        let mut out: Vec<FileInfo> = self
            .files
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, name), f)| FileInfo {
                name: name.clone(),
                size: f.size,
                modified: f.modified,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let size = self.file(kind, name)?.size;
        let len = u32::try_from(size).map_err(|_| {
            Error::invalid(format!(
                "{}/{name} is too large to read at once",
                kind.dir()
            ))
        })?;
        self.read_range(kind, name, 0, len)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let f = self.file(kind, name)?;
        let end = offset + len as u64;
        if end > f.size {
            return Err(Error::io(
                format!("{}/{name} in {}", kind.dir(), self.location),
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            ));
        }
        let mut out = Vec::with_capacity(len as usize);
        // The first chunk that holds `offset`, then on until `end`.
        let first = f.starts.partition_point(|s| *s <= offset).saturating_sub(1);
        for (c, start) in f.chunks.iter().zip(&f.starts).skip(first) {
            if *start >= end {
                break;
            }
            let data = self.chunk(c)?;
            let from = offset.saturating_sub(*start) as usize;
            let to = ((end - start) as usize).min(data.len());
            out.extend_from_slice(&data[from..to]);
        }
        Ok(out)
    }
    fn write(&self, _: FileKind, _: &str, _: &[u8]) -> Result<()> {
        Err(self.denied())
    }
    fn delete(&self, _: FileKind, _: &str) -> Result<()> {
        Err(self.denied())
    }
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        Ok(self.files.contains_key(&(kind, name.to_string())))
    }
    fn space(&self) -> Result<Space> {
        self.outer.backend().space()
    }
    fn traffic(&self) -> Option<Traffic> {
        Some(Traffic {
            sent: 0,
            received: self.fetched.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::kind_of;
    use crate::backend::FileKind;

    #[test]
    fn nested_paths_map_to_kinds_and_nothing_else() {
        assert_eq!(kind_of("config"), Some((FileKind::Config, "config".into())));
        assert_eq!(
            kind_of("data/ab/abcd"),
            Some((FileKind::Pack, "abcd".into()))
        );
        assert_eq!(kind_of("index/ff"), Some((FileKind::Index, "ff".into())));
        assert_eq!(
            kind_of("keys/repokey"),
            Some((FileKind::Key, "repokey".into()))
        );
        assert_eq!(kind_of("locks/x-1"), None);
        assert_eq!(kind_of("keys/a/b"), None);
        assert_eq!(kind_of("other"), None);
    }
}
