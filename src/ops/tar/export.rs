//! `export-tar`: an archive as a pax tar stream, written as it is read
//! (one chunk in memory at a time; no temporary files).
//!
//! What tar carries is kept: nanosecond times and long or non-UTF-8 names
//! (pax records), owners by number and name, modes, xattrs and ACLs
//! (`SCHILY.xattr.*`), hard links, symlinks, devices and FIFOs.

use super::format::{self, EntryHeader, write_end, write_header, write_padding};
use crate::archive::Archive;
use crate::archive::create::{Observer, Progress};
use crate::archive::extract::safe_components;
use crate::archive::item::{
    Item, ItemsReader, KIND_BLOCKDEV, KIND_CHARDEV, KIND_DIR, KIND_FIFO, KIND_FILE, KIND_SYMLINK,
};
use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::repo::Repository;
use std::collections::{HashMap, HashSet};
use std::io::Write;

#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Only items equal to or below these archive paths.
    pub paths: Vec<Vec<u8>>,
    pub strip_components: usize,
}

#[derive(Debug, Default)]
pub struct ExportResult {
    pub files: u64,
    /// File content bytes.
    pub bytes: u64,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    pub warnings: u64,
    /// Files whose content could not be read (written as zeros).
    pub errors: u64,
}

struct Exporter<'a, 'o> {
    repo: &'a Repository,
    opts: &'a ExportOptions,
    out: &'a mut dyn Write,
    obs: &'o mut dyn Observer,
    /// Original path → exported path of files written with their data.
    written: HashMap<Vec<u8>, Vec<u8>>,
    /// Files left out by the filters, for hard links that are not.
    skipped_files: HashMap<Vec<u8>, Item>,
    /// Names of the symlinks written: nothing is written below them, so
    /// that no tar program can be led through one.
    symlinks: HashSet<Vec<u8>>,
    result: ExportResult,
}

pub fn export_tar(
    repo: &Repository,
    archive: &Archive,
    opts: &ExportOptions,
    out: &mut dyn Write,
    obs: &mut dyn Observer,
) -> Result<ExportResult> {
    let mut ex = Exporter {
        repo,
        opts,
        out,
        obs,
        written: HashMap::new(),
        skipped_files: HashMap::new(),
        symlinks: HashSet::new(),
        result: ExportResult::default(),
    };
    for item in ItemsReader::new(repo, archive.items.clone()) {
        if ex.obs.cancelled() {
            return Err(Error::Interrupted);
        }
        ex.item(item?)?;
    }
    ex.result.tar_bytes += write_end(ex.out).map_err(write_err)?;
    Ok(ex.result)
}

fn write_err(e: std::io::Error) -> Error {
    Error::io("writing the tar stream", e)
}

impl Exporter<'_, '_> {
    fn warn(&mut self, msg: String) {
        self.result.warnings += 1;
        self.obs.warning(&msg);
    }

    fn selected(&self, path: &[u8]) -> bool {
        self.opts.paths.is_empty()
            || self.opts.paths.iter().any(|p| {
                path == p.as_slice() || (path.starts_with(p) && path.get(p.len()) == Some(&b'/'))
            })
    }

    /// The first ancestor of `name` that was written as a symlink.
    fn below_symlink(&self, name: &[u8]) -> Option<Vec<u8>> {
        if self.symlinks.is_empty() {
            return None;
        }
        name.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| name[..i].to_vec())
            .find(|p| self.symlinks.contains(p))
    }

    fn item(&mut self, mut item: Item) -> Result<()> {
        let Some(parts) = safe_components(&item.path) else {
            self.warn(Error::UnsafePath(item.path_lossy()).to_string());
            return Ok(());
        };
        if !self.selected(&item.path) || parts.len() <= self.opts.strip_components {
            let filtering = !self.opts.paths.is_empty() || self.opts.strip_components > 0;
            if filtering && item.kind == KIND_FILE && item.link.is_none() {
                self.skipped_files.insert(item.path.to_vec(), item);
            }
            return Ok(());
        }
        let name = parts[self.opts.strip_components..].join(&b'/');
        if let Some(link) = self.below_symlink(&name) {
            self.warn(format!(
                "{}: below `{}`, a symlink of the archive; left out",
                item.path_lossy(),
                String::from_utf8_lossy(&link)
            ));
            return Ok(());
        }
        if item.kind == KIND_SYMLINK {
            self.symlinks.insert(name.clone());
        } else {
            self.symlinks.remove(&name);
        }
        let mut link_to = None;
        if let Some(src) = item.link.clone() {
            if let Some(to) = self.written.get(src.as_slice()) {
                link_to = Some(to.clone());
            } else if let Some(master) = self.skipped_files.remove(src.as_slice()) {
                // The first name was filtered out: this one carries the data.
                item.chunks = master.chunks;
                item.size = master.size;
                item.xattrs = master.xattrs;
                item.link = None;
                self.written.insert(src.to_vec(), name.clone());
            } else {
                self.warn(format!(
                    "{}: hard link to `{}`, which is not in the archive; left out",
                    item.path_lossy(),
                    String::from_utf8_lossy(&src)
                ));
                return Ok(());
            }
        } else if item.kind == KIND_FILE {
            self.written.insert(item.path.to_vec(), name.clone());
        }
        self.obs
            .entry(item.type_char(), &String::from_utf8_lossy(&name));
        self.entry(&item, name, link_to)
    }

    fn entry(&mut self, item: &Item, mut name: Vec<u8>, link_to: Option<Vec<u8>>) -> Result<()> {
        let typeflag = match (item.kind, &link_to) {
            (KIND_FILE, Some(_)) => format::HARDLINK,
            (KIND_FILE, None) => format::REGULAR,
            (KIND_DIR, _) => format::DIRECTORY,
            (KIND_SYMLINK, _) => format::SYMLINK,
            (KIND_FIFO, _) => format::FIFO,
            (KIND_CHARDEV, _) => format::CHARDEV,
            (KIND_BLOCKDEV, _) => format::BLOCKDEV,
            (other, _) => {
                self.warn(format!(
                    "{}: unknown item kind {other}; left out",
                    item.path_lossy()
                ));
                return Ok(());
            }
        };
        if item.kind == KIND_DIR {
            name.push(b'/');
        }
        let size = if typeflag == format::REGULAR {
            item.chunks.iter().map(|c| c.1 as u64).sum()
        } else {
            0
        };
        let link = match (&link_to, &item.target) {
            (Some(to), _) => to.clone(),
            (None, Some(t)) if item.kind == KIND_SYMLINK => t.to_vec(),
            _ => Vec::new(),
        };
        let rdev = item.rdev.unwrap_or(0);
        let header = EntryHeader {
            path: &name,
            link: &link,
            typeflag,
            mode: item.mode,
            uid: item.uid,
            gid: item.gid,
            uname: item.user.as_deref().unwrap_or(""),
            gname: item.group.as_deref().unwrap_or(""),
            size,
            mtime: item.mtime,
            atime: item.atime,
            devmajor: rustix::fs::major(rdev),
            devminor: rustix::fs::minor(rdev),
            // A hard link's attributes are the inode's, sent with its first name.
            xattrs: if typeflag == format::HARDLINK {
                &[]
            } else {
                &item.xattrs
            },
        };
        self.result.tar_bytes += write_header(self.out, &header).map_err(write_err)?;
        self.result.files += 1;
        if typeflag == format::REGULAR {
            self.content(item, size)?;
        }
        self.obs.progress(&Progress {
            files: self.result.files,
            original: self.result.bytes,
            compressed_new: 0,
            path: item.path_lossy(),
            total: None,
        });
        Ok(())
    }

    /// Writes a file's chunks. One that cannot be read becomes zeros of its
    /// length (the stream stays valid) and the file is reported.
    fn content(&mut self, item: &Item, size: u64) -> Result<()> {
        let mut lost = None;
        for c in &item.chunks {
            let data = match self.repo.read_blob(ObjectType::Data, &c.0) {
                Ok(d) if d.len() == c.1 as usize => d,
                Ok(d) => {
                    lost.get_or_insert(format!(
                        "chunk {} has {} bytes, the item says {}",
                        c.0.short(),
                        d.len(),
                        c.1
                    ));
                    vec![0; c.1 as usize]
                }
                Err(e) => {
                    lost.get_or_insert(e.to_string());
                    vec![0; c.1 as usize]
                }
            };
            self.out.write_all(&data).map_err(write_err)?;
            self.result.bytes += data.len() as u64;
            if self.obs.cancelled() {
                return Err(Error::Interrupted);
            }
        }
        self.result.tar_bytes += size + write_padding(self.out, size).map_err(write_err)?;
        if let Some(why) = lost {
            self.result.errors += 1;
            self.obs.warning(&format!(
                "{}: written with zeros where data could not be read: {why}",
                item.path_lossy()
            ));
        }
        Ok(())
    }
}
