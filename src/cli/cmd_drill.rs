//! `strata drill`: restore a sample from every tier of a host and check it.

use super::common::{self, Location};
use anyhow::Result;
use clap::Args;
use std::time::Instant;
use strata::ops::drill::{DrillOptions, Outcome, TierReport, drill_ciphertext, drill_with_key};
use strata::repo::LockMode;
use strata::repo::client::ClientDirs;

#[derive(Args, Debug)]
#[command(after_help = "\
Each tier gets a line: ok, missing (unreachable, or no copy of HOST) or \
corrupt (a sampled file or pack did not read back as recorded). The result \
is kept in <cache>/drills/HOST.json (last run and last success per tier). \
Exit status: 0 when every tier is ok, 2 otherwise.

Example:
  strata drill knode01 --repo /srv/strata/repos/knode01 \\
      --tier ssh://strata@pi-home.vpn/mnt/usb/strata/offsite \\
      --tier ssh://strata@pi-family.vpn/mnt/usb/strata/offsite")]
pub struct DrillArgs {
    /// The host's repository itself (the central tier). Repeatable.
    #[arg(long = "repo", value_name = "REPO")]
    pub repos: Vec<String>,
    /// A replica tier holding replicas of HOST. Repeatable.
    #[arg(long = "tier", value_name = "TIER[::ARCHIVE]")]
    pub tiers: Vec<String>,
    /// Verify ciphertext only (packs hash to their names): no key needed.
    #[arg(long)]
    pub without_key: bool,
    /// Files restored per archive (with the key), or packs read (without).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub sample: usize,
    /// Besides the newest archive, drill every Nth older one (0: newest only).
    #[arg(long, value_name = "N", default_value_t = 7)]
    pub every: usize,
    /// Where to restore the sample (a temporary directory inside it).
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<std::path::PathBuf>,
    /// Print the reports as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// The host: the repository's name inside replica tiers.
    pub host: String,
}

pub fn run(a: DrillArgs, lock_wait: u64) -> Result<i32> {
    if a.repos.is_empty() && a.tiers.is_empty() {
        anyhow::bail!(
            "name at least one tier: --repo REPO (the host's repository) or --tier TIER (a replica tier)"
        );
    }
    let scratch = match &a.scratch {
        Some(d) => tempfile::Builder::new()
            .prefix("strata-drill-")
            .tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("strata-drill-").tempdir()?,
    };
    let opts = DrillOptions {
        sample: a.sample,
        every: a.every,
        scratch: scratch.path().to_path_buf(),
        threads: common::threads(),
    };
    let mut reports = Vec::new();
    let tiers = a
        .repos
        .iter()
        .map(|r| (r, false))
        .chain(a.tiers.iter().map(|t| (t, true)));
    for (tier, replica) in tiers {
        let started = Instant::now();
        let mut report = TierReport::new(tier);
        let backend = if replica {
            common::replica_backend(tier, &a.host, lock_wait)
        } else {
            Location::parse_plain(tier).backend_for(false)
        };
        match backend {
            Err(e) => report.fail(Outcome::Missing, format!("{e:#}")),
            Ok(b) if a.without_key => drill_ciphertext(b.as_ref(), a.sample, &mut report),
            Ok(b) => match strata::repo::Repository::open(
                b,
                &strata::repo::OpenOptions {
                    lock: LockMode::Shared,
                    lock_wait: std::time::Duration::from_secs(lock_wait),
                    passphrase: &common::CliPassphrase,
                    dirs: ClientDirs::from_env(),
                    load_index: true,
                    repair: false,
                    lock_notice: None,
                },
            ) {
                Ok(repo) => drill_with_key(&repo, &opts, &mut report),
                Err(e) => {
                    let outcome = Outcome::of_error(&e);
                    report.fail(outcome, e.to_string())
                }
            },
        }
        report.seconds = started.elapsed().as_secs_f64();
        reports.push(report);
    }
    let cache = ClientDirs::from_env().cache;
    if let Err(e) = strata::ops::drill::record(&cache, &a.host, &reports) {
        eprintln!("strata: warning: could not record the drill: {e}");
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"host": a.host, "tiers": reports}))?
        );
    }
    for r in &reports {
        let what = if a.without_key {
            format!("{} packs and index files", r.packs)
        } else {
            format!("{} files from {} archives", r.files, r.archives.len())
        };
        eprintln!(
            "{:<8} {} ({what}, {})",
            r.outcome.name(),
            r.tier,
            common::duration(r.seconds)
        );
        for p in &r.problems {
            eprintln!("         {p}");
        }
    }
    Ok(if reports.iter().all(|r| r.outcome == Outcome::Ok) {
        super::EXIT_OK
    } else {
        super::EXIT_ERROR
    })
}
