//! The FUSE side: answers the kernel from the tree and the chunk cache.
//! Read-only: every call that would change something is refused with
//! EROFS by the kernel (the mount is `ro`) or here.

use super::build::{load_archive, load_versions};
use super::cache::ChunkCache;
use super::tree::{Body, FileData, Ino, Meta, ROOT, Source, Tree, Xattrs};
use crate::archive::item::{KIND_BLOCKDEV, KIND_CHARDEV, KIND_FIFO};
use crate::error::Result;
use crate::repo::Repository;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Archives never change under a mount: the kernel may keep what it
/// learnt for as long as it likes.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// Chunks read ahead of a sequential reader.
const READ_AHEAD_CHUNKS: usize = 4;

/// Takes one directory entry (inode, next offset, attributes, name);
/// returns true when the reply is full.
type AddEntry<'a> = dyn FnMut(Ino, u64, &FileAttr, &[u8]) -> bool + 'a;

/// Who the files belong to, when `-o uid=,gid=` override what is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// An open file: what it reads, and where a sequential reader will read
/// next (to tell sequential reads, which get read-ahead, from random ones).
struct Handle {
    data: Arc<FileData>,
    next: AtomicU64,
}

pub struct StrataFs {
    repo: Arc<Repository>,
    tree: RwLock<Tree>,
    /// One lazy directory is read at a time (the others wait, then find it
    /// read).
    loading: Mutex<()>,
    cache: Arc<ChunkCache>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    owner: Owner,
    /// Told of errors the kernel can only see as EIO.
    log: Box<dyn Fn(&str) + Send + Sync>,
    /// Set once the whole tree is read: whether no entry has an extended
    /// attribute (see `xattrs_absent`).
    no_xattrs: OnceLock<bool>,
}

impl StrataFs {
    pub fn new(
        repo: Arc<Repository>,
        tree: Tree,
        cache: Arc<ChunkCache>,
        owner: Owner,
        log: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Self {
        Self {
            repo,
            tree: RwLock::new(tree),
            loading: Mutex::new(()),
            cache,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            owner,
            log,
            no_xattrs: OnceLock::new(),
        }
    }

    /// Reads `ino`'s lazy source if it has one. Errors are logged and
    /// become EIO (the directory stays lazy, so a later look tries again).
    fn ensure_loaded(&self, ino: Ino) -> std::result::Result<(), Errno> {
        let pending = |t: &RwLock<Tree>| t.read().ok().and_then(|t| t.pending(ino));
        if pending(&self.tree).is_none() {
            return Ok(());
        }
        let _one = self.loading.lock().map_err(|_| Errno::EIO)?;
        let Some(source) = pending(&self.tree) else {
            return Ok(());
        };
        let time = self
            .tree
            .read()
            .ok()
            .and_then(|t| t.get(ino).map(|n| n.meta.mtime))
            .unwrap_or(0);
        let sub = match &source {
            Source::Archive(r) => load_archive(&self.repo, r),
            Source::Versions(list) => load_versions(&self.repo, list, time),
        };
        match sub {
            Ok(sub) => {
                let mut t = self.tree.write().map_err(|_| Errno::EIO)?;
                t.graft(ino, sub);
                Ok(())
            }
            Err(e) => {
                let what = match &source {
                    Source::Archive(r) => format!("archive {}", r.name),
                    Source::Versions(_) => "the archives".into(),
                };
                (self.log)(&format!("reading {what}: {e}"));
                Err(Errno::EIO)
            }
        }
    }

    fn attr(&self, ino: Ino, meta: &Meta, body: &Body) -> FileAttr {
        let kind = match body {
            Body::Dir(_) | Body::Lazy(_) => FileType::Directory,
            Body::File(_) => FileType::RegularFile,
            Body::Symlink(_) => FileType::Symlink,
            Body::Special => match meta.kind {
                KIND_FIFO => FileType::NamedPipe,
                KIND_CHARDEV => FileType::CharDevice,
                KIND_BLOCKDEV => FileType::BlockDevice,
                _ => FileType::RegularFile,
            },
        };
        let size = match body {
            Body::File(d) => d.len(),
            Body::Symlink(t) => t.len() as u64,
            _ => 0,
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: system_time(meta.atime),
            mtime: system_time(meta.mtime),
            ctime: system_time(meta.ctime),
            crtime: system_time(meta.mtime),
            kind,
            perm: (meta.mode & 0o7777) as u16,
            nlink: meta.nlink.max(1),
            uid: self.owner.uid.unwrap_or(meta.uid),
            gid: self.owner.gid.unwrap_or(meta.gid),
            rdev: kernel_rdev(meta.rdev),
            blksize: 4096,
            flags: 0,
        }
    }

    /// The attributes of `ino`, and how long the kernel may keep them: a
    /// directory not read yet learns its link count when it is read.
    fn attr_of(&self, ino: Ino) -> std::result::Result<(FileAttr, Duration), Errno> {
        let t = self.tree.read().map_err(|_| Errno::EIO)?;
        let n = t.get(ino).ok_or(Errno::ENOENT)?;
        let ttl = match n.body {
            Body::Lazy(_) => Duration::ZERO,
            _ => TTL,
        };
        Ok((self.attr(ino, &n.meta, &n.body), ttl))
    }

    /// True when the whole tree is read and no entry has an extended
    /// attribute. Then getxattr answers ENOSYS, which tells the kernel to
    /// stop asking for the rest of the mount: `ls -l` asks two per file
    /// (ACLs, SELinux label), each a trip to this process.
    fn xattrs_absent(&self) -> bool {
        if let Some(v) = self.no_xattrs.get() {
            return *v;
        }
        // Never read anything for this: a file manager's look at the
        // mount point must not load every archive.
        let Ok(t) = self.tree.read() else {
            return false;
        };
        if !t.complete() {
            return false; // archives not read yet
        }
        let v = !t.any_xattrs();
        let _ = self.no_xattrs.set(v);
        v
    }

    fn xattrs(&self, ino: Ino) -> std::result::Result<Xattrs, Errno> {
        let t = self.tree.read().map_err(|_| Errno::EIO)?;
        Ok(t.get(ino).ok_or(Errno::ENOENT)?.meta.xattrs.clone())
    }

    /// `size` bytes of `h`'s file from `offset`, chunk by chunk.
    fn read_at(&self, h: &Handle, offset: u64, size: u32) -> Result<Vec<u8>> {
        let data = &h.data;
        let stop = offset.saturating_add(u64::from(size)).min(data.len());
        let mut out = Vec::with_capacity(stop.saturating_sub(offset) as usize);
        let span = data.span(offset, u64::from(size));
        let sequential = h.next.swap(stop, Ordering::Relaxed) == offset;
        if sequential && let Some(&(last, _)) = span.last() {
            let ahead = data.chunks.iter().skip(last + 1).take(READ_AHEAD_CHUNKS);
            self.cache.read_ahead(ahead.map(|c| c.0));
        }
        for (i, start) in span {
            let want = data.chunks[i];
            let chunk = self.cache.get(&want.0)?;
            // Extraction checks this too: a chunk of another length would
            // shift every later byte of the reply.
            if chunk.len() != want.1 as usize {
                return Err(crate::error::Error::corrupt(format!(
                    "chunk {} has {} bytes where the archive says {}",
                    want.0.short(),
                    chunk.len(),
                    want.1
                )));
            }
            let from = offset.saturating_sub(start) as usize;
            let to = ((stop - start) as usize).min(chunk.len());
            if from < to {
                out.extend_from_slice(&chunk[from..to]);
            }
        }
        Ok(out)
    }
}

fn system_time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

/// glibc's `dev_t` (as `stat` gives it, and as stored) to the kernel's
/// 32-bit encoding that FUSE carries (`new_encode_dev`).
fn kernel_rdev(dev: u64) -> u32 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)) as u32
}

/// The xattr protocol: a size query, or the value if it fits.
fn reply_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Bigger reads mean fewer trips through the kernel; the kernel
        // caps the value at what it supports.
        if let Err(max) = config.set_max_readahead(1024 * 1024) {
            let _ = config.set_max_readahead(max);
        }
        // Directory listings carry attributes (see `readdirplus`); an old
        // kernel without it asks with lookups instead.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if let Err(e) = self.ensure_loaded(parent.0) {
            return reply.error(e);
        }
        let found = match self.tree.read() {
            Ok(t) => t.lookup(parent.0, name.as_bytes()),
            Err(_) => return reply.error(Errno::EIO),
        };
        match found.map(|ino| self.attr_of(ino)) {
            Some(Ok((attr, ttl))) => reply.entry(&ttl, &attr, Generation(0)),
            Some(Err(e)) => reply.error(e),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino.0) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let Ok(t) = self.tree.read() else {
            return reply.error(Errno::EIO);
        };
        match t.get(ino.0).map(|n| &n.body) {
            Some(Body::Symlink(target)) => reply.data(target),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let data = match self.tree.read() {
            Ok(t) => match t.get(ino.0).map(|n| &n.body) {
                Some(Body::File(d)) => d.clone(),
                Some(_) => return reply.error(Errno::EINVAL),
                None => return reply.error(Errno::ENOENT),
            },
            Err(_) => return reply.error(Errno::EIO),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let handle = Arc::new(Handle {
            data,
            next: AtomicU64::new(0),
        });
        match self.handles.lock() {
            Ok(mut h) => {
                h.insert(fh, handle);
            }
            Err(_) => return reply.error(Errno::EIO),
        }
        // Contents never change: the page cache may keep them across opens.
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let handle = self.handles.lock().ok().and_then(|h| h.get(&fh.0).cloned());
        let Some(handle) = handle else {
            return reply.error(Errno::EBADF);
        };
        match self.read_at(&handle, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                let path = self.path_of(ino.0);
                (self.log)(&format!("reading {path}: {e}"));
                reply.error(Errno::EIO)
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        if let Ok(mut h) = self.handles.lock() {
            h.remove(&fh.0);
        }
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.list(ino.0, offset, &mut |child, next, attr, name| {
            reply.add(INodeNo(child), next, attr.kind, OsStr::from_bytes(name))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// readdir with each entry's attributes, so `ls -l` and `find -size`
    /// cost no lookup per entry.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.list(ino.0, offset, &mut |child, next, attr, name| {
            reply.add(
                INodeNo(child),
                next,
                OsStr::from_bytes(name),
                &TTL,
                attr,
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.tree.read().map(|t| t.len() as u64).unwrap_or(0);
        reply.statfs(0, 0, 0, files, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if self.xattrs_absent() {
            return reply.error(Errno::ENOSYS);
        }
        match self.xattrs(ino.0) {
            Ok(x) => match x.iter().find(|(k, _)| k.as_slice() == name.as_bytes()) {
                Some((_, v)) => reply_xattr(reply, v, size),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if self.xattrs_absent() {
            return reply.error(Errno::ENOSYS);
        }
        match self.xattrs(ino.0) {
            Ok(x) => {
                let mut names = Vec::new();
                for (k, _) in &x {
                    names.extend_from_slice(k);
                    names.push(0);
                }
                reply_xattr(reply, &names, size)
            }
            Err(e) => reply.error(e),
        }
    }

    fn access(
        &self,
        _req: &Request,
        ino: INodeNo,
        mask: fuser::AccessFlags,
        reply: fuser::ReplyEmpty,
    ) {
        // Permissions are checked by the kernel (default_permissions); here
        // only: nothing is writable.
        if mask.contains(fuser::AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        match self.attr_of(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl StrataFs {
    /// Calls `add` for the entries of directory `ino` after `offset`
    /// (".", "..", then the children in name order; an entry's offset is
    /// its position + 1) until `add` says the reply is full.
    fn list(&self, ino: Ino, offset: u64, add: &mut AddEntry) -> std::result::Result<(), Errno> {
        self.ensure_loaded(ino)?;
        let t = self.tree.read().map_err(|_| Errno::EIO)?;
        let node = t.get(ino).ok_or(Errno::ENOENT)?;
        let Body::Dir(children) = &node.body else {
            return Err(Errno::ENOTDIR);
        };
        let dots = [(ino, &b"."[..]), (node.parent, &b".."[..])];
        let first_child = usize::try_from(offset.saturating_sub(2)).unwrap_or(usize::MAX);
        let entries = dots.into_iter().skip(offset.min(2) as usize).chain(
            children
                .from(first_child)
                .map(|(name, child)| (child, name)),
        );
        let mut next = offset;
        for (child, name) in entries {
            next += 1;
            let Some(n) = t.get(child) else { continue };
            if add(child, next, &self.attr(child, &n.meta, &n.body), name) {
                break;
            }
        }
        Ok(())
    }

    /// The path of `ino` inside the mount, for messages.
    fn path_of(&self, ino: Ino) -> String {
        let Ok(t) = self.tree.read() else {
            return format!("inode {ino}");
        };
        let mut parts: Vec<String> = Vec::new();
        let mut at = ino;
        while at != ROOT && parts.len() < 4096 {
            let Some(n) = t.get(at) else { break };
            let parent = n.parent;
            let name = match &t.get(parent).map(|p| &p.body) {
                Some(Body::Dir(c)) => c
                    .from(0)
                    .find(|(_, v)| *v == at)
                    .map(|(k, _)| String::from_utf8_lossy(k).into_owned()),
                _ => None,
            };
            parts.push(name.unwrap_or_else(|| "?".into()));
            at = parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_reach_the_kernel_as_stat_gave_them() {
        let glibc = |major: u64, minor: u64| {
            ((major & 0xfff) << 8)
                | ((major & !0xfff) << 32)
                | (minor & 0xff)
                | ((minor & !0xff) << 12)
        };
        // /dev/null, /dev/sda1, and numbers past the old 8-bit limits.
        assert_eq!(kernel_rdev(glibc(1, 3)), (1 << 8) | 3);
        assert_eq!(kernel_rdev(glibc(8, 1)), (8 << 8) | 1);
        assert_eq!(
            kernel_rdev(glibc(259, 300)),
            (300 & 0xff) | (259 << 8) | ((300 & !0xff) << 12)
        );
    }

    #[test]
    fn times_before_1970_are_kept() {
        assert_eq!(
            system_time(-1_500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        assert_eq!(system_time(2_000_000_001), UNIX_EPOCH + Duration::new(2, 1));
    }
}
