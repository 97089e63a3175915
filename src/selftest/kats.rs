//! The known-answer tests and their pinned answers (computed on x86_64).
//! Each answer is what is written to disk, or a BLAKE3 digest of it
//! (`len digest`), so any change in a byte is a failure.

use super::{Kat, log_text, pseudo_random};
use crate::archive::Archive;
use crate::archive::item::{ChunkRef, ITEMS_CHUNKER, Item, KIND_FILE};
use crate::chunker::{Chunker, ChunkerParams};
use crate::compress::{Compression, decompress};
use crate::crypto::keyfile::{KdfParams, KeyFile, derive_kek};
use crate::crypto::{Cipher, Mode, ObjectType, RepoKeys, Sealer};
use crate::id::{BlobId, PackId};
use crate::repo::manifest::{self, ArchiveRef, ArchiveStats, Manifest};
use crate::repo::{index, pack};
use serde_bytes::ByteBuf;

type Answer = Result<String, String>;

pub(super) static ALL: &[Kat] = &[
    Kat {
        name: "blake3 hash",
        want: "a1246fcd6fc368c736d9add5903721d594f489f0315a94e4f8cac22062d88631",
        run: || Ok(blake3::hash(&input()).to_hex().to_string()),
    },
    Kat {
        name: "blake3 keyed hash",
        want: "26da4093853014e1618e75a66015d3d411b67f77c5aff1ab5a9e95b36a575b7d",
        run: || {
            Ok(blake3::keyed_hash(&[0x42; 32], &input())
                .to_hex()
                .to_string())
        },
    },
    Kat {
        name: "subkey derivation (blake3 derive_key)",
        want: "160 687b5d3a58f5361254da0460fb6b2068",
        run: subkeys,
    },
    Kat {
        name: "chunk id (keyed blake3)",
        want: "42dfecd8abf4ce85e139abf8c180a683b3da3a09a2e85ae65d857b657bcfec7f",
        run: || Ok(keys(None).blob_id(ObjectType::Data, &input()).to_hex()),
    },
    Kat {
        name: "metadata id (keyed blake3)",
        want: "49b16f43190028643b9e380808a00acf311e683ba37065c7a37d3261be2945d2",
        run: || Ok(keys(None).blob_id(ObjectType::Items, &input()).to_hex()),
    },
    Kat {
        name: "aes-256-gcm envelope",
        want: "5182 90d7040f95cb6f517794c3128f2984aa",
        run: || envelope(Mode::Repokey, Some(Cipher::Aes256Gcm)),
    },
    Kat {
        name: "chacha20-poly1305 envelope",
        want: "5182 695bcf8fd14ed9c5e8ea65d9af2e3ce1",
        run: || envelope(Mode::Keyfile, Some(Cipher::Chacha20Poly1305)),
    },
    Kat {
        name: "authenticated (keyed mac) envelope",
        want: "5166 efd8b844f5881c5ff3970ce3244ffc40",
        run: || envelope(Mode::Authenticated, None),
    },
    Kat {
        name: "unencrypted (checksum) envelope",
        want: "5166 5492a472fb2e7f5cfb33a341dd1cc1c0",
        run: || envelope(Mode::None, None),
    },
    Kat {
        name: "argon2id (1 MiB, 2 passes)",
        want: "808d725fb2bbd52ed28b25c6a0ac8d8c7339fe71a67a8ae9cbd47f3d41533b1f",
        run: argon2id,
    },
    Kat {
        name: "key file (argon2id + xchacha20-poly1305)",
        want: "repokey chacha20-poly1305 64 dfc529fde570a2892d23b9faa67a63d2",
        run: key_file,
    },
    Kat {
        name: "chunker cut points (4K,16K,64K)",
        want: "41203,7791,18354,12367,5530,7376,14210,20657,20336,17308,7768,25393,4143,16713,8149,23300,27221,23018,44873,16457,10255,20045,27075,16177,20793,18217,9111,15692,20602,4154",
        run: || {
            let p = ChunkerParams::parse("4K,16K,64K").map_err(|e| e.to_string())?;
            cuts(p, &pseudo_random(3, 512 * 1024))
        },
    },
    Kat {
        name: "chunker cut points (items stream)",
        want: "245200,133123,270573,209052,139612,210456,102663,139223,175027,164678,254507,53038",
        run: || cuts(ITEMS_CHUNKER, &pseudo_random(4, 2 * 1024 * 1024)),
    },
    Kat {
        name: "lz4",
        // lz4_flex sizes its hash table by the pointer width, so 32-bit
        // builds compress differently (both forms are valid LZ4, and each
        // build decompresses the other's: see "known compressed forms").
        // The 32-bit answer was computed by the armv7 build under qemu.
        want: if cfg!(target_pointer_width = "64") {
            "type 1 27470 403fc0aa8cb55a586b924ad3f6fc6ddb"
        } else {
            "type 1 28236 c11f7cc9138f994656386b024e6b8c59"
        },
        run: || compressed("lz4"),
    },
    Kat {
        name: "zstd,3",
        want: "type 2 16211 c8ad88392a709bb95b2ca7274542f2ec",
        run: || compressed("zstd,3"),
    },
    Kat {
        name: "zlib,6",
        want: "type 4 14818 2ef47b7e55aefe2af4ec70cd0f560ba3",
        run: || compressed("zlib,6"),
    },
    Kat {
        name: "xz,1",
        // The dictionary is capped at the input's size (64 KiB here) since
        // 2026-12; before, preset 1's 1 MiB: "type 3 15921 f9e8329…".
        want: "type 3 15925 afc9347591bdafaab92c4aa0dbc934b9",
        run: || compressed("xz,1"),
    },
    Kat {
        name: "known compressed forms decompress",
        want: "lz4 zstd,3 zlib,6 xz,1",
        run: known_forms,
    },
    Kat {
        name: "auto,zstd stores incompressible data",
        want: "type 0 16385 7398227593f9a969e9ada80dc5a56c63",
        run: || compressed_input("auto,zstd,3", &pseudo_random(6, 16 * 1024)),
    },
    Kat {
        name: "index file encoding",
        want: "220 3ef4a8927261c3f019fc852294004d7f",
        run: index_file,
    },
    Kat {
        name: "pack file encoding",
        want: "a0c5b8c6 4267 a0c5b8c615376a79e6db139c52e438c0",
        run: pack_file,
    },
    Kat {
        name: "manifest encoding",
        want: "00000001099511627781 0500000000010000 342 fb26725c82d226dfc2f094dbcb4acc9a",
        run: manifest_encoding,
    },
    Kat {
        name: "item encoding",
        want: "244 242dcebcb00343e61fb2d37d6fcf46a5",
        run: item_encoding,
    },
    Kat {
        name: "archive encoding",
        want: "377 54b785870219caeee7577eddfe54ddb1",
        run: archive_encoding,
    },
];

fn input() -> Vec<u8> {
    // Large enough for BLAKE3's SIMD paths (many 1 KiB chunks at once).
    pseudo_random(1, 100_003)
}

fn master() -> Vec<u8> {
    pseudo_random(2, 64)
}

fn keys(cipher: Option<Cipher>) -> RepoKeys {
    RepoKeys::from_master(Mode::Repokey, cipher, &master())
}

/// `LEN DIGEST`: a long answer in a few characters.
fn digest(bytes: &[u8]) -> String {
    format!("{} {}", bytes.len(), &blake3::hash(bytes).to_hex()[..32])
}

fn err(e: crate::Error) -> String {
    e.to_string()
}

fn subkeys() -> Answer {
    Ok(digest(&keys(None).derived_secrets().concat()))
}

/// Two envelopes of a fixed session (fixed session subkey and nonces), and
/// proof that another session opens them and refuses a flipped bit.
fn envelope(mode: Mode, cipher: Option<Cipher>) -> Answer {
    let keys = RepoKeys::from_master(mode, cipher, &master());
    let sealer = Sealer::with_session(keys.clone(), [7; 16]);
    let reader = Sealer::new(keys).map_err(err)?;
    let id = [9; 32];
    let mut all = Vec::new();
    for payload in [pseudo_random(7, 100), log_text(8, 5000)] {
        let env = sealer.seal(ObjectType::Data, &id, &payload).map_err(err)?;
        let back = reader
            .open(ObjectType::Data, &id, env.clone(), &|| "selftest".into())
            .map_err(err)?;
        if back != payload {
            return Err("opened envelope differs from what was sealed".into());
        }
        let mut bad = env.clone();
        bad[env.len() / 2] ^= 0x10;
        if reader
            .open(ObjectType::Data, &id, bad, &|| "selftest".into())
            .is_ok()
        {
            return Err("a modified envelope was accepted".into());
        }
        all.extend_from_slice(&env);
    }
    Ok(digest(&all))
}

fn small_kdf() -> KdfParams {
    KdfParams {
        algorithm: "argon2id".into(),
        memory_kib: 1024,
        iterations: 2,
        parallelism: 1,
        salt: hex::encode(pseudo_random(9, 16)),
    }
}

fn argon2id() -> Answer {
    Ok(hex::encode(
        derive_kek(&small_kdf(), b"correct horse battery staple").map_err(err)?,
    ))
}

/// A key file sealed on x86_64 (small Argon2id cost) must unlock here.
const PINNED_KEY_FILE: &str = r#"{"version":1,"repository_id":"73656c6674657374","created":"2026-12-07T06:19:44.550683005+00:00","kdf":{"algorithm":"argon2id","memory_kib":1024,"iterations":2,"parallelism":1,"salt":"0729ccac81f8e2d10ff3b3b37f91d0e4"},"sealed":"17190bc159c17ae8596f9d29eccef3c4fde5660b371c0d6dc71b1afcd05d58a22c078965b00485a7980c49fc47f8c559a5043f1e270e23113d045407bfe5483b9ddab1307b3fd598fdc877df328f94134d48d2746e2e0bd9615ca3a87907cc612b2dd63413e820c0dc27f476fe581238cea99f7ce22d153a93a2d1c2536385bbfdc4da7fbdcc29df2ec4b395a6922786ee86f6d33ec258bebab63d19d6a14393a721ec3f42bb5ae4af085e719fd75dc1835312b35f60efff9ef29efe8de822be149a43866437d5708d59143b93eea14fdd1f892f1fdf6a243f527d5f643380de1293e5152fc1b23bf80b16a183be8678ec2f96a2cdb0a987604027e7de913d3418a923b8ceec"}"#;

fn key_file() -> Answer {
    let kf = KeyFile::from_json(PINNED_KEY_FILE.as_bytes(), "selftest").map_err(err)?;
    let payload = kf.unlock(b"selftest", "selftest").map_err(err)?;
    Ok(format!(
        "{} {} {}",
        payload.mode.name(),
        payload.cipher.map(|c| c.name()).unwrap_or("-"),
        digest(&payload.master_bytes().map_err(err)?)
    ))
}

fn cuts(p: ChunkerParams, data: &[u8]) -> Answer {
    let c = Chunker::new(p, &keys(None).chunker_seed);
    let mut lens = Vec::new();
    for chunk in c.chunks(data) {
        lens.push(chunk.map_err(|e| e.to_string())?.len().to_string());
    }
    Ok(lens.join(","))
}

fn compressed(spec: &str) -> Answer {
    compressed_input(spec, &log_text(5, 64 * 1024))
}

/// Compressed forms of [`known_input`] made on x86_64 (src/selftest/known/):
/// whatever this build's compressors produce, it must read these.
pub(super) const KNOWN_FORMS: [(&str, &[u8]); 4] = [
    ("lz4", include_bytes!("known/lz4.bin")),
    ("zstd,3", include_bytes!("known/zstd.bin")),
    ("zlib,6", include_bytes!("known/zlib.bin")),
    ("xz,1", include_bytes!("known/xz.bin")),
];

pub(super) fn known_input() -> Vec<u8> {
    log_text(12, 8 * 1024)
}

fn known_forms() -> Answer {
    let want = known_input();
    let mut names = Vec::new();
    for (name, form) in KNOWN_FORMS {
        let got = decompress(form.to_vec()).map_err(|e| format!("{name}: {e}"))?;
        if got != want {
            return Err(format!("{name}: decompressed bytes differ from the input"));
        }
        names.push(name);
    }
    Ok(names.join(" "))
}

/// The compressed form (it must not change: dedup across machines and
/// `check` depend on it only loosely, but a change means a different
/// library) and the round trip.
fn compressed_input(spec: &str, data: &[u8]) -> Answer {
    let c = Compression::parse(spec).map_err(err)?;
    let packed = c.compress(data);
    let back = decompress(packed.clone()).map_err(err)?;
    if back != data {
        return Err("decompressed bytes differ from the input".into());
    }
    Ok(format!(
        "type {} {}",
        packed.first().copied().unwrap_or(255),
        digest(&packed)
    ))
}

/// 32-bit safety: every field near its type's limit survives the trip.
fn index_file() -> Answer {
    let e = pack::PackEntry {
        ty: ObjectType::Data,
        id: BlobId([5; 32]),
        offset: u32::MAX - 100,
        length: 100,
        raw_length: u32::MAX,
    };
    let packs = vec![
        (PackId([1; 32]), vec![e, pack::PackEntry { offset: 0, ..e }]),
        (
            PackId([2; 32]),
            vec![pack::PackEntry {
                ty: ObjectType::Items,
                ..e
            }],
        ),
    ];
    let enc = index::encode(&packs);
    if index::decode(&enc[1..], "selftest").map_err(err)? != packs {
        return Err("index file does not decode to what was encoded".into());
    }
    Ok(digest(&enc))
}

fn pack_file() -> Answer {
    let sealer = Sealer::new(RepoKeys::unkeyed([5; 32])).map_err(err)?;
    let mut b = pack::PackBuilder::default();
    for (i, data) in [pseudo_random(10, 3000), log_text(11, 2000)]
        .iter()
        .enumerate()
    {
        let id = sealer.blob_id(ObjectType::Data, data);
        // lz4, the default when this answer was pinned.
        let payload = Compression::parse("lz4").map_err(err)?.compress(data);
        let sealed = sealer
            .seal(ObjectType::Data, &id.0, &payload)
            .map_err(err)?;
        b.add(ObjectType::Data, id, 1000 + i as u32, &sealed);
    }
    let (id, bytes, entries) = b.finish(&sealer).map_err(err)?;
    if pack::read_header(&sealer, &bytes, "selftest").map_err(err)? != entries {
        return Err("pack header does not read back".into());
    }
    Ok(format!("{} {}", id.short(), digest(&bytes)))
}

fn big_stats() -> ArchiveStats {
    ArchiveStats {
        files: (1 << 33) + 1,
        original_size: u64::MAX - 1,
        compressed_size: 5 << 40,
        deduplicated_size: 1 << 32,
        chunks: u32::MAX as u64 + 7,
        unique_chunks: 3,
    }
}

fn manifest_encoding() -> Answer {
    let generation = (1u64 << 40) + 5;
    let m = Manifest {
        version: manifest::MANIFEST_VERSION,
        generation,
        timestamp: "2026-11-25T01:02:03.456789+00:00".into(),
        archives: vec![ArchiveRef {
            name: "pi-home-2026-11-25".into(),
            id: BlobId([0xab; 32]),
            time: "2026-11-25T01:00:00+00:00".into(),
            hostname: "raspberrypi".into(),
            username: "strata".into(),
            stats: big_stats(),
        }],
    };
    let enc = m.encode().map_err(err)?;
    if Manifest::decode(&enc, "selftest").map_err(err)? != m {
        return Err("manifest does not decode to what was encoded".into());
    }
    Ok(format!(
        "{} {} {}",
        manifest::file_name(generation),
        hex::encode(&manifest::aad_id(generation)[..8]),
        digest(&enc)
    ))
}

fn item_encoding() -> Answer {
    let item = Item {
        path: ByteBuf::from(b"home/pi/caf\xe9/big.img".to_vec()),
        kind: KIND_FILE,
        mode: 0o4755,
        uid: u32::MAX - 1,
        gid: 1000,
        user: Some("pi".into()),
        group: None,
        mtime: -1_000_000_000_123,
        atime: i64::MAX,
        ctime: 1_764_000_000_123_456_789,
        size: 5 << 30,
        chunks: vec![
            ChunkRef(BlobId([1; 32]), u32::MAX),
            ChunkRef(BlobId([2; 32]), 7),
        ],
        target: None,
        link: None,
        rdev: Some((1 << 40) + 3),
        xattrs: vec![(
            ByteBuf::from(b"user.k".to_vec()),
            ByteBuf::from(vec![0, 255]),
        )],
    };
    let enc = rmp_serde::to_vec_named(&item).map_err(|e| e.to_string())?;
    let back: Item = rmp_serde::from_slice(&enc).map_err(|e| e.to_string())?;
    if back != item {
        return Err("item does not decode to what was encoded".into());
    }
    Ok(digest(&enc))
}

fn archive_encoding() -> Answer {
    let a = Archive {
        version: crate::archive::ARCHIVE_VERSION,
        name: "knode01-2026-11-25".into(),
        hostname: "knode01".into(),
        username: "root".into(),
        comment: String::new(),
        command_line: vec!["strata".into(), "create".into()],
        time_start: "2026-11-25T01:00:00+00:00".into(),
        time_end: "2026-11-25T01:07:00+00:00".into(),
        items: vec![BlobId([3; 32]), BlobId([4; 32])],
        stats: big_stats(),
        imported_from: None,
    };
    let enc = a.encode().map_err(err)?;
    let back: Archive = rmp_serde::from_slice(&enc).map_err(|e| e.to_string())?;
    if back != a {
        return Err("archive does not decode to what was encoded".into());
    }
    Ok(digest(&enc))
}

#[cfg(test)]
pub(super) fn make_pinned_key_file() -> String {
    use crate::crypto::keyfile::KeyPayload;
    let p = KeyPayload {
        repository_id: "73656c6674657374".into(),
        mode: Mode::Repokey,
        cipher: Some(Cipher::Chacha20Poly1305),
        master: hex::encode(master()),
    };
    let kdf = small_kdf();
    let kf = KeyFile::seal(
        &p,
        b"selftest",
        (kdf.memory_kib, kdf.iterations, kdf.parallelism),
    )
    .unwrap();
    serde_json::to_string(&kf).unwrap()
}
