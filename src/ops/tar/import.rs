//! `import-tar`: a tar stream becomes an archive, through the same
//! chunk/dedup/compress/encrypt pipeline as `create` (`archive::builder`).
//!
//! Members that could put anything outside an extraction target are
//! skipped, each with a one-line warning: absolute paths, `..` components,
//! paths through a symlink of the archive, hard links to anything but an
//! earlier regular file of the archive. A stream that is truncated or
//! damaged fails the whole import: nothing is committed.

use super::format::{self, Member, TarReader};
use crate::archive::builder::{BuildOptions, Builder, build};
use crate::archive::create::{CreateResult, Observer, Progress};
use crate::archive::item::{
    Item, KIND_BLOCKDEV, KIND_CHARDEV, KIND_DIR, KIND_FIFO, KIND_FILE, KIND_SYMLINK,
};
use crate::error::{Error, Result};
use crate::repo::Repository;
use serde_bytes::ByteBuf;
use std::collections::{HashMap, HashSet};
use std::io::Read;

pub struct ImportResult {
    pub result: CreateResult,
    /// Members not imported (each was warned about).
    pub skipped: u64,
    /// Warnings, including the skipped members.
    pub warnings: u64,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
}

/// Paths are remembered by a 16-byte hash: a million members cost tens of
/// megabytes, not their names.
type Key = [u8; 16];

fn key(path: &[u8]) -> Key {
    let h = blake3::hash(path);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

/// What an earlier regular-file member is: its own first name (None) or a
/// hard link to another; and its size.
struct FileEntry {
    master: Option<Vec<u8>>,
    size: u64,
}

struct Importer<'o> {
    files: HashMap<Key, FileEntry>,
    symlinks: HashSet<Key>,
    skipped: u64,
    warnings: u64,
    progress: Progress,
    obs: &'o mut dyn Observer,
}

/// Normalises a member name: `./a//b/` → `a/b`. None for the archive's
/// root (`.` or `./`); an error says why the name is unsafe.
pub fn normalize(path: &[u8]) -> std::result::Result<Option<Vec<u8>>, String> {
    if path.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    if path.contains(&0) {
        return Err("NUL byte in the name".into());
    }
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("`..` in the path".into()),
            p => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(p);
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// The input, its read errors (a decompressor's, a failed exporting
/// program's) saying what they mean for the import.
struct Input<R>(R);

impl<R: Read> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{e}; nothing was imported")))
    }
}

/// A name for messages: one line, whatever bytes it holds.
pub fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p)
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Imports the tar stream `input` (uncompressed; see `compress::decoder`)
/// as archive `opts.name`.
pub fn import_tar(
    repo: &mut Repository,
    input: impl Read,
    opts: &BuildOptions,
    obs: &mut dyn Observer,
) -> Result<ImportResult> {
    let mut reader = TarReader::new(Input(input));
    let mut imp = Importer {
        files: HashMap::new(),
        symlinks: HashSet::new(),
        skipped: 0,
        warnings: 0,
        progress: Progress::default(),
        obs,
    };
    let (result, late) = build(repo, opts, |b| {
        while let Some(m) = reader.next_member()? {
            if imp.obs.cancelled() {
                return Err(Error::Interrupted);
            }
            imp.member(b, &mut reader, m)?;
        }
        reader.drain()
    })?;
    for w in &late {
        imp.obs.warning(w);
    }
    Ok(ImportResult {
        skipped: imp.skipped,
        warnings: imp.warnings + late.len() as u64,
        tar_bytes: reader.position(),
        result,
    })
}

impl Importer<'_> {
    fn skip(&mut self, path: &[u8], why: &str) {
        self.skipped += 1;
        self.warnings += 1;
        self.obs.entry('x', &String::from_utf8_lossy(path));
        self.obs
            .warning(&format!("tar member `{}` skipped: {why}", lossy(path)));
    }

    /// The first ancestor of `path` that is a symlink of this archive.
    fn symlink_parent<'p>(&self, path: &'p [u8]) -> Option<&'p [u8]> {
        if self.symlinks.is_empty() {
            return None;
        }
        path.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| &path[..i])
            .find(|p| self.symlinks.contains(&key(p)))
    }

    fn member<R: Read>(
        &mut self,
        b: &mut Builder,
        reader: &mut TarReader<R>,
        m: Member,
    ) -> Result<()> {
        if let Some(why) = &m.problem {
            self.skip(&m.path, why);
            return Ok(());
        }
        let path = match normalize(&m.path) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()), // `./`: the root has no name to store
            Err(why) => {
                self.skip(
                    &m.path,
                    &format!("{why}, which could write outside the target"),
                );
                return Ok(());
            }
        };
        if let Some(parent) = self.symlink_parent(&path) {
            let why = format!("`{}` is a symlink earlier in the archive", lossy(parent));
            self.skip(&m.path, &why);
            return Ok(());
        }
        let Some(mut item) = self.item(&m, path) else {
            return Ok(());
        };
        let k = key(&item.path);
        // A name replaced by a later member is no longer what it was.
        self.symlinks.remove(&k);
        if item.kind != KIND_FILE {
            self.files.remove(&k);
        }
        let status = match m.typeflag {
            format::REGULAR | b'7' => {
                self.progress.path = item.path_lossy();
                item.chunks = b.content(reader.data(), self.obs, &mut self.progress)?;
                item.size = item.chunks.iter().map(|c| c.1 as u64).sum();
                self.files.insert(
                    k,
                    FileEntry {
                        master: None,
                        size: item.size,
                    },
                );
                'A'
            }
            format::HARDLINK => match self.link_master(&m) {
                Ok((master, size)) => {
                    self.files.insert(
                        k,
                        FileEntry {
                            master: Some(master.clone()),
                            size,
                        },
                    );
                    item.link = Some(ByteBuf::from(master));
                    item.size = size;
                    item.xattrs.clear(); // they belong to the inode, stored with the first name
                    'h'
                }
                Err(why) => {
                    self.skip(&m.path, &why);
                    return Ok(());
                }
            },
            format::SYMLINK => {
                self.symlinks.insert(k);
                's'
            }
            format::DIRECTORY | b'D' => 'd',
            _ => 'b',
        };
        self.obs.entry(status, &item.path_lossy());
        b.push(&item)?;
        self.progress.files = b.stats.files;
        self.obs.progress(&self.progress);
        Ok(())
    }

    /// The item for a member, without content; None (warned) for member
    /// types strata does not store.
    fn item(&mut self, m: &Member, path: Vec<u8>) -> Option<Item> {
        let kind = match m.typeflag {
            format::REGULAR | b'7' | format::HARDLINK => KIND_FILE,
            format::SYMLINK => KIND_SYMLINK,
            format::DIRECTORY | b'D' => KIND_DIR,
            format::FIFO => KIND_FIFO,
            format::CHARDEV => KIND_CHARDEV,
            format::BLOCKDEV => KIND_BLOCKDEV,
            b'V' => return None, // a volume label names no file
            other => {
                let why = format!("member type `{}` is not supported", other as char);
                self.skip(&m.path, &why);
                return None;
            }
        };
        let (Ok(uid), Ok(gid)) = (u32::try_from(m.uid), u32::try_from(m.gid)) else {
            self.skip(&m.path, "uid or gid out of range");
            return None;
        };
        let name = |n: &[u8]| {
            (!n.is_empty())
                .then(|| std::str::from_utf8(n).ok().map(str::to_string))
                .flatten()
        };
        Some(Item {
            path: ByteBuf::from(path),
            kind,
            mode: m.mode & 0o7777,
            uid,
            gid,
            user: name(&m.uname),
            group: name(&m.gname),
            mtime: m.mtime,
            atime: m.atime.unwrap_or(m.mtime),
            ctime: m.ctime.unwrap_or(m.mtime),
            size: 0,
            target: (kind == KIND_SYMLINK).then(|| ByteBuf::from(m.link.clone())),
            rdev: matches!(kind, KIND_CHARDEV | KIND_BLOCKDEV)
                .then(|| rustix::fs::makedev(m.devmajor, m.devminor)),
            xattrs: m
                .xattrs
                .iter()
                .map(|(k, v)| (ByteBuf::from(k.clone()), ByteBuf::from(v.clone())))
                .collect(),
            ..Item::default()
        })
    }

    /// The first name and size of the file a hard-link member points at,
    /// or why it may not be imported.
    fn link_master(&self, m: &Member) -> std::result::Result<(Vec<u8>, u64), String> {
        let target = match normalize(&m.link) {
            Ok(Some(t)) => t,
            Ok(None) => return Err("hard link to the archive's root".into()),
            Err(why) => {
                return Err(format!(
                    "hard link to `{}` ({why}), which could reach outside the target",
                    lossy(&m.link)
                ));
            }
        };
        if let Some(parent) = self.symlink_parent(&target) {
            return Err(format!(
                "hard link to `{}`, below `{}`, a symlink of the archive",
                lossy(&m.link),
                lossy(parent)
            ));
        }
        match self.files.get(&key(&target)) {
            Some(FileEntry { master, size }) => Ok((master.clone().unwrap_or(target), *size)),
            None => Err(format!(
                "hard link to `{}`, which is not a regular file earlier in the archive",
                lossy(&m.link)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn names_are_normalised_or_refused() {
        assert_eq!(normalize(b"./a//b/").unwrap(), Some(b"a/b".to_vec()));
        assert_eq!(normalize(b"./").unwrap(), None);
        assert_eq!(normalize(b".").unwrap(), None);
        assert!(normalize(b"/etc/x").is_err());
        assert!(normalize(b"../../etc/passwd").is_err());
        assert!(normalize(b"a/../../b").is_err());
        assert!(normalize(b"a/..").is_err());
        assert_eq!(normalize(b"-rf").unwrap(), Some(b"-rf".to_vec()));
        assert_eq!(normalize(b"..a").unwrap(), Some(b"..a".to_vec()));
    }

    #[test]
    fn names_in_messages_stay_on_one_line() {
        assert_eq!(super::lossy(b"a\nb\x1b"), "a\\nb\\u{1b}");
    }
}
