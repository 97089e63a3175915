//! Sealing and opening data blobs with each cipher of encrypted
//! repositories (per-session subkey, counter nonce).

use crate::data::{KIB, MIB, random, size};
use divan::Bencher;
use divan::counter::BytesCount;
use strata::crypto::{Cipher, Mode, ObjectType, RepoKeys, Sealer, TAG_LEN};

const CIPHERS: [&str; 2] = ["aes-256-gcm", "chacha20-poly1305"];
const SIZES: [usize; 2] = [64 * KIB, 2 * MIB];
const ID: [u8; 32] = [9; 32];

fn sealer(cipher: &str) -> Sealer {
    let cipher = Cipher::parse(cipher).unwrap();
    Sealer::new(RepoKeys::from_master(Mode::Repokey, Some(cipher), &[7; 64])).unwrap()
}

/// `Sealer::seal`: copies the payload into a new envelope, then encrypts.
#[divan::bench(consts = SIZES, args = CIPHERS)]
fn seal<const N: usize>(bencher: Bencher, cipher: &str) {
    let (s, payload) = (sealer(cipher), random(size(N, 64 * KIB), 4));
    bencher
        .counter(BytesCount::of_slice(&payload))
        .bench(|| s.seal(ObjectType::Data, &ID, &payload).unwrap());
}

/// `Sealer::seal_in_place`, as a `create` worker seals into its pack.
#[divan::bench(consts = SIZES, args = CIPHERS)]
fn seal_in_place<const N: usize>(bencher: Bencher, cipher: &str) {
    let (s, payload) = (sealer(cipher), random(size(N, 64 * KIB), 4));
    let head = s.envelope_header_len();
    bencher
        .counter(BytesCount::of_slice(&payload))
        .with_inputs(|| {
            // Room for the tag, as in a pack: appending it must not move the buffer.
            let mut buf = Vec::with_capacity(head + payload.len() + TAG_LEN);
            buf.resize(head, 0);
            buf.extend_from_slice(&payload);
            buf
        })
        .bench_local_refs(|buf| s.seal_in_place(ObjectType::Data, &ID, buf, 0).unwrap());
}

/// `Sealer::open` of an envelope read from a pack.
#[divan::bench(consts = SIZES, args = CIPHERS)]
fn open<const N: usize>(bencher: Bencher, cipher: &str) {
    let (s, payload) = (sealer(cipher), random(size(N, 64 * KIB), 4));
    let env = s.seal(ObjectType::Data, &ID, &payload).unwrap();
    bencher
        .counter(BytesCount::of_slice(&payload))
        .with_inputs(|| env.clone())
        .bench_values(|env| {
            s.open(ObjectType::Data, &ID, env, &|| "bench".into())
                .unwrap()
        });
}
