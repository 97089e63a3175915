//! `strata restore-repo`: materialise a repository (usually a replica on a
//! Pi) into a new location, every file checked.

use super::common::{Location, size};
use super::progress::Terminal;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
#[command(after_help = "\
With --replica TIER[::ARCHIVE], SOURCE is the host's name inside the replica \
(the newest replica unless ARCHIVE names the night):

  strata restore-repo --replica ssh://strata@pi-family.vpn/mnt/usb/strata/offsite \\
      knode01 /srv/strata/repos/knode01

Packs and index files are checked against their names (the BLAKE3 of their \
bytes) before they are written, and every written file is read back. The \
repository's `config` is written last; an interrupted restore is continued \
by running the same command again.")]
pub struct RestoreRepoArgs {
    /// Show a live progress line.
    #[arg(short, long)]
    pub progress: bool,
    /// Print the result as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// The repository to copy (with --replica: its name in the replica).
    pub source: String,
    /// The new repository location (a path, ssh:// or s3:// URL; must not hold a repository).
    pub dest: String,
}

pub fn run(a: RestoreRepoArgs, lock_wait: u64) -> Result<i32> {
    let src = Location::parse(&a.source)?.backend()?;
    let dest = Location::parse_plain(&a.dest).backend_for(true)?;
    let mut term = Terminal::new(false, a.progress, "restored");
    let r = strata::ops::restore_repo::restore_repo(
        src.clone(),
        dest.as_ref(),
        std::time::Duration::from_secs(lock_wait),
        &mut term,
    );
    term.finish();
    let r = r?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "source": src.location(),
                "destination": dest.location(),
                "repository_id": r.repository_id,
                "files": r.files,
                "bytes": r.bytes,
                "kept": r.kept,
            }))?
        );
    } else {
        eprintln!(
            "Restored repository {} into {}: {} files, {}{}; every file checked and read back.\nNext: strata check --verify-data {}",
            r.repository_id,
            dest.location(),
            r.files,
            size(r.bytes),
            if r.kept > 0 {
                format!(" ({} kept from an interrupted run)", r.kept)
            } else {
                String::new()
            },
            dest.location()
        );
    }
    Ok(super::EXIT_OK)
}
