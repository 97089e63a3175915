//! A repository in a local directory (also a mounted USB drive or NFS share).

use super::fault::{Step, step};
use super::{Backend, FileInfo, FileKind, Space, valid_name};
use crate::error::{Error, IoContext, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct LocalBackend {
    root: PathBuf,
    display: String,
    /// Recently read packs, kept open: a restore reads blob after blob from
    /// the same few packs, and opening the file for each one was a third of
    /// its system calls. Most recent first.
    open_packs: Mutex<Vec<(String, Arc<File>)>>,
}

/// Packs kept open by one backend.
const OPEN_PACKS: usize = 16;

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let display = root.display().to_string();
        Self {
            root,
            display,
            open_packs: Mutex::new(Vec::new()),
        }
    }

    /// An open pack (or other file) for ranged reads. Packs are never
    /// changed in place; one that is rewritten (repaired) or deleted through
    /// this backend is dropped from the cache first (`forget`).
    fn open_for_read(&self, kind: FileKind, name: &str, path: &Path) -> Result<Arc<File>> {
        let open = || {
            File::open(path)
                .map(Arc::new)
                .ctx(|| format!("opening {}", path.display()))
        };
        if kind != FileKind::Pack {
            return open();
        }
        let Ok(mut cache) = self.open_packs.lock() else {
            return open();
        };
        if let Some(i) = cache.iter().position(|(n, _)| n == name) {
            let entry = cache.remove(i);
            let file = entry.1.clone();
            cache.insert(0, entry);
            return Ok(file);
        }
        let file = open()?;
        cache.insert(0, (name.to_string(), file.clone()));
        cache.truncate(OPEN_PACKS);
        Ok(file)
    }

    fn forget(&self, kind: FileKind, name: &str) {
        if kind == FileKind::Pack
            && let Ok(mut cache) = self.open_packs.lock()
        {
            cache.retain(|(n, _)| n != name);
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Size of one file (for quota accounting when serving).
    pub fn file_size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let path = self.path(kind, name)?;
        Ok(fs::metadata(&path)
            .ctx(|| format!("stat {}", path.display()))?
            .len())
    }

    fn path(&self, kind: FileKind, name: &str) -> Result<PathBuf> {
        if !valid_name(name) {
            return Err(Error::invalid(format!("bad repository file name `{name}`")));
        }
        Ok(match kind {
            FileKind::Config => self.root.join(name),
            FileKind::Pack => self
                .root
                .join("data")
                .join(&name[..2.min(name.len())])
                .join(name),
            _ => self.root.join(kind.dir()).join(name),
        })
    }

    fn list_dir(&self, dir: &Path, out: &mut Vec<FileInfo>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_name(&name) {
                continue; // temporary files start with '.'
            }
            let meta = entry
                .metadata()
                .ctx(|| format!("stat {}", entry.path().display()))?;
            if meta.is_file() {
                out.push(FileInfo {
                    name,
                    size: meta.len(),
                    modified: modified(&meta),
                });
            }
        }
        Ok(())
    }
}

fn modified(m: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    m.mtime()
}

/// fsync a directory so a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// Writes `data` to `path` crash-safely: temporary file, fsync, rename
/// without replacing, fsync of the directory.
pub fn write_durable(path: &Path, data: &[u8]) -> Result<()> {
    write_file(path, data, false)
}

/// `write_durable`; `same_ok` accepts an existing file with identical bytes
/// (a retried upload of a content-addressed file).
fn write_file(path: &Path, data: &[u8], same_ok: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut rnd = [0u8; 8];
    crate::crypto::random_bytes(&mut rnd)?;
    let fname = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".tmp-{}-{}", hex::encode(rnd), fname));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .ctx(|| format!("creating {}", tmp.display()))?;
        step(Step::Write)
            .and_then(|()| write_contents(&mut f, data))
            .ctx(|| format!("writing {}", path.display()))?;
        step(Step::Fsync)
            .and_then(|()| f.sync_all())
            .ctx(|| format!("syncing {}", path.display()))?;
        step(Step::Rename).ctx(|| format!("renaming to {}", path.display()))?;
        rename_noreplace(&tmp, path, same_ok)?;
        step(Step::DirSync).ctx(|| format!("syncing directory {}", dir.display()))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

thread_local! {
    /// The aligned buffer of this thread's direct reads and writes.
    static STAGING: std::cell::RefCell<crate::direct_io::Staging> = Default::default();
}

/// Packs and other large files bypass the page cache (`crate::direct_io`):
/// they are read again only by `check`, restores and compaction, and the
/// cache copy was the largest cost of `create` after compression.
fn write_contents(f: &mut File, data: &[u8]) -> std::io::Result<()> {
    use crate::direct_io::{DirectWriter, MIN_DIRECT};
    if (data.len() as u64) < MIN_DIRECT || !crate::direct_io::enabled() {
        return f.write_all(data);
    }
    STAGING.with(|staging| {
        let mut staging = staging.borrow_mut();
        let mut w = DirectWriter::new(f, &mut staging, true);
        w.write_all(data)?;
        w.finish()
    })
}

/// Whole large files (packs read by `check --verify-data`, `compact`,
/// replication) are read past the page cache too: read once, and a check
/// of a whole repository would otherwise evict everything else cached.
fn read_contents(f: &File, size: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    use crate::direct_io::MIN_DIRECT;
    if size < MIN_DIRECT || !crate::direct_io::enabled() {
        return (&mut &*f).read_to_end(out).map(|_| ());
    }
    STAGING.with(|staging| crate::direct_io::read_to_end(f, &mut staging.borrow_mut(), true, out))
}

fn rename_noreplace(from: &Path, to: &Path, same_ok: bool) -> Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => identical_or_exists(from, to, same_ok),
        // File systems without RENAME_NOREPLACE (some FUSE/vfat): check, then rename.
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            if to.exists() {
                return identical_or_exists(from, to, same_ok);
            }
            fs::rename(from, to).ctx(|| format!("renaming to {}", to.display()))
        }
        Err(e) => Err(Error::io(format!("renaming to {}", to.display()), e.into())),
    }
}

/// A content-addressed file rewritten with the same bytes is fine (a retried
/// upload). One whose bytes no longer hash to its name (cut short by a power
/// loss, bit rot) is replaced when the new bytes do: that repairs it and
/// loses nothing. Anything else would be an overwrite, which the format
/// forbids.
fn identical_or_exists(from: &Path, to: &Path, same_ok: bool) -> Result<()> {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (same, repair) = match (same_ok, fs::read(from), fs::read(to)) {
        (true, Ok(new), Ok(old)) => {
            let hashes = |d: &[u8]| blake3::hash(d).to_hex().as_str() == name;
            (new == old, !hashes(&old) && hashes(&new))
        }
        _ => (false, false),
    };
    if repair {
        return fs::rename(from, to).ctx(|| format!("replacing the damaged {}", to.display()));
    }
    let _ = fs::remove_file(from);
    if same {
        Ok(())
    } else {
        Err(Error::io(
            format!("writing {}", to.display()),
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists"),
        ))
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> &str {
        &self.display
    }

    fn identity(&self) -> String {
        let abs = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("file://{}", abs.display())
    }

    fn create(&self) -> Result<()> {
        if let Ok(mut entries) = fs::read_dir(&self.root)
            && entries.next().is_some()
        {
            return Err(Error::RepositoryExists(self.display.clone()));
        }
        fs::create_dir_all(&self.root).ctx(|| format!("creating {}", self.display))?;
        for kind in [
            FileKind::Key,
            FileKind::Index,
            FileKind::Manifest,
            FileKind::Lock,
        ] {
            fs::create_dir(self.root.join(kind.dir()))
                .ctx(|| format!("creating {}", self.display))?;
        }
        let data = self.root.join("data");
        fs::create_dir(&data).ctx(|| format!("creating {}", data.display()))?;
        for i in 0..=255u8 {
            fs::create_dir(data.join(format!("{i:02x}")))
                .ctx(|| format!("creating {}", data.display()))?;
            sync_dir(&data.join(format!("{i:02x}")))?;
        }
        sync_dir(&data)?;
        sync_dir(&self.root)
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        match kind {
            FileKind::Config => {
                if let Ok(m) = fs::metadata(self.root.join("config")) {
                    out.push(FileInfo {
                        name: "config".into(),
                        size: m.len(),
                        modified: modified(&m),
                    });
                }
            }
            FileKind::Pack => {
                let data = self.root.join("data");
                for i in 0..=255u8 {
                    self.list_dir(&data.join(format!("{i:02x}")), &mut out)?;
                }
            }
            _ => self.list_dir(&self.root.join(kind.dir()), &mut out)?,
        }
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(kind, name, &mut buf)?;
        Ok(buf)
    }

    fn read_into(&self, kind: FileKind, name: &str, out: &mut Vec<u8>) -> Result<()> {
        let path = self.path(kind, name)?;
        let f = File::open(&path).ctx(|| format!("opening {}", path.display()))?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        out.clear();
        out.reserve(size as usize);
        read_contents(&f, size, out).ctx(|| format!("reading {}", path.display()))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_range_into(kind, name, offset, len, &mut buf)?;
        Ok(buf)
    }

    fn read_range_into(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        len: u32,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let path = self.path(kind, name)?;
        let f = self.open_for_read(kind, name, &path)?;
        if len > super::MAX_READ_RANGE {
            return Err(Error::corrupt(format!(
                "a read of {len} bytes from {} was requested",
                path.display()
            )));
        }
        // Grown only: zeroing the buffer for every blob cost as much as a
        // copy of it.
        if out.len() < len as usize {
            out.resize(len as usize, 0);
        }
        f.read_exact_at(&mut out[..len as usize], offset)
            .ctx(|| format!("reading {} bytes at {offset} of {}", len, path.display()))
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        let content_addressed = matches!(kind, FileKind::Pack | FileKind::Index);
        self.forget(kind, name);
        write_file(&self.path(kind, name)?, data, content_addressed)
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let path = self.path(kind, name)?;
        self.forget(kind, name);
        match step(Step::Delete).and_then(|()| fs::remove_file(&path)) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("deleting {}", path.display()), e)),
        }
    }

    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        Ok(self.path(kind, name)?.exists())
    }

    fn remove_stale_temporaries(&self, older_than_secs: u64) -> Result<u64> {
        let now = chrono::Utc::now().timestamp();
        let mut dirs = vec![self.root.clone()];
        for kind in [
            FileKind::Key,
            FileKind::Index,
            FileKind::Manifest,
            FileKind::Lock,
        ] {
            dirs.push(self.root.join(kind.dir()));
        }
        for i in 0..=255u8 {
            dirs.push(self.root.join("data").join(format!("{i:02x}")));
        }
        let mut removed = 0;
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let stale = e.file_name().to_string_lossy().starts_with(".tmp-")
                    && e.metadata().is_ok_and(|m| {
                        m.is_file() && now.saturating_sub(modified(&m)) >= older_than_secs as i64
                    });
                if stale && fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn space(&self) -> Result<Space> {
        let st = rustix::fs::statvfs(&self.root)
            .map_err(|e| Error::io(format!("statvfs {}", self.display), e.into()))?;
        Ok(Space {
            total: st.f_blocks * st.f_frsize,
            free: st.f_bavail * st.f_frsize,
        })
    }
}
