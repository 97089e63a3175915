//! Chunk ids: BLAKE3 keyed by the repository's id key (encrypted and
//! authenticated repositories) or plain BLAKE3 (`none`), as `Dedup::store`
//! computes them.

use crate::data::{KIB, MIB, random};
use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use strata::crypto::{Cipher, Mode, ObjectType, RepoKeys};

const SIZES: [usize; 3] = [4 * KIB, 64 * KIB, 2 * MIB];

#[divan::bench(args = SIZES)]
fn keyed_id(bencher: Bencher, size: usize) {
    let keys = RepoKeys::from_master(Mode::Repokey, Some(Cipher::Aes256Gcm), &[7; 64]);
    let data = random(size, 2);
    bencher
        .counter(BytesCount::of_slice(&data))
        .bench(|| keys.blob_id(ObjectType::Data, black_box(&data)));
}

#[divan::bench(args = SIZES)]
fn plain_id(bencher: Bencher, size: usize) {
    let keys = RepoKeys::unkeyed([7; 32]);
    let data = random(size, 2);
    bencher
        .counter(BytesCount::of_slice(&data))
        .bench(|| keys.blob_id(ObjectType::Data, black_box(&data)));
}
