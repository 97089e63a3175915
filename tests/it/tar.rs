//! import-tar / export-tar: round trips through every compression, GNU tar
//! in both directions, hostile and truncated streams.

use crate::util::*;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Odd names on top of make_tree: long (ustar prefix and pax), newline,
/// leading dash, spaces, and a deep path over 256 bytes.
fn make_odd_names(root: &Path) {
    let w = |p: &[u8], data: &[u8]| {
        let p = root.join(std::ffi::OsStr::from_bytes(p));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w(b"odd/-rf", b"leading dash\n");
    w(b"odd/with spaces and\nnewline", b"newline\n");
    w(
        &[b"odd/".to_vec(), b"n".repeat(140)].concat(),
        b"long name\n",
    );
    let deep = [
        b"odd/".to_vec(),
        [b"d".repeat(90), b"e".repeat(90), b"f".repeat(90)].join(&b'/'),
    ]
    .concat();
    w(
        &[deep.clone(), b"/".to_vec(), b"g".repeat(200)].concat(),
        b"deep\n",
    );
    std::os::unix::fs::symlink("x".repeat(150), root.join("odd/long-symlink")).unwrap();
    std::fs::hard_link(
        root.join(std::ffi::OsStr::from_bytes(
            &[b"odd/".to_vec(), b"n".repeat(140)].concat(),
        )),
        root.join("odd/hard-to-long-name"),
    )
    .unwrap();
}

fn magic(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()[..6].to_vec()
}

fn names(env: &Env, archive: &str) -> Vec<String> {
    env.ok(&["list", "--short", &format!("{}::{archive}", env.repo())])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn export_import_round_trip_keeps_everything_in_every_compression() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    make_odd_names(&src);
    env.init(&[]);
    let s = src.to_str().unwrap();
    env.ok(&["create", &format!("{}::orig", env.repo()), s]);
    let cases: [(&str, &[u8]); 4] = [
        ("t.tar", b"\0"),
        ("t.tar.gz", &[0x1f, 0x8b]),
        ("t.tar.zst", &[0x28, 0xb5, 0x2f, 0xfd]),
        ("t.tar.xz", &[0xfd, b'7', b'z', b'X', b'Z', 0]),
    ];
    for (i, (file, want_magic)) in cases.iter().enumerate() {
        let out = env.path(file);
        env.ok(&[
            "export-tar",
            &format!("{}::orig", env.repo()),
            out.to_str().unwrap(),
        ]);
        let m = magic(&out);
        if i == 0 {
            // a plain tar starts with the first member's name (src's path)
            assert_eq!(&std::fs::read(&out).unwrap()[257..263], b"ustar\0");
        } else {
            assert!(m.starts_with(want_magic), "{file}: {m:?}");
        }
        let name = format!("imp{i}");
        let json = env.ok(&[
            "import-tar",
            "--json",
            &format!("{}::{name}", env.repo()),
            out.to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["skipped"], 0, "{json}");
        // the same chunker over the same bytes: nothing new but metadata
        assert!(
            v["archive"]["stats"]["deduplicated_size"].as_u64().unwrap() < 64 * 1024,
            "{json}"
        );
        let dest = env.path(&format!("x{i}"));
        env.ok(&[
            "extract",
            "--target",
            dest.to_str().unwrap(),
            &format!("{}::{name}", env.repo()),
        ]);
        assert_same_tree(&src, &restored(&dest, &src));
    }
    // standard output and input, with borg's filter spelling
    let piped = env
        .cmd()
        .args([
            "export-tar",
            "--tar-filter",
            "zstd -19",
            &format!("{}::orig", env.repo()),
            "-",
        ])
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert!(piped.stdout.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
    env.cmd()
        .args(["import-tar", &format!("{}::stdin", env.repo()), "-"])
        .write_stdin(piped.stdout)
        .assert()
        .success();
    assert_eq!(names(&env, "stdin"), names(&env, "orig"));
}

#[test]
fn gnu_tar_reads_our_exports_and_we_read_its_pax_archives() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d/empty")).unwrap();
    make_odd_names(&src);
    std::fs::write(src.join("d/x"), random("x", 300_000)).unwrap();
    xattr::set(src.join("d/x"), "user.note", b"kept by both").unwrap();
    std::fs::hard_link(src.join("d/x"), src.join("d/x-link")).unwrap();
    mkfifo(&src.join("d/fifo"), 0o600);
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 5,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 123_456_789,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        src.join("d/x"),
        &t,
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    env.init(&["-e", "none"]);
    // GNU tar (pax format, nanosecond times, xattrs) → strata
    let gnu = env.path("gnu.tar.gz");
    let st = std::process::Command::new("tar")
        .args([
            "--format=pax",
            "--xattrs",
            "--xattrs-include=user.*",
            "-czf",
        ])
        .arg(&gnu)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    env.ok(&[
        "import-tar",
        &format!("{}::from-gnu", env.repo()),
        gnu.to_str().unwrap(),
    ]);
    let dest = env.path("x-from-gnu");
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::from-gnu", env.repo()),
    ]);
    assert_same_tree(&src, &dest);
    // strata → GNU tar
    let ours = env.path("ours.tar");
    env.ok(&[
        "export-tar",
        &format!("{}::from-gnu", env.repo()),
        ours.to_str().unwrap(),
    ]);
    let back = env.path("x-gnu");
    std::fs::create_dir(&back).unwrap();
    let out = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--same-owner", "-xpf"])
        .arg(&ours)
        .arg("-C")
        .arg(&back)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&src, &back);
}

#[test]
fn export_filters_paths_and_strips_components_like_extract() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init(&[]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    let rel = src.strip_prefix("/").unwrap().join("dir");
    let depth = rel.components().count().to_string();
    let out = env.path("part.tar");
    let json = env.ok(&[
        "export-tar",
        "--json",
        "--strip-components",
        &depth,
        &format!("{}::a", env.repo()),
        out.to_str().unwrap(),
        rel.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["compression"], "none");
    assert_eq!(
        v["tar_bytes"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );
    // dir holds small.txt, the two copies of big, text.txt, a symlink, hard-b...
    assert!(v["items"].as_u64().unwrap() >= 8, "{json}");
    env.ok(&[
        "import-tar",
        &format!("{}::part", env.repo()),
        out.to_str().unwrap(),
    ]);
    let mut got = names(&env, "part");
    got.sort();
    assert!(
        got.contains(&"small.txt".to_string()) && got.contains(&"sub/big.bin".to_string()),
        "{got:?}"
    );
    assert!(
        !got.iter()
            .any(|n| n.contains("hard-a") || n.contains("dir/")),
        "{got:?}"
    );
    let dest = env.path("x");
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::part", env.repo()),
    ]);
    // hard-b's first name (hard-a) was left out: hard-b carries the data,
    // and sub/hard-c is a hard link to it again
    assert_eq!(
        std::fs::read(dest.join("hard-b")).unwrap(),
        b"hard linked content\n"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(dest.join("hard-b")).unwrap().ino(),
        std::fs::metadata(dest.join("sub/hard-c")).unwrap().ino()
    );
}

/// A raw ustar header block, built here independently of strata's writer.
fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..265].copy_from_slice(b"ustar\x0000");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn member(tar: &mut Vec<u8>, name: &[u8], typeflag: u8, data: &[u8], link: &[u8]) {
    tar.extend(header(name, typeflag, data.len() as u64, link));
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
}

fn pax(tar: &mut Vec<u8>, records: &[u8]) {
    member(tar, b"PaxHeaders/x", b'x', records, b"");
}

#[test]
fn hostile_tar_members_are_skipped_with_one_warning_each() {
    let env = Env::new();
    env.init(&[]);
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"untouched\n").unwrap();
    let mut t = Vec::new();
    member(&mut t, b"ok-first.txt", b'0', b"fine\n", b"");
    member(
        &mut t,
        b"../../etc/passwd",
        b'0',
        b"root::0:0::/:/bin/sh\n",
        b"",
    );
    member(&mut t, b"/etc/strata-test-absolute", b'0', b"abs\n", b"");
    member(&mut t, b"a", b'2', b"", b"/");
    member(&mut t, b"a/escape", b'0', b"through the symlink\n", b"");
    member(&mut t, b"hl-out", b'1', b"", b"../outside/secret");
    member(&mut t, b"hl-missing", b'1', b"", b"not-in-archive");
    member(&mut t, b"hl-dir", b'1', b"", b"sub");
    member(&mut t, b"hl-via-symlink", b'1', b"", b"a/etc/passwd");
    // a pax header far over the limit: it and its member are skipped
    let mut huge = Vec::new();
    let rec = format!("path={}\n", "p".repeat(2 << 20));
    huge.extend(format!("{} {rec}", rec.len() + 8).as_bytes());
    pax(&mut t, &huge);
    member(&mut t, b"huge-pax-victim", b'0', b"x\n", b"");
    // a record whose length field is absurd
    pax(&mut t, b"99999999999999999999 path=evil\n");
    member(&mut t, b"bad-pax-victim", b'0', b"x\n", b"");
    member(&mut t, b"sub", b'5', b"", b"");
    member(&mut t, b"ok-last.txt", b'0', b"still imported\n", b"");
    member(&mut t, b"hl-ok", b'1', b"", b"./ok-first.txt");
    t.extend([0u8; 1024]);
    let file = env.path("evil.tar");
    std::fs::write(&file, &t).unwrap();
    let out = env.run(&[
        "import-tar",
        &format!("{}::evil", env.repo()),
        file.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("strata: warning: tar member"))
        .collect();
    assert_eq!(warnings.len(), 9, "{err}");
    for (what, why) in [
        ("../../etc/passwd", "`..`"),
        ("/etc/strata-test-absolute", "absolute path"),
        ("a/escape", "`a` is a symlink"),
        ("hl-out", "hard link to `../outside/secret`"),
        ("hl-missing", "not a regular file earlier"),
        ("hl-dir", "not a regular file earlier"),
        ("hl-via-symlink", "below `a`, a symlink of the archive"),
        ("huge-pax-victim", "over the 1048576-byte limit"),
        ("bad-pax-victim", "malformed pax header"),
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(&format!("`{what}`")) && w.contains(why)),
            "no warning for {what} ({why}):\n{err}"
        );
    }
    assert!(err.contains("9 tar members skipped"), "{err}");
    let mut got = names(&env, "evil");
    got.sort();
    assert_eq!(got, ["a", "hl-ok", "ok-first.txt", "ok-last.txt", "sub"]);
    let dest = env.path("dest");
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::evil", env.repo()),
    ]);
    assert_eq!(
        std::fs::read(outside.join("secret")).unwrap(),
        b"untouched\n"
    );
    assert!(!Path::new("/etc/strata-test-absolute").exists());
    assert_eq!(std::fs::read(dest.join("hl-ok")).unwrap(), b"fine\n");
    let mut listed: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["a", "hl-ok", "ok-first.txt", "ok-last.txt", "sub"]);
    assert_eq!(std::fs::read_link(dest.join("a")).unwrap(), Path::new("/"));
}

#[test]
fn truncated_or_damaged_streams_fail_and_commit_nothing() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), random("t", 3 << 20)).unwrap();
    std::fs::write(src.join("z-last"), b"after the big one\n").unwrap();
    env.init(&[]);
    env.ok(&[
        "create",
        &format!("{}::orig", env.repo()),
        src.to_str().unwrap(),
    ]);
    let full = env.path("full.tar");
    env.ok(&[
        "export-tar",
        &format!("{}::orig", env.repo()),
        full.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&full).unwrap();
    let gz = env.path("full.tar.gz");
    env.ok(&[
        "export-tar",
        &format!("{}::orig", env.repo()),
        gz.to_str().unwrap(),
    ]);
    let gz_bytes = std::fs::read(&gz).unwrap();
    // the end of the last member, before the two zero blocks
    let no_end = bytes.len() - 1024;
    let mut corrupt = bytes.clone();
    corrupt[bytes.len() - 1024 - 512 - 512 + 10] ^= 0xff; // the last header
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("mid-data", bytes[..1 << 20].to_vec(), "truncated at byte"),
        (
            "mid-header",
            bytes[..no_end - 1024 + 100].to_vec(),
            "inside a header",
        ),
        (
            "no-end-blocks",
            bytes[..no_end].to_vec(),
            "no end-of-archive blocks",
        ),
        (
            "gzip-cut",
            gz_bytes[..gz_bytes.len() / 2].to_vec(),
            "incomplete deflate stream; nothing was imported",
        ),
        ("bad-checksum", corrupt, "bad header checksum"),
        ("empty", Vec::new(), "empty"),
        (
            "not-tar",
            b"hello, I am not a tar file at all".repeat(40),
            "not a tar archive",
        ),
    ];
    let before = env.ok(&["list", "--short", &env.repo()]);
    for (name, data, why) in cases {
        let f = env.path(&format!("{name}.tar"));
        std::fs::write(&f, &data).unwrap();
        let out = env.run(&[
            "import-tar",
            &format!("{}::{name}", env.repo()),
            f.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("strata: error:"))
            .collect();
        assert_eq!(lines.len(), 1, "{name}: {err}");
        assert!(lines[0].contains(why), "{name}: {err}");
    }
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), before);
    env.ok(&["check", &env.repo()]);
    // --dry-run reads the whole stream and commits nothing either
    let json = env.ok(&[
        "import-tar",
        "--dry-run",
        "--json",
        &format!("{}::dry", env.repo()),
        full.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["tar_bytes"].as_u64().unwrap(),
        bytes.len() as u64,
        "{json}"
    );
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), before);
    // the complete stream still imports, reusing the data left behind
    env.ok(&[
        "import-tar",
        &format!("{}::whole", env.repo()),
        full.to_str().unwrap(),
    ]);
    let dest = env.path("x");
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::whole", env.repo()),
    ]);
    assert_same_tree(&src, &restored(&dest, &src));
}
