//! The Ansible playbook (ansible/): ansible-lint's production profile and
//! a syntax check; and a real apply to three Debian bookworm root file
//! systems (debootstrapped by scripts/ansible-prepare.sh) through Ansible's
//! chroot connection: a central node, a Pi and a host. The test checks the
//! users, files, keys, forced commands, units and configuration; that a
//! missing USB drive leaves the SD card alone; and that a second run with
//! the drive in changes nothing.
//!
//! What a chroot cannot show: services starting (no systemd inside, so
//! units are only enabled, as in an image build) and the hosts reaching
//! the central node over WireGuard (so `strata init` from the host is off
//! here; tests/it/offsite.rs covers that path with real SSH).

use crate::util::Env;
use std::path::{Path, PathBuf};
use std::process::Command;

const VENV: &str = "/opt/strata-ci/ansible/bin";
const ROOTFS: &str = "/var/cache/strata-ci/bookworm-rootfs.tar.zst";

fn ansible_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible")
}

fn prepared() {
    assert!(
        Path::new(VENV).join("ansible-playbook").exists() && Path::new(ROOTFS).exists(),
        "Ansible or the Debian root file system is missing: run scripts/ansible-prepare.sh (scripts/test.sh does)"
    );
}

fn tool(name: &str, home: &Path) -> Command {
    let mut c = Command::new(Path::new(VENV).join(name));
    c.current_dir(ansible_dir())
        .env("ANSIBLE_CONFIG", ansible_dir().join("ansible.cfg"))
        .env("ANSIBLE_HOME", home)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("PATH", format!("{VENV}:/usr/sbin:/usr/bin:/sbin:/bin"));
    c
}

#[test]
fn the_playbook_passes_ansible_lint_production_and_a_syntax_check() {
    prepared();
    let env = Env::new();
    let out = tool("ansible-lint", &env.path("home"))
        .args(["--profile", "production", "."])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ansible-lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tool("ansible-playbook", &env.path("home"))
        .args(["--syntax-check", "-i", "inventory.example.yml", "site.yml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loop-mounted ext4 "USB drive"; unmounted on drop.
struct Drive(PathBuf);

impl Drop for Drive {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Runs the playbook; returns `changed=` per node from the recap.
fn apply(env: &Env, inventory: &Path, run: &str) -> Vec<(String, u32)> {
    let out = tool("ansible-playbook", &env.path("home"))
        .args(["-i", inventory.to_str().unwrap(), "site.yml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(env.path(&format!("{run}.log")), &text).unwrap();
    assert!(
        out.status.success(),
        "{run} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recap = text.split("PLAY RECAP").nth(1).expect("no recap");
    let changed: Vec<(String, u32)> = recap
        .lines()
        .filter_map(|l| {
            let (node, rest) = l.split_once(':')?;
            let n = rest
                .split_whitespace()
                .find_map(|f| f.strip_prefix("changed="))?;
            Some((node.trim().to_string(), n.parse().ok()?))
        })
        .collect();
    assert_eq!(changed.len(), 3, "{recap}");
    changed
}

fn read(root: &Path, p: &str) -> String {
    std::fs::read_to_string(root.join(p.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{}{p}: {e}", root.display()))
}

fn mode(root: &Path, p: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(root.join(p.trim_start_matches('/')))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// `uid` of a user in a root's /etc/passwd, with its home and shell.
fn user(root: &Path, name: &str) -> (u32, String, String) {
    let line = read(root, "/etc/passwd")
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no user {name} in {}", root.display()))
        .to_string();
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[5].into(), f[6].into())
}

fn enabled(root: &Path, unit: &str) -> bool {
    root.join("etc/systemd/system/multi-user.target.wants")
        .join(unit)
        .symlink_metadata()
        .is_ok()
}

fn in_chroot(root: &Path, cmd: &[&str]) -> String {
    let out = Command::new("chroot").arg(root).args(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "chroot {} {cmd:?}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The public half of a key file, as authorized_keys and known_hosts hold it.
fn public(text: &str) -> String {
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_playbook_sets_up_central_pi_and_host_and_a_second_run_changes_nothing() {
    prepared();
    let env = Env::new();
    let roots: Vec<PathBuf> = ["central", "pi1", "host1"]
        .iter()
        .map(|n| env.path(n))
        .collect();
    for r in &roots {
        std::fs::create_dir_all(r).unwrap();
        let st = Command::new("tar")
            .args(["--zstd", "-xpf", ROOTFS, "-C"])
            .arg(r)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let (central, pi, host) = (&roots[0], &roots[1], &roots[2]);
    let inventory = env.path("inventory.yml");
    std::fs::write(
        &inventory,
        format!(
            r#"all:
  vars:
    ansible_connection: community.general.chroot
    ansible_python_interpreter: /usr/bin/python3
    strata_binaries: {{x86_64: "{bin}"}}
    # The chroots cannot reach each other over the VPN.
    strata_host_init_repo: false
  children:
    strata_central:
      hosts:
        central: {{ansible_host: "{c}", wireguard_address: 10.8.0.1, wireguard_endpoint: "backup.example:51820"}}
    strata_pis:
      hosts:
        pi1: {{ansible_host: "{p}", wireguard_address: 10.8.0.11}}
    strata_hosts:
      hosts:
        host1: {{ansible_host: "{h}", wireguard_address: 10.8.0.21, strata_quota: 200G}}
"#,
            bin = assert_cmd::cargo::cargo_bin("strata").display(),
            c = central.display(),
            p = pi.display(),
            h = host.display(),
        ),
    )
    .unwrap();

    // First run, the Pi's drive not plugged in.
    apply(&env, &inventory, "run1-no-drive");
    assert!(
        std::fs::read_dir(pi.join("mnt/strata"))
            .unwrap()
            .next()
            .is_none(),
        "without its drive the Pi's mount point must stay empty (the SD card is not for replicas)"
    );

    // Plug the drive in; the next run makes the repository on it.
    let img = env.path("usb.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    assert!(
        Command::new("mkfs.ext4")
            .args(["-q", "-L", "STRATA"])
            .arg(&img)
            .status()
            .unwrap()
            .success()
    );
    let mnt = pi.join("mnt/strata");
    assert!(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .status()
            .unwrap()
            .success()
    );
    let _drive = Drive(mnt.clone());
    let second = apply(&env, &inventory, "run2-drive");
    assert!(second.iter().any(|(n, c)| n == "pi1" && *c > 0));
    let third = apply(&env, &inventory, "run3-again");
    for (node, changed) in &third {
        assert_eq!(
            *changed, 0,
            "{node} changed on a second run: see run3-again.log"
        );
    }

    // Every node: binary, user, directories, unit enabled, valid config.
    for r in &roots {
        assert_eq!(mode(r, "/usr/local/bin/strata"), 0o755);
        let (_, home, shell) = user(r, "strata");
        assert_eq!((home.as_str(), shell.as_str()), ("/srv/strata", "/bin/sh"));
        assert_eq!(mode(r, "/etc/strata/keys"), 0o700);
        assert_eq!(
            read(r, "/etc/systemd/system/strata.service"),
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd/strata.service")
            )
            .unwrap()
        );
        assert!(enabled(r, "strata.service") && enabled(r, "wg-quick@wg0.service"));
        in_chroot(
            r,
            &[
                "/usr/local/bin/strata",
                "config",
                "check",
                "-c",
                "/etc/strata/strata.toml",
            ],
        );
        // WireGuard: the private key made there, 0600, never in the
        // configuration (it is loaded with PostUp).
        assert_eq!(mode(r, "/etc/wireguard/wg0.key"), 0o600);
        let conf = read(r, "/etc/wireguard/wg0.conf");
        assert!(!conf.contains("PrivateKey"), "{conf}");
        assert_eq!(mode(r, "/etc/wireguard/wg0.conf"), 0o600);
    }
    let wg_pub = |r: &Path| in_chroot(r, &["sh", "-c", "wg pubkey < /etc/wireguard/wg0.key"]);
    let hub = read(central, "/etc/wireguard/wg0.conf");
    assert!(hub.contains("ListenPort = 51820"));
    for (r, addr) in [(pi, "10.8.0.11"), (host, "10.8.0.21")] {
        assert!(
            hub.contains(&format!(
                "PublicKey = {}\nAllowedIPs = {addr}/32",
                wg_pub(r).trim()
            )),
            "{hub}"
        );
        let spoke = read(r, "/etc/wireguard/wg0.conf");
        assert!(
            spoke.contains(&format!("PublicKey = {}", wg_pub(central).trim()))
                && spoke.contains("Endpoint = backup.example:51820")
                && spoke.contains("PersistentKeepalive = 25"),
            "{spoke}"
        );
    }

    // The host: its own key and passphrase, the central node's host key,
    // nightly backups to its repository on the central node.
    assert_eq!(mode(host, "/etc/strata/passphrase"), 0o600);
    assert_eq!(mode(host, "/etc/strata/id_ed25519"), 0o600);
    let host_pub = public(&read(host, "/etc/strata/id_ed25519.pub"));
    assert_eq!(
        read(host, "/etc/strata/known_hosts")
            .lines()
            .find(|l| !l.starts_with('#'))
            .unwrap(),
        format!(
            "10.8.0.1 {}",
            public(&read(central, "/etc/ssh/ssh_host_ed25519_key.pub"))
        )
    );
    let host_cfg = read(host, "/etc/strata/strata.toml");
    assert!(host_cfg.contains(r#"location = "ssh://strata@10.8.0.1/srv/strata/repos/host1""#));

    // The central node: the host's key may only serve its own repository,
    // append-only, within its quota.
    let keys = read(central, "/srv/strata/.ssh/authorized_keys");
    assert!(
        keys.contains(&format!(
            r#"command="/usr/local/bin/strata serve --restrict-to-repository /srv/strata/repos/host1 --append-only --storage-quota 200G",restrict {host_pub} strata@host1"#
        )),
        "{keys}"
    );
    assert_eq!(mode(central, "/srv/strata/.ssh/authorized_keys"), 0o600);
    let (uid, _, _) = user(central, "strata");
    let meta = std::fs::metadata(central.join("srv/strata/repos")).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            mode(central, "/srv/strata/repos")
        ),
        (uid, 0o700)
    );
    let central_cfg = read(central, "/etc/strata/strata.toml");
    assert!(central_cfg.contains(r#"location = "ssh://strata@10.8.0.11/mnt/strata/offsite""#));
    assert!(central_cfg.contains(r#"targets = ["pi1"]"#));
    assert!(
        read(central, "/etc/strata/known_hosts")
            .contains(&public(&read(pi, "/etc/ssh/ssh_host_ed25519_key.pub")))
    );

    // The Pi: the central node's key, append-only, for the replica
    // repository only; the drive mounted by label with nofail; the daemon
    // tied to the drive; the repository made on the drive, unencrypted.
    let central_pub = public(&read(central, "/etc/strata/id_ed25519.pub"));
    assert!(read(pi, "/srv/strata/.ssh/authorized_keys").contains(&format!(
        r#"command="/usr/local/bin/strata serve --restrict-to-repository /mnt/strata/offsite --append-only",restrict {central_pub}"#
    )));
    let unit = read(pi, "/etc/systemd/system/mnt-strata.mount");
    assert!(unit.contains("What=/dev/disk/by-label/STRATA") && unit.contains("Options=nofail"));
    assert!(enabled(pi, "mnt-strata.mount"));
    assert!(
        read(pi, "/etc/systemd/system/strata.service.d/drive.conf")
            .contains("RequiresMountsFor=/mnt/strata")
    );
    let repo_cfg = pi.join("mnt/strata/offsite/config");
    let (pi_uid, _, _) = user(pi, "strata");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&repo_cfg).unwrap()),
        pi_uid
    );
    let info = in_chroot(
        pi,
        &[
            "/usr/local/bin/strata",
            "info",
            "--json",
            "/mnt/strata/offsite",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["repository"]["encryption"]["mode"], "none", "{v}");

    // Nothing secret was written on the controller's side.
    for entry in walkdir::WalkDir::new(ansible_dir()) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            assert!(
                !text.contains("PRIVATE KEY"),
                "{} holds a key",
                entry.path().display()
            );
        }
    }
}
