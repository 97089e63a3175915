//! The in-memory blob index at 1M blobs (2 TiB of unique data at the
//! default 2 MiB chunk): the dedup lookup `create` makes per chunk, and
//! building it from index files as opening a repository does.

use crate::data::{Rng, size};
use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use std::sync::LazyLock;
use strata::crypto::ObjectType;
use strata::id::{BlobId, PackId};
use strata::repo::index::Index;
use strata::repo::pack::PackEntry;

const BLOBS: usize = 1 << 20;
/// Blobs per pack: a 16 MiB pack of 2 MiB chunks.
const PER_PACK: usize = 8;
/// Lookups per timed call.
const PROBES: usize = 4096;

fn ids(n: usize, seed: u64) -> Vec<BlobId> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut id = [0u8; 32];
            for w in id.chunks_exact_mut(8) {
                w.copy_from_slice(&rng.next().to_le_bytes());
            }
            BlobId(id)
        })
        .collect()
}

/// The index files' contents: packs of PER_PACK blobs.
fn packs(ids: &[BlobId]) -> Vec<(PackId, Vec<PackEntry>)> {
    ids.chunks(PER_PACK)
        .enumerate()
        .map(|(p, chunk)| {
            let mut pack = [0u8; 32];
            pack[..8].copy_from_slice(&(p as u64).to_le_bytes());
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, id)| PackEntry {
                    ty: ObjectType::Data,
                    id: *id,
                    offset: (i as u32) << 21,
                    length: 1 << 21,
                    raw_length: 1 << 21,
                })
                .collect();
            (PackId(pack), entries)
        })
        .collect()
}

static PACKS: LazyLock<Vec<(PackId, Vec<PackEntry>)>> =
    LazyLock::new(|| packs(&ids(size(BLOBS, 1 << 14), 6)));

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    let mut index = Index::default();
    for (pack, entries) in PACKS.iter() {
        index.add_pack(*pack, entries);
    }
    index
});

/// Every id in the index, shuffled.
fn hits() -> Vec<BlobId> {
    let mut ids: Vec<BlobId> = PACKS
        .iter()
        .flat_map(|p| p.1.iter().map(|e| e.id))
        .collect();
    let mut rng = Rng::new(7);
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.next() as usize % (i + 1));
    }
    ids
}

/// As many ids that are not in the index.
fn misses() -> Vec<BlobId> {
    ids(PACKS.len() * PER_PACK, 8)
}

/// Each timed call looks up the next PROBES ids of `probes`: lookups go
/// to memory no earlier call warmed, like a backup's chunk ids.
fn probe(bencher: Bencher, probes: &[BlobId], lookup: impl Fn(&BlobId) -> bool) {
    let mut at = 0;
    bencher.counter(ItemsCount::new(PROBES)).bench_local(|| {
        let batch = &probes[at..at + PROBES];
        at = (at + PROBES) % probes.len();
        batch.iter().filter(|id| lookup(black_box(id))).count()
    });
}

/// A chunk the repository has: an unchanged file not in the files cache.
#[divan::bench]
fn contains_hit(bencher: Bencher) {
    let index = &*INDEX;
    probe(bencher, &hits(), |id| index.contains(id));
}

/// A new chunk: the common case of a first backup.
#[divan::bench]
fn contains_miss(bencher: Bencher) {
    let index = &*INDEX;
    probe(bencher, &misses(), |id| index.contains(id));
}

/// Where a blob lives, as `read_blob` asks.
#[divan::bench]
fn get_hit(bencher: Bencher) {
    let index = &*INDEX;
    probe(bencher, &hits(), |id| index.get(id).is_some());
}

/// 1M blobs into an empty index, pack by pack.
#[divan::bench(sample_count = 5)]
fn insert_1m(bencher: Bencher) {
    let packs = &*PACKS;
    bencher
        .counter(ItemsCount::new(
            packs.iter().map(|p| p.1.len()).sum::<usize>(),
        ))
        .with_inputs(Index::default)
        .bench_local_values(|mut index| {
            for (pack, entries) in packs {
                index.add_pack(*pack, entries);
            }
            index
        });
}
