//! `strata node provision`: on the central node, makes everything a new
//! off-site Pi needs (its keys, its first-boot settings) and the lines the
//! central node adds to trust it (WireGuard peer, known_hosts, the
//! repository of the replication job).

use super::config::{self, Drive, NodeConfig, Retention, Ssh, WireGuard};
use super::keys::{SshHostKey, WgKeyPair};
use crate::Result;
use std::path::Path;

/// What the person on the central node says about the new node.
#[derive(Debug, Clone)]
pub struct Request {
    pub name: String,
    pub address: String,
    pub central_address: String,
    pub central_endpoint: String,
    pub central_wg_public_key: String,
    pub central_ssh_key: String,
    pub admin_keys: Vec<String>,
    pub drive: Drive,
    pub keepalive: u16,
}

/// The node's settings (with its private keys) and its public keys.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub config: NodeConfig,
    pub wg_public: String,
    pub host_public: String,
}

pub fn provision(req: &Request) -> Result<Provisioned> {
    config::check_name(&req.name)?;
    let wg = WgKeyPair::generate()?;
    let host = SshHostKey::generate(&format!("root@{}", req.name))?;
    let config = NodeConfig {
        name: req.name.clone(),
        wireguard: WireGuard {
            address: req.address.clone(),
            private_key: Some(wg.private.clone()),
            central_public_key: req.central_wg_public_key.trim().to_string(),
            central_endpoint: req.central_endpoint.clone(),
            central_address: req.central_address.clone(),
            keepalive: req.keepalive,
        },
        ssh: Ssh {
            host_key: Some(host.private_openssh.clone()),
            central_key: req.central_ssh_key.trim().to_string(),
            admin_keys: req
                .admin_keys
                .iter()
                .map(|k| k.trim().to_string())
                .collect(),
        },
        drive: req.drive.clone(),
        retention: Retention::default(),
    };
    config.validate()?;
    Ok(Provisioned {
        config,
        wg_public: wg.public,
        host_public: host.public_line,
    })
}

impl Provisioned {
    /// The `[Peer]` block for the central node's WireGuard configuration.
    pub fn central_peer(&self) -> Result<String> {
        let ip = self.config.vpn_ip()?;
        Ok(format!(
            "\n[Peer]\n# {name} (strata off-site node)\nPublicKey = {pk}\nAllowedIPs = {ip}/{host}\n",
            name = self.config.name,
            pk = self.wg_public,
            host = if ip.is_ipv4() { 32 } else { 128 },
        ))
    }

    /// The central node's known_hosts line for the node's VPN address.
    pub fn known_hosts_line(&self) -> Result<String> {
        let ip = self.config.vpn_ip()?;
        // The key without its comment: `ssh-ed25519 AAAA…`.
        let key: Vec<&str> = self.host_public.split_whitespace().take(2).collect();
        Ok(format!("{ip} {}\n", key.join(" ")))
    }

    /// The `[[repository]]` the central node's replication job targets.
    pub fn central_repository(&self, ssh_key: &Path, known_hosts: &Path) -> Result<String> {
        let ip = self.config.vpn_ip()?;
        let host = match ip {
            std::net::IpAddr::V4(a) => a.to_string(),
            std::net::IpAddr::V6(a) => format!("[{a}]"),
        };
        Ok(format!(
            "\n[[repository]]\nname = \"{name}\"\nlocation = \"ssh://{user}@{host}{repo}\"\nssh_key = \"{key}\"\nknown_hosts = \"{kh}\"\n",
            name = self.config.name,
            user = super::firstboot::USER,
            repo = config::REPOSITORY,
            key = ssh_key.display(),
            kh = known_hosts.display(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::keys::wg_public_key;

    pub(crate) fn request() -> Request {
        let central = WgKeyPair::generate().unwrap();
        let central_ssh = SshHostKey::generate("strata@central").unwrap();
        Request {
            name: "grandma".into(),
            address: "10.8.0.12/24".into(),
            central_address: "10.8.0.1".into(),
            central_endpoint: "vpn.example.org:51820".into(),
            central_wg_public_key: central.public,
            central_ssh_key: central_ssh.public_line,
            admin_keys: vec![],
            drive: Drive {
                label: "STRATA".into(),
                format_blank_drive: false,
                device: None,
            },
            keepalive: 25,
        }
    }

    #[test]
    fn the_rendered_file_reads_back_the_same() {
        let p = provision(&request()).unwrap();
        let text = p.config.render("first line\n\nthird");
        assert!(text.starts_with("# first line\n#\n# third\n"), "{text}");
        let back = NodeConfig::parse(&text, "strata-node.toml").unwrap();
        assert_eq!(back, p.config);
        assert!(back.has_secrets());
        let bare = NodeConfig::parse(&p.config.without_secrets().render("x"), "done").unwrap();
        assert!(!bare.has_secrets());
        assert_eq!(bare.name, "grandma");
    }

    #[test]
    fn central_lines_carry_the_node_keys() {
        let p = provision(&request()).unwrap();
        let peer = p.central_peer().unwrap();
        let own = wg_public_key(p.config.wireguard.private_key.as_ref().unwrap()).unwrap();
        assert!(peer.contains(&format!("PublicKey = {own}")), "{peer}");
        assert!(peer.contains("AllowedIPs = 10.8.0.12/32"), "{peer}");
        let kh = p.known_hosts_line().unwrap();
        assert!(
            kh.starts_with("10.8.0.12 ssh-ed25519 ") && !kh.contains("root@"),
            "{kh}"
        );
        let repo = p
            .central_repository(
                Path::new("/etc/strata/id_ed25519"),
                Path::new("/etc/strata/known_hosts"),
            )
            .unwrap();
        assert!(
            repo.contains("ssh://strata@10.8.0.12/mnt/strata/offsite"),
            "{repo}"
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let mut r = request();
        r.name = "Grandma's Pi".into();
        assert!(
            provision(&r)
                .unwrap_err()
                .to_string()
                .contains("not a host name")
        );
        let mut r = request();
        r.central_address = "10.9.0.1".into();
        let e = provision(&r).unwrap_err().to_string();
        assert!(
            e.contains("central_address 10.9.0.1 must be another address in 10.8.0.12/24"),
            "{e}"
        );
        let mut r = request();
        r.central_endpoint = "vpn.example.org".into();
        assert!(
            provision(&r)
                .unwrap_err()
                .to_string()
                .contains("needs a host and a port")
        );
        let mut r = request();
        r.central_ssh_key = "AAAA".into();
        assert!(
            provision(&r)
                .unwrap_err()
                .to_string()
                .contains("ssh.central_key is not an OpenSSH public key")
        );
        let mut r = request();
        r.drive.label = "a label that is far too long".into();
        assert!(
            provision(&r)
                .unwrap_err()
                .to_string()
                .contains("not a usable ext4 label")
        );
    }
}
