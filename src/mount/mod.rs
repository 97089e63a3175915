//! `strata mount`: a read-only FUSE view of a repository (one directory
//! per archive), of one archive, or of every version of every file
//! (`--versions`). Works on any repository the library opens: local,
//! `ssh://`, or a replica inside an off-site tier.
//!
//! The tree is in `tree` (no FUSE types, unit-tested), the chunk cache
//! and read-ahead in `cache`, the kernel's calls in `fs`. See
//! docs/mount.md for the user's side.

pub mod build;
pub mod cache;
pub mod fs;
pub mod tree;

use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::manifest::ArchiveRef;
use cache::{ChunkCache, ChunkSource};
use fs::{Owner, StrataFs};
use std::path::Path;
use std::sync::Arc;
use tree::{Source, Tree};

/// Who besides the mounting user may look inside.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Only the user who mounted (FUSE's default).
    #[default]
    Owner,
    /// That user and root (`-o allow_root`).
    Root,
    /// Everyone, within the stored permissions (`-o allow_other`).
    Everyone,
}

/// What to show and how.
pub struct MountOptions {
    /// One archive's tree at the top, or (None) one directory per archive.
    pub archive: Option<String>,
    /// The archives a repository mount shows, in order (after filters).
    pub archives: Vec<ArchiveRef>,
    /// Every file path of `archives` as a directory of its versions.
    pub versions: bool,
    pub access: Access,
    pub owner: Owner,
    /// Bytes of decrypted chunks kept in memory.
    pub cache_bytes: usize,
    /// Threads answering the kernel, and as many reading ahead.
    pub threads: usize,
    /// Told of errors the kernel can only pass on as EIO.
    pub log: Box<dyn Fn(&str) + Send + Sync>,
}

/// Checks what `mount` needs before anything is opened: that FUSE exists
/// and the mount point is an empty-or-not directory we may use.
pub fn preflight(mountpoint: &Path) -> Result<()> {
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::Mount(
            "FUSE is not available here (/dev/fuse is missing): load the module with `modprobe fuse`, or in a container pass --device /dev/fuse; `strata extract` works without it".into(),
        ));
    }
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Mount(format!(
            "mount point {} is not a directory",
            mountpoint.display()
        ))),
        Err(e) => Err(Error::Io {
            context: format!(
                "mount point {} (create it with mkdir)",
                mountpoint.display()
            ),
            source: e,
        }),
    }
}

/// Builds the file system over `repo` (nothing is read but the archive
/// object of an archive mount, so a wrong name fails here).
pub fn file_system(repo: Repository, opts: MountOptions) -> Result<StrataFs> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let tree = match (&opts.archive, opts.versions) {
        (Some(name), false) => {
            let r = repo
                .manifest()
                .find(name)
                .cloned()
                .ok_or_else(|| Error::ArchiveNotFound(name.clone()))?;
            // Load the archive object now: a damaged one fails the mount,
            // not the first `ls`.
            let a = Archive::load(&repo, &r)?;
            Tree::of_source(
                Source::Archive(r),
                tree::rfc3339_ns(&a.time_start).unwrap_or(now),
            )
        }
        (Some(name), true) => {
            let r = repo
                .manifest()
                .find(name)
                .cloned()
                .ok_or_else(|| Error::ArchiveNotFound(name.clone()))?;
            Tree::of_source(Source::Versions(vec![r]), now)
        }
        (None, true) => Tree::of_source(Source::Versions(opts.archives.clone()), now),
        (None, false) => Tree::of_repository(&opts.archives, now),
    };
    let repo = Arc::new(repo);
    let source: Arc<dyn ChunkSource> = repo.clone();
    let threads = opts.threads.max(1);
    let cache = ChunkCache::new(source, opts.cache_bytes, threads);
    Ok(StrataFs::new(repo, tree, cache, opts.owner, opts.log))
}

/// The FUSE configuration: read-only, permissions checked by the kernel
/// against the stored modes (so `allow_other` never opens a file its
/// mode closes), no device nodes, no set-uid.
pub fn config(fsname: &str, access: Access, threads: usize) -> fuser::Config {
    use fuser::MountOption::*;
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        FSName(fsname.replace([',', ' '], "_")),
        Subtype("strata".into()),
        RO,
        DefaultPermissions,
        NoDev,
        NoSuid,
        NoAtime,
    ];
    c.acl = match access {
        Access::Owner => fuser::SessionACL::Owner,
        Access::Root => fuser::SessionACL::RootAndOwner,
        Access::Everyone => fuser::SessionACL::All,
    };
    c.n_threads = Some(threads.max(1));
    c.clone_fd = true;
    c
}

/// Mounts; the session answers the kernel when `run` is called on it.
pub fn mount(
    fs: StrataFs,
    mountpoint: &Path,
    fsname: &str,
    access: Access,
    threads: usize,
) -> Result<fuser::Session<StrataFs>> {
    fuser::Session::new(fs, mountpoint, &config(fsname, access, threads)).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "; as a user other than root, install fusermount3 (Debian package fuse3)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "; -o allow_other needs `user_allow_other` in /etc/fuse.conf"
            }
            _ => "",
        };
        Error::Io {
            context: format!("mounting on {}{hint}", mountpoint.display()),
            source: e,
        }
    })
}

/// Unmounts `mountpoint`; with `lazy`, even while files are open there
/// (they stay readable until closed, then the mount goes).
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<()> {
    if !is_strata_mount(mountpoint) {
        return Err(Error::Mount(format!(
            "{} is not a mount point of strata",
            mountpoint.display()
        )));
    }
    let flags = if lazy {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    let direct = nix::mount::umount2(mountpoint, flags);
    let errno = match direct {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if errno == nix::errno::Errno::EPERM {
        // Not root: the set-uid helper unmounts what the user mounted.
        let mut cmd = std::process::Command::new("fusermount3");
        cmd.arg("-u").arg(mountpoint);
        if lazy {
            cmd.arg("-z");
        }
        let out = cmd.output().map_err(|e| Error::Io {
            context: "running fusermount3 (install the fuse3 package)".into(),
            source: e,
        })?;
        if out.status.success() {
            return Ok(());
        }
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if msg.contains("busy") {
            return Err(busy(mountpoint));
        }
        return Err(Error::Mount(format!(
            "unmounting {}: {msg}",
            mountpoint.display()
        )));
    }
    if errno == nix::errno::Errno::EBUSY {
        return Err(busy(mountpoint));
    }
    if errno == nix::errno::Errno::EINVAL {
        return Err(Error::Mount(format!(
            "{} is not a mount point",
            mountpoint.display()
        )));
    }
    Err(Error::Io {
        context: format!("unmounting {}", mountpoint.display()),
        source: std::io::Error::from_raw_os_error(errno as i32),
    })
}

/// The top mount at `mountpoint` is a FUSE mount (type `fuse`, or
/// `fuse.strata` where the subtype is passed on): `strata umount` never
/// unmounts a disk or anything else that is not FUSE.
pub fn is_strata_mount(mountpoint: &Path) -> bool {
    let Ok(want) = mountpoint.canonicalize() else {
        return false;
    };
    let top = crate::mountinfo::read()
        .into_iter()
        .rfind(|m| m.point == want);
    top.is_some_and(|m| m.fstype == "fuse" || m.fstype == "fuse.strata")
}

fn busy(mountpoint: &Path) -> Error {
    Error::Mount(format!(
        "{} is busy: a process has a file or directory open there (see `fuser -vm {}`); close it, or use `strata umount --lazy`",
        mountpoint.display(),
        mountpoint.display()
    ))
}
