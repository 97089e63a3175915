//! `strata replicate`: copy repositories, as ciphertext, into archives of
//! off-site repositories.

use super::common::{self, Location, duration, size};
use super::progress::Terminal;
use anyhow::{Result, bail};
use clap::Args;
use std::sync::Arc;
use std::time::Duration;
use strata::backend::Backend;
use strata::compress::Compression;
use strata::ops::replicate::{ReplicateOptions, ReplicateResult, replicate};
use strata::repo::LockMode;

/// Exit status when some target failed: this plus a bit per failed target
/// (bit 0 for the first --to, …; targets after the sixth share bit 5).
pub const EXIT_TARGETS_FAILED: i32 = 64;

#[derive(Args, Debug)]
#[command(after_help = "\
Each SOURCE repository (a central node's per-host repository, read without \
its key) becomes one archive `<NAME>-<UTC time>` in every target, holding the \
repository's files under the directory NAME (default: the source's last path \
component). Files already in the target's previous replica of NAME are not \
read again. Targets are usually unencrypted repositories on off-site nodes \
(`strata init --encryption none`): what they store is already ciphertext.

Exit status: 0 all done, 1 done with warnings, 2 nothing could start, \
64 + a bit per failed target (65: the first --to failed, 66: the second, \
67: both, ...).

Example:
  strata replicate --to ssh://strata@pi-home.vpn/mnt/usb/strata/offsite \\
                   --to ssh://strata@pi-family.vpn/mnt/usb/strata/offsite \\
                   /srv/strata/*")]
pub struct ReplicateArgs {
    /// A target repository (repeatable).
    #[arg(long = "to", value_name = "REPO", required = true)]
    pub targets: Vec<String>,
    /// Name of the repository in the targets (only with one SOURCE).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Compression for the copies; ciphertext does not compress, so `auto`
    /// stores it as it is after a quick lz4 probe.
    #[arg(short = 'C', long, value_name = "SPEC", default_value = "auto,lz4")]
    pub compression: String,
    /// After the run, read every file of each new replica back from the
    /// target and compare its content hash with the source's.
    #[arg(long)]
    pub verify: bool,
    /// Say what would be copied and how many bytes, change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Show a live progress line.
    #[arg(short, long)]
    pub progress: bool,
    /// Print a statistics table per replica.
    #[arg(short, long)]
    pub stats: bool,
    /// Print each file with its status (A added, U unchanged, M modified).
    #[arg(long)]
    pub list: bool,
    /// Print the results as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Source repositories (local paths, ssh:// or s3:// URLs).
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,
}

struct Outcome {
    source: String,
    name: String,
    target: String,
    result: std::result::Result<ReplicateResult, String>,
    sent: Option<u64>,
}

pub fn run(a: ReplicateArgs, lock_wait: u64) -> Result<i32> {
    if a.name.is_some() && a.sources.len() != 1 {
        bail!("--name names one source; give one SOURCE or leave --name out");
    }
    let compression = Compression::parse(&a.compression)?;
    let mut names = Vec::new();
    for s in &a.sources {
        let n = a
            .name
            .clone()
            .unwrap_or_else(|| strata::ops::replicate::name_of(s));
        strata::ops::replicate::validate_repo_name(&n)?;
        if names.contains(&n) {
            bail!(
                "two sources would be called `{n}` in the targets: replicate them separately with --name"
            );
        }
        names.push(n);
    }
    // Sources are opened once and shared by every target.
    let sources: Vec<std::result::Result<Arc<dyn Backend>, String>> = a
        .sources
        .iter()
        .map(|s| {
            Location::parse(s)
                .and_then(|l| l.backend())
                .map_err(|e| format!("{e:#}"))
        })
        .collect();
    let notice = |holder: &str| eprintln!("strata: waiting up to {lock_wait} s for {holder}");
    let mut outcomes = Vec::new();
    let mut warnings = false;
    for target in &a.targets {
        let opened = Location::parse(target)
            .and_then(|l| common::open(&l, LockMode::Exclusive, lock_wait, true));
        let mut repo = match opened {
            Ok(r) => Some(r),
            Err(e) => {
                let why = format!("{e:#}");
                for (s, n) in a.sources.iter().zip(&names) {
                    outcomes.push(Outcome {
                        source: s.clone(),
                        name: n.clone(),
                        target: target.clone(),
                        result: Err(why.clone()),
                        sent: None,
                    });
                }
                None
            }
        };
        let Some(repo) = repo.as_mut() else { continue };
        for ((s, n), backend) in a.sources.iter().zip(&names).zip(&sources) {
            let before = repo.backend().traffic();
            let result = match backend {
                Err(e) => Err(e.clone()),
                Ok(b) => {
                    let opts = ReplicateOptions {
                        repo_name: n.clone(),
                        archive_name: None,
                        compression,
                        dry_run: a.dry_run,
                        verify: a.verify,
                        threads: common::threads(),
                        lock_wait: Duration::from_secs(lock_wait),
                        lock_notice: &notice,
                        command_line: std::env::args().collect(),
                    };
                    let mut term = Terminal::new(a.list, a.progress, "replicated");
                    let r = replicate(b.clone(), repo, &opts, &mut term);
                    term.finish();
                    r.map_err(|e| e.to_string())
                }
            };
            let sent = match (before, repo.backend().traffic()) {
                (Some(b), Some(after)) => Some(after.sent - b.sent),
                _ => None,
            };
            if let Ok(r) = &result {
                for w in &r.warnings {
                    eprintln!("strata: warning: {n} → {target}: {w}");
                    warnings = true;
                }
            }
            outcomes.push(Outcome {
                source: s.clone(),
                name: n.clone(),
                target: target.clone(),
                result,
                sent,
            });
        }
    }
    report(&a, &outcomes);
    let mut mask = 0;
    for o in &outcomes {
        if o.result.is_err() {
            let i = a.targets.iter().position(|t| *t == o.target).unwrap_or(0);
            mask |= 1 << i.min(5);
        }
    }
    Ok(if mask != 0 {
        EXIT_TARGETS_FAILED + mask
    } else if warnings {
        super::EXIT_WARNING
    } else {
        super::EXIT_OK
    })
}

fn report(a: &ReplicateArgs, outcomes: &[Outcome]) {
    if a.json {
        let list: Vec<_> = outcomes.iter().map(json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "replicas": list }))
                .unwrap_or_default()
        );
    }
    for o in outcomes {
        match &o.result {
            Err(e) => eprintln!("strata: FAILED {} → {}: {e}", o.name, o.target),
            Ok(r) if a.dry_run => eprintln!(
                "{} → {}: would copy {} of {} files, {} (generation {}, previous replica {})",
                o.name,
                o.target,
                r.files - r.unchanged_files,
                r.files,
                size(r.new_bytes),
                r.generation,
                r.previous.as_deref().unwrap_or("none")
            ),
            Ok(r) => {
                if a.stats {
                    eprint!("{}", stats_table(o, r));
                } else if !a.json {
                    eprintln!(
                        "{} → {}: {} ({} files, {} unchanged; read {}, stored {}{}) in {}",
                        o.name,
                        o.target,
                        r.archive_name,
                        r.files,
                        r.unchanged_files,
                        size(r.read_bytes),
                        size(r.stored_bytes),
                        o.sent
                            .map(|s| format!(", sent {}", size(s)))
                            .unwrap_or_default(),
                        duration(r.seconds)
                    );
                }
            }
        }
    }
}

fn json(o: &Outcome) -> serde_json::Value {
    match &o.result {
        Err(e) => serde_json::json!({
            "source": o.source, "name": o.name, "target": o.target,
            "ok": false, "error": e,
        }),
        Ok(r) => serde_json::json!({
            "source": o.source, "name": o.name, "target": o.target, "ok": true,
            "archive": r.archive_name,
            "id": r.id.map(|i| i.to_hex()),
            "source_repository_id": r.source_id,
            "source_generation": r.generation,
            "previous": r.previous,
            "files": r.files,
            "unchanged_files": r.unchanged_files,
            "read_files": r.read_files,
            "read_bytes": r.read_bytes,
            "new_bytes": r.new_bytes,
            "stored_bytes": r.stored_bytes,
            "sent_bytes": o.sent,
            "verified_files": r.verified_files,
            "duration": r.seconds,
            "warnings": r.warnings,
        }),
    }
}

fn stats_table(o: &Outcome, r: &ReplicateResult) -> String {
    use super::cmd_create::RULE;
    let mut out = format!(
        "{RULE}\nSource: {} (repository {}, generation {})\nTarget: {}\nArchive name: {}\n",
        o.source, r.source_id, r.generation, o.target, r.archive_name
    );
    if let Some(id) = r.id {
        out.push_str(&format!("Archive fingerprint: {id}\n"));
    }
    out.push_str(&format!(
        "Previous replica: {}\nDuration: {}\n{RULE}\n",
        r.previous.as_deref().unwrap_or("none"),
        duration(r.seconds)
    ));
    let row = |label: &str, files: u64, bytes: String| {
        format!("{label:<24}{files:>12} files  {bytes:>12}\n")
    };
    out.push_str(&row(
        "All files:",
        r.files,
        size(
            r.archive
                .as_ref()
                .map(|a| a.stats.original_size)
                .unwrap_or(0),
        ),
    ));
    out.push_str(&row(
        "Unchanged (not read):",
        r.unchanged_files,
        String::new(),
    ));
    out.push_str(&row(
        "Read from the source:",
        r.read_files,
        size(r.read_bytes),
    ));
    out.push_str(&format!(
        "{:<24}{:>31}\n",
        "Stored in the target:",
        size(r.stored_bytes)
    ));
    if let Some(s) = o.sent {
        out.push_str(&format!(
            "{:<24}{:>31}\n",
            "Sent on the connection:",
            size(s)
        ));
    }
    if r.verified_files > 0 {
        out.push_str(&format!(
            "{:<24}{:>12} files\n",
            "Verified by reading:", r.verified_files
        ));
    }
    out.push_str(&format!("{RULE}\n"));
    out
}
