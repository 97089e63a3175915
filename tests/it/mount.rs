//! `strata mount` through a real FUSE mount (/dev/fuse, as root): every
//! byte and every piece of metadata seen through the mount, a 1 GiB sparse
//! file, concurrent readers, unmounting under a reader, the versions view,
//! ssh:// and replica repositories.

use crate::ssh::{builtin, strata_bin};
use crate::sshd::Sshd;
use crate::util::*;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn mounted(mp: &Path) -> bool {
    let want = mp.canonicalize().unwrap_or_else(|_| mp.to_path_buf());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.to_str().unwrap()))
}

/// A mount point that is unmounted (lazily) when the test ends, whatever
/// happened, so a failing test leaves no mount behind.
struct MountPoint(PathBuf);

impl MountPoint {
    fn new(env: &Env, name: &str) -> Self {
        let p = env.path(name);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// A test directory whose `src`, filled by `fill`, is backed up as
/// `REPO::a`.
fn one_archive(fill: impl FnOnce(&Path)) -> (Env, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    fill(&src);
    env.init(&[]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    (env, src)
}

fn no_lock_left(env: &Env) -> bool {
    !has_lock(&env.path("repo/locks"))
}

fn hash_file(p: &Path) -> blake3::Hash {
    blake3::Hasher::new()
        .update_reader(std::fs::File::open(p).unwrap())
        .unwrap()
        .finalize()
}

#[test]
fn a_mounted_repository_shows_every_archive_with_every_byte_and_attribute() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init(&["--chunker-params", "64K,256K,1M"]);
    env.ok(&[
        "create",
        &format!("{}::one", env.repo()),
        src.to_str().unwrap(),
    ]);
    std::fs::write(src.join("dir/added"), b"only in two\n").unwrap();
    env.ok(&[
        "create",
        &format!("{}::two", env.repo()),
        src.to_str().unwrap(),
    ]);
    let mp = MountPoint::new(&env, "mnt");
    // In the background: the command returns once the mount is there.
    env.ok(&["mount", &env.repo(), mp.s()]);
    assert!(mounted(&mp.0));
    let mut names: Vec<String> = std::fs::read_dir(&mp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["one", "two"]);
    // Every file, byte and attribute (types, modes, owners, ns mtimes,
    // symlinks, hard-link groups, xattrs and ACLs, devices, a fifo).
    assert_same_tree(&src, &restored(&mp.0.join("two"), &src));
    let one = restored(&mp.0.join("one"), &src);
    assert!(!one.join("dir/added").exists());
    let hard = std::fs::metadata(one.join("hard-a")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(hard.nlink(), 3);
    assert_eq!(
        hard.ino(),
        std::fs::metadata(one.join("dir/sub/hard-c")).unwrap().ino()
    );
    // Parents of the backed-up path are not in the archive: they belong to
    // the mounting user and are closed to others.
    use std::os::unix::fs::PermissionsExt;
    let parent = std::fs::metadata(
        mp.0.join("two")
            .join(src.strip_prefix("/").unwrap().iter().next().unwrap()),
    )
    .unwrap();
    assert_eq!(parent.permissions().mode() & 0o7777, 0o700);
    assert_eq!(parent.uid(), rustix::process::geteuid().as_raw());
    // Read-only: nothing can be written, changed or removed.
    let err = std::fs::write(one.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_erofs()), "{err}");
    let err = std::fs::remove_file(one.join("hard-a")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_erofs()), "{err}");
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(one.join("dir/small.txt"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_erofs()), "{err}");
    // A backup goes on beside the mount (the mount only pins packs).
    env.ok(&[
        "create",
        &format!("{}::three", env.repo()),
        src.to_str().unwrap(),
    ]);
    env.ok(&["umount", mp.s()]);
    assert!(!mounted(&mp.0));
    // The background process ended and released its pin.
    wait_for("the mount's lock to go", || no_lock_left(&env));
}

fn libc_erofs() -> i32 {
    rustix::io::Errno::ROFS.raw_os_error()
}

#[test]
fn an_archive_mount_in_the_foreground_ends_cleanly_on_sigint() {
    let (env, src) = one_archive(make_tree);
    let mp = MountPoint::new(&env, "mnt");
    let child = env
        .std_cmd()
        .args(["mount", "-f", &format!("{}::a", env.repo()), mp.s()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the mount", || mounted(&mp.0));
    // An archive mount shows the archive's tree at the top.
    let inside = restored(&mp.0, &src);
    assert_eq!(
        std::fs::read(inside.join("dir/small.txt")).unwrap(),
        b"hello strata\n"
    );
    assert_same_tree(&src, &inside);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!mounted(&mp.0));
    assert!(no_lock_left(&env));
}

#[test]
fn a_1gib_sparse_file_reads_back_and_concurrent_readers_agree() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    // 1 GiB: data at the start, the middle and the end, holes between.
    let f = std::fs::File::create(src.join("disk.img")).unwrap();
    f.set_len(1 << 30).unwrap();
    f.write_all_at(&random("head", 3 << 20), 0).unwrap();
    f.write_all_at(&random("mid", 5 << 20), 512 << 20).unwrap();
    f.write_all_at(&random("tail", 1 << 20), (1 << 30) - (1 << 20))
        .unwrap();
    drop(f);
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), random(&format!("f{i}"), 6 << 20)).unwrap();
    }
    env.init(&[]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    let mp = MountPoint::new(&env, "mnt");
    env.ok(&[
        "mount",
        "--cache-size",
        "64M",
        &format!("{}::a", env.repo()),
        mp.s(),
    ]);
    let inside = restored(&mp.0, &src);
    assert_eq!(
        std::fs::metadata(inside.join("disk.img")).unwrap().len(),
        1 << 30
    );
    assert_eq!(
        hash_file(&inside.join("disk.img")),
        hash_file(&src.join("disk.img"))
    );
    // No entry of this archive has an extended attribute: the kernel is
    // told once (ENOSYS) and stops asking, so `ls -l` costs no trip per
    // file; the caller sees "not supported".
    let err = xattr::get(inside.join("f0"), "user.comment").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::OPNOTSUPP.raw_os_error())
    );
    // Eight readers at once: each file twice, one from its end backwards
    // in 1 MiB steps (random access, no read-ahead help).
    std::thread::scope(|s| {
        for i in 0..4 {
            let (a, b) = (inside.join(format!("f{i}")), src.join(format!("f{i}")));
            let (a2, b2) = (a.clone(), b.clone());
            s.spawn(move || assert_eq!(hash_file(&a), hash_file(&b)));
            s.spawn(move || {
                let want = std::fs::read(&b2).unwrap();
                let mut f = std::fs::File::open(&a2).unwrap();
                let mut buf = vec![0u8; 1 << 20];
                for step in (0..want.len() / buf.len()).rev() {
                    let at = step * buf.len();
                    f.seek(SeekFrom::Start(at as u64)).unwrap();
                    f.read_exact(&mut buf).unwrap();
                    assert!(buf == want[at..at + buf.len()], "f{i} differs at {at}");
                }
            });
        }
    });
    env.ok(&["umount", mp.s()]);
    wait_for("the mount's lock to go", || no_lock_left(&env));
}

#[test]
fn unmounting_under_a_reader_is_refused_and_lazy_unmount_lets_it_finish() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let data = random("held", 12 << 20);
    std::fs::write(src.join("held.bin"), &data).unwrap();
    env.init(&[]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    let mp = MountPoint::new(&env, "mnt");
    env.ok(&["mount", &format!("{}::a", env.repo()), mp.s()]);
    let path = restored(&mp.0, &src).join("held.bin");
    let mut held = std::fs::File::open(&path).unwrap();
    let mut first = vec![0u8; 1 << 20];
    held.read_exact(&mut first).unwrap();
    // A plain unmount is refused with one line that names the fix.
    let out = env.run(&["umount", mp.s()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("busy") && err.contains("--lazy"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(mounted(&mp.0));
    // Lazy: the mount point is free at once, the reader reads on.
    env.ok(&["umount", "--lazy", mp.s()]);
    assert!(!mounted(&mp.0));
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    assert!(first == data, "the held file read back differently");
    drop(held);
    wait_for("the mount process to end", || no_lock_left(&env));
}

#[test]
fn the_versions_view_holds_each_distinct_content_once() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    env.init(&[]);
    let contents: [&[u8]; 4] = [b"first\n", b"second\n", b"second\n", b"third\n"];
    for (i, c) in contents.iter().enumerate() {
        std::fs::write(src.join("docs/notes.txt"), c).unwrap();
        std::fs::write(src.join("docs/same.txt"), b"never changes\n").unwrap();
        env.ok(&[
            "create",
            &format!("{}::night-{i}", env.repo()),
            src.to_str().unwrap(),
        ]);
    }
    let mp = MountPoint::new(&env, "mnt");
    env.ok(&["mount", "--versions", &env.repo(), mp.s()]);
    let docs = restored(&mp.0, &src).join("docs");
    let mut versions: Vec<String> = std::fs::read_dir(docs.join("notes.txt"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        ["notes.00001.txt", "notes.00002.txt", "notes.00003.txt"]
    );
    for (name, want) in versions
        .iter()
        .zip([&b"first\n"[..], b"second\n", b"third\n"])
    {
        assert_eq!(
            std::fs::read(docs.join("notes.txt").join(name)).unwrap(),
            want
        );
    }
    let same = std::fs::read_dir(docs.join("same.txt")).unwrap().count();
    assert_eq!(same, 1);
    // Archive filters choose the archives the view merges.
    env.ok(&["umount", mp.s()]);
    env.ok(&["mount", "--versions", "--last", "2", &env.repo(), mp.s()]);
    let n = std::fs::read_dir(docs.join("notes.txt")).unwrap().count();
    assert_eq!(n, 2, "night-2 and night-3 hold two contents");
    env.ok(&["umount", mp.s()]);
}

#[test]
fn a_replica_on_an_off_site_tier_mounts_with_the_hosts_key() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let host = env.path("central/host1").display().to_string();
    let tier = env.path("pi-family").display().to_string();
    env.ok(&["init", "-e", "repokey", &host]);
    env.ok(&["init", "-e", "none", &tier]);
    env.ok(&["create", &format!("{host}::night"), src.to_str().unwrap()]);
    env.ok(&["replicate", "--to", &tier, &host]);
    let mp = MountPoint::new(&env, "mnt");
    env.ok(&["mount", "--replica", &tier, "host1::night", mp.s()]);
    assert_same_tree(&src, &restored(&mp.0, &src));
    env.ok(&["umount", mp.s()]);
}

#[test]
fn an_ssh_repository_mounts_through_the_builtin_client() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let forced = format!(
        "{} serve --restrict-to-path {}",
        strata_bin(),
        env.dir.path().display()
    );
    let sshd = Sshd::start(Some(&forced));
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user(),
        sshd.port(),
        env.path("repo").display()
    );
    let run = |args: &[&str]| {
        let out = builtin(&env, &sshd, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["init", &url]);
    run(&["create", &format!("{url}::a"), src.to_str().unwrap()]);
    let mp = MountPoint::new(&env, "mnt");
    run(&["mount", &url, mp.s()]);
    assert_same_tree(&src, &restored(&mp.0.join("a"), &src));
    env.ok(&["umount", mp.s()]);
    wait_for("the mount's lock to go", || no_lock_left(&env));
}

#[test]
fn mount_errors_are_one_line_and_mount_nothing() {
    let (env, _src) = one_archive(make_tree);
    let mp = MountPoint::new(&env, "mnt");
    let fails = |args: &[&str], needle: &str| {
        let out = env.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "expected `{needle}`: {err}");
    };
    fails(
        &["mount", &format!("{}::nope", env.repo()), mp.s()],
        "archive `nope` does not exist",
    );
    fails(
        &["mount", &env.repo(), env.path("missing").to_str().unwrap()],
        "create it with mkdir",
    );
    fails(
        &["mount", "-o", "rw", &env.repo(), mp.s()],
        "unknown mount option",
    );
    let wrong = env
        .cmd()
        .env("STRATA_PASSPHRASE", "wrong")
        .args(["mount", &env.repo(), mp.s()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{err}");
    assert!(err.contains("wrong passphrase"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // umount touches only strata's own mounts.
    fails(&["umount", "/proc"], "is not a mount point of strata");
    fails(&["umount", mp.s()], "is not a mount point");
    assert!(!mounted(&mp.0));
    assert!(no_lock_left(&env));
}

/// `runuser -u nobody -- COMMAND`: succeeded?
fn as_nobody(args: &[&str]) -> bool {
    std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .args(args)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn other_users_see_nothing_by_default_and_only_what_modes_allow_with_allow_other() {
    let env = Env::new();
    // The test directory must be reachable by `nobody` to reach the mount.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("open")).unwrap();
    std::fs::create_dir_all(src.join("closed")).unwrap();
    std::fs::write(src.join("open/readme"), b"public\n").unwrap();
    std::fs::write(src.join("closed/secret"), b"private\n").unwrap();
    std::fs::set_permissions(src.join("closed"), std::fs::Permissions::from_mode(0o700)).unwrap();
    env.init(&[]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    let mp = MountPoint::new(&env, "mnt");
    std::fs::set_permissions(&mp.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.ok(&["mount", &env.repo(), mp.s()]);
    assert!(
        !as_nobody(&["ls", mp.s()]),
        "FUSE lets only the mounting user in"
    );
    env.ok(&["umount", mp.s()]);
    env.ok(&["mount", "-o", "allow_other", &env.repo(), mp.s()]);
    let inside = restored(&mp.0.join("a"), &src);
    assert!(as_nobody(&["ls", mp.0.join("a").to_str().unwrap()]));
    // The parents of the backed-up path are not stored: closed to others,
    // so neither file is reachable for them, whatever its own mode.
    assert!(!as_nobody(&[
        "cat",
        inside.join("open/readme").to_str().unwrap()
    ]));
    env.ok(&["umount", mp.s()]);
    // uid= shows every entry as nobody's: now the parents let them in.
    let nobody = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .unwrap();
    let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_string();
    env.ok(&[
        "mount",
        "-o",
        &format!("allow_other,uid={nobody}"),
        &env.repo(),
        mp.s(),
    ]);
    assert!(as_nobody(&[
        "cat",
        inside.join("open/readme").to_str().unwrap()
    ]));
    env.ok(&["umount", mp.s()]);
}

#[test]
fn a_directory_of_thousands_lists_whole_across_many_batches() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let n = 5000;
    for i in 0..n {
        std::fs::write(src.join(format!("file-with-a-longish-name-{i:05}")), b"").unwrap();
    }
    env.init(&[]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    let mp = MountPoint::new(&env, "mnt");
    env.ok(&["mount", &format!("{}::a", env.repo()), mp.s()]);
    let inside = restored(&mp.0, &src);
    let mut seen: Vec<String> = std::fs::read_dir(&inside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let listed = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(listed, n, "no entry is listed twice or skipped");
    assert_eq!(seen.len(), n);
    assert_eq!(seen[0], "file-with-a-longish-name-00000");
    assert_eq!(
        seen[n - 1],
        format!("file-with-a-longish-name-{:05}", n - 1)
    );
    env.ok(&["umount", mp.s()]);
}

#[test]
fn a_user_other_than_root_mounts_and_unmounts_through_fusermount3() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("note"), b"mounted by nobody\n").unwrap();
    env.init(&[]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    let home = env.path("nobody-home");
    let mp = MountPoint::new(&env, "mnt");
    std::fs::create_dir(&home).unwrap();
    // The repository, a home and the mount point belong to nobody, who
    // reads the repository as any other user with its passphrase would.
    for p in [env.path("repo"), home.clone(), mp.0.clone()] {
        let st = std::process::Command::new("chown")
            .args(["-R", "nobody", p.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let strata = assert_cmd::cargo::cargo_bin("strata");
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", "env"])
            .arg(format!("HOME={}", home.display()))
            .arg("STRATA_PASSPHRASE=test passphrase")
            .arg("STRATA_INSECURE_FAST_KDF=1")
            .arg(&strata)
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_nobody(&["mount", &format!("{}::a", env.repo()), mp.s()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mounted(&mp.0));
    // Only the mounting user (and not even root) may look inside.
    let note = restored(&mp.0, &src).join("note");
    let cat = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "cat", note.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(cat.stdout, b"mounted by nobody\n");
    let err = std::fs::read(&note).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    let out = as_nobody(&["umount", mp.s()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!mounted(&mp.0));
    wait_for("the mount's lock to go", || no_lock_left(&env));
}
