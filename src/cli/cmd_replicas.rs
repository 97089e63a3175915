//! `strata replicas`: which tiers hold which nights of a host.

use super::common::{self, size};
use anyhow::Result;
use clap::Args;
use strata::ops::replicate::is_replica_of;

#[derive(Args, Debug)]
pub struct ReplicasArgs {
    /// Print JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// The repository's name in the tiers (usually the host name).
    pub host: String,
    /// Replica tiers: repositories that `strata replicate --to` writes.
    #[arg(required = true, value_name = "TIER")]
    pub tiers: Vec<String>,
}

/// The source's manifest generation, from the comment replicate writes.
fn generation_of(comment: &str) -> Option<u64> {
    comment
        .rsplit_once("manifest generation ")
        .and_then(|(_, g)| g.trim().parse().ok())
}

pub fn run(a: ReplicasArgs, lock_wait: u64) -> Result<i32> {
    let mut out = Vec::new();
    let mut failed = false;
    for tier in &a.tiers {
        match list_tier(tier, &a.host, lock_wait) {
            Ok(list) => out.push((tier, Ok(list))),
            Err(e) => {
                failed = true;
                out.push((tier, Err(format!("{e:#}"))));
            }
        }
    }
    if a.json {
        let tiers: Vec<_> = out
            .iter()
            .map(|(t, r)| match r {
                Ok(list) => serde_json::json!({"tier": t, "ok": true, "replicas": list}),
                Err(e) => serde_json::json!({"tier": t, "ok": false, "error": e}),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"host": a.host, "tiers": tiers}))?
        );
    } else {
        for (t, r) in &out {
            match r {
                Err(e) => println!("{t}: UNREACHABLE: {e}"),
                Ok(list) => {
                    println!("{t}: {} replicas of {}", list.len(), a.host);
                    for v in list {
                        println!(
                            "  {:<36} {}  generation {:>5}  {:>10}",
                            v["archive"].as_str().unwrap_or(""),
                            common::time(v["time"].as_str().unwrap_or("")),
                            v["source_generation"].as_u64().unwrap_or(0),
                            size(v["size"].as_u64().unwrap_or(0))
                        );
                    }
                }
            }
        }
    }
    Ok(if failed {
        super::EXIT_WARNING
    } else {
        super::EXIT_OK
    })
}

fn list_tier(tier: &str, host: &str, lock_wait: u64) -> Result<Vec<serde_json::Value>> {
    let repo = common::open_tier(tier, lock_wait)?;
    let mut list: Vec<_> = repo
        .manifest()
        .archives
        .iter()
        .filter(|r| is_replica_of(&r.name, host))
        .cloned()
        .collect();
    list.sort_by(|a, b| a.time.cmp(&b.time));
    let mut out = Vec::new();
    for r in list {
        let a = strata::archive::Archive::load(&repo, &r)?;
        out.push(serde_json::json!({
            "archive": r.name,
            "time": r.time,
            "source_generation": generation_of(&a.comment),
            "files": r.stats.files,
            "size": r.stats.original_size,
            "comment": a.comment,
        }));
    }
    Ok(out)
}
