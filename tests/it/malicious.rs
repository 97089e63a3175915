//! Archives crafted by an attacker must never write outside the target.

use crate::util::*;
use serde_bytes::ByteBuf;
use std::sync::Arc;
use strata::archive::item::{
    ChunkRef, Dedup, ITEMS_COMPRESSION, Item, ItemsWriter, KIND_DIR, KIND_FILE, KIND_SYMLINK,
};
use strata::archive::{ARCHIVE_VERSION, Archive};
use strata::backend::local::LocalBackend;
use strata::compress::Compression;
use strata::crypto::ObjectType;
use strata::repo::client::ClientDirs;
use strata::repo::manifest::{ArchiveRef, ArchiveStats};
use strata::repo::{OpenOptions, Passphrase, Repository};

struct Pass;
impl Passphrase for Pass {
    fn get(&self, _: bool) -> strata::Result<Vec<u8>> {
        Ok(b"test passphrase".to_vec())
    }
}

fn item(path: &[u8], kind: u8) -> Item {
    Item {
        path: ByteBuf::from(path.to_vec()),
        kind,
        mode: 0o644,
        mtime: 1,
        atime: 1,
        ctime: 1,
        ..Item::default()
    }
}

/// Writes an archive with exactly these items, file items getting `content`.
fn forge(env: &Env, name: &str, items: Vec<Item>, content: &[u8]) {
    let backend = Arc::new(LocalBackend::new(env.path("repo")));
    let dirs = ClientDirs {
        cache: env.path("cache"),
        keys: env.path("keys"),
    };
    let opts = OpenOptions {
        lock: strata::repo::LockMode::Exclusive,
        lock_wait: std::time::Duration::from_secs(5),
        passphrase: &Pass,
        dirs,
        load_index: true,
        repair: false,
        lock_notice: None,
    };
    let mut repo = Repository::open(backend, &opts).unwrap();
    let writer = repo.writer(1);
    let mut dedup = Dedup {
        repo: &repo,
        writer: &writer,
        pending: Default::default(),
        dry_run: false,
    };
    let (chunk, _) = dedup
        .store(ObjectType::Data, content, Compression::default())
        .unwrap();
    let mut iw = ItemsWriter::new(&repo.sealer().keys().chunker_seed);
    for mut it in items {
        if it.kind == KIND_FILE && it.link.is_none() {
            it.size = content.len() as u64;
            it.chunks = vec![ChunkRef(chunk, content.len() as u32)];
        }
        iw.push(&it, &mut |d| {
            Ok(dedup.store(ObjectType::Items, d, ITEMS_COMPRESSION)?.0)
        })
        .unwrap();
    }
    let (ids, _) = iw
        .finish(&mut |d| Ok(dedup.store(ObjectType::Items, d, ITEMS_COMPRESSION)?.0))
        .unwrap();
    let now = chrono::Utc::now().to_rfc3339();
    let archive = Archive {
        version: ARCHIVE_VERSION,
        name: name.into(),
        hostname: "evil".into(),
        username: "evil".into(),
        comment: String::new(),
        command_line: vec![],
        time_start: now.clone(),
        time_end: now.clone(),
        items: ids,
        stats: ArchiveStats::default(),
        imported_from: None,
    };
    let data = archive.encode().unwrap();
    let (id, _) = dedup
        .store(ObjectType::Archive, &data, ITEMS_COMPRESSION)
        .unwrap();
    drop(dedup);
    let summary = writer.finish().unwrap();
    repo.absorb(&summary);
    let mut archives = repo.manifest().archives.clone();
    archives.push(ArchiveRef {
        name: name.into(),
        id,
        time: now,
        hostname: "evil".into(),
        username: "evil".into(),
        stats: ArchiveStats::default(),
    });
    assert!(repo.write_manifest(archives).unwrap().is_empty());
}

#[test]
fn path_traversal_symlink_and_hardlink_tricks_stay_inside() {
    let env = Env::new();
    env.init(&[]);
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut symlink_out = item(b"link", KIND_SYMLINK);
    symlink_out.target = Some(ByteBuf::from(outside.to_str().unwrap().as_bytes().to_vec()));
    let mut dir_then_link = item(b"d", KIND_SYMLINK);
    dir_then_link.target = Some(ByteBuf::from(outside.to_str().unwrap().as_bytes().to_vec()));
    let mut hl_escape = item(b"hl-escape", KIND_FILE);
    hl_escape.link = Some(ByteBuf::from(b"../../../etc/passwd".to_vec()));
    let mut hl_missing = item(b"hl-missing", KIND_FILE);
    hl_missing.link = Some(ByteBuf::from(b"never-extracted".to_vec()));
    let items = vec![
        item(b"../escape-dotdot", KIND_FILE),
        item(b"/tmp/escape-absolute", KIND_FILE),
        item(b"a/../../escape-middle", KIND_FILE),
        item(b"./dot", KIND_FILE),
        item(b"ok.txt", KIND_FILE),
        symlink_out,
        item(b"link/pwned-through-symlink", KIND_FILE),
        item(b"d", KIND_DIR),
        dir_then_link,
        item(b"d/pwned-through-replaced-dir", KIND_FILE),
        hl_escape,
        hl_missing,
    ];
    forge(&env, "evil", items, b"attacker data\n");
    let dest = env.path("dest");
    std::fs::create_dir(&dest).unwrap();
    let out = env.run(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::evil", env.repo()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected warnings: {err}");
    assert!(err.contains("unsafe path"), "{err}");
    // the one legitimate file is there, nothing escaped
    assert_eq!(
        std::fs::read(dest.join("ok.txt")).unwrap(),
        b"attacker data\n"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through a symlink"
    );
    for p in ["escape-dotdot", "escape-middle"] {
        assert!(
            !env.path(p).exists() && !env.dir.path().parent().unwrap().join(p).exists(),
            "{p} escaped"
        );
    }
    assert!(!std::path::Path::new("/tmp/escape-absolute").exists());
    assert!(!dest.join("hl-escape").exists() && !dest.join("hl-missing").exists());
    assert_ne!(std::fs::read("/etc/passwd").unwrap(), b"attacker data\n");
    // export-tar leaves the same items out, so that GNU tar cannot be led
    // outside its target by the stream either
    let tar = env.path("evil.tar");
    let out = env.run(&[
        "export-tar",
        &format!("{}::evil", env.repo()),
        tar.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected warnings: {err}");
    assert!(err.contains("a symlink of the archive; left out"), "{err}");
    let listing = std::process::Command::new("tar")
        .arg("tf")
        .arg(&tar)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    for bad in ["..", "/tmp", "link/", "d/pwned", "hl-escape", "./dot"] {
        assert!(
            !names.lines().any(|l| l.contains(bad)),
            "{bad} in:\n{names}"
        );
    }
    assert!(names.lines().any(|l| l == "ok.txt"), "{names}");
    let dest2 = env.path("dest2");
    std::fs::create_dir(&dest2).unwrap();
    std::process::Command::new("tar")
        .arg("xf")
        .arg(&tar)
        .arg("-C")
        .arg(&dest2)
        .status()
        .unwrap();
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}
