//! Pack files: sealed blobs one after another, then a sealed header listing
//! them, then a 12-byte trailer. Layout in docs/FORMAT.md ("Pack files").

use crate::compress::COMPRESSION_NONE;
use crate::crypto::{ObjectType, Sealer};
use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN, PackId};

pub const PACK_MAGIC: &[u8; 8] = b"STRPACK1";
pub const PACK_TRAILER_LEN: usize = 4 + 8;
/// type (1) + id (32) + stored length (4) + raw length (4)
pub const PACK_HEADER_ENTRY_LEN: usize = 1 + ID_LEN + 4 + 4;
/// The associated-data id of a pack header: all zero (the pack id is a hash
/// of the whole file, header included, so it cannot be bound).
pub const HEADER_AAD_ID: [u8; ID_LEN] = [0; ID_LEN];

/// One blob as listed in a pack header and in the index.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub ty: ObjectType,
    pub id: BlobId,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

/// Accumulates sealed blobs for one pack in memory.
#[derive(Default)]
pub struct PackBuilder {
    /// The pack's bytes start at `base`: the first page-aligned address
    /// of the buffer, so the local backend writes the pack with `O_DIRECT`
    /// from where it lies instead of copying it (`direct_io`).
    data: Vec<u8>,
    base: usize,
    entries: Vec<PackEntry>,
}

/// A finished pack's bytes (in the buffer it was built in).
pub struct PackBytes {
    buf: Vec<u8>,
    start: usize,
}

impl PackBytes {
    /// The buffer, for the next [`PackBuilder::with_buffer`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

impl std::ops::Deref for PackBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl PackBuilder {
    /// A builder writing into `buf` (cleared), with `room` bytes reserved
    /// (a pack's size plus its largest blob), so it does not reallocate.
    pub fn with_buffer(mut buf: Vec<u8>, room: usize) -> Self {
        use crate::direct_io::ALIGN;
        buf.clear();
        // Reserved, not touched: untouched pages cost no memory.
        buf.reserve(room + ALIGN);
        let base = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        buf.resize(base, 0);
        Self {
            data: buf,
            base,
            entries: Vec::new(),
        }
    }

    /// Appends a blob that `seal` writes straight into the pack: it gets
    /// the pack's bytes and must append exactly one envelope to them.
    pub fn add_with(
        &mut self,
        ty: ObjectType,
        id: BlobId,
        raw_length: u32,
        seal: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let start = self.data.len();
        if let Err(e) = seal(&mut self.data) {
            self.data.truncate(start);
            return Err(e);
        }
        self.entries.push(PackEntry {
            ty,
            id,
            offset: (start - self.base) as u32,
            length: (self.data.len() - start) as u32,
            raw_length,
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.data.len() - self.base
    }

    pub fn entries(&self) -> &[PackEntry] {
        &self.entries
    }

    /// The sealed bytes of one of this pack's entries.
    pub fn envelope(&self, e: &PackEntry) -> &[u8] {
        let at = self.base + e.offset as usize;
        &self.data[at..at + e.length as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn add(&mut self, ty: ObjectType, id: BlobId, raw_length: u32, sealed: &[u8]) {
        self.entries.push(PackEntry {
            ty,
            id,
            offset: self.len() as u32,
            length: sealed.len() as u32,
            raw_length,
        });
        self.data.extend_from_slice(sealed);
    }

    /// Appends the sealed header and trailer; returns the pack id, bytes and entries.
    pub fn finish(mut self, sealer: &Sealer) -> Result<(PackId, PackBytes, Vec<PackEntry>)> {
        let mut header = Vec::with_capacity(1 + self.entries.len() * PACK_HEADER_ENTRY_LEN);
        header.push(COMPRESSION_NONE);
        for e in &self.entries {
            header.push(e.ty as u8);
            header.extend_from_slice(&e.id.0);
            header.extend_from_slice(&e.length.to_le_bytes());
            header.extend_from_slice(&e.raw_length.to_le_bytes());
        }
        let sealed = sealer.seal(ObjectType::PackHeader, &HEADER_AAD_ID, &header)?;
        self.data.extend_from_slice(&sealed);
        self.data
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        self.data.extend_from_slice(PACK_MAGIC);
        let bytes = PackBytes {
            buf: self.data,
            start: self.base,
        };
        let id = PackId(*blake3::hash(&bytes).as_bytes());
        Ok((id, bytes, self.entries))
    }
}

/// Reads the blob list of a complete pack (used by check and index rebuild).
pub fn read_header(sealer: &Sealer, pack: &[u8], name: &str) -> Result<Vec<PackEntry>> {
    let bad = |why: &str| Error::corrupt(format!("pack {name}: {why}"));
    if pack.len() < PACK_TRAILER_LEN || &pack[pack.len() - 8..] != PACK_MAGIC {
        return Err(bad("missing trailer"));
    }
    let len_at = pack.len() - PACK_TRAILER_LEN;
    let hlen = u32::from_le_bytes(
        pack[len_at..len_at + 4]
            .try_into()
            .map_err(|_| bad("trailer"))?,
    ) as usize;
    if hlen > len_at {
        return Err(bad("header length beyond file"));
    }
    let hstart = len_at - hlen;
    let header = sealer.open(
        ObjectType::PackHeader,
        &HEADER_AAD_ID,
        pack[hstart..len_at].to_vec(),
        &|| format!("header of pack {name}"),
    )?;
    parse_header(&header, hstart as u32).ok_or_else(|| bad("malformed header"))
}

/// Reads only the header of a pack of `size` bytes through the backend (two
/// small range reads), for adopting packs that no index lists yet.
pub fn read_header_of(
    backend: &dyn crate::backend::Backend,
    sealer: &Sealer,
    name: &str,
    size: u64,
) -> Result<Vec<PackEntry>> {
    use crate::backend::FileKind;
    let bad = |why: &str| Error::corrupt(format!("pack {name}: {why}"));
    if size < PACK_TRAILER_LEN as u64 || size > u32::MAX as u64 {
        return Err(bad("impossible size"));
    }
    let trailer = backend.read_range(
        FileKind::Pack,
        name,
        size - PACK_TRAILER_LEN as u64,
        PACK_TRAILER_LEN as u32,
    )?;
    if &trailer[4..] != PACK_MAGIC {
        return Err(bad("missing trailer"));
    }
    let hlen = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as u64;
    let len_at = size - PACK_TRAILER_LEN as u64;
    if hlen > len_at || hlen > crate::backend::MAX_READ_RANGE as u64 {
        return Err(bad("header length beyond file"));
    }
    let hstart = len_at - hlen;
    let env = backend.read_range(FileKind::Pack, name, hstart, hlen as u32)?;
    let header = sealer.open(ObjectType::PackHeader, &HEADER_AAD_ID, env, &|| {
        format!("header of pack {name}")
    })?;
    parse_header(&header, hstart as u32).ok_or_else(|| bad("malformed header"))
}

fn parse_header(header: &[u8], data_end: u32) -> Option<Vec<PackEntry>> {
    let (&comp, body) = header.split_first()?;
    if comp != COMPRESSION_NONE || body.len() % PACK_HEADER_ENTRY_LEN != 0 {
        return None;
    }
    let mut offset = 0u32;
    let mut out = Vec::with_capacity(body.len() / PACK_HEADER_ENTRY_LEN);
    for rec in body.chunks_exact(PACK_HEADER_ENTRY_LEN) {
        let ty = ObjectType::from_u8(rec[0])?;
        let id = BlobId::from_slice(&rec[1..1 + ID_LEN])?;
        let length = u32::from_le_bytes(rec[33..37].try_into().ok()?);
        let raw_length = u32::from_le_bytes(rec[37..41].try_into().ok()?);
        out.push(PackEntry {
            ty,
            id,
            offset,
            length,
            raw_length,
        });
        offset = offset.checked_add(length)?;
    }
    (offset == data_end).then_some(out)
}
