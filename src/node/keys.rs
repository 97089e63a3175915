//! The keys `strata node provision` makes for a new off-site node: its
//! WireGuard key pair and its SSH host key. Both are made on the central
//! node so that the central node can trust the Pi before it first boots
//! (strict known_hosts, a WireGuard peer already in place); the private
//! halves travel once on the SD card and first boot moves them off it
//! (docs/pi-image.md).

use crate::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use curve25519_dalek::montgomery::MontgomeryPoint;
use russh::keys::ssh_key::{LineEnding, PrivateKey, private::Ed25519Keypair};

/// A WireGuard (Curve25519) key pair, both halves base64 as `wg` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgKeyPair {
    pub private: String,
    pub public: String,
}

impl WgKeyPair {
    /// A new random key pair, clamped like `wg genkey`.
    pub fn generate() -> Result<Self> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| Error::invalid(format!("no randomness from the kernel: {e}")))?;
        clamp(&mut secret);
        let private = STANDARD.encode(secret);
        let public = wg_public_key(&private)?;
        Ok(WgKeyPair { private, public })
    }
}

/// Curve25519 scalar clamping (RFC 7748 §5), as `wg genkey` does.
fn clamp(k: &mut [u8; 32]) {
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
}

/// The public key of a base64 WireGuard private key (what `wg pubkey` does).
pub fn wg_public_key(private: &str) -> Result<String> {
    let secret = decode_wg_key(private, "WireGuard private key")?;
    Ok(STANDARD.encode(MontgomeryPoint::mul_base_clamped(secret).to_bytes()))
}

/// Decodes a base64 WireGuard key (32 bytes), naming `what` on failure.
pub fn decode_wg_key(key: &str, what: &str) -> Result<[u8; 32]> {
    let bytes = STANDARD.decode(key.trim()).map_err(|_| {
        Error::invalid(format!(
            "{what} is not base64: copy it from `wg show` or the key file"
        ))
    })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        Error::invalid(format!(
            "{what} is {} bytes, not 32: it is not a WireGuard key",
            bytes.len()
        ))
    })
}

/// An SSH host key (Ed25519): the private key in OpenSSH format and the
/// public key line (`ssh-ed25519 AAAA… comment`).
#[derive(Debug, Clone)]
pub struct SshHostKey {
    pub private_openssh: String,
    pub public_line: String,
}

impl SshHostKey {
    pub fn generate(comment: &str) -> Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::invalid(format!("no randomness from the kernel: {e}")))?;
        let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        key.set_comment(comment);
        Self::from_private(&key)
    }

    /// Reads an OpenSSH private key (what first boot gets from the config).
    pub fn parse(private_openssh: &str) -> Result<Self> {
        let key = PrivateKey::from_openssh(private_openssh.trim().as_bytes()).map_err(|e| {
            Error::invalid(format!(
                "the SSH host key is not an OpenSSH private key: {e}"
            ))
        })?;
        Self::from_private(&key)
    }

    fn from_private(key: &PrivateKey) -> Result<Self> {
        let private_openssh = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| Error::invalid(format!("cannot encode the SSH host key: {e}")))?
            .to_string();
        let public_line = key
            .public_key()
            .to_openssh()
            .map_err(|e| Error::invalid(format!("cannot encode the SSH public key: {e}")))?;
        Ok(SshHostKey {
            private_openssh,
            public_line,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_rfc7748_alice() {
        // RFC 7748 §6.1: Alice's private and public keys.
        let private =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap();
        let public =
            hex::decode("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
                .unwrap();
        assert_eq!(
            wg_public_key(&STANDARD.encode(private)).unwrap(),
            STANDARD.encode(public)
        );
    }

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let a = WgKeyPair::generate().unwrap();
        let b = WgKeyPair::generate().unwrap();
        assert_ne!(a.private, b.private);
        let k = decode_wg_key(&a.private, "k").unwrap();
        assert_eq!(k[0] & 7, 0);
        assert_eq!(k[31] & 0xc0, 0x40);
        assert_eq!(wg_public_key(&a.private).unwrap(), a.public);
    }

    #[test]
    fn bad_keys_are_named() {
        let e = wg_public_key("not base64!").unwrap_err().to_string();
        assert!(e.contains("WireGuard private key is not base64"), "{e}");
        let e = wg_public_key(&STANDARD.encode([1u8; 16]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("16 bytes, not 32"), "{e}");
    }

    #[test]
    fn ssh_host_key_round_trips() {
        let k = SshHostKey::generate("grandma").unwrap();
        assert!(
            k.public_line.starts_with("ssh-ed25519 "),
            "{}",
            k.public_line
        );
        assert!(k.public_line.ends_with(" grandma"));
        let again = SshHostKey::parse(&k.private_openssh).unwrap();
        assert_eq!(again.public_line, k.public_line);
        assert!(SshHostKey::parse("nope").is_err());
    }
}
