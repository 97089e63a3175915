//! The backend contract (src/backend/mod.rs), checked the same way on every
//! store: a local directory here, a Garage cluster in s3.rs.

use std::sync::Arc;
use strata::backend::{Backend, FileKind};
use strata::error::Error;

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

fn pseudo_random(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn named(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Runs the whole contract against an empty location. `many` files are
/// listed at once (over 1000 tests an S3 store's pagination).
pub fn check_backend(b: Arc<dyn Backend>, many: usize) {
    // create: on an empty location, then never again
    b.create().unwrap();
    assert!(b.list(FileKind::Config).unwrap().is_empty());
    b.write(FileKind::Config, "config", b"config v1").unwrap();
    assert!(matches!(b.create(), Err(Error::RepositoryExists(_))));
    let listed = b.list(FileKind::Config).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].size), ("config", 9));

    // write-new files: never replaced by other bytes (the same bytes again
    // are store-dependent: S3 accepts them, as a retried PUT needs)
    b.write(FileKind::Manifest, "0000000000000001", b"generation one")
        .unwrap();
    let err = b
        .write(FileKind::Manifest, "0000000000000001", b"other bytes!!!")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{err}"
    );
    assert_eq!(
        b.read(FileKind::Manifest, "0000000000000001").unwrap(),
        b"generation one"
    );
    assert!(b.write(FileKind::Config, "config", b"config v2!").is_err());
    assert_eq!(b.read(FileKind::Config, "config").unwrap(), b"config v1");

    // packs: content-addressed, ranges, a big one (multipart on S3)
    let small = pseudo_random(1, 100_000);
    let big = pseudo_random(2, 20 * 1024 * 1024 + 12_345);
    for data in [&small, &big] {
        b.write(FileKind::Pack, &named(data), data).unwrap();
        b.write(FileKind::Pack, &named(data), data).unwrap(); // retried
        assert_eq!(&b.read(FileKind::Pack, &named(data)).unwrap(), data);
    }
    let packs = b.list(FileKind::Pack).unwrap();
    assert_eq!(packs.len(), 2, "{packs:?}");
    for data in [&small, &big] {
        let f = packs.iter().find(|f| f.name == named(data)).unwrap();
        assert_eq!(f.size, data.len() as u64);
        assert!(f.modified > 1_700_000_000, "{f:?}");
    }
    let off = 9 * 1024 * 1024 - 7; // across the first part boundary
    assert_eq!(
        b.read_range(FileKind::Pack, &named(&big), off as u64, 1_000_000)
            .unwrap(),
        &big[off..off + 1_000_000]
    );
    assert_eq!(
        b.read_range(FileKind::Pack, &named(&small), 99_990, 10)
            .unwrap(),
        &small[99_990..]
    );
    assert!(
        b.read_range(FileKind::Pack, &named(&small), 99_990, 11)
            .is_err(),
        "a read past the end must fail, not come back short"
    );

    // kinds do not leak into each other's listings
    b.write(FileKind::Key, "k1", b"key one").unwrap();
    b.write(FileKind::Lock, "x-0011223344556677", b"{}")
        .unwrap();
    let names = |k| -> Vec<String> {
        let mut v: Vec<String> = b.list(k).unwrap().into_iter().map(|f| f.name).collect();
        v.sort();
        v
    };
    assert_eq!(names(FileKind::Key), ["k1"]);
    assert_eq!(names(FileKind::Lock), ["x-0011223344556677"]);
    assert_eq!(names(FileKind::Manifest), ["0000000000000001"]);
    assert!(names(FileKind::Index).is_empty());

    // many files: every one listed once (pagination)
    let written: Vec<String> = std::thread::scope(|s| {
        let per = many.div_ceil(8);
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let b = b.clone();
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in (t * per)..((t + 1) * per).min(many) {
                        let data = format!("index file {i}").into_bytes();
                        b.write(FileKind::Index, &named(&data), &data).unwrap();
                        out.push(named(&data));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut expected = written.clone();
    expected.sort();
    assert_eq!(names(FileKind::Index), expected);

    // delete: gone for every call; a missing file is not an error
    b.delete(FileKind::Lock, "x-0011223344556677").unwrap();
    b.delete(FileKind::Lock, "x-0011223344556677").unwrap();
    assert!(!b.exists(FileKind::Lock, "x-0011223344556677").unwrap());
    assert!(b.exists(FileKind::Key, "k1").unwrap());
    let err = b.read(FileKind::Lock, "x-0011223344556677").unwrap_err();
    assert!(is_not_found(&err), "{err}");
    let err = b
        .read_range(FileKind::Pack, &named(b"never written"), 0, 10)
        .unwrap_err();
    assert!(is_not_found(&err), "{err}");

    // names that could escape their place are refused before any request
    for bad in ["../config", "a/b", ".tmp-x", "", "UPPER"] {
        assert!(b.write(FileKind::Key, bad, b"x").is_err(), "{bad}");
        assert!(b.read(FileKind::Key, bad).is_err(), "{bad}");
    }
    assert_eq!(names(FileKind::Key), ["k1"]);
}

#[test]
fn a_local_directory_keeps_the_backend_contract() {
    let dir = tempfile::tempdir().unwrap();
    let b = strata::backend::open_location(
        &dir.path().join("repo").display().to_string(),
        true,
        "strata",
        None,
    )
    .unwrap();
    check_backend(b, 1100);
}
