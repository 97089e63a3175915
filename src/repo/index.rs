//! The blob index: where each blob lives. On disk it is a set of immutable
//! index files ("deltas"), each listing some packs and their blobs; in
//! memory it is one hash map. Format in docs/FORMAT.md ("Index files").

use super::pack::PackEntry;
use crate::compress::COMPRESSION_NONE;
use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN, IdMap, PackId};
use std::collections::HashMap;

pub const INDEX_MAGIC: &[u8; 8] = b"STRIDX01";
/// type (1) + id (32) + offset (4) + stored length (4) + raw length (4)
pub const INDEX_ENTRY_LEN: usize = 1 + ID_LEN + 4 + 4 + 4;
pub const INDEX_AAD_ID: [u8; ID_LEN] = [0; ID_LEN];

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: u32,
    pub ty: ObjectType,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

impl BlobLocation {
    /// This location as a pack header / index entry of blob `id`.
    pub fn entry(&self, id: BlobId) -> PackEntry {
        PackEntry {
            ty: self.ty,
            id,
            offset: self.offset,
            length: self.length,
            raw_length: self.raw_length,
        }
    }
}

/// All blobs of the repository, merged from every index file.
#[derive(Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
    /// Ids are hashes already: `IdMap` skips SipHash (see `IdBuildHasher`).
    blobs: IdMap<BlobId, BlobLocation>,
}

impl Index {
    pub fn get(&self, id: &BlobId) -> Option<(PackId, BlobLocation)> {
        let loc = *self.blobs.get(id)?;
        Some((self.packs[loc.pack as usize], loc))
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Sum of stored blob sizes: the deduplicated size of the repository.
    pub fn stored_bytes(&self) -> u64 {
        self.blobs.values().map(|l| l.length as u64).sum()
    }

    pub fn add_pack(&mut self, pack: PackId, entries: &[PackEntry]) {
        let n = *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        });
        self.blobs.reserve(entries.len());
        for e in entries {
            // The first location wins; a duplicate blob in a second pack
            // (two writers, or a retried upload) is harmless.
            self.blobs.entry(e.id).or_insert(BlobLocation {
                pack: n,
                ty: e.ty,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            });
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, PackId, &BlobLocation)> {
        self.blobs
            .iter()
            .map(|(id, l)| (id, self.packs[l.pack as usize], l))
    }
}

/// Encodes an index file payload (before sealing) for some packs.
pub fn encode(packs: &[(PackId, Vec<PackEntry>)]) -> Vec<u8> {
    let n: usize = packs.iter().map(|(_, e)| e.len()).sum();
    let mut out = Vec::with_capacity(1 + 12 + packs.len() * 36 + n * INDEX_ENTRY_LEN);
    out.push(COMPRESSION_NONE);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for (pack, entries) in packs {
        out.extend_from_slice(&pack.0);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            out.push(e.ty as u8);
            out.extend_from_slice(&e.id.0);
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.length.to_le_bytes());
            out.extend_from_slice(&e.raw_length.to_le_bytes());
        }
    }
    out
}

/// Decodes an opened index file payload (compression byte already removed).
pub fn decode(data: &[u8], name: &str) -> Result<Vec<(PackId, Vec<PackEntry>)>> {
    decode_inner(data).ok_or_else(|| Error::corrupt(format!("index file {name} is malformed")))
}

fn decode_inner(data: &[u8]) -> Option<Vec<(PackId, Vec<PackEntry>)>> {
    let mut r = Reader(data);
    if r.take(8)? != INDEX_MAGIC {
        return None;
    }
    let npacks = r.u32()?;
    let mut out = Vec::new();
    for _ in 0..npacks {
        let pack = PackId::from_slice(r.take(ID_LEN)?)?;
        let n = r.u32()? as usize;
        if n > r.0.len() / INDEX_ENTRY_LEN {
            return None;
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let ty = ObjectType::from_u8(r.take(1)?[0])?;
            let id = BlobId::from_slice(r.take(ID_LEN)?)?;
            entries.push(PackEntry {
                ty,
                id,
                offset: r.u32()?,
                length: r.u32()?,
                raw_length: r.u32()?,
            });
        }
        out.push((pack, entries));
    }
    r.0.is_empty().then_some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_truncation_detected() {
        let e = PackEntry {
            ty: ObjectType::Data,
            id: BlobId([5; 32]),
            offset: 0,
            length: 10,
            raw_length: 20,
        };
        let packs = vec![(PackId([1; 32]), vec![e, PackEntry { offset: 10, ..e }])];
        let enc = encode(&packs);
        assert_eq!(decode(&enc[1..], "t").unwrap(), packs);
        assert!(decode(&enc[1..enc.len() - 1], "t").is_err());
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// docs/replication.md quotes the index cost per chunk from this.
    #[test]
    fn an_index_entry_is_52_bytes_before_hash_table_overhead() {
        assert_eq!(
            std::mem::size_of::<BlobId>() + std::mem::size_of::<BlobLocation>(),
            52
        );
    }
}
