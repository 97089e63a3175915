//! Compares two directory trees entry by entry: type, content, mode, owner,
//! mtime (ns), symlink target, xattrs, device numbers and hard-link groups.
//! Used by `strata demo` and the tests to prove a restore is exact.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    rdev: u64,
    target: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index of the first path sharing this inode (hard links).
    link_group: Option<Vec<u8>>,
    content: Option<blake3::Hash>,
}

/// What a comparison may ignore, for copies made through a format that
/// cannot carry everything (borg 1.2's export-tar: GNU tar).
#[derive(Clone, Copy, Debug)]
pub struct Fidelity {
    /// Compare modification times in whole seconds only.
    pub whole_second_mtimes: bool,
    /// Compare extended attributes (and ACLs).
    pub xattrs: bool,
}

impl Fidelity {
    pub const EXACT: Fidelity = Fidelity {
        whole_second_mtimes: false,
        xattrs: true,
    };
}

fn scan(
    root: &Path,
    ignore_dir_mtime: bool,
    fidelity: Fidelity,
) -> std::io::Result<BTreeMap<Vec<u8>, Entry>> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    // Sorted, so that a hard-link group is named by the same first path
    // whatever order each file system lists its directories in.
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name();
    for e in walk {
        let e = e.map_err(std::io::Error::other)?;
        let rel = e
            .path()
            .strip_prefix(root)
            .map_err(std::io::Error::other)?
            .as_os_str()
            .as_bytes()
            .to_vec();
        let m = std::fs::symlink_metadata(e.path())?;
        let ft = m.file_type();
        let target = ft
            .is_symlink()
            .then(|| std::fs::read_link(e.path()).map(|t| t.as_os_str().as_bytes().to_vec()))
            .transpose()?;
        let content = if ft.is_file() {
            Some(
                blake3::Hasher::new()
                    .update_reader(std::fs::File::open(e.path())?)?
                    .finalize(),
            )
        } else {
            None
        };
        let link_group = (ft.is_file() && m.nlink() > 1).then(|| {
            inodes
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| rel.clone())
                .clone()
        });
        let mut xattrs = Vec::new();
        if !ft.is_symlink() && fidelity.xattrs {
            let names: Vec<_> = xattr::list(e.path())
                .map(|l| l.collect())
                .unwrap_or_default();
            for n in names {
                let v = xattr::get(e.path(), &n)?.unwrap_or_default();
                xattrs.push((n.as_bytes().to_vec(), v));
            }
            xattrs.sort();
        }
        let mtime = if ft.is_dir() && ignore_dir_mtime {
            (0, 0)
        } else if fidelity.whole_second_mtimes {
            (m.mtime(), 0)
        } else {
            (m.mtime(), m.mtime_nsec())
        };
        out.insert(
            rel,
            Entry {
                kind: m.mode() & 0o170000,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                uid: m.uid(),
                gid: m.gid(),
                mtime,
                size: if ft.is_dir() { 0 } else { m.len() },
                rdev: m.rdev(),
                target,
                xattrs,
                link_group,
                content,
            },
        );
    }
    Ok(out)
}

/// Differences between `a` and `b`, one line each; empty when identical.
pub fn compare_trees(a: &Path, b: &Path) -> std::io::Result<Vec<String>> {
    compare_trees_with(a, b, Fidelity::EXACT)
}

/// `compare_trees`, ignoring what `fidelity` says a copy could not keep.
pub fn compare_trees_with(a: &Path, b: &Path, fidelity: Fidelity) -> std::io::Result<Vec<String>> {
    let (x, y) = (scan(a, false, fidelity)?, scan(b, false, fidelity)?);
    let mut diffs = Vec::new();
    for (path, ea) in &x {
        let p = String::from_utf8_lossy(path);
        match y.get(path) {
            None => diffs.push(format!("missing in restore: {p}")),
            Some(eb) if eb != ea => diffs.push(format!("differs: {p}: {ea:?} != {eb:?}")),
            Some(_) => {}
        }
    }
    for path in y.keys().filter(|k| !x.contains_key(*k)) {
        diffs.push(format!(
            "extra in restore: {}",
            String::from_utf8_lossy(path)
        ));
    }
    Ok(diffs)
}
