//! `strata check`.

use super::common::{self, Location, size};
use anyhow::Result;
use clap::Args;
use std::sync::Mutex;
use std::time::Instant;
use strata::ops::check::{CheckOptions, check};
use strata::repo::LockMode;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also read every pack: verify its hash, its header, and authenticate,
    /// decompress and re-hash every blob.
    #[arg(long)]
    pub verify_data: bool,
    /// Verify data for at most SECONDS (implies --verify-data); the next
    /// run continues with the packs this one did not reach.
    #[arg(long, value_name = "SECONDS")]
    pub max_duration: Option<u64>,
    /// Show a live progress line.
    #[arg(short, long)]
    pub progress: bool,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Rebuild the index from the packs, keep every blob that still
    /// authenticates, rebuild a lost manifest from the archives, drop
    /// archives whose metadata is gone, and list files that lost data.
    /// Safe to run again; never deletes a readable blob.
    #[arg(long)]
    pub repair: bool,
    /// Repository path.
    pub repository: String,
}

pub fn run(a: CheckArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.repository)?;
    if a.repair {
        return repair(&loc, lock_wait, a.json);
    }
    let repo = common::open(&loc, LockMode::Shared, lock_wait, true)?;
    let started = Instant::now();
    let last = Mutex::new(Instant::now());
    let show = a.progress;
    let progress = move |what: &str, done: u64, total: u64| {
        if !show {
            return;
        }
        if let Ok(mut l) = last.lock()
            && (l.elapsed().as_millis() >= 200 || done == total)
        {
            *l = Instant::now();
            eprint!("\r\x1b[K{what}: {done}/{total}");
        }
    };
    let report = check(
        &repo,
        &CheckOptions {
            verify_data: a.verify_data || a.max_duration.is_some(),
            threads: common::threads(),
            max_duration: a.max_duration.map(std::time::Duration::from_secs),
        },
        &progress,
    )?;
    if show {
        eprintln!();
    }
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let v = serde_json::json!({
            "ok": report.ok(), "errors": report.errors, "notes": report.notes,
            "packs": report.packs, "blobs": report.blobs, "archives": report.archives,
            "items": report.items, "bytes_verified": report.bytes_verified, "seconds": secs,
            "packs_verified": report.packs_verified, "cycle_complete": report.cycle_complete,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for e in &report.errors {
            eprintln!("strata: error: {e}");
        }
        for n in &report.notes {
            eprintln!("note: {n}");
        }
        if a.max_duration.is_some() {
            eprintln!(
                "verified {} of {} packs in this run{}",
                report.packs_verified.len(),
                report.packs,
                if report.cycle_complete {
                    "; a full pass through all packs is complete"
                } else {
                    ""
                }
            );
        }
        let verified = if a.verify_data || a.max_duration.is_some() {
            format!(", {} read and verified", size(report.bytes_verified))
        } else {
            String::new()
        };
        eprintln!(
            "{}: {} archives, {} items, {} blobs in {} packs{verified}, {:.1} s",
            if report.ok() {
                "Repository is consistent"
            } else {
                "Repository has ERRORS"
            },
            report.archives,
            report.items,
            report.blobs,
            report.packs,
            secs
        );
    }
    Ok(if report.ok() {
        super::EXIT_OK
    } else {
        super::EXIT_ERROR
    })
}

fn repair(loc: &Location, lock_wait: u64, json: bool) -> Result<i32> {
    let mut repo = common::open_with(loc, LockMode::Destructive, lock_wait, true, true)?;
    let r = strata::ops::repair::repair(&mut repo)?;
    let clean = r.damaged_packs.is_empty()
        && r.unreadable_packs.is_empty()
        && r.blobs_lost == 0
        && !r.manifest_rebuilt
        && r.archives_removed.is_empty()
        && r.damaged_files.is_empty();
    if json {
        let v = serde_json::json!({
            "clean": clean, "packs": r.packs, "damaged_packs": r.damaged_packs, "unreadable_packs": r.unreadable_packs, "blobs_lost": r.blobs_lost,
            "manifest_rebuilt": r.manifest_rebuilt, "archives_removed": r.archives_removed, "damaged_files": r.damaged_files,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for p in &r.damaged_packs {
            eprintln!("damaged pack (readable blobs moved to new packs): {p}");
        }
        for p in &r.unreadable_packs {
            eprintln!("unreadable pack left in place, not used: {p}");
        }
        if r.manifest_rebuilt {
            eprintln!("the manifest was unreadable: rebuilt from the archives found in the packs");
        }
        for a in &r.archives_removed {
            eprintln!("archive removed (its metadata is lost): {a}");
        }
        for f in &r.damaged_files {
            eprintln!(
                "file with lost data (restored with holes; heals when a backup brings the data back): {f}"
            );
        }
        eprintln!(
            "Repair done: {} packs read, {} damaged, {} blobs lost{}",
            r.packs,
            r.damaged_packs.len(),
            r.blobs_lost,
            if clean {
                " — repository was healthy"
            } else {
                ""
            }
        );
    }
    Ok(if clean {
        super::EXIT_OK
    } else {
        super::EXIT_WARNING
    })
}
