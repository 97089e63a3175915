//! `strata create`.

use super::common::{self, Location, duration, size};
use super::progress::Terminal;
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;
use strata::archive::create::{CreateOptions, CreateResult, create};
use strata::archive::patterns::Excludes;
use strata::archive::placeholders;
use strata::compress::Compression;
use strata::repo::LockMode;
use strata::repo::Repository;

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// none, lz4, zstd[,1-22] (default: zstd,1), xz[,0-9], zlib[,0-9], or
    /// auto,ALGO[,LEVEL] (store data that lz4 cannot shrink as-is).
    #[arg(short = 'C', long, value_name = "SPEC", default_value = strata::compress::DEFAULT_SPEC)]
    pub compression: String,
    /// A comment stored with the archive.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub comment: String,
    /// Print borg's statistics table at the end.
    #[arg(short, long)]
    pub stats: bool,
    /// Show a live progress line.
    #[arg(short, long)]
    pub progress: bool,
    /// Print each item with its status (A added, M modified, U unchanged,
    /// d directory, s symlink, h hard link, b special, x excluded, E error).
    #[arg(long)]
    pub list: bool,
    /// Print the result as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Do everything but write to the repository.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Exclude paths matching PATTERN (`fm:` glob by default, `sh:` for
    /// globs where `*` stops at `/`). Repeatable.
    #[arg(short = 'e', long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Read exclude patterns from FILE, one per line.
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// Exclude directories holding a valid CACHEDIR.TAG.
    #[arg(long)]
    pub exclude_caches: bool,
    /// Exclude directories that contain a file named NAME. Repeatable.
    #[arg(long, value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Stay in the file system of each path (do not cross mount points).
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Store numeric uid/gid only, no user and group names.
    #[arg(long)]
    pub numeric_ids: bool,
    /// Name of the item when backing up standard input (`-`).
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    pub stdin_name: String,
    /// REPO::ARCHIVE; the name may hold {hostname} {fqdn} {user} {now[:FMT]} {utcnow[:FMT]}.
    pub archive: String,
    /// Paths to back up; `-` reads standard input.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn run(a: CreateArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.archive)?;
    let name = placeholders::expand(loc.archive()?)?;
    let mut patterns = a.exclude.clone();
    for f in &a.exclude_from {
        patterns.extend(Excludes::read_file(f)?);
    }
    if a.paths.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        bail!("standard input (`-`) can be given only once");
    }
    let opts = CreateOptions {
        name,
        paths: a.paths.clone(),
        stdin_name: a.stdin_name.clone(),
        streams: Vec::new(),
        compression: Compression::parse(&a.compression)?,
        comment: a.comment.clone(),
        excludes: Excludes::new(&patterns)?,
        exclude_caches: a.exclude_caches,
        exclude_if_present: a.exclude_if_present.clone(),
        one_file_system: a.one_file_system,
        dry_run: a.dry_run,
        numeric_ids: a.numeric_ids,
        threads: common::threads(),
        command_line: std::env::args().collect(),
    };
    let mut repo = common::open(&loc, LockMode::Exclusive, lock_wait, true)?;
    let mut term = Terminal::new(a.list, a.progress, "backed up");
    let result = create(&mut repo, &opts, &mut term);
    term.finish();
    let r = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json(&repo, &r))?);
    } else if a.stats {
        print!("{}", stats_table(&repo, &r));
    }
    Ok(if r.warnings > 0 {
        super::EXIT_WARNING
    } else {
        super::EXIT_OK
    })
}

pub(super) fn json(repo: &Repository, r: &CreateResult) -> serde_json::Value {
    let s = &r.archive.stats;
    serde_json::json!({
        "repository": {"id": repo.config().id, "location": repo.location()},
        "archive": {
            "name": r.archive.name,
            "id": r.id.to_hex(),
            "start": r.archive.time_start,
            "end": r.archive.time_end,
            "duration": r.seconds,
            "stats": {
                "nfiles": s.files,
                "original_size": s.original_size,
                "compressed_size": s.compressed_size,
                "deduplicated_size": s.deduplicated_size,
                "total_chunks": s.chunks,
                "unique_chunks": s.unique_chunks,
            },
        },
        "warnings": r.warnings,
    })
}

pub const RULE: &str =
    "------------------------------------------------------------------------------";

pub(super) fn stats_table(repo: &Repository, r: &CreateResult) -> String {
    let a = &r.archive;
    let mut out = String::new();
    out.push_str(&format!(
        "{RULE}\nRepository: {}\nArchive name: {}\nArchive fingerprint: {}\n",
        repo.location(),
        a.name,
        r.id
    ));
    out.push_str(&format!(
        "Time (start): {}\nTime (end):   {}\nDuration: {}\nNumber of files: {}\n",
        common::time(&a.time_start),
        common::time(&a.time_end),
        duration(r.seconds),
        a.stats.files
    ));
    out.push_str(&format!("{RULE}\n"));
    out.push_str(&super::cmd_info::sizes_table(repo, Some(&a.stats)));
    out.push_str(&format!("{RULE}\n"));
    let _ = size;
    out
}
