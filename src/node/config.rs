//! The first-boot settings of an off-site node: `strata-node.toml` on the
//! SD card's boot partition. `strata node provision` writes it on the
//! central node; `strata node firstboot` reads it on the Pi. The file is
//! the only way in to a Pi nobody has logged in to yet, so it is checked
//! field by field, with messages that say which field and how to fix it.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Where the off-site drive is mounted on the Pi (as the Ansible role does).
pub const DRIVE_MOUNT: &str = "/mnt/strata";
/// The off-site repository on the drive.
pub const REPOSITORY: &str = "/mnt/strata/offsite";
/// The daemon's state on the drive: the root file system is read-only.
pub const STATE_DIR: &str = "/mnt/strata/state";
/// The file's name on the boot partition.
pub const FILE_NAME: &str = "strata-node.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name: its host name and its name on the central node.
    pub name: String,
    pub wireguard: WireGuard,
    pub ssh: Ssh,
    pub drive: Drive,
    #[serde(default)]
    pub retention: Retention,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireGuard {
    /// This node's VPN address with its prefix, `10.8.0.12/24`.
    pub address: String,
    /// This node's private key; first boot moves it off the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    pub central_public_key: String,
    /// `host:port` the node dials (it sits behind a home router).
    pub central_endpoint: String,
    /// The central node's VPN address: the only peer address routed.
    pub central_address: String,
    #[serde(default = "default_keepalive")]
    pub keepalive: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// The node's SSH host key (OpenSSH private key); moved off at first boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// The central node's replication key: it may only append to the
    /// off-site repository.
    pub central_key: String,
    /// Keys that may log in as root, over the VPN only.
    #[serde(default)]
    pub admin_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// The ext4 label of the off-site drive.
    #[serde(default = "default_label")]
    pub label: String,
    /// Consent to format one blank drive (no partition table, no file
    /// system) when no drive has the label. Never formats anything else.
    #[serde(default)]
    pub format_blank_drive: bool,
    /// Only this device may be formatted (default: the one blank USB disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_within: String,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub prune_schedule: String,
    pub check_schedule: String,
}

impl Default for Retention {
    /// The Ansible role's defaults (ansible/roles/strata_pi/defaults).
    fn default() -> Self {
        Retention {
            keep_within: "10d".into(),
            keep_weekly: 4,
            keep_monthly: 12,
            prune_schedule: "0 12 * * *".into(),
            check_schedule: "0 13 * * 0".into(),
        }
    }
}

fn default_keepalive() -> u16 {
    25
}

fn default_label() -> String {
    "STRATA".into()
}

/// An address with its prefix length, `10.8.0.12/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str, field: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "{field} = \"{s}\" is not an address with a prefix: write it like \"10.8.0.12/24\""
            ))
        };
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { ip, prefix })
    }

    /// Whether `other` lies in this address's network.
    pub fn contains(&self, other: IpAddr) -> bool {
        match (self.ip, other) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl NodeConfig {
    /// Parses and checks the file; `origin` names it in messages.
    pub fn parse(src: &str, origin: &str) -> Result<Self> {
        let cfg: NodeConfig = toml::from_str(src).map_err(|e| {
            let line = e
                .span()
                .map(|s| {
                    format!(
                        ":{}",
                        src[..s.start.min(src.len())].matches('\n').count() + 1
                    )
                })
                .unwrap_or_default();
            Error::Config(format!("{origin}{line}: {}", one_line(e.message())))
        })?;
        cfg.validate()
            .map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        check_name(&self.name)?;
        let wg = &self.wireguard;
        let own = Cidr::parse(&wg.address, "wireguard.address")?;
        let central: IpAddr = wg.central_address.parse().map_err(|_| {
            Error::Config(format!(
                "wireguard.central_address = \"{}\" is not an IP address: give the central node's VPN address, like \"10.8.0.1\"",
                wg.central_address
            ))
        })?;
        if !own.contains(central) || own.ip == central {
            return Err(Error::Config(format!(
                "wireguard.central_address {central} must be another address in {}: check both addresses",
                wg.address
            )));
        }
        if let Some(k) = &wg.private_key {
            super::keys::decode_wg_key(k, "wireguard.private_key")?;
        }
        super::keys::decode_wg_key(&wg.central_public_key, "wireguard.central_public_key")?;
        check_endpoint(&wg.central_endpoint)?;
        if let Some(k) = &self.ssh.host_key {
            super::keys::SshHostKey::parse(k)
                .map_err(|e| Error::Config(format!("ssh.host_key: {e}")))?;
        }
        check_public_key(&self.ssh.central_key, "ssh.central_key")?;
        for (i, k) in self.ssh.admin_keys.iter().enumerate() {
            check_public_key(k, &format!("ssh.admin_keys[{i}]"))?;
        }
        check_label(&self.drive.label)?;
        if let Some(d) = &self.drive.device
            && !d.starts_with("/dev/")
        {
            return Err(Error::Config(format!(
                "drive.device = \"{d}\" is not a device path: write it like \"/dev/sda\", or leave it out"
            )));
        }
        let r = &self.retention;
        crate::config::parse_duration(&r.keep_within)
            .map_err(|e| Error::Config(format!("retention.keep_within: {e}")))?;
        for (field, s) in [
            ("retention.prune_schedule", &r.prune_schedule),
            ("retention.check_schedule", &r.check_schedule),
        ] {
            crate::config::parse_schedule(s).map_err(|e| Error::Config(format!("{field}: {e}")))?;
        }
        Ok(())
    }

    /// The node's own VPN address, without the prefix.
    pub fn vpn_ip(&self) -> Result<IpAddr> {
        Ok(Cidr::parse(&self.wireguard.address, "wireguard.address")?.ip)
    }

    /// Whether the file still holds private keys (first boot removes them).
    pub fn has_secrets(&self) -> bool {
        self.wireguard.private_key.is_some() || self.ssh.host_key.is_some()
    }

    /// The same settings without the private keys.
    pub fn without_secrets(&self) -> Self {
        let mut c = self.clone();
        c.wireguard.private_key = None;
        c.ssh.host_key = None;
        c
    }

    /// The file as provision writes it: every field with a comment that
    /// says what it is for, since a person may edit it on the SD card.
    pub fn render(&self, header: &str) -> String {
        let q = |s: &str| toml_string(s);
        let wg = &self.wireguard;
        let mut out = String::new();
        for line in header.lines() {
            out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
        }
        out.push_str(&format!(
            "\n# The node's name: its host name, and its name on the central node.\nname = {}\n",
            q(&self.name)
        ));
        out.push_str("\n[wireguard]\n# This node's address on the VPN.\n");
        out.push_str(&format!("address = {}\n", q(&wg.address)));
        if let Some(k) = &wg.private_key {
            out.push_str(&format!(
                "# This node's private key. First boot moves it to /etc/wireguard and\n# removes it from this card.\nprivate_key = {}\n",
                q(k)
            ));
        }
        out.push_str(&format!(
            "# The central node: its key, where to reach it, its VPN address.\ncentral_public_key = {}\ncentral_endpoint = {}\ncentral_address = {}\n# Seconds between keepalives (keeps the home router's NAT mapping open).\nkeepalive = {}\n",
            q(&wg.central_public_key),
            q(&wg.central_endpoint),
            q(&wg.central_address),
            wg.keepalive
        ));
        out.push_str("\n[ssh]\n");
        if let Some(k) = &self.ssh.host_key {
            out.push_str(&format!(
                "# This node's SSH host key (the central node already trusts it). First\n# boot moves it to /etc/ssh and removes it from this card.\nhost_key = \"\"\"\n{}\"\"\"\n",
                k.trim_end().to_string() + "\n"
            ));
        }
        out.push_str(&format!(
            "# The central node's replication key: it may only add to the off-site\n# repository, never delete (strata serve --append-only).\ncentral_key = {}\n",
            q(&self.ssh.central_key)
        ));
        out.push_str("# Keys that may log in as root, over the VPN only.\nadmin_keys = [");
        for k in &self.ssh.admin_keys {
            out.push_str(&format!("\n  {},", q(k)));
        }
        out.push_str(if self.ssh.admin_keys.is_empty() {
            "]\n"
        } else {
            "\n]\n"
        });
        out.push_str(&format!(
            "\n[drive]\n# The off-site USB drive: an ext4 file system with this label.\nlabel = {}\n# true lets first boot format ONE blank drive (no partition table, no\n# file system) as ext4 with this label. It never formats anything else.\nformat_blank_drive = {}\n",
            q(&self.drive.label),
            self.drive.format_blank_drive
        ));
        match &self.drive.device {
            Some(d) => out.push_str(&format!("# Only this device may be formatted.\ndevice = {}\n", q(d))),
            None => out.push_str("# Only this device may be formatted (default: the one blank USB disk).\n# device = \"/dev/sda\"\n"),
        }
        let r = &self.retention;
        out.push_str(&format!(
            "\n[retention]\n# What the node keeps of the replicas, and when it prunes and verifies them.\nkeep_within = {}\nkeep_weekly = {}\nkeep_monthly = {}\nprune_schedule = {}\ncheck_schedule = {}\n",
            q(&r.keep_within),
            r.keep_weekly,
            r.keep_monthly,
            q(&r.prune_schedule),
            q(&r.check_schedule)
        ));
        out
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Host-name rules (RFC 1123 label), since the name becomes the host name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "node name \"{name}\" is not a host name: use 1-63 lower-case letters, digits and inner dashes, like \"grandma-pi\""
        )))
    }
}

fn check_endpoint(ep: &str) -> Result<()> {
    let bad = || {
        Error::Config(format!(
            "wireguard.central_endpoint = \"{ep}\" needs a host and a port: write it like \"vpn.example.org:51820\""
        ))
    };
    let (host, port) = ep.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(())
}

fn check_public_key(line: &str, field: &str) -> Result<()> {
    russh::keys::ssh_key::PublicKey::from_openssh(line.trim()).map_err(|_| {
        Error::Config(format!(
            "{field} is not an OpenSSH public key line: paste the whole line of the .pub file (\"ssh-ed25519 AAAA… comment\")"
        ))
    })?;
    if line.contains('\n') {
        return Err(Error::Config(format!("{field} must be one line")));
    }
    Ok(())
}

fn check_label(label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 16
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "drive.label = \"{label}\" is not a usable ext4 label: 1-16 letters, digits, - or _"
        )))
    }
}
