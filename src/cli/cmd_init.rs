//! `strata init` and `strata break-lock`.

use super::common::{CliPassphrase, Location};
use anyhow::Result;
use clap::Args;
use strata::chunker::ChunkerParams;
use strata::crypto::keyfile::KdfParams;
use strata::crypto::{Cipher, Mode};
use strata::repo::client::ClientDirs;
use strata::repo::{InitOptions, init};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// repokey (key in the repository, protected by the passphrase),
    /// keyfile (key only on this client), authenticated (no secrecy, tamper
    /// evident) or none (checksums only: for replicas of encrypted repos).
    #[arg(short, long, value_name = "MODE", default_value = "repokey")]
    pub encryption: String,
    /// aes-256-gcm or chacha20-poly1305; default: AES where the CPU has AES
    /// instructions, ChaCha20 otherwise (Raspberry Pi 3/4).
    #[arg(long, value_name = "CIPHER")]
    pub cipher: Option<String>,
    /// Content-defined chunking MIN,AVG,MAX in bytes (`512K,2M,8M`, the
    /// default) or as powers of two (`19,21,23`).
    #[arg(long, value_name = "PARAMS")]
    pub chunker_params: Option<String>,
    /// Close packs at this size (`16M` default; 1M to 1G). Smaller packs
    /// suit slow links and object stores, larger ones huge repositories.
    #[arg(long, value_name = "SIZE")]
    pub pack_size: Option<String>,
    /// Never delete anything: delete and prune only write new manifest
    /// generations (the old ones keep the dropped archives), compact and
    /// repair refuse.
    #[arg(long)]
    pub append_only: bool,
    /// Repository path.
    pub repository: String,
}

pub fn run(a: InitArgs) -> Result<i32> {
    let loc = Location::parse(&a.repository)?;
    let mode = Mode::parse(&a.encryption)?;
    let cipher = match &a.cipher {
        Some(c) => Cipher::parse(c)?,
        None => Cipher::default_for_cpu(),
    };
    let chunker = match &a.chunker_params {
        Some(p) => ChunkerParams::parse(p)?,
        None => ChunkerParams::default(),
    };
    let kdf_cost = if std::env::var_os("STRATA_INSECURE_FAST_KDF").is_some() {
        KdfParams::insecure_test_cost()
    } else {
        KdfParams::default_cost()
    };
    let pack_size = match &a.pack_size {
        Some(s) => u32::try_from(strata::chunker::parse_size(s)?)
            .map_err(|_| anyhow::anyhow!("--pack-size {s} is too large"))?,
        None => strata::repo::config::DEFAULT_PACK_SIZE,
    };
    let backend = loc.backend_for(true)?;
    let dirs = ClientDirs::from_env();
    let config = init(
        backend.as_ref(),
        &InitOptions {
            mode,
            cipher,
            chunker,
            kdf_cost,
            pack_size,
            append_only: a.append_only,
        },
        &CliPassphrase,
        &dirs,
    )?;
    eprintln!("Initialized repository {} ({})", loc.repo, config.id);
    match mode {
        Mode::Repokey => eprintln!(
            "Encryption: repokey, {}. The key is in the repository, protected by your passphrase.\n\
             Keep the passphrase safe: without it the backups cannot be read.",
            config.cipher.map(|c| c.name()).unwrap_or("-")
        ),
        Mode::Keyfile => eprintln!(
            "Encryption: keyfile, {}. The key is at {}: back it up elsewhere, without it the backups cannot be read.",
            config.cipher.map(|c| c.name()).unwrap_or("-"),
            dirs.key_file(&config.id).display()
        ),
        Mode::Authenticated => eprintln!(
            "Encryption: none (authenticated): data is readable by anyone with access to the repository."
        ),
        Mode::None => eprintln!(
            "Encryption: none: data is readable and not authenticated; use for replicas of encrypted repositories."
        ),
    }
    Ok(super::EXIT_OK)
}

#[derive(Args, Debug)]
pub struct BreakLockArgs {
    /// Repository path.
    pub repository: String,
}

pub fn break_lock(a: BreakLockArgs) -> Result<i32> {
    let loc = Location::parse(&a.repository)?;
    let n = strata::repo::lock::break_all(loc.backend()?.as_ref())?;
    eprintln!("Removed {n} lock(s) from {}", loc.repo);
    Ok(super::EXIT_OK)
}
