//! `extract`: recreate an archive's items under a target directory.
//!
//! Safety: every path is checked (relative, no `.`/`..`/empty components),
//! parents are opened one component at a time with `O_NOFOLLOW` from a
//! descriptor of the target, files are created with `O_EXCL|O_NOFOLLOW`,
//! and hard links may only point at items extracted earlier in this run.
//! So nothing is ever written outside the target, whatever the archive says.

use super::Archive;
use super::create::{Observer, Progress};
use super::fsmeta::Names;
use super::item::{
    ChunkRef, Item, ItemsReader, KIND_BLOCKDEV, KIND_CHARDEV, KIND_DIR, KIND_FIFO, KIND_FILE,
    KIND_SYMLINK,
};
use crate::crypto::ObjectType;
use crate::direct_io::{DirectWriter, MIN_DIRECT, Staging};
use crate::error::{Error, IoContext, Result};
use crate::repo::{Decoded, Repository};
use crossbeam_channel::bounded;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Zero runs of this size become holes with `--sparse`.
pub const SPARSE_BLOCK: usize = 64 * 1024;

pub struct ExtractOptions {
    pub dest: PathBuf,
    /// Only items equal to or below these archive paths.
    pub paths: Vec<Vec<u8>>,
    pub strip_components: usize,
    pub sparse: bool,
    pub numeric_ids: bool,
    pub dry_run: bool,
    pub threads: usize,
}

#[derive(Debug, Default)]
pub struct ExtractResult {
    pub files: u64,
    pub bytes: u64,
    pub warnings: u64,
    pub errors: u64,
}

/// Splits and checks an archive path; None if it could escape the target.
pub fn safe_components(path: &[u8]) -> Option<Vec<&[u8]>> {
    if path.is_empty() || path[0] == b'/' || path.contains(&0) {
        return None;
    }
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == b"." || *p == b"..")
    {
        return None;
    }
    Some(parts)
}

struct FileJob {
    file: File,
    item: Item,
}

/// Files go to the workers in batches of about this many bytes or
/// BATCH_FILES files: a tree of small files then does not cost a wake-up
/// and two context switches per file (as in `create`, see
/// docs/performance.md). A batch holds its files open, so it stays small.
const BATCH_BYTES: u64 = 1 << 20;
const BATCH_FILES: usize = 32;

struct Shared<'a> {
    repo: &'a Repository,
    sparse: bool,
    dry_run: bool,
    numeric_ids: bool,
    /// Set by a worker that hit a full disk: extraction stops.
    abort: std::sync::atomic::AtomicBool,
    bytes: AtomicU64,
    problems: Mutex<Vec<(bool, String)>>,
}

impl Shared<'_> {
    fn problem(&self, error: bool, msg: String) {
        if let Ok(mut p) = self.problems.lock() {
            p.push((error, msg));
        }
    }
}

pub fn extract(
    repo: &Repository,
    archive: &Archive,
    opts: &ExtractOptions,
    obs: &mut dyn Observer,
) -> Result<ExtractResult> {
    // Restores write only below the target: a full disk is the target's.
    restore(repo, archive, opts, obs).map_err(|e| match e {
        Error::DiskFull(_) => Error::RestoreDiskFull(opts.dest.display().to_string()),
        other => other,
    })
}

fn restore(
    repo: &Repository,
    archive: &Archive,
    opts: &ExtractOptions,
    obs: &mut dyn Observer,
) -> Result<ExtractResult> {
    if !opts.dry_run {
        std::fs::create_dir_all(&opts.dest).ctx(|| format!("creating {}", opts.dest.display()))?;
    }
    let shared = Shared {
        repo,
        sparse: opts.sparse,
        dry_run: opts.dry_run,
        numeric_ids: opts.numeric_ids,
        abort: std::sync::atomic::AtomicBool::new(false),
        bytes: AtomicU64::new(0),
        problems: Mutex::new(Vec::new()),
    };
    let threads = opts.threads.max(1);
    let (tx, rx) = bounded::<Vec<FileJob>>(threads);
    let (mut result, dirs) = std::thread::scope(|s| -> Result<(ExtractResult, DeferredDirs)> {
        for _ in 0..threads {
            let (rx, shared) = (rx.clone(), &shared);
            s.spawn(move || {
                let mut worker = Worker::new(repo);
                for batch in rx {
                    for job in batch {
                        write_file(shared, job, &mut worker);
                    }
                }
            });
        }
        drop(rx);
        let mut ex = Extractor::new(opts, &shared, tx)?;
        let mut walk = || -> Result<()> {
            for item in ItemsReader::new(repo, archive.items.clone()) {
                ex.item(item?, obs)?;
            }
            Ok(())
        };
        let walked = walk();
        // Files already opened are written even when the walk stopped early.
        let flushed = ex.flush();
        walked.and(flushed)?;
        let Extractor {
            result, dirs, tx, ..
        } = ex;
        drop(tx); // workers finish their queue, then the scope joins them
        Ok((result, dirs))
    })?;
    if shared.abort.load(Ordering::Relaxed) {
        return Err(Error::DiskFull(format!(
            "restoring into {}",
            opts.dest.display()
        )));
    }
    // Directory metadata last: creating children changed their times.
    if !opts.dry_run {
        let root = open_root(&opts.dest)?;
        let mut names = Names::default();
        for (parts, item) in dirs.iter().rev() {
            let comps: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            match open_dir_path(root.as_fd(), &comps) {
                Ok(fd) => {
                    if let Err(m) = apply_fd_meta(fd.as_fd(), item, &mut names, opts.numeric_ids) {
                        shared.problem(false, format!("{}: {m}", item.path_lossy()));
                    }
                }
                Err(e) => shared.problem(false, format!("{}: {e}", item.path_lossy())),
            }
        }
    }
    result.bytes = shared.bytes.load(Ordering::Relaxed);
    for (error, msg) in shared.problems.into_inner().unwrap_or_default() {
        if error {
            result.errors += 1;
        } else {
            result.warnings += 1;
        }
        obs.warning(&msg);
    }
    Ok(result)
}

type DeferredDirs = Vec<(Vec<Vec<u8>>, Item)>;

fn open_root(dest: &std::path::Path) -> Result<OwnedFd> {
    rustix::fs::open(
        dest,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("opening {}", dest.display()), e.into()))
}

fn open_dir_path(root: BorrowedFd, parts: &[&[u8]]) -> std::io::Result<OwnedFd> {
    let mut cur = rustix::io::dup(root)?;
    for p in parts {
        cur = rustix::fs::openat(&cur, *p, dir_flags(), Mode::empty())?;
    }
    Ok(cur)
}

fn dir_flags() -> OFlags {
    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC
}

struct Extractor<'a, 's> {
    opts: &'a ExtractOptions,
    shared: &'s Shared<'s>,
    tx: crossbeam_channel::Sender<Vec<FileJob>>,
    /// Files opened and not yet handed to a worker, and their bytes.
    batch: Vec<FileJob>,
    batch_bytes: u64,
    root: Option<OwnedFd>,
    stack: Vec<(Vec<u8>, OwnedFd)>,
    names: Names,
    extracted: HashSet<Vec<u8>>,
    /// Original path → extracted path of hard-link sources, and the chunks
    /// of files skipped by a filter (their later links need the data).
    link_targets: HashMap<Vec<u8>, Vec<u8>>,
    skipped_files: HashMap<Vec<u8>, Item>,
    dirs: DeferredDirs,
    result: ExtractResult,
}

impl<'a, 's> Extractor<'a, 's> {
    fn new(
        opts: &'a ExtractOptions,
        shared: &'s Shared<'s>,
        tx: crossbeam_channel::Sender<Vec<FileJob>>,
    ) -> Result<Self> {
        let root = if opts.dry_run {
            None
        } else {
            Some(open_root(&opts.dest)?)
        };
        Ok(Self {
            opts,
            shared,
            tx,
            batch: Vec::new(),
            batch_bytes: 0,
            root,
            stack: Vec::new(),
            names: Names::default(),
            extracted: HashSet::new(),
            link_targets: HashMap::new(),
            skipped_files: HashMap::new(),
            dirs: Vec::new(),
            result: ExtractResult::default(),
        })
    }

    fn selected(&self, path: &[u8]) -> bool {
        self.opts.paths.is_empty()
            || self.opts.paths.iter().any(|p| {
                path == p.as_slice() || (path.starts_with(p) && path.get(p.len()) == Some(&b'/'))
            })
    }

    fn item(&mut self, mut item: Item, obs: &mut dyn Observer) -> Result<()> {
        let Some(parts) = safe_components(&item.path)
            .map(|p| p.into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>())
        else {
            self.warn(format!("{}", Error::UnsafePath(item.path_lossy())), obs);
            return Ok(());
        };
        let filtered = !self.selected(&item.path) || parts.len() <= self.opts.strip_components;
        if filtered {
            if item.kind == KIND_FILE && item.link.is_none() && self.needs_link_memory() {
                self.skipped_files.insert(item.path.to_vec(), item);
            }
            return Ok(());
        }
        let parts = parts[self.opts.strip_components..].to_vec();
        let target_path = parts.join(&b'/');
        obs.entry(item.type_char(), &String::from_utf8_lossy(&target_path));
        self.result.files += 1;
        obs.progress(&Progress {
            files: self.result.files,
            original: self.shared.bytes.load(Ordering::Relaxed),
            compressed_new: 0,
            path: item.path_lossy(),
            total: None,
        });
        if let Some(src) = item.link.clone() {
            if let Some(to) = self.link_targets.get(src.as_slice()).cloned() {
                return self.hardlink(&to, &parts, &item, obs);
            }
            // The first name was not extracted: this name gets the data.
            match self.skipped_files.remove(src.as_slice()) {
                Some(master) => {
                    item.chunks = master.chunks;
                    item.link = None;
                    self.link_targets.insert(src.to_vec(), target_path.clone());
                }
                None => {
                    self.warn(
                        format!(
                            "{}: hard link to `{}`, which is not in the archive",
                            item.path_lossy(),
                            String::from_utf8_lossy(&src)
                        ),
                        obs,
                    );
                    return Ok(());
                }
            }
        } else if item.kind == KIND_FILE {
            self.link_targets
                .insert(item.path.to_vec(), target_path.clone());
        }
        if self.opts.dry_run {
            if item.kind == KIND_FILE {
                self.send(None, item)?;
            }
            return Ok(());
        }
        match self.create(&parts, item, obs) {
            Ok(()) => {
                self.extracted.insert(target_path);
            }
            Err(e @ Error::DiskFull(_)) => return Err(e),
            Err(other) => {
                // A later hard link must not point at whatever is there now.
                self.link_targets.retain(|_, to| *to != target_path);
                self.warn(other.to_string(), obs);
            }
        }
        if self.shared.abort.load(Ordering::Relaxed) {
            return Err(Error::DiskFull("writing restored files".into()));
        }
        Ok(())
    }

    fn needs_link_memory(&self) -> bool {
        !self.opts.paths.is_empty() || self.opts.strip_components > 0
    }

    fn warn(&mut self, msg: String, obs: &mut dyn Observer) {
        self.result.warnings += 1;
        obs.warning(&msg);
    }

    fn send(&mut self, file: Option<File>, item: Item) -> Result<()> {
        let file = match file {
            Some(f) => f,
            None => File::open("/dev/null").ctx(|| "opening /dev/null".into())?,
        };
        self.batch_bytes += item.size;
        self.batch.push(FileJob { file, item });
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_FILES {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the files batched so far to a worker.
    fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        self.tx
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| Error::invalid("extraction workers stopped"))
    }

    /// The directory holding `parts`' last component, creating parents.
    fn parent(&mut self, parts: &[Vec<u8>]) -> Result<BorrowedFd<'_>> {
        let parents = &parts[..parts.len() - 1];
        let common = self
            .stack
            .iter()
            .zip(parents)
            .take_while(|((n, _), p)| n == *p)
            .count();
        self.stack.truncate(common);
        for p in &parents[common..] {
            let base = match self.stack.last() {
                Some((_, fd)) => fd.as_fd(),
                None => self.root.as_ref().ok_or(Error::Interrupted)?.as_fd(),
            };
            let fd = match rustix::fs::openat(base, p.as_slice(), dir_flags(), Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    rustix::fs::mkdirat(base, p.as_slice(), Mode::from_raw_mode(0o755))
                        .map_err(|e| io_err(parts, e))?;
                    rustix::fs::openat(base, p.as_slice(), dir_flags(), Mode::empty())
                        .map_err(|e| io_err(parts, e))?
                }
                // ELOOP/ENOTDIR: a symlink or file where a directory should be.
                Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                    return Err(Error::UnsafePath(format!(
                        "{} (a parent is a symlink or not a directory)",
                        String::from_utf8_lossy(&parts.join(&b'/'))
                    )));
                }
                Err(e) => return Err(io_err(parts, e)),
            };
            self.stack.push((p.clone(), fd));
        }
        Ok(match self.stack.last() {
            Some((_, fd)) => fd.as_fd(),
            None => self.root.as_ref().ok_or(Error::Interrupted)?.as_fd(),
        })
    }

    fn create(&mut self, parts: &[Vec<u8>], item: Item, obs: &mut dyn Observer) -> Result<()> {
        let numeric = self.opts.numeric_ids;
        let name = parts[parts.len() - 1].clone();
        let kind = item.kind;
        let parent = self.parent(parts)?;
        let parent = rustix::io::dup(parent).map_err(|e| io_err(parts, e))?;
        if kind == KIND_DIR {
            match rustix::fs::mkdirat(&parent, name.as_slice(), Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io_err(parts, e)),
            }
            // An existing symlink in the directory's place is replaced.
            if let Err(Errno::LOOP | Errno::NOTDIR) =
                rustix::fs::openat(&parent, name.as_slice(), dir_flags(), Mode::empty())
            {
                rustix::fs::unlinkat(&parent, name.as_slice(), AtFlags::empty())
                    .map_err(|e| io_err(parts, e))?;
                rustix::fs::mkdirat(&parent, name.as_slice(), Mode::from_raw_mode(0o700))
                    .map_err(|e| io_err(parts, e))?;
            }
            self.dirs.push((parts.to_vec(), item));
            return Ok(());
        }
        match kind {
            KIND_FILE => {
                let fd = replacing(&parent, &name, || {
                    rustix::fs::openat(
                        &parent,
                        name.as_slice(),
                        OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::WRONLY
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                })
                .map_err(|e| io_err(parts, e))?;
                self.send(Some(File::from(fd)), item)
            }
            KIND_SYMLINK => {
                let target = item.target.as_ref().map(|t| t.to_vec()).unwrap_or_default();
                replacing(&parent, &name, || {
                    rustix::fs::symlinkat(target.as_slice(), &parent, name.as_slice())
                })
                .map_err(|e| io_err(parts, e))?;
                let _ = apply_at_meta(&parent, &name, &item, &mut self.names, numeric, false);
                Ok(())
            }
            KIND_FIFO | KIND_CHARDEV | KIND_BLOCKDEV => {
                let ft = match kind {
                    KIND_FIFO => FileType::Fifo,
                    KIND_CHARDEV => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                let mode = Mode::from_raw_mode(item.mode & 0o777);
                match replacing(&parent, &name, || {
                    rustix::fs::mknodat(&parent, name.as_slice(), ft, mode, item.rdev.unwrap_or(0))
                }) {
                    Ok(()) => {
                        if let Err(m) =
                            apply_at_meta(&parent, &name, &item, &mut self.names, numeric, true)
                        {
                            self.warn(format!("{}: {m}", item.path_lossy()), obs);
                        }
                        Ok(())
                    }
                    Err(e) => Err(io_err(parts, e)),
                }
            }
            other => Err(Error::corrupt(format!(
                "{}: unknown item kind {other}",
                item.path_lossy()
            ))),
        }
    }

    fn hardlink(
        &mut self,
        to: &[u8],
        parts: &[Vec<u8>],
        item: &Item,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        if self.opts.dry_run {
            return Ok(());
        }
        if !self.extracted.contains(to) {
            self.warn(
                format!("{}: hard link source was not extracted", item.path_lossy()),
                obs,
            );
            return Ok(());
        }
        let src: Vec<&[u8]> = to.split(|&b| b == b'/').collect();
        let root = self.root.as_ref().ok_or(Error::Interrupted)?;
        let src_dir = open_dir_path(root.as_fd(), &src[..src.len() - 1])
            .map_err(|e| Error::io(item.path_lossy(), e))?;
        let parent = self.parent(parts)?;
        let parent = rustix::io::dup(parent).map_err(|e| io_err(parts, e))?;
        let name = &parts[parts.len() - 1];
        replacing(&parent, name, || {
            rustix::fs::linkat(
                &src_dir,
                src[src.len() - 1],
                &parent,
                name.as_slice(),
                AtFlags::empty(),
            )
        })
        .map_err(|e| io_err(parts, e))?;
        self.extracted.insert(parts.join(&b'/'));
        Ok(())
    }
}

fn io_err(parts: &[Vec<u8>], e: Errno) -> Error {
    Error::io(
        String::from_utf8_lossy(&parts.join(&b'/')).into_owned(),
        e.into(),
    )
}

/// Runs `make`, which creates `name` in `parent` and fails with EEXIST if
/// something is there already; then removes what is there (a file, a
/// symlink, an empty directory) and tries once more. Trying first saves a
/// failing `unlink` per entry in the usual restore into an empty directory.
fn replacing<T>(
    parent: &OwnedFd,
    name: &[u8],
    mut make: impl FnMut() -> std::result::Result<T, Errno>,
) -> std::result::Result<T, Errno> {
    match make() {
        Err(Errno::EXIST) => {
            remove_existing(parent, name)?;
            make()
        }
        other => other,
    }
}

fn remove_existing(parent: &OwnedFd, name: &[u8]) -> std::result::Result<(), Errno> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR),
        Err(e) => Err(e),
    }
}

fn owner(item: &Item, names: &mut Names, numeric: bool) -> (u32, u32) {
    if numeric {
        return (item.uid, item.gid);
    }
    let uid = item
        .user
        .as_deref()
        .and_then(|u| names.uid(u))
        .unwrap_or(item.uid);
    let gid = item
        .group
        .as_deref()
        .and_then(|g| names.gid(g))
        .unwrap_or(item.gid);
    (uid, gid)
}

fn timestamps(item: &Item) -> Timestamps {
    let ts = |ns: i64| rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: ts(item.atime),
        last_modification: ts(item.mtime),
    }
}

/// The mode to set: without setuid/setgid when the owner could not be set
/// (a non-root restore would otherwise make set-id files of the restorer).
fn safe_mode(item: &Item, owned: bool, problems: &mut Vec<String>) -> u32 {
    let mode = item.mode & 0o7777;
    if owned || mode & 0o6000 == 0 {
        return mode;
    }
    problems.push("setuid/setgid bits dropped: the owner could not be restored".into());
    mode & !0o6000
}

/// Owner, mode, xattrs and times through an open descriptor (files, dirs).
fn apply_fd_meta(
    fd: BorrowedFd,
    item: &Item,
    names: &mut Names,
    numeric: bool,
) -> std::result::Result<(), String> {
    let (uid, gid) = owner(item, names, numeric);
    let mut problems = Vec::new();
    // chown first: it clears setuid/setgid bits that chmod then sets.
    let owned = rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    if let Err(e) = owned
        && e != Errno::PERM
    {
        problems.push(format!("chown: {e}"));
    }
    if let Err(e) = rustix::fs::fchmod(
        fd,
        Mode::from_raw_mode(safe_mode(item, owned.is_ok(), &mut problems)),
    ) {
        problems.push(format!("chmod: {e}"));
    }
    for (k, v) in &item.xattrs {
        let name = std::ffi::OsStr::from_bytes(k);
        if let Err(e) =
            rustix::fs::fsetxattr(fd, name, v.as_slice(), rustix::fs::XattrFlags::empty())
        {
            problems.push(format!("xattr {}: {e}", String::from_utf8_lossy(k)));
        }
    }
    if let Err(e) = rustix::fs::futimens(fd, &timestamps(item)) {
        problems.push(format!("times: {e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join(", "))
    }
}

/// chmod of a FIFO or device node without following a symlink that may
/// have replaced it: pin the inode with O_PATH|O_NOFOLLOW, check its type,
/// then chmod through /proc/self/fd (which names exactly that inode).
fn chmod_node(parent: &OwnedFd, name: &[u8], mode: u32) -> std::io::Result<()> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    let ft = FileType::from_raw_mode(st.st_mode);
    if !matches!(
        ft,
        FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice
    ) {
        return Err(std::io::Error::other(
            "replaced by another kind of file meanwhile",
        ));
    }
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    rustix::fs::chmod(proc_path.as_str(), Mode::from_raw_mode(mode))?;
    Ok(())
}

/// Metadata of entries that cannot be opened (symlinks, devices, FIFOs).
fn apply_at_meta(
    parent: &OwnedFd,
    name: &[u8],
    item: &Item,
    names: &mut Names,
    numeric: bool,
    chmod: bool,
) -> std::result::Result<(), String> {
    let (uid, gid) = owner(item, names, numeric);
    let mut problems = Vec::new();
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    let owned = rustix::fs::chownat(
        parent,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        nofollow,
    );
    if let Err(e) = owned
        && e != Errno::PERM
    {
        problems.push(format!("chown: {e}"));
    }
    if chmod {
        let mode = safe_mode(item, owned.is_ok(), &mut problems);
        if let Err(e) = chmod_node(parent, name, mode) {
            problems.push(format!("chmod: {e}"));
        }
    }
    if let Err(e) = rustix::fs::utimensat(parent, name, &timestamps(item), nofollow) {
        problems.push(format!("times: {e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join(", "))
    }
}

/// What a writer thread keeps between files: the name lookups (each one
/// reads /etc/passwd or /etc/group), the aligned write buffer (room for
/// the largest chunk: chunks are decoded straight into it) and the buffer
/// that envelopes are read into.
struct Worker {
    names: Names,
    staging: Staging,
    envelope: Vec<u8>,
}

impl Worker {
    fn new(repo: &Repository) -> Self {
        let largest = repo.config().chunker.params.max as usize;
        Self {
            names: Names::default(),
            staging: Staging::with_capacity(largest + crate::direct_io::ALIGN),
            envelope: Vec::new(),
        }
    }
}

fn write_file(shared: &Shared, job: FileJob, worker: &mut Worker) {
    let FileJob { mut file, item } = job;
    if shared.abort.load(Ordering::Relaxed) {
        return;
    }
    match write_content(shared, &mut file, &item.chunks, item.size, worker) {
        Ok(()) => {}
        Err(e @ (Error::DiskFull(_) | Error::Io { .. })) => {
            if matches!(e, Error::DiskFull(_)) {
                shared.abort.store(true, Ordering::Relaxed);
            }
            shared.problem(true, format!("{}: {e}", item.path_lossy()));
            return;
        }
        // Unreadable chunks became holes: the file is otherwise complete,
        // so it still gets its metadata, and the error is reported.
        Err(e) => shared.problem(true, format!("{}: {e}", item.path_lossy())),
    }
    if shared.dry_run {
        return;
    }
    if let Err(m) = apply_fd_meta(file.as_fd(), &item, &mut worker.names, shared.numeric_ids) {
        shared.problem(false, format!("{}: {m}", item.path_lossy()));
    }
}

/// Writes a file's chunks. A chunk that cannot be read (missing after a
/// repair, damaged) becomes a hole of its size and the file is reported:
/// the rest of the file is still restored, and nothing wrong is written.
fn write_content(
    shared: &Shared,
    file: &mut File,
    chunks: &[ChunkRef],
    size: u64,
    worker: &mut Worker,
) -> Result<()> {
    if !shared.sparse && !shared.dry_run {
        return write_direct(shared, file, chunks, size, worker);
    }
    // Here: --sparse, or --dry-run (which reads every chunk, writes nothing).
    let mut written = 0u64;
    let mut lost = Vec::new();
    // With --sparse, a chunk seen to be all zeros (the holes of a sparse
    // file are stored as repeats of one) is skipped without reading it again.
    let mut zeros: HashSet<crate::id::BlobId> = HashSet::new();
    for c in chunks {
        if shared.sparse && zeros.contains(&c.0) {
            if !shared.dry_run {
                file.seek(SeekFrom::Current(c.1 as i64))
                    .map_err(|e| Error::io("writing", e))?;
            }
            written += c.1 as u64;
            shared.bytes.fetch_add(c.1 as u64, Ordering::Relaxed);
            continue;
        }
        let data = match shared.repo.read_blob(ObjectType::Data, &c.0) {
            Ok(d) if d.len() == c.1 as usize => d,
            Ok(d) => {
                lost.push(format!(
                    "chunk {} has {} bytes, the item says {}",
                    c.0.short(),
                    d.len(),
                    c.1
                ));
                vec![]
            }
            Err(e) => {
                lost.push(e.to_string());
                vec![]
            }
        };
        if shared.sparse && !data.is_empty() && data.iter().all(|&b| b == 0) {
            zeros.insert(c.0);
        }
        if !shared.dry_run {
            if data.is_empty() && c.1 > 0 {
                file.seek(SeekFrom::Current(c.1 as i64))
                    .map_err(|e| Error::io("writing", e))?;
            } else {
                write_sparse(file, &data).map_err(|e| Error::io("writing", e))?;
            }
        }
        written += c.1 as u64;
        shared.bytes.fetch_add(c.1 as u64, Ordering::Relaxed);
    }
    if !shared.dry_run && (shared.sparse || !lost.is_empty()) {
        file.set_len(written)
            .map_err(|e| Error::io("truncating", e))?;
    }
    restore_outcome(&lost, chunks.len(), written, size)
}

/// A file's restore is complete when no chunk was lost and its length is
/// the item's; otherwise the error says which.
fn restore_outcome(lost: &[String], chunks: usize, written: u64, size: u64) -> Result<()> {
    if let Some(first) = lost.first() {
        return Err(Error::corrupt(format!(
            "{} of {chunks} chunks could not be read, restored as holes: {first}",
            lost.len(),
        )));
    }
    if written != size {
        return Err(Error::corrupt(format!(
            "restored {written} bytes, the item says {size}"
        )));
    }
    Ok(())
}

/// `write_content` without `--sparse`: files of `MIN_DIRECT` bytes or more
/// bypass the page cache (`crate::direct_io`: on this project's VMs that
/// cache copy took more system time than decoding took user time), smaller
/// ones are written plainly. Unreadable chunks become holes and are
/// reported, as with `--sparse`.
fn write_direct(
    shared: &Shared,
    file: &mut File,
    chunks: &[ChunkRef],
    size: u64,
    worker: &mut Worker,
) -> Result<()> {
    let io = |e| Error::io("writing", e);
    let mut w = DirectWriter::new(file, &mut worker.staging, size >= MIN_DIRECT);
    let mut written = 0u64;
    let mut lost = Vec::new();
    for c in chunks {
        match write_chunk(shared, &mut w, &mut worker.envelope, c) {
            Ok(()) => {}
            Err(ChunkLost::Write(e)) => return Err(io(e)),
            Err(ChunkLost::Read(problem)) => {
                lost.push(problem);
                w.skip(c.1 as u64).map_err(io)?;
            }
        }
        written += c.1 as u64;
        shared.bytes.fetch_add(c.1 as u64, Ordering::Relaxed);
    }
    w.finish().map_err(io)?;
    if !lost.is_empty() {
        file.set_len(written)
            .map_err(|e| Error::io("truncating", e))?;
    }
    restore_outcome(&lost, chunks.len(), written, size)
}

enum ChunkLost {
    /// The chunk could not be read (it becomes a hole): why.
    Read(String),
    /// Writing the restored file failed.
    Write(std::io::Error),
}

/// Reads chunk `c` and writes it through `w`, decoded straight into the
/// write buffer when it fits there. A chunk of another length than the
/// item says is not written.
fn write_chunk(
    shared: &Shared,
    w: &mut DirectWriter,
    envelope: &mut Vec<u8>,
    c: &ChunkRef,
) -> std::result::Result<(), ChunkLost> {
    let size = c.1 as usize;
    let decoded = shared
        .repo
        .read_blob_into(ObjectType::Data, &c.0, envelope, w.spare())
        .map_err(|e| ChunkLost::Read(e.to_string()))?;
    let len = match &decoded {
        Decoded::Into(n) => *n,
        Decoded::Owned(data) => data.len(),
    };
    if len != size {
        return Err(ChunkLost::Read(format!(
            "chunk {} has {len} bytes, the item says {size}",
            c.0.short()
        )));
    }
    match decoded {
        Decoded::Into(n) => w.commit(n),
        Decoded::Owned(data) => w.write_all(&data),
    }
    .map_err(ChunkLost::Write)
}

/// Writes a chunk of a `--sparse` restore: all-zero blocks become holes.
fn write_sparse(file: &mut File, data: &[u8]) -> std::io::Result<()> {
    for block in data.chunks(SPARSE_BLOCK) {
        if block.iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(block.len() as i64))?;
        } else {
            file.write_all(block)?;
        }
    }
    Ok(())
}
