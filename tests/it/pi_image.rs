//! The Raspberry Pi image (issue 13, pi-image/, docs/pi-image.md): the
//! whole image is built here as a user would (pi-image/build.sh, from the
//! aarch64 .deb of the binary scripts/test.sh cross-builds; the Debian base
//! is cached by `pi-image/build.sh base`, which scripts/test.sh runs). Then:
//! the partition table and both file systems of the image; in the arm64
//! root under qemu-user (a chroot): `strata --version`, `strata selftest`,
//! the units enabled and masked; `strata node provision` on this machine
//! and `strata node firstboot` in the root (dry run, then for real);
//! formatting only a blank drive and only with consent, on loop devices.
//!
//! Last, pi-image/boot-test.sh boots the image for real under
//! qemu-system-aarch64 (`virt` machine, the image's kernel and initrd, a
//! blank drive on emulated USB): first boot formats the drive and
//! reboots; the second boot mounts it, creates the repository, starts
//! WireGuard, sshd and the daemon; after a power cut the root is clean and
//! the repository passes `strata check`. Not exercised: the Pi's firmware,
//! device tree and watchdog, and WireGuard traffic (pi-image/README.md says
//! how to check those on a real Pi).

use crate::util::Env;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ARM_BINARY: &str = "target/aarch64-unknown-linux-gnu/release/strata";

fn repo_file(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(c: &mut Command) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(o.status.success(), "{c:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// /dev, /proc and /sys of this machine in the Pi's root while the test runs.
struct Chroot {
    root: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Chroot {
    fn new(root: &Path) -> Self {
        let mut c = Chroot {
            root: root.to_path_buf(),
            mounts: Vec::new(),
        };
        let dev = root.join("dev");
        ok(Command::new("mount").arg("--bind").arg("/dev").arg(&dev));
        c.mounts.push(dev);
        let proc = root.join("proc");
        ok(Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(&proc));
        c.mounts.push(proc);
        // blkid finds devices by label through /sys/block, as on the Pi.
        let sys = root.join("sys");
        ok(Command::new("mount").arg("--bind").arg("/sys").arg(&sys));
        c.mounts.push(sys);
        c
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.root).args(args);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8");
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(&mut self.cmd(args))
    }

    fn file(&self, p: &str) -> String {
        std::fs::read_to_string(self.root.join(p.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{p} in the Pi's root: {e}"))
    }

    fn enabled(&self, unit: &str) -> String {
        let o = Command::new("systemctl")
            .arg(format!("--root={}", self.root.display()))
            .args(["is-enabled", unit])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// A loop device over a file of `mib` MiB, detached at the end.
struct Loop(String);

impl Loop {
    fn new(file: &Path, mib: u64) -> Self {
        std::fs::File::create(file)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let dev = ok(Command::new("losetup").args(["--find", "--show"]).arg(file));
        Loop(dev.trim().to_string())
    }

    fn label(&self) -> String {
        let o = Command::new("blkid")
            .args(["-p", "-s", "LABEL", "-o", "value", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A key pair the way a central node has them: a WireGuard key from `wg`
/// when it is installed (to cross-check ours), and an OpenSSH key.
fn central_keys(dir: &Path) -> (String, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let wg_private = "cGpgSiZdTu5LwuOFvoVtm0ov9GfJ8rLbRpKJGd9GPXM=";
    let ssh = dir.join("id_ed25519");
    ok(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "strata@central",
            "-f",
        ])
        .arg(&ssh));
    (wg_private.to_string(), ssh.with_extension("pub"))
}

/// `wg pubkey` of a private key.
fn wg_pubkey(private: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wg (wireguard-tools, installed by scripts/test.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{private}\n").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn toml_field(file: &str, key: &str) -> String {
    let v: toml::Value = toml::from_str(file).unwrap();
    let mut cur = &v;
    for k in key.split('.') {
        cur = &cur[k];
    }
    cur.as_str().unwrap().to_string()
}

#[test]
fn the_image_builds_boots_its_first_boot_in_a_chroot_and_formats_only_blank_drives() {
    let bin = repo_file(ARM_BINARY);
    assert!(
        bin.exists(),
        "{} is missing: scripts/test.sh builds it (cargo build --release --target aarch64-unknown-linux-gnu)",
        bin.display()
    );
    let env = Env::new();

    // The .deb, as scripts/release.sh packages a release.
    ok(Command::new(repo_file("scripts/release.sh"))
        .args(["package", "arm64"])
        .arg(&bin)
        .arg(env.path("dist"))
        .env("DEB_COMPRESSION", "none"));
    let deb = std::fs::read_dir(env.path("dist"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb in dist/");

    // The whole image, as a user builds it.
    let out = env.path("out");
    let log = ok(Command::new(repo_file("pi-image/build.sh"))
        .arg("--deb")
        .arg(&deb)
        .arg("--out")
        .arg(&out));
    assert!(log.contains("image: "), "{log}");
    let img = out.join("strata-pi-trixie-arm64.img");
    let sums = std::fs::read_to_string(out.join("strata-pi-trixie-arm64.img.sha256")).unwrap();
    let sha = ok(Command::new("sha256sum").arg(&img));
    assert_eq!(
        sums.split_whitespace().next(),
        sha.split_whitespace().next()
    );

    // Partition table: FAT boot (bootable) at 4 MiB, then the ext4 root.
    let table: serde_json::Value =
        serde_json::from_str(&ok(Command::new("sfdisk").arg("-J").arg(&img))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(parts[0]["start"], 8192);
    assert_eq!(parts[1]["type"], "83");
    let sector = |p: &serde_json::Value, k: &str| p[k].as_u64().unwrap();
    let size = std::fs::metadata(&img).unwrap().len();
    assert_eq!(
        (sector(&parts[1], "start") + sector(&parts[1], "size")) * 512,
        size
    );
    let slice = |n: usize, name: &str| {
        let f = env.path(name);
        ok(Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", f.display()))
            .args(["bs=512", "status=none"])
            .arg(format!("skip={}", sector(&parts[n], "start")))
            .arg(format!("count={}", sector(&parts[n], "size"))));
        f
    };

    // The boot partition: firmware, kernel, initrd, the Pi's device trees,
    // a command line that finds the root by label, and the README.
    let boot = slice(0, "boot.vfat");
    let files = ok(Command::new("mdir")
        .args(["-b", "-i"])
        .arg(&boot)
        .arg("::/")
        .env("MTOOLS_SKIP_CHECK", "1"));
    for want in [
        "config.txt",
        "cmdline.txt",
        "start4.elf",
        "bcm2711-rpi-4-b.dtb",
        "README-strata.txt",
    ] {
        assert!(
            files.contains(want),
            "{want} missing from the boot partition:\n{files}"
        );
    }
    assert!(
        files.contains("vmlinuz") && files.contains("initrd"),
        "{files}"
    );
    let cmdline = ok(Command::new("mtype")
        .arg("-i")
        .arg(&boot)
        .arg("::/cmdline.txt")
        .env("MTOOLS_SKIP_CHECK", "1"));
    assert!(cmdline.contains("root=LABEL=RASPIROOT"), "{cmdline}");
    assert!(
        cmdline.contains("fsck.repair=yes") && cmdline.contains("panic=10"),
        "{cmdline}"
    );

    // The root partition: a clean ext4 labelled RASPIROOT with strata, and
    // an empty mount point for the boot partition.
    let root_fs = slice(1, "root.ext4");
    ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&root_fs));
    let label = ok(Command::new("e2label").arg(&root_fs));
    assert_eq!(label.trim(), "RASPIROOT");
    let ls = ok(Command::new("debugfs")
        .args(["-R", "ls -l /boot/firmware"])
        .arg(&root_fs));
    assert!(
        !ls.contains("config.txt"),
        "the boot files stay on the FAT:\n{ls}"
    );
    let stat = ok(Command::new("debugfs")
        .args(["-R", "stat /usr/bin/strata"])
        .arg(&root_fs));
    assert!(
        stat.contains("Mode:  0755") && stat.contains("User:     0"),
        "{stat}"
    );
    drop((boot, root_fs));

    // The root under qemu-user.
    let root = out.join("rootfs-arm64");
    let pi = Chroot::new(&root);
    let version = pi.ok(&["strata", "--version"]);
    assert!(version.starts_with("strata 0."), "{version}");
    let st = pi.ok(&["strata", "selftest"]);
    assert!(st.contains("aarch64"), "{st}");
    assert!(
        pi.file("/etc/strata-image")
            .contains("on Debian trixie (arm64)")
    );
    for unit in [
        "strata-firstboot.service",
        "systemd-networkd.service",
        "systemd-resolved.service",
        "systemd-timesyncd.service",
    ] {
        assert_eq!(pi.enabled(unit), "enabled", "{unit}");
    }
    for unit in ["ssh.service", "strata.service", "strata-backup.timer"] {
        assert_eq!(pi.enabled(unit), "disabled", "{unit}");
    }
    for unit in [
        "apt-daily.timer",
        "systemd-networkd-persistent-storage.service",
    ] {
        assert_eq!(
            pi.enabled(unit),
            "masked",
            "{unit} writes to the read-only root"
        );
    }
    assert!(
        root.join("mnt/strata").is_dir(),
        "systemd cannot make the mount point on a read-only root"
    );
    // No card shares a host key or a machine id with another.
    let ssh_keys: Vec<_> = std::fs::read_dir(root.join("etc/ssh"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ssh_host_"))
        .collect();
    assert!(ssh_keys.is_empty(), "{ssh_keys:?}");
    assert_eq!(pi.file("/etc/machine-id"), "");
    assert!(pi.file("/etc/fstab").contains("LABEL=RASPIROOT / ext4 rw,"));
    assert!(
        pi.ok(&["getent", "passwd", "strata"])
            .contains(":/var/lib/strata:")
    );

    // Provision on "the central node" (this machine's strata).
    let (central_wg, central_ssh) = central_keys(&env.path("central"));
    let admin = env.path("central/admin");
    ok(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "admin@laptop", "-f"])
        .arg(&admin));
    let provision = |name: &str, extra: &[&str]| {
        env.cmd()
            .args(["node", "provision", name, "--address", "10.8.0.12/24"])
            .args(["--endpoint", "vpn.example.org:51820"])
            .args(["--central-address", "10.8.0.1"])
            .args(["--central-wg-public-key", &wg_pubkey(&central_wg)])
            .arg("--central-ssh-key")
            .arg(&central_ssh)
            .arg("--out")
            .arg(env.path(name))
            .args(extra)
            .assert()
            .success();
        env.path(name)
    };
    let grandma = provision(
        "grandma",
        &["--admin-key", admin.with_extension("pub").to_str().unwrap()],
    );
    let settings = std::fs::read_to_string(grandma.join("strata-node.toml")).unwrap();
    let node_private = toml_field(&settings, "wireguard.private_key");
    let peer = std::fs::read_to_string(grandma.join("central/wg0-peer.conf")).unwrap();
    assert!(
        peer.contains(&format!("PublicKey = {}", wg_pubkey(&node_private))),
        "the peer's key is the node's, as `wg pubkey` computes it:\n{peer}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(grandma.join("strata-node.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second provisioning would make new keys: refused without --force.
    let again = env.run(&[
        "node",
        "provision",
        "grandma",
        "--address",
        "10.8.0.12/24",
        "--endpoint",
        "h:1",
        "--central-address",
        "10.8.0.1",
        "--out",
        grandma.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(text(&again).contains("--force"), "{}", text(&again));

    // The card: the settings on the boot partition.
    let on_card = root.join("boot/firmware/strata-node.toml");
    std::fs::copy(grandma.join("strata-node.toml"), &on_card).unwrap();

    // A dry run says everything and changes nothing.
    let plan = pi.ok(&["strata", "node", "firstboot", "--dry-run"]);
    for want in [
        "write /etc/wireguard/wg0.key (0600 root,",
        ", secret)",
        "write /var/lib/strata/.ssh/authorized_keys (0600 strata,",
        "write /etc/fstab",
        "run systemctl enable wg-quick@wg0.service ssh.service mnt-strata.mount",
        "note: no drive labelled STRATA",
        "then move the private keys off",
    ] {
        assert!(plan.contains(want), "{want:?} not in the plan:\n{plan}");
    }
    assert_eq!(pi.file("/etc/hostname"), "strata-node\n");
    assert!(on_card.exists());

    // First boot for real (no reboot in a chroot).
    let log = pi.ok(&["strata", "node", "firstboot", "--no-reboot"]);
    assert!(log.contains("node grandma is set up"), "{log}");
    assert_eq!(pi.file("/etc/hostname"), "grandma\n");
    let wg = pi.file("/etc/wireguard/wg0.conf");
    assert!(wg.contains("Address = 10.8.0.12/24"), "{wg}");
    assert!(wg.contains("Endpoint = vpn.example.org:51820"), "{wg}");
    assert!(wg.contains("AllowedIPs = 10.8.0.1/32"), "{wg}");
    assert!(
        wg.contains(&format!("PublicKey = {}", wg_pubkey(&central_wg))),
        "{wg}"
    );
    assert_eq!(pi.file("/etc/wireguard/wg0.key").trim(), node_private);
    let key_mode = std::fs::metadata(root.join("etc/wireguard/wg0.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    // The host key the central node's known_hosts expects.
    let known = std::fs::read_to_string(grandma.join("central/known_hosts")).unwrap();
    let host_pub = pi.file("/etc/ssh/ssh_host_ed25519_key.pub");
    let want: Vec<&str> = known.split_whitespace().skip(1).collect();
    let have: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    assert_eq!(want, have);
    // sshd accepts its configuration and key (sshd -t), and listens on
    // the VPN only.
    pi.ok(&["mkdir", "-p", "/run/sshd"]);
    pi.ok(&["/usr/sbin/sshd", "-t"]);
    let effective = pi.ok(&[
        "/usr/sbin/sshd",
        "-T",
        "-C",
        "user=strata,host=central,addr=10.8.0.1",
    ]);
    assert!(
        effective.contains("listenaddress 10.8.0.12:22"),
        "{effective}"
    );
    assert!(
        effective.contains("passwordauthentication no"),
        "{effective}"
    );
    assert!(
        effective.contains("permitrootlogin without-password")
            || effective.contains("permitrootlogin prohibit-password"),
        "{effective}"
    );
    let auth = pi.file("/var/lib/strata/.ssh/authorized_keys");
    let central_pub = std::fs::read_to_string(&central_ssh).unwrap();
    assert!(auth.contains(&format!(
        "command=\"/usr/bin/strata serve --restrict-to-repository /mnt/strata/offsite --append-only\",restrict {}",
        central_pub.trim()
    )), "{auth}");
    let owner = pi.ok(&[
        "stat",
        "-c",
        "%U %a",
        "/var/lib/strata/.ssh/authorized_keys",
    ]);
    assert_eq!(owner.trim(), "strata 600");
    assert!(
        pi.file("/root/.ssh/authorized_keys")
            .contains("admin@laptop")
    );
    pi.ok(&["strata", "config", "check", "-c", "/etc/strata/strata.toml"]);
    assert!(
        pi.file("/etc/strata/strata.toml")
            .contains("state_dir = \"/mnt/strata/state\"")
    );
    assert!(pi.file("/etc/fstab").contains("LABEL=RASPIROOT / ext4 ro,"));
    assert!(
        pi.file("/etc/systemd/system/mnt-strata.mount")
            .contains("What=/dev/disk/by-label/STRATA")
    );
    for unit in [
        "wg-quick@wg0.service",
        "ssh.service",
        "mnt-strata.mount",
        "strata-offsite-init.service",
        "strata.service",
    ] {
        assert_eq!(pi.enabled(unit), "enabled", "{unit}");
    }
    // The keys left the card; what stays says what happened.
    assert!(!on_card.exists());
    let done = std::fs::read_to_string(root.join("boot/firmware/strata-node.toml.done")).unwrap();
    assert!(
        !done.contains("PRIVATE KEY") && !done.contains(&node_private),
        "{done}"
    );
    assert!(done.contains("note: no drive labelled STRATA"), "{done}");
    assert!(!root.join("boot/firmware/strata-node.error.txt").exists());

    // A broken file: the reason lands on the boot partition.
    let broken = settings.replace(
        "central_address = \"10.8.0.1\"",
        "central_address = \"10.9.0.1\"",
    );
    std::fs::write(&on_card, broken).unwrap();
    let o = pi
        .cmd(&["strata", "node", "firstboot", "--no-reboot"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let error = std::fs::read_to_string(root.join("boot/firmware/strata-node.error.txt")).unwrap();
    assert!(
        error
            .contains("wireguard.central_address 10.9.0.1 must be another address in 10.8.0.12/24"),
        "{error}"
    );
    assert!(
        on_card.exists(),
        "a failed first boot keeps the file for the next boot"
    );

    // Drives: only a blank one, only with consent, never one with data.
    let blank = Loop::new(&env.path("blank.img"), 64);
    let photos = Loop::new(&env.path("photos.img"), 64);
    ok(Command::new("mkfs.ext4").args(["-q", "-L", "photos", &photos.0]));
    let card = |name: &str, extra: &[&str]| {
        let dir = provision(name, extra);
        std::fs::copy(dir.join("strata-node.toml"), &on_card).unwrap();
        let log = pi.ok(&["strata", "node", "firstboot", "--no-reboot"]);
        let done =
            std::fs::read_to_string(root.join("boot/firmware/strata-node.toml.done")).unwrap();
        (log, done)
    };
    let (_, done) = card("nodrive", &["--drive-label", "PITEST1"]);
    assert!(done.contains("set format_blank_drive = true"), "{done}");
    assert_eq!(blank.label(), "", "no consent: the blank drive stays blank");
    let (_, done) = card(
        "used",
        &[
            "--drive-label",
            "PITEST2",
            "--format-blank-drive",
            "--drive-device",
            &photos.0,
        ],
    );
    assert!(done.contains("formats only blank drives"), "{done}");
    assert_eq!(
        photos.label(),
        "photos",
        "a drive with data is never formatted"
    );
    let (log, _) = card(
        "format",
        &[
            "--drive-label",
            "PITEST3",
            "--format-blank-drive",
            "--drive-device",
            &blank.0,
        ],
    );
    assert!(
        log.contains(&format!("format {} as ext4 labelled PITEST3", blank.0)),
        "{log}"
    );
    assert_eq!(blank.label(), "PITEST3");
    // At the next first boot the drive is found by its label.
    let (_, done) = card("found", &["--drive-label", "PITEST3"]);
    assert!(
        done.contains(&format!("the drive labelled PITEST3 is {}", blank.0)),
        "{done}"
    );

    drop(pi);

    // The image boots: twice, under qemu-system-aarch64.
    let boot = Command::new(repo_file("pi-image/boot-test.sh"))
        .arg(&img)
        .env("STRATA", assert_cmd::cargo::cargo_bin("strata"))
        .output()
        .unwrap();
    assert!(
        boot.status.success(),
        "pi-image/boot-test.sh:\n{}",
        text(&boot)
    );
    assert!(
        text(&boot).contains("PASS: first boot and a normal boot"),
        "{}",
        text(&boot)
    );
}
