//! The Raspberry Pi builds (issue 11): the aarch64 and armv7 binaries that
//! scripts/test.sh cross-builds (`cargo build --release --target ...`),
//! run under qemu-user. They must pass their selftest, round-trip a tree
//! exactly, and share repositories with the x86_64 binary both ways.

use crate::util::*;
use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// One build of strata and how to run it on this machine.
#[derive(Clone, Copy, Debug)]
enum Build {
    Host,
    Aarch64,
    Armv7,
}

impl Build {
    fn triple(self) -> &'static str {
        match self {
            Build::Host => "host",
            Build::Aarch64 => "aarch64-unknown-linux-gnu",
            Build::Armv7 => "armv7-unknown-linux-gnueabihf",
        }
    }

    /// `std::env::consts::ARCH` of the build, as its selftest prints it.
    fn arch(self) -> &'static str {
        match self {
            Build::Host => std::env::consts::ARCH,
            Build::Aarch64 => "aarch64 (64-bit, little-endian)",
            Build::Armv7 => "arm (32-bit, little-endian)",
        }
    }

    /// The same runners as .cargo/config.toml (assert_cmd does not read it).
    fn qemu(self) -> Option<(&'static str, &'static str)> {
        match self {
            Build::Host => None,
            Build::Aarch64 => Some(("qemu-aarch64-static", "/usr/aarch64-linux-gnu")),
            Build::Armv7 => Some(("qemu-arm-static", "/usr/arm-linux-gnueabihf")),
        }
    }

    fn binary(self) -> PathBuf {
        if let Build::Host = self {
            return assert_cmd::cargo::cargo_bin("strata");
        }
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(self.triple())
            .join("release/strata");
        assert!(
            p.exists(),
            "{} is missing: scripts/test.sh builds it (cargo build --release --target {}; \
             needs the Debian cross compilers and qemu-user-static it installs)",
            p.display(),
            self.triple()
        );
        p
    }

    /// A `strata` command of this build with `env`'s client setup.
    fn std_cmd(self, env: &Env) -> std::process::Command {
        let mut c = match self.qemu() {
            None => std::process::Command::new(self.binary()),
            Some((qemu, sysroot)) => {
                let mut c = std::process::Command::new(qemu);
                c.arg("-L").arg(sysroot).arg(self.binary());
                c
            }
        };
        c.env("STRATA_PASSPHRASE", "test passphrase")
            .env("STRATA_CACHE_DIR", env.path("cache"))
            .env("STRATA_KEYS_DIR", env.path("keys"))
            .env("STRATA_INSECURE_FAST_KDF", "1")
            .env_remove("STRATA_REPO")
            .env_remove("STRATA_PASSCOMMAND")
            .env_remove("STRATA_FAULT_CRASH_AT")
            .current_dir(env.dir.path());
        c
    }

    fn cmd(self, env: &Env) -> Command {
        Command::from_std(self.std_cmd(env))
    }

    /// Runs and asserts success; returns stdout.
    fn ok(self, env: &Env, args: &[&str]) -> String {
        let out = self.cmd(env).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{self:?}: strata {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn selftest_passes(b: Build) {
    let out = b.ok(&Env::new(), &["selftest", "--verbose"]);
    let n = strata::selftest::all().len();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        n,
        "{out}"
    );
    assert!(
        out.contains(&format!("{n} known-answer tests passed on {}", b.arch())),
        "{out}"
    );
    if let Build::Armv7 = b {
        // No AES instructions for 32-bit ARM code: ChaCha20 by default.
        assert!(
            out.contains("AES instructions: no, default cipher chacha20-poly1305"),
            "{out}"
        );
    }
}

#[test]
fn arm_aarch64_selftest_passes_under_qemu() {
    selftest_passes(Build::Aarch64);
}

#[test]
fn arm_armv7_selftest_passes_under_qemu() {
    selftest_passes(Build::Armv7);
}

/// Under emulation the figures mean nothing; every primitive must run.
fn bench_runs(b: Build) {
    let out = b.ok(&Env::new(), &["selftest", "--bench", "--seconds", "0"]);
    let mut names = vec![
        "chunker fastcdc-2020".to_string(),
        "blake3 keyed".into(),
        "aes-256-gcm seal".into(),
        "aes-256-gcm open".into(),
        "chacha20-poly1305 seal".into(),
        "chacha20-poly1305 open".into(),
    ];
    for c in strata::selftest::bench::COMPRESSORS {
        names.push(format!("{c} compress"));
        names.push(format!("{c} decompress"));
    }
    for name in names {
        let line = out
            .lines()
            .find(|l| l.starts_with(&name))
            .unwrap_or_else(|| panic!("no `{name}` in:\n{out}"));
        let mbs: f64 = line[36..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(mbs > 0.0, "{line}");
    }
}

#[test]
fn arm_aarch64_selftest_bench_runs_under_qemu() {
    bench_runs(Build::Aarch64);
}

#[test]
fn arm_armv7_selftest_bench_runs_under_qemu() {
    bench_runs(Build::Armv7);
}

/// `create` with one build, `extract` and `check --verify-data` with
/// another: every byte and every piece of metadata comes back.
fn extract_and_verify(env: &Env, b: Build, archive: &str, src: &Path, dest: &str) {
    let dest = env.path(dest);
    std::fs::create_dir(&dest).unwrap();
    b.cmd(env)
        .args(["extract", "--sparse", archive])
        .current_dir(&dest)
        .assert()
        .success();
    assert_same_tree(src, &restored(&dest, src));
    let check = b.ok(env, &["check", "--verify-data", "--json", &env.repo()]);
    let v: serde_json::Value = serde_json::from_str(&check).unwrap();
    assert_eq!(
        v["errors"].as_array().map(Vec::len),
        Some(0),
        "{b:?}: {check}"
    );
}

fn round_trip(b: Build) {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    b.ok(&env, &["init", "-e", "repokey", &env.repo()]);
    let archive = format!("{}::pi", env.repo());
    b.ok(&env, &["create", &archive, src.to_str().unwrap()]);
    let list = b.ok(&env, &["list", &env.repo()]);
    assert!(list.starts_with("pi "), "{list}");
    extract_and_verify(&env, b, &archive, &src, "restore");
}

#[test]
fn arm_aarch64_round_trip_under_qemu() {
    round_trip(Build::Aarch64);
}

#[test]
fn arm_armv7_round_trip_under_qemu() {
    round_trip(Build::Armv7);
}

/// A repository written on x86_64 (AES-256-GCM, as an x86 host picks) is
/// read, extracted and verified by both ARM builds; the armv7 build then
/// adds an archive to it, which x86_64 and aarch64 read back.
#[test]
fn arm_repositories_cross_architectures_both_ways() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    Build::Host.ok(
        &env,
        &[
            "init",
            "-e",
            "repokey",
            "--cipher",
            "aes-256-gcm",
            &env.repo(),
        ],
    );
    let x86 = format!("{}::from-x86", env.repo());
    Build::Host.ok(&env, &["create", &x86, src.to_str().unwrap()]);
    extract_and_verify(&env, Build::Aarch64, &x86, &src, "x86-on-aarch64");
    extract_and_verify(&env, Build::Armv7, &x86, &src, "x86-on-armv7");

    // New data written by the 32-bit build: more than 4 GiB of offsets
    // never arise here, but every length, count and id crosses over.
    std::fs::write(src.join("from-the-pi.bin"), random("pi", 5 << 20)).unwrap();
    let arm = format!("{}::from-armv7", env.repo());
    Build::Armv7.ok(&env, &["create", &arm, src.to_str().unwrap()]);
    extract_and_verify(&env, Build::Host, &arm, &src, "armv7-on-x86");
    extract_and_verify(&env, Build::Aarch64, &arm, &src, "armv7-on-aarch64");
    let list = Build::Host.ok(&env, &["list", "--short", &env.repo()]);
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        ["from-x86", "from-armv7"],
        "{list}"
    );
}

/// A repository made entirely by the armv7 build (ChaCha20-Poly1305, its
/// default) is read by x86_64.
#[test]
fn arm_armv7_repository_reads_on_x86() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    Build::Armv7.ok(&env, &["init", "-e", "repokey", &env.repo()]);
    let info = Build::Host.ok(&env, &["info", "--json", &env.repo()]);
    assert!(info.contains("chacha20-poly1305"), "{info}");
    let archive = format!("{}::pi", env.repo());
    Build::Armv7.ok(&env, &["create", &archive, src.to_str().unwrap()]);
    extract_and_verify(&env, Build::Host, &archive, &src, "restore");
}

/// The ARM daemon runs its selftest before anything else.
#[test]
fn arm_aarch64_daemon_runs_the_selftest_at_start() {
    let env = Env::new();
    let cfg = env.path("strata.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n[node]\nname = \"pi\"\n",
            env.path("state").display()
        ),
    )
    .unwrap();
    let log = env.path("daemon.log");
    let mut child = Build::Aarch64
        .std_cmd(&env)
        .args(["daemon", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the daemon to start", || {
        read().contains("strata daemon on pi")
    });
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = child.wait().unwrap();
    let text = read();
    assert!(status.success(), "{text}");
    let n = strata::selftest::all().len();
    let selftest = text
        .find(&format!(
            "selftest: {n} known-answer tests passed on aarch64"
        ))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        selftest < text.find("strata daemon on pi").unwrap(),
        "{text}"
    );
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `scripts/release.sh package` for one architecture; returns the .deb.
fn package(arch: &str, b: Build, dist: &Path) -> PathBuf {
    run_ok(
        std::process::Command::new(repo_root().join("scripts/release.sh"))
            .args(["package", arch])
            .arg(b.binary())
            .arg(dist)
            .env("DEB_COMPRESSION", "none"),
    );
    let version = env!("CARGO_PKG_VERSION");
    let deb = dist.join(format!("strata_{version}_{arch}.deb"));
    assert!(deb.exists(), "no {}", deb.display());
    deb
}

/// The .deb of each architecture holds the binary (which passes its
/// selftest), the systemd units pointing at /usr/bin, the default config
/// as a conffile (and it is valid), and creates the strata user.
#[test]
fn arm_release_debs_hold_what_they_must() {
    let env = Env::new();
    let dist = env.path("dist");
    for (arch, b) in [
        ("arm64", Build::Aarch64),
        ("armhf", Build::Armv7),
        ("amd64", Build::Host),
    ] {
        let deb = package(arch, b, &dist);
        let info = run_ok(
            std::process::Command::new("dpkg-deb")
                .arg("--info")
                .arg(&deb),
        );
        for want in [
            "Package: strata".to_string(),
            format!("Architecture: {arch}"),
            format!("Version: {}", env!("CARGO_PKG_VERSION")),
            "conffiles".into(),
            "postinst".into(),
        ] {
            assert!(info.contains(&want), "{arch}: no `{want}` in\n{info}");
        }
        let depends = info
            .lines()
            .find(|l| l.trim().starts_with("Depends:"))
            .unwrap();
        assert!(
            depends.contains("libc6 (>= 2.") && depends.contains("adduser"),
            "{depends}"
        );
        let contents = run_ok(
            std::process::Command::new("dpkg-deb")
                .arg("--contents")
                .arg(&deb),
        );
        for path in [
            "./usr/bin/strata",
            "./lib/systemd/system/strata.service",
            "./lib/systemd/system/strata-backup.service",
            "./lib/systemd/system/strata-backup.timer",
            "./etc/strata/strata.toml",
            "./usr/share/doc/strata/arm.md",
        ] {
            assert!(
                contents.lines().any(|l| l.ends_with(path)),
                "{arch}: no {path} in\n{contents}"
            );
        }
        let ctl = env.path(&format!("control-{arch}"));
        run_ok(
            std::process::Command::new("dpkg-deb")
                .arg("--control")
                .arg(&deb)
                .arg(&ctl),
        );
        assert_eq!(
            std::fs::read_to_string(ctl.join("conffiles")).unwrap(),
            "/etc/strata/strata.toml\n"
        );
        let postinst = std::fs::read_to_string(ctl.join("postinst")).unwrap();
        assert!(postinst.contains("adduser --system"), "{postinst}");
        for script in ["postinst", "prerm", "postrm"] {
            run_ok(
                std::process::Command::new("sh")
                    .arg("-n")
                    .arg(ctl.join(script)),
            );
        }
        let root = env.path(&format!("root-{arch}"));
        run_ok(
            std::process::Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(&root),
        );
        let unit = std::fs::read_to_string(root.join("lib/systemd/system/strata.service")).unwrap();
        assert!(
            unit.contains("ExecStart=/usr/bin/strata daemon") && !unit.contains("/usr/local"),
            "{unit}"
        );
        // The packaged binary itself, on its own architecture.
        let mut selftest = match b.qemu() {
            None => std::process::Command::new(root.join("usr/bin/strata")),
            Some((qemu, sysroot)) => {
                let mut c = std::process::Command::new(qemu);
                c.arg("-L").arg(sysroot).arg(root.join("usr/bin/strata"));
                c
            }
        };
        let out = run_ok(selftest.arg("selftest"));
        assert!(out.contains("known-answer tests passed"), "{out}");
        Build::Host.ok(
            &env,
            &[
                "config",
                "check",
                "-c",
                root.join("etc/strata/strata.toml").to_str().unwrap(),
            ],
        );
    }
    run_ok(
        std::process::Command::new(repo_root().join("scripts/release.sh"))
            .arg("checksums")
            .arg(&dist),
    );
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert_eq!(
        sums.lines().count(),
        6,
        "3 packages, 3 bare binaries:\n{sums}"
    );
    run_ok(
        std::process::Command::new("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(&dist),
    );
}

/// The Debian root that scripts/ansible-prepare.sh (run by test.sh) caches.
const ROOTFS: &str = "/var/cache/strata-ci/bookworm-rootfs.tar.zst";

fn chroot(root: &Path, args: &[&str]) -> String {
    run_ok(std::process::Command::new("chroot").arg(root).args(args))
}

/// The arm64 package installs into a throw-away Debian root (arm64 added as
/// a foreign architecture there; its libc6:arm64 is not, hence
/// --force-depends): postinst creates the strata user, the conffile
/// survives a reinstall with local edits, purge keeps /var/lib/strata.
#[test]
fn arm_release_deb_installs_into_a_debian_root() {
    assert!(
        Path::new(ROOTFS).exists(),
        "{ROOTFS} is missing: scripts/test.sh makes it (scripts/ansible-prepare.sh)"
    );
    let env = Env::new();
    let deb = package("arm64", Build::Aarch64, &env.path("dist"));
    let root = env.path("root");
    std::fs::create_dir(&root).unwrap();
    run_ok(
        std::process::Command::new("tar")
            .args(["--zstd", "-xpf", ROOTFS, "-C"])
            .arg(&root),
    );
    std::fs::copy(&deb, root.join("tmp/strata.deb")).unwrap();
    let install = ["dpkg", "--force-depends", "-i", "/tmp/strata.deb"];
    chroot(&root, &["dpkg", "--add-architecture", "arm64"]);
    chroot(&root, &install);
    let user = chroot(&root, &["getent", "passwd", "strata"]);
    assert!(
        user.trim_end().ends_with(":/var/lib/strata:/bin/sh"),
        "{user}"
    );
    assert!(root.join("var/lib/strata").is_dir());
    let status = chroot(&root, &["dpkg", "-s", "strata"]);
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(status.contains("/etc/strata/strata.toml"), "{status}");
    // The installed binary and config work together.
    let (qemu, sysroot) = Build::Aarch64.qemu().unwrap();
    let out = run_ok(
        std::process::Command::new(qemu)
            .args(["-L", sysroot])
            .arg(root.join("usr/bin/strata"))
            .args(["config", "check", "-c"])
            .arg(root.join("etc/strata/strata.toml")),
    );
    assert!(out.contains("ok (0 repositories, 0 jobs)"), "{out}");

    // A local edit survives a reinstall; postinst runs again quietly.
    let conf = root.join("etc/strata/strata.toml");
    let edited = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("localhost", "pi-home");
    std::fs::write(&conf, &edited).unwrap();
    chroot(&root, &install);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);

    chroot(&root, &["dpkg", "--purge", "strata"]);
    assert!(!conf.exists() && !root.join("usr/bin/strata").exists());
    assert!(
        root.join("var/lib/strata").is_dir(),
        "purge must keep the data"
    );
}
