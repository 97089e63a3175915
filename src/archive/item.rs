//! Items: one per file-system entry, MessagePack maps concatenated into the
//! items stream, which is cut into `Items` blobs by a small chunker.

use crate::chunker::{Chunker, ChunkerParams};
use crate::compress::{Algorithm, Compression};
use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::repo::writer::BlobWriter;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::collections::HashMap;

pub const KIND_FILE: u8 = 1;
pub const KIND_DIR: u8 = 2;
pub const KIND_SYMLINK: u8 = 3;
pub const KIND_FIFO: u8 = 4;
pub const KIND_CHARDEV: u8 = 5;
pub const KIND_BLOCKDEV: u8 = 6;

/// The items stream is cut at 32K/128K/512K (borg uses the same sizes), so a
/// changed item rewrites about 128 KiB of metadata, not the whole stream.
pub const ITEMS_CHUNKER: ChunkerParams = ChunkerParams {
    min: 32 * 1024,
    avg: 128 * 1024,
    max: 512 * 1024,
};
/// Metadata compresses well; it always uses zstd level 3.
pub const ITEMS_COMPRESSION: Compression = Compression {
    algorithm: Algorithm::Zstd(3),
    auto: false,
};

/// A chunk of a file: its blob id and plaintext length.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef(pub BlobId, pub u32);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Relative path, raw bytes (file names need not be UTF-8).
    pub path: ByteBuf,
    pub kind: u8,
    /// `st_mode` permission and special bits (no file-type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub mtime: i64,
    pub atime: i64,
    pub ctime: i64,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkRef>,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ByteBuf>,
    /// For the second and later names of a hard-linked file: the path of
    /// the first name, which appears earlier in the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<(ByteBuf, ByteBuf)>,
}

impl Item {
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    pub fn type_char(&self) -> char {
        match (self.kind, &self.link) {
            (KIND_FILE, Some(_)) => 'h',
            (KIND_FILE, None) => '-',
            (KIND_DIR, _) => 'd',
            (KIND_SYMLINK, _) => 'l',
            (KIND_FIFO, _) => 'p',
            (KIND_CHARDEV, _) => 'c',
            (KIND_BLOCKDEV, _) => 'b',
            _ => '?',
        }
    }

    /// `ls -l` style mode string, e.g. `drwxr-xr-x`.
    pub fn mode_string(&self) -> String {
        let t = match self.type_char() {
            'h' => '-',
            c => c,
        };
        let m = self.mode;
        let bit = |b: u32, c: char| if m & b != 0 { c } else { '-' };
        let special = |x: u32, s: u32, lower: char, upper: char| match (m & x != 0, m & s != 0) {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        };
        [
            t,
            bit(0o400, 'r'),
            bit(0o200, 'w'),
            special(0o100, 0o4000, 's', 'S'),
            bit(0o040, 'r'),
            bit(0o020, 'w'),
            special(0o010, 0o2000, 's', 'S'),
            bit(0o004, 'r'),
            bit(0o002, 'w'),
            special(0o001, 0o1000, 't', 'T'),
        ]
        .iter()
        .collect()
    }
}

/// Serialises items and stores the stream as `Items` blobs.
pub struct ItemsWriter {
    chunker: Chunker,
    buf: Vec<u8>,
    pub blobs: Vec<BlobId>,
    /// Bytes of item metadata (for `--stats`).
    pub bytes: u64,
}

impl ItemsWriter {
    pub fn new(seed: &[u8; 32]) -> Self {
        Self {
            chunker: Chunker::new(ITEMS_CHUNKER, seed),
            buf: Vec::new(),
            blobs: Vec::new(),
            bytes: 0,
        }
    }

    pub fn push(
        &mut self,
        item: &Item,
        sink: &mut dyn FnMut(&[u8]) -> Result<BlobId>,
    ) -> Result<()> {
        let before = self.buf.len();
        rmp_serde::encode::write_named(&mut self.buf, item)
            .map_err(|e| Error::invalid(format!("encoding item: {e}")))?;
        self.bytes += (self.buf.len() - before) as u64;
        if self.buf.len() >= 2 * ITEMS_CHUNKER.max as usize {
            self.cut(false, sink)?;
        }
        Ok(())
    }

    /// Cuts chunks off the buffer; all of it when `all` (end of stream).
    fn cut(&mut self, all: bool, sink: &mut dyn FnMut(&[u8]) -> Result<BlobId>) -> Result<()> {
        let mut start = 0;
        while start < self.buf.len()
            && (all || self.buf.len() - start >= ITEMS_CHUNKER.max as usize)
        {
            let n = self.chunker.cut(&self.buf[start..]);
            self.blobs.push(sink(&self.buf[start..start + n])?);
            start += n;
        }
        self.buf.drain(..start);
        Ok(())
    }

    /// Stores the rest; returns the items blob ids and the metadata size.
    pub fn finish(
        mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<BlobId>,
    ) -> Result<(Vec<BlobId>, u64)> {
        self.cut(true, sink)?;
        Ok((self.blobs, self.bytes))
    }
}

/// Stores one blob unless the repository (or this session) has it already.
pub struct Dedup<'a> {
    pub repo: &'a Repository,
    pub writer: &'a BlobWriter,
    pub pending: HashMap<BlobId, ()>,
    pub dry_run: bool,
}

impl Dedup<'_> {
    /// Returns the id and whether the blob was new.
    pub fn store(
        &mut self,
        ty: ObjectType,
        data: &[u8],
        compression: Compression,
    ) -> Result<(BlobId, bool)> {
        let id = self.repo.sealer().blob_id(ty, data);
        if self.repo.index().contains(&id) || self.pending.contains_key(&id) {
            return Ok((id, false));
        }
        self.pending.insert(id, ());
        if !self.dry_run {
            self.writer.add(ty, id, data, compression)?;
        }
        Ok((id, true))
    }
}

/// Reads the items stream of an archive, one item at a time.
pub struct ItemsReader<'a> {
    repo: &'a Repository,
    blobs: std::vec::IntoIter<BlobId>,
    cur: Vec<u8>,
    pos: usize,
}

impl<'a> ItemsReader<'a> {
    pub fn new(repo: &'a Repository, blobs: Vec<BlobId>) -> Self {
        Self {
            repo,
            blobs: blobs.into_iter(),
            cur: Vec::new(),
            pos: 0,
        }
    }

    fn at_end(&mut self) -> Result<bool> {
        while self.pos >= self.cur.len() {
            match self.blobs.next() {
                None => return Ok(true),
                Some(id) => {
                    self.cur = self.repo.read_blob(ObjectType::Items, &id)?;
                    self.pos = 0;
                }
            }
        }
        Ok(false)
    }
}

impl std::io::Read for ItemsReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at_end().map_err(std::io::Error::other)? {
            return Ok(0);
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Iterator for ItemsReader<'_> {
    type Item = Result<Item>;

    fn next(&mut self) -> Option<Result<Item>> {
        match self.at_end() {
            Ok(true) => return None,
            Err(e) => return Some(Err(e)),
            Ok(false) => {}
        }
        Some(read_item(self))
    }
}

/// Decodes the next item of an items stream (the concatenated, opened
/// `Items` blobs). An error of the reader itself (a blob failing to open)
/// is passed through; anything else is a corrupt stream.
pub fn read_item<R: std::io::Read>(r: &mut R) -> Result<Item> {
    rmp_serde::decode::from_read(r).map_err(|e| match e {
        rmp_serde::decode::Error::InvalidDataRead(io)
        | rmp_serde::decode::Error::InvalidMarkerRead(io) => {
            match io.into_inner().and_then(|b| b.downcast::<Error>().ok()) {
                Some(inner) => *inner,
                None => Error::corrupt("items stream is truncated"),
            }
        }
        other => Error::corrupt(format!("items stream: {other}")),
    })
}
