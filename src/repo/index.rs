//! The blob index: where each blob lives. On disk it is a set of immutable
//! index files ("deltas"), each listing some packs and their blobs; in
//! memory it is one hash map. Format in docs/FORMAT.md ("Index files").

use super::pack::PackEntry;
use crate::compress::COMPRESSION_NONE;
use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN, IdMap, PackId};
use crate::sorted_ids::{Keep, Keyed, SortedIds};
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

/// All blobs of the repository, merged from every index file: the ones
/// loaded in a sorted array (`crate::sorted_ids`: 52 bytes per blob, where
/// a hash map took 60-120), those added since (this process's own uploads)
/// in a hash map.
#[derive(Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
    loaded: SortedIds<Record>,
    /// Ids are hashes already: `IdMap` skips SipHash (see `IdBuildHasher`).
    added: IdMap<BlobId, BlobLocation>,
}

/// A blob of the loaded part.
#[derive(Copy, Clone)]
struct Record {
    id: BlobId,
    loc: BlobLocation,
}

impl Keyed for Record {
    type Key = BlobId;
    fn key(&self) -> BlobId {
        self.id
    }
}

/// Collects the blobs of every index file, then sorts them once.
#[derive(Default)]
pub struct IndexLoader {
    packs: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
    records: Vec<Record>,
}

fn pack_number(packs: &mut Vec<PackId>, numbers: &mut HashMap<PackId, u32>, pack: PackId) -> u32 {
    *numbers.entry(pack).or_insert_with(|| {
        packs.push(pack);
        (packs.len() - 1) as u32
    })
}

fn location(pack: u32, e: &PackEntry) -> BlobLocation {
    BlobLocation {
        pack,
        ty: e.ty,
        offset: e.offset,
        length: e.length,
        raw_length: e.raw_length,
    }
}

impl IndexLoader {
    pub fn add_pack(&mut self, pack: PackId, entries: &[PackEntry]) {
        let n = pack_number(&mut self.packs, &mut self.pack_numbers, pack);
        self.records.extend(entries.iter().map(|e| Record {
            id: e.id,
            loc: location(n, e),
        }));
    }

    pub fn finish(self) -> Index {
        Index {
            packs: self.packs,
            pack_numbers: self.pack_numbers,
            // The first location wins; a duplicate blob in a second pack
            // (two writers, or a retried upload) is harmless.
            loaded: SortedIds::new(self.records, Keep::First),
            added: IdMap::default(),
        }
    }
}

impl Index {
    pub fn get(&self, id: &BlobId) -> Option<(PackId, BlobLocation)> {
        let loc = match self.loaded.get(id) {
            Some(r) => r.loc,
            None => *self.added.get(id)?,
        };
        Some((self.packs[loc.pack as usize], loc))
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.loaded.get(id).is_some() || self.added.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.loaded.len() + self.added.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Sum of stored blob sizes: the deduplicated size of the repository.
    pub fn stored_bytes(&self) -> u64 {
        self.iter().map(|(_, _, l)| l.length as u64).sum()
    }

    pub fn add_pack(&mut self, pack: PackId, entries: &[PackEntry]) {
        let n = pack_number(&mut self.packs, &mut self.pack_numbers, pack);
        self.added.reserve(entries.len());
        for e in entries {
            // The first location wins, as in `IndexLoader::finish`.
            if self.loaded.get(&e.id).is_none() {
                self.added.entry(e.id).or_insert(location(n, e));
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, PackId, &BlobLocation)> {
        let loaded = self.loaded.items().iter().map(|r| (&r.id, &r.loc));
        loaded
            .chain(self.added.iter())
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
mod lookup_tests {
    use super::*;

    fn entry(i: u32) -> PackEntry {
        PackEntry {
            ty: ObjectType::Data,
            id: BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()),
            offset: i * 10,
            length: 10,
            raw_length: 20,
        }
    }

    #[test]
    fn loaded_and_added_blobs_are_found_and_the_first_location_wins() {
        let (p1, p2, p3) = (PackId([1; 32]), PackId([2; 32]), PackId([3; 32]));
        let mut loader = IndexLoader::default();
        loader.add_pack(p1, &(0..1000).map(entry).collect::<Vec<_>>());
        // 500..1000 again in a later pack: p1 keeps them.
        loader.add_pack(p2, &(500..1500).map(entry).collect::<Vec<_>>());
        let mut index = loader.finish();
        // Added after loading: 1400..1500 are known already (p2), 1500.. are new.
        index.add_pack(p3, &(1400..2000).map(entry).collect::<Vec<_>>());
        index.add_pack(p1, &[entry(1999)]);
        assert_eq!(index.len(), 2000);
        assert_eq!(index.pack_count(), 3);
        for i in 0..2000u32 {
            let e = entry(i);
            let want = match i {
                0..1000 => p1,
                1000..1500 => p2,
                _ => p3,
            };
            let (pack, loc) = index.get(&e.id).unwrap();
            assert_eq!(
                (pack, loc.offset, loc.length),
                (want, i * 10, 10),
                "blob {i}"
            );
            assert!(index.contains(&e.id));
        }
        assert!(!index.contains(&entry(2000).id));
        assert!(index.get(&entry(5000).id).is_none());
        assert_eq!(index.iter().count(), 2000);
        assert_eq!(index.stored_bytes(), 20_000);
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
