//! `replicate`: copies a repository, as the files it is made of (ciphertext
//! and all), into an archive of another repository — an off-site node. The
//! source's key is never needed; the archive's tree is the source's layout
//! under a directory named after it, so extracting it gives back a
//! repository that opens with the host's own key.
//!
//! Consistency: the source is read under a pin lock (see `repo::lock`): no
//! pack or index file can disappear while we copy, but backups go on. The
//! newest manifest generation is read first, then `index/`, then `data/`, so
//! everything that generation needs is in the copy (writers make packs
//! durable before the index naming them, and indexes before the manifest).

use crate::archive::create::{Observer, Progress, commit_archive, current_user, fill_stats};
use crate::archive::item::{
    ChunkRef, Dedup, ITEMS_COMPRESSION, Item, ItemsReader, ItemsWriter, KIND_DIR, KIND_FILE,
};
use crate::archive::{ARCHIVE_VERSION, Archive, validate_name};
use crate::backend::{Backend, FileInfo, FileKind};
use crate::compress::Compression;
use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::config::{CONFIG_FILE, RepoConfig};
use crate::repo::lock::{self, LockMode};
use crate::repo::manifest::ArchiveRef;
use crate::repo::{Repository, manifest};
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// Replica archives are named `<repo>-<UTC time>` in this format, which is
/// how the previous replica of the same repository is found.
pub const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";
/// Bytes asked of the source per read while streaming a file.
const READ_WINDOW: u32 = 8 * 1024 * 1024;

pub struct ReplicateOptions<'a> {
    /// The source's name: the directory in the archive and the archive
    /// name's prefix (usually the host name).
    pub repo_name: String,
    /// Defaults to `<repo_name>-<now>`.
    pub archive_name: Option<String>,
    pub compression: Compression,
    pub dry_run: bool,
    /// Re-read every file of the new archive from the target and compare
    /// its content hash with the source's.
    pub verify: bool,
    pub threads: usize,
    pub lock_wait: Duration,
    pub lock_notice: &'a dyn Fn(&str),
    pub command_line: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ReplicateResult {
    pub archive: Option<Archive>,
    pub archive_name: String,
    pub id: Option<BlobId>,
    pub source_id: String,
    pub generation: u64,
    pub previous: Option<String>,
    pub files: u64,
    /// Files skipped by name and size (content-addressed, so unchanged)
    /// without being read.
    pub unchanged_files: u64,
    pub read_files: u64,
    pub read_bytes: u64,
    /// Bytes of files that are new since the previous replica (what a dry
    /// run says would be read).
    pub new_bytes: u64,
    /// Compressed bytes this run added to the target.
    pub stored_bytes: u64,
    pub verified_files: u64,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// The archive name for a replica of `repo` made at `time`.
pub fn archive_name(repo: &str, time: chrono::DateTime<chrono::Utc>) -> String {
    format!("{repo}-{}", time.format(TIME_FORMAT))
}

/// Whether `archive` is a replica of `repo` (by the naming rule; a second
/// run within the same second adds `.N`).
pub fn is_replica_of(archive: &str, repo: &str) -> bool {
    let Some(t) = archive.strip_prefix(repo).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let t = match t.split_once('.') {
        Some((t, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => t,
        Some(_) => return false,
        None => t,
    };
    chrono::NaiveDateTime::parse_from_str(t, TIME_FORMAT).is_ok()
}

/// The newest replica archive of repository `name` in `repo`.
pub fn newest_replica(repo: &Repository, name: &str) -> Option<ArchiveRef> {
    repo.manifest()
        .archives
        .iter()
        .filter(|a| is_replica_of(&a.name, name))
        .max_by(|a, b| a.time.cmp(&b.time))
        .cloned()
}

/// The name a repository gets in the tiers: the last component of its path
/// (of an ssh:// URL's path too).
pub fn name_of(location: &str) -> String {
    let path = match crate::backend::remote::RemoteUrl::parse(location) {
        Some(u) => u.path,
        None => location.to_string(),
    };
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Repository `name` as held by a replica archive of `tier`: the archive
/// named, or the newest replica of `name`.
pub fn open_replica(
    tier: Repository,
    name: &str,
    archive: Option<&str>,
) -> Result<crate::archive::nested::NestedBackend> {
    let found = match archive {
        Some(a) => tier.manifest().find(a).cloned(),
        None => newest_replica(&tier, name),
    };
    let archive = found.ok_or_else(|| match archive {
        Some(a) => Error::ArchiveNotFound(a.to_string()),
        None => Error::NoReplica {
            tier: tier.location().to_string(),
            name: name.to_string(),
        },
    })?;
    crate::archive::nested::NestedBackend::open(tier, &archive, name)
}

/// A name not yet taken in `repo`.
fn free_name(repo: &Repository, base: String) -> String {
    let mut name = base.clone();
    let mut n = 1;
    while repo.manifest().find(&name).is_some() {
        name = format!("{base}.{n}");
        n += 1;
    }
    name
}

/// A repository name must work as a directory name and an archive name
/// prefix on every tier.
pub fn validate_repo_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "repository name `{name}`: use letters, digits, `.`, `-` and `_` (name it with --name)"
        )))
    }
}

/// One file of the source repository.
pub(crate) struct SourceFile {
    pub(crate) kind: FileKind,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) modified: i64,
}

impl SourceFile {
    /// Path below the repository directory, as a local repository lays it out.
    fn rel_path(&self) -> String {
        match self.kind {
            FileKind::Config => self.name.clone(),
            FileKind::Pack => format!(
                "data/{}/{}",
                &self.name[..2.min(self.name.len())],
                self.name
            ),
            k => format!("{}/{}", k.dir(), self.name),
        }
    }

    /// Packs and index files are named by the BLAKE3 of their bytes.
    fn content_hash(&self) -> Option<[u8; 32]> {
        if !matches!(self.kind, FileKind::Pack | FileKind::Index) {
            return None;
        }
        let mut h = [0u8; 32];
        hex::decode_to_slice(&self.name, &mut h).ok()?;
        Some(h)
    }
}

/// What the new archive must hold for one file.
struct Expected {
    size: u64,
    hash: [u8; 32],
}

/// The consistent file list of a pinned source repository.
pub(crate) struct Snapshot {
    pub(crate) config: RepoConfig,
    pub(crate) generation: u64,
    /// config, keys, manifests up to `generation`, index files, packs.
    pub(crate) files: Vec<SourceFile>,
    /// Files read while taking the snapshot (config, newest manifest).
    preread: HashMap<String, Vec<u8>>,
}

impl Snapshot {
    /// The bytes of `f` if the snapshot read them already.
    pub(crate) fn preread(&self, f: &SourceFile) -> Option<&Vec<u8>> {
        self.preread.get(&f.rel_path())
    }
}

/// Lists a repository's files the consistent way (module doc); the caller
/// holds a pin unless the store is read-only.
pub(crate) fn take_snapshot(source: &dyn Backend) -> Result<Snapshot> {
    let location = source.location().to_string();
    let config_bytes = match source.read(FileKind::Config, CONFIG_FILE) {
        Ok(b) => b,
        Err(Error::Io { source: e, .. }) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotARepository(location));
        }
        Err(e) => return Err(e),
    };
    let config = RepoConfig::parse(&config_bytes, &location)?;
    // Order matters: newest manifest, then index/, then data/ (module doc).
    let manifests = source.list(FileKind::Manifest)?;
    // No manifest at all: initialised, never backed up (a host added today,
    // before its first backup). Its config and key are still worth a copy;
    // failing here would fail every nightly run until that first backup.
    let generation = manifests
        .iter()
        .filter_map(|f| manifest::parse_file_name(&f.name))
        .max();
    let newest = match generation {
        Some(g) => {
            let name = manifest::file_name(g);
            let bytes = source.read(FileKind::Manifest, &name)?;
            Some((name, bytes))
        }
        None => None,
    };
    let generation = generation.unwrap_or(0);
    let keys = source.list(FileKind::Key)?;
    let indexes = source.list(FileKind::Index)?;
    let packs = source.list(FileKind::Pack)?;
    let mut files = vec![SourceFile {
        kind: FileKind::Config,
        name: CONFIG_FILE.into(),
        size: config_bytes.len() as u64,
        modified: 0,
    }];
    let mut push = |kind, list: Vec<FileInfo>| {
        for f in list {
            files.push(SourceFile {
                kind,
                name: f.name,
                size: f.size,
                modified: f.modified,
            })
        }
    };
    push(FileKind::Key, keys);
    push(
        FileKind::Manifest,
        manifests
            .into_iter()
            .filter(|f| manifest::parse_file_name(&f.name).is_some_and(|g| g <= generation))
            .collect(),
    );
    push(FileKind::Index, indexes);
    push(FileKind::Pack, packs);
    let mut preread = HashMap::new();
    if let Some((name, bytes)) = newest {
        preread.insert(format!("manifest/{name}"), bytes);
    }
    preread.insert(CONFIG_FILE.to_string(), config_bytes);
    Ok(Snapshot {
        config,
        generation,
        files,
        preread,
    })
}

/// Streams a source file in windows, hashing what passes.
struct SourceReader<'a> {
    backend: &'a dyn Backend,
    kind: FileKind,
    name: &'a str,
    /// From the listing: files never change, so this is the whole file.
    size: u64,
    offset: u64,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    hasher: blake3::Hasher,
}

impl Read for SourceReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            let want = (self.size - self.offset).min(READ_WINDOW as u64) as u32;
            if self.done || want == 0 {
                return Ok(0);
            }
            self.buf = self
                .backend
                .read_range(self.kind, self.name, self.offset, want)
                .map_err(std::io::Error::other)?;
            self.pos = 0;
            self.offset += self.buf.len() as u64;
            self.hasher.update(&self.buf);
            if self.buf.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Path → (size, chunks) of the files of a replica archive.
type ReplicaFiles = HashMap<Vec<u8>, (u64, Vec<ChunkRef>)>;

/// The previous replica of `repo_name`: its name and files.
fn previous_files(repo: &Repository, repo_name: &str) -> Result<(Option<String>, ReplicaFiles)> {
    let Some(prev) = newest_replica(repo, repo_name) else {
        return Ok((None, HashMap::new()));
    };
    let archive = Archive::load(repo, &prev)?;
    let mut files = HashMap::new();
    for item in ItemsReader::new(repo, archive.items) {
        let item = item?;
        if item.kind == KIND_FILE {
            files.insert(item.path.into_vec(), (item.size, item.chunks));
        }
    }
    Ok((Some(prev.name.clone()), files))
}

fn base_item(path: String, kind: u8, mtime_ns: i64) -> Item {
    Item {
        path: ByteBuf::from(path.into_bytes()),
        kind,
        mode: if kind == KIND_DIR { 0o700 } else { 0o600 },
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        mtime: mtime_ns,
        atime: mtime_ns,
        ctime: mtime_ns,
        ..Item::default()
    }
}

/// Replicates the repository at `source` into a new archive of `target`.
pub fn replicate(
    source: Arc<dyn Backend>,
    target: &mut Repository,
    opts: &ReplicateOptions,
    obs: &mut dyn Observer,
) -> Result<ReplicateResult> {
    let started = std::time::Instant::now();
    validate_repo_name(&opts.repo_name)?;
    let time_start = chrono::Utc::now();
    let name = match &opts.archive_name {
        Some(n) => n.clone(),
        None => free_name(target, archive_name(&opts.repo_name, time_start)),
    };
    validate_name(&name)?;
    if target.manifest().find(&name).is_some() {
        return Err(Error::ArchiveExists(name));
    }
    let pin = lock::acquire(
        source.clone(),
        LockMode::Pin,
        opts.lock_wait,
        opts.lock_notice,
    )?;
    let snap = take_snapshot(source.as_ref())?;
    if !opts.dry_run {
        // Packs a dropped connection left behind are deduplicated against.
        target.adopt_orphan_packs()?;
    }
    let (previous, prev_files) = previous_files(target, &opts.repo_name)?;
    let mut result = ReplicateResult {
        archive_name: name.clone(),
        source_id: snap.config.id.clone(),
        generation: snap.generation,
        previous,
        ..Default::default()
    };

    let root = &opts.repo_name;
    let dir_time = time_start.timestamp_nanos_opt().unwrap_or(0);
    let mut tree: BTreeMap<String, Option<&SourceFile>> = BTreeMap::new();
    tree.insert(root.clone(), None);
    for d in ["data", "index", "keys", "locks", "manifest"] {
        tree.insert(format!("{root}/{d}"), None);
    }
    for b in 0..=255u8 {
        tree.insert(format!("{root}/data/{b:02x}"), None);
    }
    for f in &snap.files {
        tree.insert(format!("{root}/{}", f.rel_path()), Some(f));
    }

    let writer = target.writer(opts.threads);
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    let (archive, refs) = {
        let mut dedup = Dedup {
            repo: target,
            writer: &writer,
            pending: HashMap::new(),
            dry_run: opts.dry_run,
        };
        let chunker = dedup.repo.chunker();
        let mut items = ItemsWriter::new(&dedup.repo.sealer().keys().chunker_seed);
        let mut refs: HashMap<BlobId, u64> = HashMap::new();
        let mut stats = crate::repo::manifest::ArchiveStats::default();
        let mut progress = Progress {
            total: Some(snap.files.iter().map(|f| f.size).sum()),
            ..Progress::default()
        };
        for (path, file) in &tree {
            if obs.cancelled() {
                return Err(Error::Interrupted);
            }
            let Some(f) = file else {
                let item = base_item(path.clone(), KIND_DIR, dir_time);
                items.push(&item, &mut |data| {
                    Ok(dedup.store(ObjectType::Items, data, ITEMS_COMPRESSION)?.0)
                })?;
                continue;
            };
            let mut item = base_item(
                path.clone(),
                KIND_FILE,
                f.modified.saturating_mul(1_000_000_000),
            );
            let prev = prev_files.get(path.as_bytes());
            let known_hash = f.content_hash();
            result.files += 1;
            progress.path = path.clone();
            // Content-addressed files never change under their name: the same
            // name and size is the same file.
            let status = match (prev, known_hash) {
                (Some((size, chunks)), Some(hash)) if *size == f.size => {
                    item.chunks = chunks.clone();
                    item.size = *size;
                    result.unchanged_files += 1;
                    expected.insert(path.clone(), Expected { size: f.size, hash });
                    'U'
                }
                _ if opts.dry_run => {
                    result.new_bytes += f.size;
                    item.size = f.size;
                    'A'
                }
                _ => {
                    let mut reader = SourceReader {
                        backend: source.as_ref(),
                        kind: f.kind,
                        name: &f.name,
                        size: f.size,
                        offset: 0,
                        buf: snap.preread.get(&f.rel_path()).cloned().unwrap_or_default(),
                        pos: 0,
                        done: false,
                        hasher: blake3::Hasher::new(),
                    };
                    if !reader.buf.is_empty() {
                        reader.done = true;
                        reader.hasher.update(&reader.buf);
                    }
                    let mut chunks = Vec::new();
                    let mut vanished = false;
                    for chunk in chunker.chunks(&mut reader) {
                        if obs.cancelled() {
                            return Err(Error::Interrupted);
                        }
                        let data = match chunk {
                            Ok(d) => d,
                            Err(e) => {
                                let not_found = e
                                    .get_ref()
                                    .and_then(|i| i.downcast_ref::<Error>())
                                    .is_some_and(is_not_found);
                                // Older manifest generations and replaced key
                                // files may go while we copy; nothing else may.
                                if not_found && matches!(f.kind, FileKind::Manifest | FileKind::Key)
                                {
                                    vanished = true;
                                    break;
                                }
                                return Err(Error::Remote(format!(
                                    "reading {} from {}: {e}; nothing was committed, run replicate again",
                                    f.rel_path(),
                                    source.location()
                                )));
                            }
                        };
                        let len = data.len() as u32;
                        let (id, _) = dedup.store(ObjectType::Data, &data, opts.compression)?;
                        chunks.push(ChunkRef(id, len));
                    }
                    if vanished {
                        result.files -= 1;
                        continue;
                    }
                    let size: u64 = chunks.iter().map(|c| c.1 as u64).sum();
                    let hash: [u8; 32] = reader.hasher.finalize().into();
                    result.read_files += 1;
                    result.read_bytes += size;
                    result.new_bytes += size;
                    if let Some(want) = known_hash
                        && want != hash
                    {
                        let msg = format!(
                            "{} in {} is damaged (its bytes do not hash to its name); run `strata check --repair` there",
                            f.rel_path(),
                            source.location()
                        );
                        match prev {
                            Some((psize, pchunks)) => {
                                result.warnings.push(format!(
                                    "{msg}; the replica keeps its earlier good copy"
                                ));
                                item.chunks = pchunks.clone();
                                item.size = *psize;
                                expected.insert(
                                    path.clone(),
                                    Expected {
                                        size: *psize,
                                        hash: want,
                                    },
                                );
                            }
                            None => {
                                // Kept aside, not under its name: the next
                                // run then reads the source again (repaired
                                // or not) instead of trusting this copy.
                                let aside = format!("{root}/damaged/{}", f.rel_path());
                                result.warnings.push(format!(
                                    "{msg}; copied as it is to {aside}, outside the replicated repository (repair can salvage its intact blobs)"
                                ));
                                item.path = ByteBuf::from(aside.clone().into_bytes());
                                item.chunks = chunks;
                                item.size = size;
                                expected.insert(aside, Expected { size, hash });
                            }
                        }
                        obs.warning(result.warnings.last().map(String::as_str).unwrap_or(""));
                        'E'
                    } else {
                        expected.insert(path.clone(), Expected { size, hash });
                        let same = prev.is_some_and(|(_, c)| *c == chunks);
                        item.chunks = chunks;
                        item.size = size;
                        if same {
                            'U'
                        } else if prev.is_some() {
                            'M'
                        } else {
                            'A'
                        }
                    }
                }
            };
            for c in &item.chunks {
                *refs.entry(c.0).or_insert(0) += 1;
            }
            stats.files += 1;
            stats.original_size += item.size;
            progress.files = stats.files;
            progress.original = stats.original_size;
            obs.entry(status, path);
            obs.progress(&progress);
            items.push(&item, &mut |data| {
                Ok(dedup.store(ObjectType::Items, data, ITEMS_COMPRESSION)?.0)
            })?;
        }
        let (item_ids, _) = items
            .finish(&mut |data| Ok(dedup.store(ObjectType::Items, data, ITEMS_COMPRESSION)?.0))?;
        let archive = Archive {
            version: ARCHIVE_VERSION,
            name: name.clone(),
            hostname: lock::hostname(),
            username: current_user(),
            comment: format!(
                "replica of {}: repository {}, manifest generation {}",
                source.location(),
                snap.config.id,
                snap.generation
            ),
            command_line: opts.command_line.clone(),
            time_start: time_start.to_rfc3339(),
            time_end: chrono::Utc::now().to_rfc3339(),
            items: item_ids,
            stats,
            imported_from: None,
        };
        (archive, refs)
    };
    let summary = writer.finish()?;
    target.absorb(&summary);
    result.stored_bytes = summary.stored_bytes;
    let mut archive = archive;
    fill_stats(target, &mut archive, &refs, summary.stored_bytes);
    if opts.dry_run {
        result.archive = Some(archive);
        result.seconds = started.elapsed().as_secs_f64();
        return Ok(result);
    }
    let (id, late) = commit_archive(target, &archive)?;
    pin.release();
    result.warnings.extend(late);
    result.id = Some(id);
    check_landed(target, &name, &expected)?;
    if opts.verify {
        result.verified_files = verify_content(target, &name, &expected, obs)?;
    }
    result.archive = Some(archive);
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        || matches!(e, Error::Remote(m) if m.contains("No such file"))
}

/// After the commit: the archive the target now lists holds exactly the
/// expected files with their sizes, and every chunk is in a pack that the
/// target's store has (index re-read from the store, not our memory).
fn check_landed(
    target: &mut Repository,
    name: &str,
    expected: &BTreeMap<String, Expected>,
) -> Result<()> {
    target.reload_index()?;
    let packs: HashSet<String> = target
        .backend()
        .list(FileKind::Pack)?
        .into_iter()
        .map(|f| f.name)
        .collect();
    let archive = Archive::find(target, name)?;
    let mut seen = 0usize;
    let fail = |what: String| {
        Err(Error::Mismatch(format!(
            "replica archive {name} does not match the source: {what}; run replicate again (with --verify)"
        )))
    };
    for item in ItemsReader::new(target, archive.items) {
        let item = item?;
        if item.kind != KIND_FILE {
            continue;
        }
        let path = item.path_lossy();
        let Some(want) = expected.get(&path) else {
            return fail(format!("{path} is not in the source"));
        };
        seen += 1;
        let sum: u64 = item.chunks.iter().map(|c| c.1 as u64).sum();
        if item.size != want.size || sum != want.size {
            return fail(format!(
                "{path} has {} bytes, the source {}",
                item.size, want.size
            ));
        }
        for c in &item.chunks {
            match target.index().get(&c.0) {
                Some((pack, _)) if packs.contains(&pack.to_hex()) => {}
                _ => return fail(format!("a chunk of {path} is not stored")),
            }
        }
    }
    if seen != expected.len() {
        return fail(format!(
            "{} of {} files are missing",
            expected.len() - seen,
            expected.len()
        ));
    }
    Ok(())
}

/// Reads every file of the replica back and compares its BLAKE3 with the
/// source's (for packs and index files: their names).
fn verify_content(
    target: &Repository,
    name: &str,
    expected: &BTreeMap<String, Expected>,
    obs: &mut dyn Observer,
) -> Result<u64> {
    let archive = Archive::find(target, name)?;
    let mut n = 0;
    let mut progress = Progress::default();
    for item in ItemsReader::new(target, archive.items) {
        let item = item?;
        if item.kind != KIND_FILE {
            continue;
        }
        let path = item.path_lossy();
        let want = expected
            .get(&path)
            .ok_or_else(|| Error::Mismatch(format!("{path} is not in the source")))?;
        let mut h = blake3::Hasher::new();
        for c in &item.chunks {
            h.update(&target.read_blob(ObjectType::Data, &c.0)?);
            progress.original += c.1 as u64;
        }
        if <[u8; 32]>::from(h.finalize()) != want.hash {
            return Err(Error::Mismatch(format!(
                "replica archive {name}: {path} differs from the source; run replicate again"
            )));
        }
        n += 1;
        progress.files = n;
        progress.path = path;
        obs.progress(&progress);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_names_identify_their_repository_exactly() {
        let t = chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        let n = archive_name("knode", t);
        assert_eq!(n, "knode-2025-11-24T16:00:00");
        assert!(is_replica_of(&n, "knode"));
        assert!(!is_replica_of(&archive_name("knode-2", t), "knode"));
        assert!(!is_replica_of("knode-weekly", "knode"));
        assert!(is_replica_of(&format!("{n}.2"), "knode"));
        assert!(!is_replica_of(&format!("{n}.x"), "knode"));
        assert!(validate_repo_name("knode01.example").is_ok());
        assert!(validate_repo_name("../x").is_err());
        assert!(validate_repo_name(".hidden").is_err());
    }
}
