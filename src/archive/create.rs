//! `create`: walk → read → chunk → id → dedup on this thread; compress,
//! seal and pack on the writer's threads; then items, archive, index and
//! manifest, in that order.

use super::files_cache::{Entry, FilesCache, Lookup};
use super::fsmeta::{Names, item_from_meta, kind_of, xattrs_of};
use super::item::{
    ChunkRef, Dedup, ITEMS_COMPRESSION, Item, ItemsWriter, KIND_DIR, KIND_FILE, KIND_SYMLINK,
};
use super::patterns::Excludes;
use super::{ARCHIVE_VERSION, Archive, validate_name};
use crate::chunker::Chunker;
use crate::compress::Compression;
use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::id::{BlobId, IdMap};
use crate::repo::Repository;
use crate::repo::manifest::{ArchiveRef, ArchiveStats};
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
/// A file changed less than this before we read it is not put in the files
/// cache (timestamps on ext4/xfs/btrfs advance in ticks of a few ms).
pub const RACY_MARGIN_NS: i64 = 100_000_000;
/// Files with at least this much of holes are read by data region, their
/// holes stored as repeated zero chunks without reading them (a 1 TiB disk
/// image with 1 MiB of data). Below it, files are read straight through, so
/// their chunks match those of the same bytes from a stream (`import-tar`,
/// an export of the file) and deduplicate with them.
pub const SPARSE_MIN_HOLES: u64 = 1 << 30;
/// The same for file systems with whole-second timestamps (FAT: 2 s).
pub const RACY_MARGIN_COARSE_NS: i64 = 2_000_000_000;
pub const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

pub struct CreateOptions {
    pub name: String,
    /// Paths to back up; `-` reads standard input.
    pub paths: Vec<PathBuf>,
    pub stdin_name: String,
    pub compression: Compression,
    pub comment: String,
    pub excludes: Excludes,
    pub exclude_caches: bool,
    pub exclude_if_present: Vec<String>,
    pub one_file_system: bool,
    pub dry_run: bool,
    pub numeric_ids: bool,
    pub threads: usize,
    pub command_line: Vec<String>,
    /// Data produced by commands (database dumps), each stored as one file.
    pub streams: Vec<Stream>,
}

/// A named stream stored as one file (mode 0600), read to its end once.
pub struct Stream {
    /// The path in the archive.
    pub name: String,
    pub reader: std::cell::RefCell<Option<Box<dyn Read>>>,
}

impl Stream {
    pub fn new(name: impl Into<String>, reader: impl Read + 'static) -> Self {
        Self {
            name: name.into(),
            reader: std::cell::RefCell::new(Some(Box::new(reader))),
        }
    }
}

/// Live figures for `--progress`.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub files: u64,
    pub original: u64,
    pub compressed_new: u64,
    pub path: String,
    /// What `original` will reach at the end, when the operation knows.
    pub total: Option<u64>,
}

/// Receives what `create` does; the core knows nothing of terminals.
pub trait Observer {
    /// One line of `--list`: status A/M/U/d/s/h/x/E/c/b/f/- and the path.
    fn entry(&mut self, _status: char, _path: &str) {}
    fn warning(&mut self, _message: &str) {}
    fn progress(&mut self, _p: &Progress) {}
    /// Polled between files and chunks: true stops the run with
    /// `Error::Interrupted`, committing nothing.
    fn cancelled(&self) -> bool {
        false
    }
}

pub struct NoObserver;
impl Observer for NoObserver {}

pub struct CreateResult {
    pub archive: Archive,
    pub id: BlobId,
    pub warnings: u64,
    pub seconds: f64,
}

struct Walk<'a, 'o> {
    opts: &'a CreateOptions,
    dedup: Dedup<'a>,
    chunker: std::rc::Rc<Chunker>,
    /// The chunker's read window, reused from file to file.
    window: Vec<u8>,
    items: ItemsWriter,
    cache: FilesCache,
    names: Names,
    hardlinks: HashMap<(u64, u64), ByteBuf>,
    refs: IdMap<BlobId, u64>,
    /// Ids of all-zero chunks by length (holes of sparse files).
    zero_ids: HashMap<u32, BlobId>,
    stats: ArchiveStats,
    progress: Progress,
    warnings: u64,
    obs: &'o mut dyn Observer,
}

pub fn create(
    repo: &mut Repository,
    opts: &CreateOptions,
    obs: &mut dyn Observer,
) -> Result<CreateResult> {
    validate_name(&opts.name)?;
    if repo.manifest().find(&opts.name).is_some() {
        return Err(Error::ArchiveExists(opts.name.clone()));
    }
    let started = std::time::Instant::now();
    if !opts.dry_run {
        repo.adopt_orphan_packs()?;
    }
    let time_start = chrono::Utc::now();
    let writer = repo.writer(opts.threads);
    let cache_dir = repo.dirs().repo_cache(&repo.config().id);
    let (archive, refs, cache, warnings, obs) = {
        let mut w = Walk {
            opts,
            dedup: Dedup {
                repo,
                writer: &writer,
                pending: HashMap::new(),
                dry_run: opts.dry_run,
            },
            chunker: std::rc::Rc::new(repo.chunker()),
            window: repo.chunker().window(),
            items: ItemsWriter::new(&repo.sealer().keys().chunker_seed),
            cache: FilesCache::load(&cache_dir),
            names: Names::default(),
            hardlinks: HashMap::new(),
            refs: IdMap::default(),
            zero_ids: HashMap::new(),
            stats: ArchiveStats::default(),
            progress: Progress::default(),
            warnings: 0,
            obs,
        };
        // Streams (database dumps) first: their commands are running and
        // may hold a transaction open until they have been read.
        for s in &opts.streams {
            let reader = s.reader.borrow_mut().take();
            if let Some(r) = reader {
                w.stream(Path::new(&s.name), r, 0o600)?;
            }
        }
        for path in &opts.paths {
            if path.as_os_str() == "-" {
                w.stdin()?;
            } else {
                w.root(path)?;
            }
        }
        let Walk {
            dedup,
            items,
            refs,
            cache,
            warnings,
            stats,
            obs,
            ..
        } = w;
        let mut dedup = dedup;
        let (item_ids, _) = items
            .finish(&mut |data| Ok(dedup.store(ObjectType::Items, data, ITEMS_COMPRESSION)?.0))?;
        let archive = Archive {
            version: ARCHIVE_VERSION,
            name: opts.name.clone(),
            hostname: crate::repo::lock::hostname(),
            username: current_user(),
            comment: opts.comment.clone(),
            command_line: opts.command_line.clone(),
            time_start: time_start.to_rfc3339(),
            time_end: chrono::Utc::now().to_rfc3339(),
            items: item_ids,
            stats,
            imported_from: None,
        };
        (archive, refs, cache, warnings, obs)
    };
    let (result, late) = finish(repo, writer, archive, refs, started, warnings, opts, cache)?;
    for w in &late {
        obs.warning(w);
    }
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    repo: &mut Repository,
    writer: crate::repo::writer::BlobWriter,
    mut archive: Archive,
    refs: IdMap<BlobId, u64>,
    started: std::time::Instant,
    warning_count: u64,
    opts: &CreateOptions,
    cache: FilesCache,
) -> Result<(CreateResult, Vec<String>)> {
    let mut warnings = Vec::new();
    let data_summary = writer.finish()?;
    repo.absorb(&data_summary);
    fill_stats(repo, &mut archive, &refs, data_summary.stored_bytes);
    drop(refs); // ~80 MB for 1M chunks: not held while the files cache is saved
    let id = if opts.dry_run {
        repo.sealer()
            .blob_id(ObjectType::Archive, &archive.encode()?)
    } else {
        let (id, late) = commit_archive(repo, &archive)?;
        warnings.extend(late);
        if let Err(e) = cache.save() {
            warnings.push(format!(
                "could not save the files cache (the next backup reads every file): {e}"
            ));
        }
        id
    };
    let result = CreateResult {
        archive,
        id,
        warnings: warning_count + warnings.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((result, warnings))
}

/// Fills the chunk and size figures of an archive's stats from the chunks it
/// references (`refs`: id → reference count) and the bytes this run stored.
pub(crate) fn fill_stats<S: std::hash::BuildHasher>(
    repo: &Repository,
    archive: &mut Archive,
    refs: &HashMap<BlobId, u64, S>,
    stored_bytes: u64,
) {
    archive.stats.unique_chunks = refs.len() as u64;
    archive.stats.chunks = refs.values().sum();
    archive.stats.compressed_size = refs
        .iter()
        .map(|(id, n)| {
            repo.index()
                .get(id)
                .map(|(_, l)| l.length as u64)
                .unwrap_or(0)
                * n
        })
        .sum();
    archive.stats.deduplicated_size = stored_bytes;
}

/// Stores the archive object and commits a manifest that lists it. The
/// archive object goes in its own small pack, after the data it names:
/// data, then index, then manifest. Returns its id and post-commit warnings.
pub(crate) fn commit_archive(
    repo: &mut Repository,
    archive: &Archive,
) -> Result<(BlobId, Vec<String>)> {
    let encoded = archive.encode()?;
    let id = repo.sealer().blob_id(ObjectType::Archive, &encoded);
    let w = repo.writer(1);
    w.add(ObjectType::Archive, id, &encoded, ITEMS_COMPRESSION)?;
    let s = w.finish()?;
    repo.absorb(&s);
    let mut archives = repo.manifest().archives.clone();
    archives.push(ArchiveRef {
        name: archive.name.clone(),
        id,
        time: archive.time_start.clone(),
        hostname: archive.hostname.clone(),
        username: archive.username.clone(),
        stats: archive.stats,
    });
    let warnings = repo.write_manifest(archives)?;
    Ok((id, warnings))
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

pub(crate) fn current_user() -> String {
    Names::default()
        .user(rustix::process::getuid().as_raw())
        .unwrap_or_else(|| "unknown".into())
}

/// The stored form of a path: relative, no `.` or `..`, raw bytes.
pub fn archive_path(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for c in path.components() {
        if let Component::Normal(n) = c {
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(n.as_bytes());
        }
    }
    out
}

impl Walk<'_, '_> {
    fn warn(&mut self, status: char, path: &Path, msg: String) {
        self.warnings += 1;
        self.obs.entry(status, &path.display().to_string());
        self.obs.warning(&format!("{}: {msg}", path.display()));
    }

    fn root(&mut self, root: &Path) -> Result<()> {
        // `..` in a root would put `..` into stored paths: resolve it away.
        let root = if root.components().any(|c| c == Component::ParentDir) {
            match root.canonicalize() {
                Ok(p) => p,
                Err(e) => {
                    self.warn('E', root, e.to_string());
                    return Ok(());
                }
            }
        } else {
            root.to_path_buf()
        };
        let mut it = walkdir::WalkDir::new(&root)
            .follow_links(false)
            .same_file_system(self.opts.one_file_system)
            .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()))
            .into_iter();
        while let Some(next) = it.next() {
            if self.obs.cancelled() {
                return Err(Error::Interrupted);
            }
            let entry = match next {
                Ok(e) => e,
                Err(e) => {
                    let p = e
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| root.clone());
                    let msg = e
                        .io_error()
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| e.to_string());
                    self.warn('E', &p, msg);
                    continue;
                }
            };
            let path = entry.path();
            if self.opts.excludes.is_excluded(path) {
                self.obs.entry('x', &path.display().to_string());
                if entry.file_type().is_dir() {
                    it.skip_current_dir();
                }
                continue;
            }
            if entry.file_type().is_dir() && self.tagged(path) {
                self.obs.entry('x', &path.display().to_string());
                it.skip_current_dir();
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) => {
                    self.warn('E', path, e.to_string());
                    continue;
                }
            };
            self.entry(path, &meta)?;
        }
        Ok(())
    }

    fn tagged(&self, dir: &Path) -> bool {
        if self
            .opts
            .exclude_if_present
            .iter()
            .any(|n| dir.join(n).symlink_metadata().is_ok())
        {
            return true;
        }
        if self.opts.exclude_caches {
            let mut sig = [0u8; 43];
            if let Ok(mut f) = File::open(dir.join(CACHEDIR_TAG)) {
                return f.read_exact(&mut sig).is_ok() && sig[..] == *CACHEDIR_SIGNATURE;
            }
        }
        false
    }

    fn entry(&mut self, path: &Path, meta: &Metadata) -> Result<()> {
        let Some(kind) = kind_of(meta) else {
            self.obs.entry('x', &path.display().to_string());
            return Ok(());
        };
        let pbytes = archive_path(path);
        if pbytes.is_empty() {
            return Ok(()); // the root `/` itself has no name to store
        }
        let mut item = item_from_meta(pbytes, kind, meta, &mut self.names, self.opts.numeric_ids);
        // A regular file's xattrs are read by `file_content`, after the
        // files cache had its say (an unchanged file without any needs no
        // `listxattr`); a hard link's later names store none.
        if kind != KIND_FILE {
            self.read_xattrs(path, &mut item);
        }
        let status = match kind {
            KIND_FILE => match self.file(path, meta, &mut item)? {
                Some(s) => s,
                None => return Ok(()),
            },
            KIND_DIR => 'd',
            KIND_SYMLINK => match std::fs::read_link(path) {
                Ok(t) => {
                    item.target = Some(ByteBuf::from(t.as_os_str().as_bytes().to_vec()));
                    's'
                }
                Err(e) => {
                    self.warn('E', path, e.to_string());
                    return Ok(());
                }
            },
            _ => 'b',
        };
        let shown = item.path_lossy();
        self.obs.entry(status, &shown);
        self.stats.files += 1;
        self.progress.files = self.stats.files;
        self.progress.path = shown;
        self.obs.progress(&self.progress);
        self.push(item)
    }

    /// Reads the xattrs (and ACLs) of `path` into `item`. Returns true when
    /// the file is known to have none (read fine, none there): only then may
    /// the files cache skip reading them next time.
    fn read_xattrs(&mut self, path: &Path, item: &mut Item) -> bool {
        match xattrs_of(path) {
            Ok(x) => {
                item.xattrs = x;
                item.xattrs.is_empty()
            }
            Err(e) => {
                self.warn('E', path, format!("reading extended attributes: {e}"));
                false
            }
        }
    }

    fn push(&mut self, item: Item) -> Result<()> {
        let dedup = &mut self.dedup;
        self.items.push(&item, &mut |data| {
            Ok(dedup.store(ObjectType::Items, data, ITEMS_COMPRESSION)?.0)
        })
    }

    /// Fills a file item's chunks. Returns its `--list` status, or None when
    /// the file was skipped with a warning.
    fn file(&mut self, path: &Path, meta: &Metadata, item: &mut Item) -> Result<Option<char>> {
        let inode = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some(first) = self.hardlinks.get(&inode)
        {
            item.link = Some(first.clone());
            item.xattrs.clear(); // they belong to the inode, restored with the first name
            return Ok(Some('h'));
        }
        let status = self.file_content(path, meta, item)?;
        // Only a name whose data is in the archive may be a link target.
        if status.is_some() && meta.nlink() > 1 {
            self.hardlinks.insert(inode, item.path.clone());
        }
        Ok(status)
    }

    fn file_content(
        &mut self,
        path: &Path,
        meta: &Metadata,
        item: &mut Item,
    ) -> Result<Option<char>> {
        let key = FilesCache::key_of(&item.path);
        let index = self.dedup.repo.index();
        // Taken before the xattrs are read: the racy rule in `after_read`
        // then covers an xattr change in the same clock tick as our read.
        let read_at = now_ns();
        let known =
            match self
                .cache
                .lookup(&key, meta.ino(), meta.len(), item.mtime, item.ctime, index)
            {
                Lookup::Unchanged(chunks, had_xattrs) => {
                    for c in &chunks {
                        self.count(c);
                    }
                    item.chunks = chunks;
                    // Same inode, size, mtime and ctime as when cached: a file
                    // that had no xattrs then has none now (setting one or an
                    // ACL updates ctime), so the item is the one `listxattr`
                    // would have given.
                    if had_xattrs && self.read_xattrs(path, item) && !self.opts.dry_run {
                        self.cache.mark_no_xattrs(&key);
                    }
                    return Ok(Some('U'));
                }
                Lookup::Changed => true,
                Lookup::Unknown => false,
            };
        let no_xattrs = self.read_xattrs(path, item);
        let file = match open_nofollow(path) {
            Ok(f) => f,
            Err(e) => {
                self.warn('E', path, e.to_string());
                return Ok(None);
            }
        };
        let holes = meta.len().saturating_sub(meta.blocks().saturating_mul(512));
        let sparse = holes >= SPARSE_MIN_HOLES;
        let chunks = if sparse {
            self.read_sparse(&file, path, meta.len())?
        } else {
            self.read_chunks(&file, path)?
        };
        let Some(chunks) = chunks else {
            return Ok(None);
        };
        item.size = chunks.iter().map(|c| c.1 as u64).sum();
        item.chunks = chunks;
        self.after_read(path, &file, meta, item, (key, read_at, no_xattrs));
        Ok(Some(if known { 'M' } else { 'A' }))
    }

    /// Checks (on the open file) that it did not change while read, and
    /// remembers it in the files cache unless its timestamps are too close
    /// to the moment we read it: a change within the same clock tick after
    /// our read would leave them unchanged (git's "racy" rule).
    fn after_read(
        &mut self,
        path: &Path,
        file: &File,
        before: &Metadata,
        item: &Item,
        (key, read_at, no_xattrs): (super::files_cache::Key, i64, bool),
    ) {
        let after = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.warn('E', path, format!("stat after reading: {e}"));
                return;
            }
        };
        let same = after.ino() == before.ino()
            && after.len() == before.len()
            && after.len() == item.size
            && (after.mtime(), after.mtime_nsec()) == (before.mtime(), before.mtime_nsec())
            && (after.ctime(), after.ctime_nsec()) == (before.ctime(), before.ctime_nsec());
        if !same {
            self.warn('C', path, "file changed while we backed it up".into());
            return;
        }
        let coarse = after.mtime_nsec() == 0 && after.ctime_nsec() == 0;
        let margin = if coarse {
            RACY_MARGIN_COARSE_NS
        } else {
            RACY_MARGIN_NS
        };
        let racy = read_at.saturating_sub(item.mtime.max(item.ctime)) < margin;
        if !racy && !self.opts.dry_run {
            let entry = Entry {
                inode: before.ino(),
                size: item.size,
                mtime: item.mtime,
                ctime: item.ctime,
                age: 0,
                chunks: item.chunks.clone(),
                xattrs: !no_xattrs,
                seen: true,
            };
            self.cache.insert(key, entry);
        }
    }

    fn count(&mut self, c: &ChunkRef) {
        *self.refs.entry(c.0).or_insert(0) += 1;
        self.stats.original_size += c.1 as u64;
        self.progress.original = self.stats.original_size;
    }

    /// A file with holes (SPARSE_MIN_HOLES or more): its data regions
    /// (`SEEK_DATA`/`SEEK_HOLE`) are chunked as usual, each hole becomes
    /// all-zero chunks of the chunker's maximum size without being read or
    /// hashed again. A 1 TiB file with 1 MiB of data takes a moment, not an
    /// hour of reading zeros. None if reading failed (warned).
    fn read_sparse(&mut self, file: &File, path: &Path, len: u64) -> Result<Option<Vec<ChunkRef>>> {
        use rustix::fs::SeekFrom as S;
        use std::io::{Seek, SeekFrom};
        let mut out = Vec::new();
        let mut pos = 0u64;
        while pos < len {
            // ENXIO: no data after pos, the rest is a hole
            let data = rustix::fs::seek(file, S::Data(pos)).unwrap_or(len).min(len);
            self.zero_chunks(data - pos, &mut out)?;
            if data >= len {
                break;
            }
            let hole = rustix::fs::seek(file, S::Hole(data))
                .unwrap_or(len)
                .min(len);
            let mut f = file;
            if let Err(e) = f.seek(SeekFrom::Start(data)) {
                self.warn('E', path, format!("read error: {e}"));
                return Ok(None);
            }
            match self.read_chunks(f.take(hole - data), path)? {
                Some(c) => out.extend(c),
                None => return Ok(None),
            }
            pos = hole;
        }
        Ok(Some(out))
    }

    /// Appends all-zero chunks covering `n` bytes; the ids of zero chunks
    /// are computed once per length.
    fn zero_chunks(&mut self, mut n: u64, out: &mut Vec<ChunkRef>) -> Result<()> {
        let max = self.chunker.params().max as u64;
        while n > 0 {
            let len = n.min(max) as u32;
            let c = match self.zero_ids.get(&len) {
                Some(id) => ChunkRef(*id, len),
                None => {
                    let (id, _) = self.dedup.store(
                        ObjectType::Data,
                        &vec![0; len as usize],
                        self.opts.compression,
                    )?;
                    self.zero_ids.insert(len, id);
                    ChunkRef(id, len)
                }
            };
            self.count(&c);
            out.push(c);
            n -= len as u64;
        }
        Ok(())
    }

    /// Chunks a reader into the repository. None if reading failed (warned).
    fn read_chunks(&mut self, reader: impl Read, path: &Path) -> Result<Option<Vec<ChunkRef>>> {
        Ok(self.read_chunks_or_why(reader, path)?.ok())
    }

    /// Chunks a reader; the inner error is why reading failed (warned).
    fn read_chunks_or_why(
        &mut self,
        reader: impl Read,
        path: &Path,
    ) -> Result<std::result::Result<Vec<ChunkRef>, String>> {
        // The window is taken out of `self` while the stream borrows it,
        // and put back however the loop ends.
        let chunker = self.chunker.clone();
        let mut stream = chunker.chunks_with(reader, std::mem::take(&mut self.window));
        let result = self.store_chunks(&mut stream, path);
        self.window = stream.into_window();
        result
    }

    fn store_chunks<R: Read>(
        &mut self,
        stream: &mut crate::chunker::ChunkStream<'_, R>,
        path: &Path,
    ) -> Result<std::result::Result<Vec<ChunkRef>, String>> {
        let mut out = Vec::new();
        while let Some(chunk) = stream.next_chunk() {
            if self.obs.cancelled() {
                return Err(Error::Interrupted);
            }
            let data = match chunk {
                Ok(d) => d,
                Err(e) => {
                    self.warn('E', path, format!("read error: {e}"));
                    return Ok(Err(e.to_string()));
                }
            };
            let len = data.len() as u32;
            let (id, _) = self
                .dedup
                .store(ObjectType::Data, data, self.opts.compression)?;
            let c = ChunkRef(id, len);
            self.count(&c);
            out.push(c);
        }
        Ok(Ok(out))
    }

    fn stdin(&mut self) -> Result<()> {
        let name = PathBuf::from(&self.opts.stdin_name);
        self.stream(&name, std::io::stdin().lock(), 0o660)
    }

    fn stream(&mut self, name: &Path, reader: impl Read, mode: u32) -> Result<()> {
        let chunks = match self.read_chunks_or_why(reader, name)? {
            Ok(c) => c,
            Err(why) => {
                // A stream cannot be read again: the whole backup fails
                // rather than store a file that looks complete.
                return Err(Error::invalid(format!("{}: {why}", name.display())));
            }
        };
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let item = Item {
            path: ByteBuf::from(archive_path(name)),
            kind: KIND_FILE,
            mode,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            user: Some(current_user()),
            mtime: now,
            atime: now,
            ctime: now,
            size: chunks.iter().map(|c| c.1 as u64).sum(),
            chunks,
            ..Item::default()
        };
        self.obs.entry('A', &item.path_lossy());
        self.stats.files += 1;
        self.push(item)
    }
}

fn open_nofollow(path: &Path) -> std::io::Result<File> {
    let flags = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    let noatime = rustix::fs::OFlags::NOATIME.bits() as i32;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags | noatime)
        .open(path)
    {
        // O_NOATIME is only allowed on files we own (or as root).
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(path)
        }
        r => r,
    }
}
