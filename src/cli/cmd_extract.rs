//! `strata extract`.

use super::common::{self, Location, size};
use super::progress::Terminal;
use anyhow::Result;
use clap::Args;
use strata::archive::Archive;
use strata::archive::extract::{ExtractOptions, extract};
use strata::repo::LockMode;

#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// Remove N leading path components from every item.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub strip_components: usize,
    /// Write runs of zeros as holes (sparse files).
    #[arg(long)]
    pub sparse: bool,
    /// Restore numeric uid/gid, ignoring stored user and group names.
    #[arg(long)]
    pub numeric_ids: bool,
    /// Read and verify everything, write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Show a live progress line.
    #[arg(short, long)]
    pub progress: bool,
    /// Print each item as it is restored.
    #[arg(long)]
    pub list: bool,
    /// Restore into DIR instead of the current directory.
    #[arg(long, value_name = "DIR")]
    pub target: Option<std::path::PathBuf>,
    /// REPO::ARCHIVE.
    pub archive: String,
    /// Only these archive paths (and what is below them).
    pub paths: Vec<String>,
}

pub fn run(a: ExtractArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.archive)?;
    let name = loc.archive()?.to_string();
    let repo = common::open(&loc, LockMode::Shared, lock_wait, true)?;
    let archive = Archive::find(&repo, &name)?;
    let dest = match &a.target {
        Some(t) => t.clone(),
        None => std::env::current_dir()?,
    };
    let opts = ExtractOptions {
        dest,
        paths: a
            .paths
            .iter()
            .map(|p| {
                p.trim_start_matches('/')
                    .trim_end_matches('/')
                    .as_bytes()
                    .to_vec()
            })
            .collect(),
        strip_components: a.strip_components,
        sparse: a.sparse,
        numeric_ids: a.numeric_ids,
        dry_run: a.dry_run,
        // Over a network each worker waits a round trip per chunk: more of
        // them keep the link busy. On a local disk a worker waits for its
        // direct writes: four more than cores keep the cores busy
        // meanwhile (docs/performance.md, "extract").
        threads: if loc.is_remote() {
            common::threads() * 4
        } else {
            common::threads() + 4
        },
    };
    let total = if opts.paths.is_empty() && opts.strip_components == 0 {
        Some(archive.stats.original_size)
    } else {
        None
    };
    let mut term = match total {
        Some(t) => Terminal::with_total(a.list, a.progress, "restored", t),
        None => Terminal::new(a.list, a.progress, "restored"),
    };
    let started = std::time::Instant::now();
    let r = extract(&repo, &archive, &opts, &mut term);
    term.finish();
    let r = r?;
    if a.progress {
        eprintln!(
            "{} files, {} in {:.1} s",
            r.files,
            size(r.bytes),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(if r.errors > 0 {
        super::EXIT_ERROR
    } else if r.warnings > 0 {
        super::EXIT_WARNING
    } else {
        super::EXIT_OK
    })
}
