//! `strata node firstboot`: turns a freshly flashed Pi into the off-site
//! node its `strata-node.toml` describes. It runs once, from
//! strata-firstboot.service, with the root file system still writable:
//! host name, WireGuard, SSH (host key, listening on the VPN only, the
//! central node's append-only key), the drive (mounted by label; formatted
//! only with consent and only if blank), strata's configuration, then the
//! switch to a read-only root. Last it moves the private keys off the SD
//! card and renames the file, so it never runs twice.
//!
//! Every step rewrites whole files, so a power cut half-way is mended by
//! the next boot running it again.

use super::config::{self, NodeConfig};
use super::drive::{self, DrivePlan};
use super::keys::{SshHostKey, wg_public_key};
use crate::{Error, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The user that owns the off-site repository and runs `strata serve`
/// (made by the package's postinst).
pub const USER: &str = "strata";
/// That user's home (the package's postinst), where its authorized_keys go.
pub const USER_HOME: &str = "/var/lib/strata";
/// The mount unit of [`config::DRIVE_MOUNT`].
pub const MOUNT_UNIT: &str = "mnt-strata.mount";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Root,
    /// The strata user (and its group).
    Strata,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Dir {
        path: PathBuf,
        mode: u32,
        owner: Owner,
    },
    Write {
        path: PathBuf,
        body: String,
        mode: u32,
        owner: Owner,
        secret: bool,
    },
    Format {
        device: PathBuf,
        label: String,
    },
    Run {
        argv: Vec<String>,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = |o: &Owner| match o {
            Owner::Root => "root",
            Owner::Strata => USER,
        };
        match self {
            Step::Dir { path, mode, owner } => write!(
                f,
                "directory {} ({mode:04o} {})",
                path.display(),
                who(owner)
            ),
            Step::Write {
                path,
                body,
                mode,
                owner,
                secret,
            } => write!(
                f,
                "write {} ({mode:04o} {}, {} bytes{})",
                path.display(),
                who(owner),
                body.len(),
                if *secret { ", secret" } else { "" }
            ),
            Step::Format { device, label } => write!(
                f,
                "format {} as ext4 labelled {label} (it is blank)",
                device.display()
            ),
            Step::Run { argv } => write!(f, "run {}", argv.join(" ")),
        }
    }
}

/// What first boot will do, and what it found worth telling the person.
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
}

/// Where the node's secrets come from: the settings, or (when first boot
/// runs again after it removed them from the card) the files it wrote.
fn wg_private_key(cfg: &NodeConfig) -> Result<String> {
    if let Some(k) = &cfg.wireguard.private_key {
        return Ok(k.trim().to_string());
    }
    std::fs::read_to_string("/etc/wireguard/wg0.key").map(|k| k.trim().to_string()).map_err(|_| {
        Error::Config(
            "wireguard.private_key is missing and /etc/wireguard/wg0.key does not exist: provision the node again (`strata node provision`)".into(),
        )
    })
}

fn ssh_host_key(cfg: &NodeConfig) -> Result<SshHostKey> {
    if let Some(k) = &cfg.ssh.host_key {
        return SshHostKey::parse(k);
    }
    let k = std::fs::read_to_string("/etc/ssh/ssh_host_ed25519_key").map_err(|_| {
        Error::Config(
            "ssh.host_key is missing and /etc/ssh/ssh_host_ed25519_key does not exist: provision the node again (`strata node provision`)".into(),
        )
    })?;
    SshHostKey::parse(&k)
}

/// Builds the plan. `drive` is what the drive inspection decided.
pub fn plan(cfg: &NodeConfig, drive: DrivePlan) -> Result<Plan> {
    let mut p = Plan::default();
    let root = |path: &str, body: String, mode: u32| Step::Write {
        path: path.into(),
        body,
        mode,
        owner: Owner::Root,
        secret: false,
    };
    let name = &cfg.name;
    let vpn_ip = cfg.vpn_ip()?;

    p.steps
        .push(root("/etc/hostname", format!("{name}\n"), 0o644));
    p.steps.push(root(
        "/etc/hosts",
        format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        ),
        0o644,
    ));

    // WireGuard: the node dials the central node and keeps the NAT open.
    let wg_key = wg_private_key(cfg)?;
    wg_public_key(&wg_key)?;
    let wg = &cfg.wireguard;
    p.steps.push(Step::Dir {
        path: "/etc/wireguard".into(),
        mode: 0o700,
        owner: Owner::Root,
    });
    p.steps.push(Step::Write {
        path: "/etc/wireguard/wg0.key".into(),
        body: format!("{wg_key}\n"),
        mode: 0o600,
        owner: Owner::Root,
        secret: true,
    });
    p.steps.push(Step::Write {
        path: "/etc/wireguard/wg0.conf".into(),
        body: format!(
            "# Written by `strata node firstboot` from {file}.\n[Interface]\nAddress = {addr}\n# The private key stays in its own file.\nPostUp = wg set %i private-key /etc/wireguard/%i.key\n\n[Peer]\n# the central node\nPublicKey = {pk}\nEndpoint = {ep}\nAllowedIPs = {central}/{host}\nPersistentKeepalive = {ka}\n",
            file = config::FILE_NAME,
            addr = wg.address,
            pk = wg.central_public_key,
            ep = wg.central_endpoint,
            central = wg.central_address,
            host = if vpn_ip.is_ipv4() { 32 } else { 128 },
            ka = wg.keepalive,
        ),
        mode: 0o600,
        owner: Owner::Root,
        secret: false,
    });

    // SSH: the provisioned host key only, on the VPN address only, keys only.
    let host = ssh_host_key(cfg)?;
    p.steps.push(Step::Write {
        path: "/etc/ssh/ssh_host_ed25519_key".into(),
        body: host.private_openssh.clone(),
        mode: 0o600,
        owner: Owner::Root,
        secret: true,
    });
    p.steps.push(root(
        "/etc/ssh/ssh_host_ed25519_key.pub",
        format!("{}\n", host.public_line),
        0o644,
    ));
    let admins = !cfg.ssh.admin_keys.is_empty();
    p.steps.push(root(
        "/etc/ssh/sshd_config.d/strata.conf",
        format!(
            "# Written by `strata node firstboot`: SSH on the VPN only, keys only.\nListenAddress {listen}\nHostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin {root_login}\nAllowUsers {users}\n",
            listen = match vpn_ip {
                std::net::IpAddr::V4(a) => a.to_string(),
                std::net::IpAddr::V6(a) => format!("[{a}]"),
            },
            root_login = if admins { "prohibit-password" } else { "no" },
            users = if admins { format!("{USER} root") } else { USER.to_string() },
        ),
        0o644,
    ));
    p.steps.push(Step::Dir {
        path: format!("{USER_HOME}/.ssh").into(),
        mode: 0o700,
        owner: Owner::Strata,
    });
    p.steps.push(Step::Write {
        path: format!("{USER_HOME}/.ssh/authorized_keys").into(),
        body: format!(
            "# The central node may only add to the off-site repository.\ncommand=\"/usr/bin/strata serve --restrict-to-repository {repo} --append-only\",restrict {key}\n",
            repo = config::REPOSITORY,
            key = cfg.ssh.central_key.trim(),
        ),
        mode: 0o600,
        owner: Owner::Strata,
        secret: false,
    });
    if admins {
        p.steps.push(Step::Dir {
            path: "/root/.ssh".into(),
            mode: 0o700,
            owner: Owner::Root,
        });
        let mut keys = String::from(
            "# Administrators, over the VPN only (strata-node.toml ssh.admin_keys).\n",
        );
        for k in &cfg.ssh.admin_keys {
            let _ = writeln!(keys, "{}", k.trim());
        }
        p.steps
            .push(root("/root/.ssh/authorized_keys", keys, 0o600));
    }

    // The drive: mounted by label at boot and when plugged in later. The
    // mount point must exist before the root turns read-only; it stays an
    // empty root-owned directory, so nothing fills the SD card without it.
    let label = &cfg.drive.label;
    p.steps.push(Step::Dir {
        path: config::DRIVE_MOUNT.into(),
        mode: 0o755,
        owner: Owner::Root,
    });
    p.steps.push(root(
        &format!("/etc/systemd/system/{MOUNT_UNIT}"),
        format!(
            "# Written by `strata node firstboot`. nofail: the node boots without\n# the drive, and strata waits for it (strata.service.d/strata-drive.conf).\n[Unit]\nDescription=strata off-site drive (LABEL={label})\n\n[Mount]\nWhat=/dev/disk/by-label/{label}\nWhere={mnt}\nType=ext4\nOptions=nofail,noatime,x-systemd.device-timeout=15s\n\n[Install]\nWantedBy=multi-user.target\n",
            mnt = config::DRIVE_MOUNT
        ),
        0o644,
    ));
    p.steps.push(root(
        "/etc/udev/rules.d/90-strata-drive.rules",
        format!(
            "# Written by `strata node firstboot`: mount the off-site drive when it is plugged in.\nACTION==\"add\", SUBSYSTEM==\"block\", ENV{{ID_FS_LABEL}}==\"{label}\", ENV{{SYSTEMD_WANTS}}+=\"{MOUNT_UNIT}\"\n"
        ),
        0o644,
    ));
    match drive {
        DrivePlan::Present(dev) => p
            .notes
            .push(format!("the drive labelled {label} is {}", dev.display())),
        DrivePlan::Format(dev) => p.steps.push(Step::Format {
            device: dev,
            label: label.clone(),
        }),
        DrivePlan::Wait(msg) => p.notes.push(msg),
    }

    // strata: the Pi keeps, prunes and verifies the replicas.
    let strata_toml = strata_config(cfg);
    crate::config::Config::parse(&strata_toml, Path::new("/etc/strata/strata.toml"))?;
    p.steps
        .push(root("/etc/strata/strata.toml", strata_toml, 0o644));

    // The root file system read-only from the next boot on.
    p.steps.push(root("/etc/fstab", fstab(true), 0o644));

    let enable = [
        "systemctl",
        "enable",
        "wg-quick@wg0.service",
        "ssh.service",
        MOUNT_UNIT,
        "strata-offsite-init.service",
        "strata.service",
    ];
    p.steps.push(Step::Run {
        argv: enable.iter().map(|s| s.to_string()).collect(),
    });
    Ok(p)
}

/// The node's strata.toml (as the Ansible role writes it, with the state
/// on the drive because the root file system is read-only).
pub fn strata_config(cfg: &NodeConfig) -> String {
    let r = &cfg.retention;
    format!(
        "# Written by `strata node firstboot`: the off-site node {name} keeps the\n# replicas on its USB drive, prunes them, and verifies them weekly.\nstate_dir = \"{state}\"\n\n[node]\nname = \"{name}\"\nroles = [\"pi\"]\n\n[[repository]]\nname = \"offsite\"\nlocation = \"{repo}\"\n\n[[job]]\nname = \"retention\"\nkind = \"prune\"\nrepository = \"offsite\"\nschedule = \"{ps}\"\nkeep_within = \"{kw}\"\nkeep_weekly = {kwk}\nkeep_monthly = {km}\n\n[[job]]\nname = \"compact\"\nkind = \"compact\"\nrepository = \"offsite\"\nafter = \"retention\"\n\n[[job]]\nname = \"check\"\nkind = \"check\"\nrepository = \"offsite\"\nschedule = \"{cs}\"\nverify_data = true\n",
        name = cfg.name,
        state = config::STATE_DIR,
        repo = config::REPOSITORY,
        ps = r.prune_schedule,
        kw = r.keep_within,
        kwk = r.keep_weekly,
        km = r.keep_monthly,
        cs = r.check_schedule,
    )
}

/// The node's fstab. The image ships it writable (`readonly` false) for the
/// first boot; first boot switches it. tmpfs where a running node writes.
pub fn fstab(readonly: bool) -> String {
    let rw = if readonly { "ro" } else { "rw" };
    format!(
        "# The SD card holds only the system and is read-only after the first boot,\n# so power cuts cannot damage it. To change it: mount -o remount,rw /\n# (and /boot/firmware), then reboot (docs/pi-image.md).\nLABEL=RASPIROOT / ext4 {rw},noatime,errors=remount-ro 0 1\nLABEL=RASPIFIRM /boot/firmware vfat {rw},noatime,umask=0077,nofail 0 2\ntmpfs /tmp tmpfs nosuid,nodev,mode=1777,size=64M 0 0\ntmpfs /var/tmp tmpfs nosuid,nodev,mode=1777,size=16M 0 0\ntmpfs /var/lib/systemd/timesync tmpfs nosuid,nodev,mode=0755,size=1M 0 0\n"
    )
}

/// Carries out a plan. Files are written whole (temporary file, fsync,
/// rename), so a power cut leaves either the old or the new file.
pub fn apply(plan: &Plan, log: &mut dyn FnMut(&str)) -> Result<()> {
    let strata = nix::unistd::User::from_name(USER)
        .ok()
        .flatten()
        .map(|u| (u.uid, u.gid));
    let ids = |o: Owner| -> Result<(nix::unistd::Uid, nix::unistd::Gid)> {
        match o {
            Owner::Root => Ok((nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0))),
            Owner::Strata => strata.ok_or_else(|| {
                Error::Config(format!(
                    "there is no `{USER}` user: install the strata package (it creates it)"
                ))
            }),
        }
    };
    for step in &plan.steps {
        log(&step.to_string());
        match step {
            Step::Dir { path, mode, owner } => {
                std::fs::create_dir_all(path)
                    .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
                let (u, g) = ids(*owner)?;
                set_owner_mode(path, u, g, *mode)?;
            }
            Step::Write {
                path,
                body,
                mode,
                owner,
                ..
            } => {
                let (u, g) = ids(*owner)?;
                write_whole(path, body.as_bytes(), u, g, *mode)?;
            }
            Step::Format { device, label } => drive::format(device, label)?,
            Step::Run { argv } => run(argv)?,
        }
    }
    Ok(())
}

fn set_owner_mode(path: &Path, u: nix::unistd::Uid, g: nix::unistd::Gid, mode: u32) -> Result<()> {
    nix::unistd::chown(path, Some(u), Some(g))
        .map_err(|e| Error::io(format!("setting the owner of {}", path.display()), e.into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting the mode of {}", path.display()), e))
}

/// Writes `path` whole: a temporary file beside it, fsync, rename, fsync of
/// the directory.
pub fn write_whole(
    path: &Path,
    body: &[u8],
    u: nix::unistd::Uid,
    g: nix::unistd::Gid,
    mode: u32,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".strata-firstboot")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating a file in {}", dir.display()), e))?;
    set_owner_mode(tmp.path(), u, g, mode)?;
    tmp.write_all(body)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("replacing {}", path.display()), e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn run(argv: &[String]) -> Result<()> {
    let (cmd, args) = argv
        .split_first()
        .ok_or_else(|| Error::invalid("empty command"))?;
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("running {cmd}"), e))?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// After a successful run: the settings without the private keys go to
/// `strata-node.toml.done` (with what first boot noticed), and the file
/// with the keys is overwritten and removed.
pub fn retire(
    config_path: &Path,
    cfg: &NodeConfig,
    notes: &[String],
    when: &str,
) -> Result<PathBuf> {
    let done = config_path.with_extension("toml.done");
    let mut header = format!(
        "Applied by `strata node firstboot` on {when}.\nThe private keys were moved off this card (to /etc/wireguard and /etc/ssh).\nEditing this file changes nothing: provision the node again instead.\n"
    );
    for n in notes {
        let _ = writeln!(header, "note: {n}");
    }
    let body = cfg.without_secrets().render(&header);
    let root = nix::unistd::Uid::from_raw(0);
    write_whole(
        &done,
        body.as_bytes(),
        root,
        nix::unistd::Gid::from_raw(0),
        0o600,
    )?;
    // Overwrite the keys before unlinking (on FAT the data would otherwise
    // stay in free clusters; flash wear levelling may still keep a copy,
    // see docs/pi-image.md).
    if let Ok(len) = std::fs::metadata(config_path).map(|m| m.len())
        && let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(config_path)
    {
        let _ = f
            .write_all(&vec![0u8; len as usize])
            .and_then(|()| f.sync_all());
    }
    std::fs::remove_file(config_path)
        .map_err(|e| Error::io(format!("removing {}", config_path.display()), e))?;
    if let Some(d) = config_path
        .parent()
        .and_then(|d| std::fs::File::open(d).ok())
    {
        let _ = d.sync_all();
    }
    Ok(done)
}

/// The one-line error first boot leaves on the boot partition, where a
/// person who cannot log in can read it on another computer.
pub fn error_file(config_path: &Path) -> PathBuf {
    config_path.with_file_name("strata-node.error.txt")
}

/// Inspects the drive for the plan (read-only: blkid and wipefs).
pub fn inspect_drive(cfg: &NodeConfig) -> Result<DrivePlan> {
    // Let udev finish with the disks found at power-on (a USB drive takes
    // a few seconds); without udev (a chroot) this returns at once.
    let _ = Command::new("udevadm")
        .args(["settle", "--timeout=30"])
        .status();
    let present = drive::find_by_label(&cfg.drive.label)?;
    let device = cfg.drive.device.as_deref().map(Path::new);
    let candidates = drive::usb_disks(Path::new("/sys/block"));
    drive::plan(
        &cfg.drive.label,
        cfg.drive.format_blank_drive,
        device,
        &candidates,
        present,
        &drive::signatures,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_ships_the_writable_fstab() {
        // The image's first boot uses the file in pi-image/overlay; first
        // boot then writes fstab(true). They must differ only in ro/rw.
        let shipped = include_str!("../../pi-image/overlay/etc/fstab");
        assert_eq!(shipped, fstab(false));
        assert_eq!(fstab(true).matches(" ro,").count(), 2);
        assert_eq!(fstab(true).replace(" ro,", " rw,"), fstab(false));
    }
}
