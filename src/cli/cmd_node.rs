//! `strata node provision` (on the central node) and `strata node
//! firstboot` (on a new Pi): the off-site node from the Raspberry Pi image
//! (pi-image/, docs/pi-image.md).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use strata::node::config::{Drive, FILE_NAME, NodeConfig};
use strata::node::firstboot;
use strata::node::keys::wg_public_key;
use strata::node::provision::{self, Request};

#[derive(Args, Debug)]
#[command(after_help = "\
A new off-site node is a Raspberry Pi flashed with the strata image \
(pi-image/README.md). On the central node, `strata node provision NAME` makes \
its keys and writes NAME/strata-node.toml: copy that file to the SD card's \
boot partition, plug in the USB drive, power on. At first boot the Pi runs \
`strata node firstboot`: it joins the VPN, listens for SSH on the VPN only, \
lets the central node's key append to /mnt/strata/offsite, mounts the drive \
by label (formats a blank one only with consent), makes its root file \
system read-only and reboots. See docs/pi-image.md.")]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Make a new off-site node's keys and first-boot settings (central node).
    Provision(Box<ProvisionArgs>),
    /// Apply the first-boot settings on the Pi (strata-firstboot.service).
    Firstboot(FirstbootArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "\
Writes into --out (default ./NAME): strata-node.toml for the SD card (mode \
0600: it holds the node's private keys until its first boot), and in \
central/ the lines this central node needs: wg0-peer.conf (the node as a \
WireGuard peer), known_hosts (its SSH host key, so the replication checks \
it strictly from the first connection) and strata-repository.toml (the \
repository to add to strata.toml and to a replicate job's targets).\n\n\
Example:\n  strata node provision grandma --address 10.8.0.12/24 \\\n      --endpoint vpn.example.org:51820 --format-blank-drive")]
pub struct ProvisionArgs {
    /// The node's name (its host name): letters, digits, dashes.
    pub name: String,
    /// The node's VPN address with the network's prefix, e.g. 10.8.0.12/24.
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub address: String,
    /// Where the node reaches this central node's WireGuard, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub endpoint: String,
    /// This central node's VPN address (default: Address in --central-wg-config).
    #[arg(long, value_name = "ADDR")]
    pub central_address: Option<String>,
    /// This central node's WireGuard configuration.
    #[arg(long, value_name = "FILE", default_value = "/etc/wireguard/wg0.conf")]
    pub central_wg_config: PathBuf,
    /// This central node's WireGuard private key, to derive the public key.
    #[arg(long, value_name = "FILE", default_value = "/etc/wireguard/wg0.key")]
    pub central_wg_key: PathBuf,
    /// This central node's WireGuard public key (instead of --central-wg-key).
    #[arg(long, value_name = "KEY")]
    pub central_wg_public_key: Option<String>,
    /// The public key the replication uses to log in to the node.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/strata/id_ed25519.pub"
    )]
    pub central_ssh_key: PathBuf,
    /// A public key file that may log in as root over the VPN (repeatable).
    #[arg(long = "admin-key", value_name = "FILE")]
    pub admin_keys: Vec<PathBuf>,
    /// The ext4 label of the node's USB drive.
    #[arg(long, value_name = "LABEL", default_value = "STRATA")]
    pub drive_label: String,
    /// Let first boot format one blank drive (never one with data on it).
    #[arg(long)]
    pub format_blank_drive: bool,
    /// With --format-blank-drive: only this device (default: the one blank USB disk).
    #[arg(long, value_name = "DEVICE", requires = "format_blank_drive")]
    pub drive_device: Option<String>,
    /// Seconds between WireGuard keepalives from the node.
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    pub keepalive: u16,
    /// Where to write (default: ./NAME).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace an earlier provisioning of the node (new keys: the old card stops working).
    #[arg(long)]
    pub force: bool,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Runs once at the first boot of the Pi image (strata-firstboot.service), \
while the root file system is still writable. Each step rewrites whole \
files, so after a power cut the next boot simply runs it again. On success \
the settings, without the private keys, are kept as strata-node.toml.done \
with notes on what was found (e.g. no drive yet); on failure the reason is \
written to strata-node.error.txt beside it, readable on any computer.")]
pub struct FirstbootArgs {
    /// The first-boot settings.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/boot/firmware/strata-node.toml"
    )]
    pub config: PathBuf,
    /// Print what would be done, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not reboot at the end (the read-only root takes effect at the next boot).
    #[arg(long)]
    pub no_reboot: bool,
}

pub fn run(a: NodeArgs) -> Result<i32> {
    match a.command {
        NodeCommand::Provision(p) => provision(*p),
        NodeCommand::Firstboot(f) => firstboot(f),
    }
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// `Address = 10.8.0.1/24` of a wg-quick configuration, without the prefix.
fn wg_config_address(path: &Path) -> Result<String> {
    let text = read(path, "the WireGuard configuration").context("or pass --central-address")?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("address"))
        .and_then(|(_, v)| v.split(',').next())
        .map(|v| v.trim().split('/').next().unwrap_or("").to_string())
        .filter(|v| !v.is_empty())
        .with_context(|| format!("{} has no Address: pass --central-address", path.display()))
}

fn provision(a: ProvisionArgs) -> Result<i32> {
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(&a.name));
    let node_file = out.join(FILE_NAME);
    if node_file.exists() && !a.force {
        bail!(
            "{} exists: the node {} was provisioned already; pass --force to make new keys (the old SD card then stops working)",
            node_file.display(),
            a.name
        );
    }
    let central_address = match &a.central_address {
        Some(c) => c.clone(),
        None => wg_config_address(&a.central_wg_config)?,
    };
    let central_wg_public_key = match &a.central_wg_public_key {
        Some(k) => k.clone(),
        None => wg_public_key(
            &read(&a.central_wg_key, "the WireGuard key")
                .context("or pass --central-wg-public-key")?,
        )?,
    };
    let central_ssh_key = read(&a.central_ssh_key, "the replication's public key")?;
    let mut admin_keys = Vec::new();
    for f in &a.admin_keys {
        admin_keys.extend(
            read(f, "the admin key")?
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    let req = Request {
        name: a.name.clone(),
        address: a.address.clone(),
        central_address,
        central_endpoint: a.endpoint.clone(),
        central_wg_public_key,
        central_ssh_key: central_ssh_key.trim().to_string(),
        admin_keys,
        drive: Drive {
            label: a.drive_label.clone(),
            format_blank_drive: a.format_blank_drive,
            device: a.drive_device.clone(),
        },
        keepalive: a.keepalive,
    };
    let p = provision::provision(&req)?;
    let central = out.join("central");
    std::fs::create_dir_all(&central).with_context(|| format!("creating {}", central.display()))?;
    let when = chrono::Local::now().format("%Y-%m-%d %H:%M");
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let header = format!(
        "strata off-site node {name}: first-boot settings, made by `strata node provision`\non {host} at {when}.\n\nCopy this file to the SD card's boot partition (the small FAT one, beside\nconfig.txt), keeping its name strata-node.toml. It holds the node's private\nkeys: keep it secret. First boot moves them off the card.",
        name = a.name
    );
    let ids = (nix::unistd::getuid(), nix::unistd::getgid());
    firstboot::write_whole(
        &node_file,
        p.config.render(&header).as_bytes(),
        ids.0,
        ids.1,
        0o600,
    )?;
    let ssh_key = a.central_ssh_key.with_extension("");
    let known_hosts = ssh_key.with_file_name("known_hosts");
    let files = [
        ("wg0-peer.conf", p.central_peer()?),
        ("known_hosts", p.known_hosts_line()?),
        (
            "strata-repository.toml",
            p.central_repository(&ssh_key, &known_hosts)?,
        ),
    ];
    for (f, body) in &files {
        firstboot::write_whole(&central.join(f), body.as_bytes(), ids.0, ids.1, 0o644)?;
    }
    if a.json {
        let v = serde_json::json!({
            "name": a.name,
            "node_config": node_file,
            "central_dir": central,
            "wireguard_public_key": p.wg_public,
            "ssh_host_key": p.host_public,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let c = central.display();
    println!(
        "Node {name} provisioned in {out}/:\n  {file}   copy it to the SD card's boot partition (secret: it holds the node's keys)\n  central/                the lines this central node needs\n\nOn this central node:\n  cat {c}/wg0-peer.conf >> {wgc} && wg set wg0 peer {pk} allowed-ips {ip}\n  cat {c}/known_hosts >> {kh}\n  cat {c}/strata-repository.toml >> /etc/strata/strata.toml\n  and add \"{name}\" to the targets of the replicate job there.",
        name = a.name,
        out = out.display(),
        file = FILE_NAME,
        wgc = a.central_wg_config.display(),
        pk = p.wg_public,
        ip = p.config.vpn_ip()?,
        kh = known_hosts.display(),
    );
    Ok(0)
}

fn firstboot(a: FirstbootArgs) -> Result<i32> {
    let src = read(&a.config, "the first-boot settings")?;
    let result = (|| -> Result<()> {
        let cfg = NodeConfig::parse(&src, &a.config.display().to_string())?;
        let drive = firstboot::inspect_drive(&cfg)?;
        let plan = firstboot::plan(&cfg, drive)?;
        if a.dry_run {
            println!(
                "strata node firstboot --dry-run: {} steps for node {}",
                plan.steps.len(),
                cfg.name
            );
            for s in &plan.steps {
                println!("  {s}");
            }
            for n in &plan.notes {
                println!("note: {n}");
            }
            if cfg.has_secrets() {
                println!(
                    "then move the private keys off {} (to {}.done)",
                    a.config.display(),
                    FILE_NAME
                );
            }
            return Ok(());
        }
        firstboot::apply(&plan, &mut |s| println!("{s}"))?;
        for n in &plan.notes {
            println!("note: {n}");
        }
        let when = chrono::Local::now().format("%Y-%m-%d %H:%M %Z").to_string();
        let done = firstboot::retire(&a.config, &cfg, &plan.notes, &when)?;
        let _ = std::fs::remove_file(firstboot::error_file(&a.config));
        println!(
            "node {} is set up; settings kept without keys in {}",
            cfg.name,
            done.display()
        );
        Ok(())
    })();
    if let Err(e) = &result
        && !a.dry_run
    {
        // Where a person without a login can read it: the boot partition.
        let msg = format!(
            "strata node firstboot failed: {e:#}\nFix strata-node.toml (or provision the node again) and boot again.\n"
        );
        let _ = std::fs::write(firstboot::error_file(&a.config), msg);
    }
    result?;
    if !a.dry_run && !a.no_reboot {
        println!("rebooting into the read-only system");
        let status = std::process::Command::new("systemctl")
            .arg("reboot")
            .status()
            .context("running systemctl reboot")?;
        if !status.success() {
            bail!("systemctl reboot failed: reboot the node by hand");
        }
    }
    Ok(0)
}
