//! A `create` worker filling one 16 MiB pack in memory (no backend, no
//! disk): each blob is compressed straight into the pack after room for
//! its envelope header and encrypted in place, then the pack's header is
//! sealed and the pack id (BLAKE3 of the whole pack) computed. Writing
//! the pack out is the backend's cost, not measured here.

use crate::data::{KIB, MIB, size, text};
use divan::Bencher;
use divan::counter::BytesCount;
use strata::compress::{Compression, Compressor};
use strata::crypto::{Cipher, Mode, ObjectType, RepoKeys, Sealer};
use strata::id::BlobId;
use strata::repo::pack::PackBuilder;

const PACK: usize = 16 * MIB;
/// Blob sizes: the default average chunk, and small files.
const BLOBS: [usize; 2] = [64 * KIB, 2 * MIB];

#[divan::bench(consts = BLOBS, args = ["none", "zstd,1"], sample_count = 20)]
fn seal_16mib_pack<const N: usize>(bencher: Bencher, spec: &str) {
    let keys = RepoKeys::from_master(Mode::Repokey, Some(Cipher::Aes256Gcm), &[7; 64]);
    let sealer = Sealer::new(keys).unwrap();
    let compression = Compression::parse(spec).unwrap();
    let data = text(size(PACK, 256 * KIB), 5);
    let blobs: Vec<(BlobId, &[u8])> = data
        .chunks(size(N, 64 * KIB))
        .map(|b| (sealer.blob_id(ObjectType::Data, b), b))
        .collect();
    let head = sealer.envelope_header_len();
    // As `BlobWriter`: a pack buffer reserved once for a pack plus its
    // largest blob, reused from one pack to the next.
    let room = PACK + 8 * MIB + (1 << 16);
    let mut buf = Vec::new();
    let mut ctx = Compressor::default();
    bencher
        .counter(BytesCount::of_slice(&data))
        .bench_local(|| {
            let mut pack = PackBuilder::with_buffer(std::mem::take(&mut buf), room);
            for (id, blob) in &blobs {
                pack.add_with(ObjectType::Data, *id, blob.len() as u32, |buf| {
                    let start = buf.len();
                    buf.resize(start + head, 0);
                    compression.compress_into(blob, buf, &mut ctx);
                    sealer.seal_in_place(ObjectType::Data, &id.0, buf, start)
                })
                .unwrap();
            }
            let (id, bytes, _) = pack.finish(&sealer).unwrap();
            buf = bytes.into_buffer();
            id
        });
}
