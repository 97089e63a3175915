//! The bad input catalogue (docs/reliability.md): names and trees that break
//! naive backup tools, files that misbehave while read, and repositories
//! strata must refuse. Elsewhere: a non-UTF-8 name, a FIFO and a sparse
//! file in every round trip (util::make_tree), a wrong passphrase
//! (modes.rs), a full disk (errors.rs), malicious archives (malicious.rs).

use crate::util::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn one_line_error(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "expected exit 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{err}");
}

fn backup_and_restore(env: &Env, src: &Path, extra: &[&str]) -> std::path::PathBuf {
    let archive = format!("{}::a", env.repo());
    let mut args = vec!["create"];
    args.extend_from_slice(extra);
    args.push(&archive);
    args.push(src.to_str().unwrap());
    env.ok(&args);
    env.ok(&["check", "--verify-data", &env.repo()]);
    let dest = env.path("dest");
    std::fs::create_dir(&dest).unwrap();
    env.ok(&["extract", "--target", dest.to_str().unwrap(), &archive]);
    restored(&dest, src)
}

#[test]
fn names_with_newlines_dashes_and_odd_bytes_and_a_4095_byte_path() {
    let env = Env::new();
    env.init(&[]);
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let raw = |b: &[u8]| src.join(std::ffi::OsStr::from_bytes(b));
    for name in [
        &b"line\nbreak"[..],
        b"-leading-dash",
        b"--help",
        b"-",
        b" leading space",
        b"trailing space ",
        b"back\\slash",
        b"tab\there",
        b"caf\xe9 latin-1",
        b"\xff\xfe not utf-8 at all",
        b"esc\x1b[31mred",
        b"*?[glob]",
        b"..dots..",
    ] {
        std::fs::write(raw(name), name).unwrap();
    }
    // the longest path Linux takes (PATH_MAX 4096 with its NUL), in
    // components of the longest name (255 bytes)
    let mut deep = src.clone();
    let target = 4095;
    loop {
        let left = target - deep.as_os_str().len() - 1;
        if left <= 255 {
            deep.push("f".repeat(left));
            break;
        }
        deep.push("d".repeat(left.min(255).min(left - 2)));
        std::fs::create_dir(&deep).unwrap();
    }
    assert_eq!(deep.as_os_str().len(), 4095);
    std::fs::write(&deep, b"deep\n").unwrap();
    let archive = format!("{}::a", env.repo());
    env.ok(&["create", &archive, src.to_str().unwrap()]);
    env.ok(&["check", "--verify-data", &env.repo()]);
    let listed = env.ok(&["list", &archive]);
    assert!(listed.contains("-leading-dash"), "{listed}");
    // extraction re-creates the absolute path below the target, so the
    // restored path is longer than PATH_MAX: extract must still place it
    let scratch = tempfile::Builder::new().prefix("r").tempdir().unwrap();
    let out = env.run(&[
        "extract",
        "--target",
        scratch.path().to_str().unwrap(),
        &archive,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "extract: {err}");
    // a path over PATH_MAX is reached one directory at a time (-execdir)
    let found = std::process::Command::new("find")
        .arg(scratch.path())
        .args(["-type", "f", "-name", "fff*", "-execdir", "cat", "{}", ";"])
        .output()
        .unwrap();
    assert_eq!(
        found.stdout,
        b"deep\n",
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    // the rest compares as a tree, once the too-long branch is gone
    let back = restored(scratch.path(), &src);
    let first = |root: &Path| root.join("d".repeat(255));
    for root in [&src, &back] {
        let ok = std::process::Command::new("rm")
            .arg("-rf")
            .arg(first(root))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    assert_same_tree(&src, &back);
}

#[test]
fn a_hundred_thousand_files_in_one_directory() {
    let env = Env::new();
    env.init(&[]);
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..100_000u32 {
        std::fs::write(src.join(format!("f{i:06}")), i.to_le_bytes()).unwrap();
    }
    let back = backup_and_restore(&env, &src, &[]);
    assert_eq!(std::fs::read_dir(&back).unwrap().count(), 100_000);
    assert_same_tree(&src, &back);
}

#[test]
fn a_fifo_without_a_writer_does_not_block_a_backup() {
    let env = Env::new();
    env.init(&[]);
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    mkfifo(&src.join("never-opened"), 0o600);
    std::fs::write(src.join("file"), b"x").unwrap();
    // given as a directory entry and as an argument of its own: stored as a
    // FIFO, never opened (an open would wait for a writer forever)
    let out = env
        .cmd()
        .args([
            "create",
            &format!("{}::a", env.repo()),
            src.to_str().unwrap(),
            src.join("never-opened").to_str().unwrap(),
        ])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = env.ok(&["list", &format!("{}::a", env.repo())]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with('p') && l.ends_with("never-opened")),
        "{listed}"
    );
}

#[test]
fn a_file_growing_while_read_is_a_warning_and_a_consistent_prefix() {
    let env = Env::new();
    env.init(&[]);
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let log = src.join("growing.log");
    std::fs::write(&log, random("start", 8 << 20)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            let line = b"another log line, appended while strata reads the file\n";
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(line).unwrap();
                n += 1;
            }
            n
        })
    };
    let out = env.run(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appended = writer.join().unwrap();
    assert!(appended > 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected a warning: {err}");
    assert!(err.contains("changed while we backed it up"), "{err}");
    env.ok(&["check", "--verify-data", &env.repo()]);
    // what was stored is a prefix of the file as it is now, and at least
    // what it was before the backup began
    let dest = env.path("dest");
    std::fs::create_dir(&dest).unwrap();
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::a", env.repo()),
    ]);
    let stored = std::fs::read(restored(&dest, &log)).unwrap();
    let now = std::fs::read(&log).unwrap();
    assert!(stored.len() >= 8 << 20 && now.starts_with(&stored));
}

#[test]
fn unreadable_files_and_directories_are_warnings_not_failures() {
    let env = Env::new();
    // the test runs as root, who reads everything: back up as nobody
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("readable"), b"ok\n").unwrap();
    std::fs::write(src.join("secret"), b"root only\n").unwrap();
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(src.join("locked-dir")).unwrap();
    std::fs::write(src.join("locked-dir/inside"), b"x").unwrap();
    std::fs::set_permissions(
        src.join("locked-dir"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let bin = assert_cmd::cargo::cargo_bin("strata");
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(&bin)
            .args(args)
            .env("STRATA_PASSPHRASE", "test passphrase")
            .env("STRATA_CACHE_DIR", env.path("cache-nobody"))
            .env("STRATA_KEYS_DIR", env.path("keys-nobody"))
            .env("STRATA_INSECURE_FAST_KDF", "1")
            .env("HOME", env.dir.path())
            .current_dir(env.dir.path())
            .output()
            .unwrap()
    };
    let repo = env.repo();
    let init = as_nobody(&["init", &repo]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = as_nobody(&["create", &format!("{repo}::a"), src.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected warnings: {err}");
    assert!(
        err.contains("secret") && err.contains("ermission denied"),
        "{err}"
    );
    assert!(err.contains("locked-dir"), "{err}");
    let listed = as_nobody(&["list", "--short", &format!("{repo}::a")]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("readable"), "{listed}");
    assert!(
        !listed.contains("secret"),
        "an unreadable file was stored: {listed}"
    );
}

#[test]
fn a_repository_of_another_format_version_is_refused_in_one_line() {
    let env = Env::new();
    env.init(&[]);
    let cfg_path = env.path("repo/config");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["version"] = 2.into();
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let manifests = std::fs::read_dir(env.path("repo/manifest"))
        .unwrap()
        .count();
    for cmd in ["list", "check", "info"] {
        one_line_error(&env.run(&[cmd, &env.repo()]), "upgrade strata");
    }
    // and nothing was written to it
    let out = env.run(&[
        "create",
        &format!("{}::a", env.repo()),
        cfg_path.to_str().unwrap(),
    ]);
    one_line_error(&out, "format version 2");
    assert_eq!(
        std::fs::read_dir(env.path("repo/manifest"))
            .unwrap()
            .count(),
        manifests
    );
}

#[test]
fn replicating_a_repository_never_backed_up_succeeds() {
    // found by the load test: a host's new repository (no manifest yet)
    // failed every replication run until its first backup
    let env = Env::new();
    env.init(&[]);
    let pi = env.path("pi").display().to_string();
    env.ok(&["init", "-e", "none", &pi]);
    env.ok(&["replicate", "--to", &pi, &env.repo()]);
    env.ok(&["check", &pi]);
    let src = env.path("repo/config");
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    env.ok(&["replicate", "--to", &pi, &env.repo()]);
    assert_eq!(env.ok(&["list", "--short", &pi]).lines().count(), 2);
}

#[test]
fn a_one_tib_sparse_file_with_one_mib_of_data() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let env = Env::new();
    env.init(&[]);
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let tib = 1u64 << 40;
    let f = std::fs::File::create(src.join("huge.img")).unwrap();
    f.set_len(tib).unwrap();
    // 1 MiB of data in four pieces: start, two in the middle, the end
    let piece = random("piece", 256 << 10);
    let at = [0, 3 << 30, tib / 2 + 12345, tib - (256 << 10)];
    for a in at {
        f.write_all_at(&piece, a).unwrap();
    }
    drop(f);
    let archive = format!("{}::a", env.repo());
    let out = env
        .cmd()
        .args(["create", &archive, src.to_str().unwrap()])
        .timeout(std::time::Duration::from_secs(300))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["check", "--verify-data", &env.repo()]);
    // the repository holds the data once, not a terabyte of zeros
    let stored: u64 = walkdir::WalkDir::new(env.path("repo"))
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(stored < 8 << 20, "repository of {stored} bytes");
    let dest = env.path("dest");
    std::fs::create_dir(&dest).unwrap();
    let out = env
        .cmd()
        .args([
            "extract",
            "--sparse",
            "--target",
            dest.to_str().unwrap(),
            &archive,
        ])
        .timeout(std::time::Duration::from_secs(300))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = restored(&dest, &src).join("huge.img");
    let meta = std::fs::metadata(&back).unwrap();
    assert_eq!(meta.len(), tib);
    assert!(meta.blocks() * 512 < 64 << 20, "{} blocks", meta.blocks());
    let g = std::fs::File::open(&back).unwrap();
    let mut buf = vec![0u8; piece.len()];
    for a in at {
        g.read_exact_at(&mut buf, a).unwrap();
        assert_eq!(buf, piece, "data at {a}");
    }
    // and a hole reads as zeros
    g.read_exact_at(&mut buf, 1 << 30).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn replicating_to_a_full_disk_fails_cleanly_then_resumes_when_there_is_room() {
    let env = Env::new();
    env.init(&[]);
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), random("big", 20 << 20)).unwrap();
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    let disk = Tmpfs::mount(env.path("pi-disk"), "8m");
    let mnt = disk.0.clone();
    let pi = mnt.join("offsite").display().to_string();
    env.ok(&["init", "-e", "none", &pi]);
    let out = env.run(&["replicate", "--to", &pi, &env.repo()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "replicated 20 MiB into 8: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains("no space left"), "{err}");
    // the Pi's repository is still valid, and holds no replica
    env.ok(&["check", &pi]);
    assert_eq!(env.ok(&["list", "--short", &pi]), "");
    // a bigger disk (remounted in place): the same command completes
    disk.mount_with("remount,size=64m");
    env.ok(&["replicate", "--to", &pi, &env.repo()]);
    env.ok(&["check", "--verify-data", &pi]);
    assert_eq!(env.ok(&["list", "--short", &pi]).lines().count(), 1);
}

#[test]
fn restoring_onto_a_full_disk_names_that_disk_in_one_line() {
    let env = Env::new();
    env.init(&[]);
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), random("big", 12 << 20)).unwrap();
    let archive = format!("{}::a", env.repo());
    env.ok(&["create", &archive, src.to_str().unwrap()]);
    let disk = Tmpfs::mount(env.path("small-disk"), "4m");
    let dest = disk.0.clone();
    let out = env.run(&["extract", "--target", dest.to_str().unwrap(), &archive]);
    one_line_error(&out, "no space left on the disk restoring into");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(dest.to_str().unwrap()), "{err}");
    assert!(!err.contains("repository's disk"), "{err}");
    // the repository is untouched and the archive still restores elsewhere
    env.ok(&["check", "--verify-data", &env.repo()]);
    let elsewhere = env.path("elsewhere");
    assert_restores(|a| env.ok(a), &elsewhere, &src, &[&archive]);
}
