//! `strata compact`.

use super::common::{self, Location, size};
use anyhow::Result;
use clap::Args;
use std::time::Duration;
use strata::ops::compact::{CompactOptions, compact};
use strata::repo::LockMode;

#[derive(Args, Debug)]
pub struct CompactArgs {
    /// Rewrite packs of which at least PCT percent is unused.
    #[arg(long, value_name = "PCT", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub threshold: u8,
    /// Leave packs younger than SECONDS alone: they may belong to a backup
    /// that is still running (or paused) on another machine.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub grace_period: u64,
    /// Show what would be freed, change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Repository path.
    pub repository: String,
}

pub fn run(a: CompactArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.repository)?;
    let mut repo = common::open(&loc, LockMode::Destructive, lock_wait, true)?;
    let before = repo.backend().space().ok();
    let opts = CompactOptions {
        threshold_pct: a.threshold,
        grace: Duration::from_secs(a.grace_period),
        dry_run: a.dry_run,
    };
    let r = compact(&mut repo, &opts)?;
    let p = &r.plan;
    let verb = if a.dry_run { "Would free" } else { "Freed" };
    eprintln!(
        "{verb} {}: {} packs rewritten into {}, {} packs deleted, {} leftover packs and {} temporary files removed, {} unused blobs dropped",
        size(p.bytes_freed),
        p.rewrite.len(),
        r.new_packs,
        p.delete.len(),
        p.orphans.len(),
        r.temporaries,
        r.blobs_dropped
    );
    if let (Some(b), Ok(a)) = (before, repo.backend().space()) {
        eprintln!("Disk: {} free (was {})", size(a.free), size(b.free));
    }
    Ok(super::EXIT_OK)
}
