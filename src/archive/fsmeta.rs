//! Reading file-system metadata into items, and owner name lookups.

use super::item::{
    Item, KIND_BLOCKDEV, KIND_CHARDEV, KIND_DIR, KIND_FIFO, KIND_FILE, KIND_SYMLINK,
};
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Caches uid/gid ↔ name lookups (they hit NSS, which may be slow).
#[derive(Default)]
pub struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
    uids: HashMap<String, Option<u32>>,
    gids: HashMap<String, Option<u32>>,
}

impl Names {
    pub fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    pub fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }

    pub fn uid(&mut self, name: &str) -> Option<u32> {
        *self.uids.entry(name.to_string()).or_insert_with(|| {
            nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw())
        })
    }

    pub fn gid(&mut self, name: &str) -> Option<u32> {
        *self.gids.entry(name.to_string()).or_insert_with(|| {
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        })
    }
}

pub fn kind_of(meta: &Metadata) -> Option<u8> {
    let t = meta.file_type();
    Some(if t.is_file() {
        KIND_FILE
    } else if t.is_dir() {
        KIND_DIR
    } else if t.is_symlink() {
        KIND_SYMLINK
    } else if t.is_fifo() {
        KIND_FIFO
    } else if t.is_char_device() {
        KIND_CHARDEV
    } else if t.is_block_device() {
        KIND_BLOCKDEV
    } else {
        return None; // sockets are not backed up (borg does the same)
    })
}

pub fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// An item for `meta`, without content (chunks, link target, xattrs).
pub fn item_from_meta(
    path: Vec<u8>,
    kind: u8,
    meta: &Metadata,
    names: &mut Names,
    numeric: bool,
) -> Item {
    let (user, group) = if numeric {
        (None, None)
    } else {
        (names.user(meta.uid()), names.group(meta.gid()))
    };
    Item {
        path: ByteBuf::from(path),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user,
        group,
        mtime: ns(meta.mtime(), meta.mtime_nsec()),
        atime: ns(meta.atime(), meta.atime_nsec()),
        ctime: ns(meta.ctime(), meta.ctime_nsec()),
        size: if kind == KIND_FILE { meta.len() } else { 0 },
        rdev: matches!(kind, KIND_CHARDEV | KIND_BLOCKDEV).then(|| meta.rdev()),
        ..Item::default()
    }
}

/// Extended attributes (POSIX ACLs are the `system.posix_acl_*` ones) of a
/// path, not following symlinks. Unsupported file systems give none.
pub fn xattrs_of(path: &Path) -> std::io::Result<Vec<(ByteBuf, ByteBuf)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if unsupported(&e) => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = xattr::get(path, &name)? {
            out.push((
                ByteBuf::from(name.as_encoded_bytes().to_vec()),
                ByteBuf::from(value),
            ));
        }
    }
    out.sort();
    Ok(out)
}

fn unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::NOTSUP.raw_os_error() || code == rustix::io::Errno::OPNOTSUPP.raw_os_error())
}
