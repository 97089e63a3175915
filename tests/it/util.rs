//! Test scaffolding: an isolated client (cache, keys, passphrase) and
//! sample trees with every kind of entry.

use assert_cmd::Command;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("strata-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn repo(&self) -> String {
        self.path("repo").display().to_string()
    }

    /// `strata` with a private cache/keys dir, a passphrase and a fast KDF.
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("strata").unwrap();
        c.env("STRATA_PASSPHRASE", "test passphrase")
            .env("STRATA_CACHE_DIR", self.path("cache"))
            .env("STRATA_KEYS_DIR", self.path("keys"))
            .env("STRATA_INSECURE_FAST_KDF", "1")
            .env_remove("STRATA_REPO")
            .env_remove("STRATA_PASSCOMMAND")
            .env_remove("STRATA_FAULT_CRASH_AT")
            .current_dir(self.dir.path());
        c
    }

    /// The same as `cmd`, as a std `Command` (to spawn and wait later).
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("strata"));
        c.env("STRATA_PASSPHRASE", "test passphrase")
            .env("STRATA_CACHE_DIR", self.path("cache"))
            .env("STRATA_KEYS_DIR", self.path("keys"))
            .env("STRATA_INSECURE_FAST_KDF", "1")
            .env_remove("STRATA_REPO")
            .env_remove("STRATA_PASSCOMMAND")
            .env_remove("STRATA_FAULT_CRASH_AT")
            .current_dir(self.dir.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().unwrap()
    }

    /// `ok` with extra environment variables (e.g. STRATA_RSH).
    pub fn ok_with(&self, vars: &[(&str, &str)], args: &[&str]) -> String {
        let mut c = self.cmd();
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `strata create REPO::NAME -` waiting on its standard input, once it
    /// holds its lock (a condition wait on the lock file).
    pub fn spawn_locked_writer(&self, name: &str) -> std::process::Child {
        let child = self
            .std_cmd()
            .args(["create", &format!("{}::{name}", self.repo()), "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let locks = self.path("repo/locks");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !has_lock(&locks) {
            assert!(
                std::time::Instant::now() < deadline,
                "writer never took its lock"
            );
            std::thread::yield_now();
        }
        child
    }

    /// Runs and asserts exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn init(&self, extra: &[&str]) {
        let repo = self.repo();
        let mut args = vec!["init"];
        args.extend_from_slice(extra);
        args.push(&repo);
        self.ok(&args);
    }
}

/// Deterministic pseudo-random bytes.
pub fn random(seed: &str, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

/// A raw POSIX ACL (system.posix_acl_access, version 2): user::rw-,
/// user:1000:r--, group::r--, mask::r--, other::r--.
pub fn posix_acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A new test environment holding a copy of `template`'s files.
pub fn copy_of(template: &Env) -> Env {
    let env = Env::new();
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", template.dir.path().display()))
        .arg(env.dir.path())
        .status()
        .unwrap();
    assert!(ok.success());
    env
}

/// Makes a FIFO with `mode`.
pub fn mkfifo(p: &Path, mode: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(mode),
        0,
    )
    .unwrap();
}

/// Sets a path's mtime (and atime) without following a symlink.
pub fn set_mtime(p: &Path, secs: i64, nsec: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nsec as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Every kind of entry strata must keep: see the Fidelity list of issue 2.
pub fn make_tree(root: &Path) {
    let d = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
    let w = |p: &str, data: &[u8]| std::fs::write(root.join(p), data).unwrap();
    d("dir/sub/deeper");
    d("empty-dir");
    w("empty-file", b"");
    w("dir/small.txt", b"hello strata\n");
    w("dir/sub/big.bin", &random("big", 3 * 1024 * 1024 + 17));
    w(
        "dir/sub/text.txt",
        &b"lorem ipsum dolor sit amet ".repeat(50_000),
    );
    w("dir/dup-of-big.bin", &random("big", 3 * 1024 * 1024 + 17));
    symlink("sub/big.bin", root.join("dir/link-to-big")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    w("hard-a", b"hard linked content\n");
    std::fs::hard_link(root.join("hard-a"), root.join("dir/hard-b")).unwrap();
    std::fs::hard_link(root.join("hard-a"), root.join("dir/sub/hard-c")).unwrap();
    // sparse: 1 MiB data, 8 MiB hole, 1 MiB data
    let f = std::fs::File::create(root.join("sparse.img")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&random("s1", 1 << 20), 0).unwrap();
    f.write_all_at(&random("s2", 1 << 20), 9 << 20).unwrap();
    drop(f);
    mkfifo(&root.join("fifo"), 0o640);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("null-dev"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    w("setuid-tool", b"#!/bin/sh\n");
    std::fs::set_permissions(
        root.join("setuid-tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    w("owned", b"owned by someone else\n");
    rustix::fs::chownat(
        rustix::fs::CWD,
        root.join("owned"),
        Some(rustix::fs::Uid::from_raw(1234)),
        Some(rustix::fs::Gid::from_raw(5678)),
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    w("with-xattrs", b"x\n");
    xattr::set(root.join("with-xattrs"), "user.comment", b"kept").unwrap();
    xattr::set(
        root.join("with-xattrs"),
        "system.posix_acl_access",
        &posix_acl(),
    )
    .unwrap();
    let weird = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9-not-utf8"));
    std::fs::write(&weird, b"latin-1 name\n").unwrap();
    set_mtime(&root.join("dir/small.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("dangling"), 1_500_000_000, 987_654_321);
    set_mtime(&root.join("dir/sub"), 1_400_000_000, 5);
}

/// Where `strata extract` puts a tree that was backed up by absolute path.
pub fn restored(dest: &Path, src: &Path) -> PathBuf {
    dest.join(src.strip_prefix("/").unwrap())
}

pub fn assert_same_tree(a: &Path, b: &Path) {
    let diffs = strata::archive::compare::compare_trees(a, b).unwrap();
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

/// Extracts into the new directory `dest` with `run` (strata with the
/// test's environment, asserting success; `args` name the archive and any
/// options) and asserts the restore equals `src`, every byte and every piece
/// of metadata.
pub fn assert_restores(run: impl Fn(&[&str]) -> String, dest: &Path, src: &Path, args: &[&str]) {
    std::fs::create_dir(dest).unwrap();
    let mut full = vec!["extract", "--target", dest.to_str().unwrap()];
    full.extend_from_slice(args);
    run(&full);
    assert_same_tree(src, &restored(dest, src));
}

/// A complete lock file exists (temporary files start with `.`).
pub fn has_lock(locks: &Path) -> bool {
    std::fs::read_dir(locks)
        .unwrap()
        .any(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.'))
}

/// Polls `cond` every 50 ms until it holds, failing after a minute (a
/// condition wait, not a fixed sleep).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A small tmpfs mounted on a new directory (a disk that fills up),
/// unmounted when dropped. Needs root.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(dir: PathBuf, size: &str) -> Self {
        std::fs::create_dir(&dir).unwrap();
        let t = Tmpfs(dir);
        t.mount_with(&format!("size={size}"));
        t
    }

    /// Mounts again with `opts` (e.g. `remount,size=64m`: a bigger disk).
    pub fn mount_with(&self, opts: &str) {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs", self.0.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
