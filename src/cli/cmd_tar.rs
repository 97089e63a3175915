//! `strata import-tar` and `strata export-tar`.

use super::common::{self, Location, size};
use super::progress::Terminal;
use anyhow::{Context, Result};
use clap::Args;
use std::io::BufReader;
use strata::archive::Archive;
use strata::archive::builder::BuildOptions;
use strata::archive::placeholders;
use strata::compress::Compression;
use strata::ops::tar::compress::{self, TarCompression};
use strata::ops::tar::export::ExportOptions;
use strata::ops::tar::import::{ImportResult, import_tar};
use strata::repo::{LockMode, Repository};

#[derive(Args, Debug)]
pub struct ImportTarArgs {
    /// Repository compression, as for `create`: none, lz4,
    /// zstd[,L] (default: zstd,1), xz[,L], zlib[,L], auto,ALGO[,L].
    #[arg(short = 'C', long, value_name = "SPEC", default_value = strata::compress::DEFAULT_SPEC)]
    pub compression: String,
    /// A comment stored with the archive.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub comment: String,
    /// The archive's time (RFC 3339, e.g. 2026-01-31T23:00:00Z) instead of now.
    #[arg(long, value_name = "TIME")]
    pub timestamp: Option<String>,
    /// Print borg's statistics table at the end.
    #[arg(short, long)]
    pub stats: bool,
    /// Show a live progress line.
    #[arg(short, long)]
    pub progress: bool,
    /// Print each member with its status (A file, d directory, s symlink,
    /// h hard link, b special, x skipped).
    #[arg(long)]
    pub list: bool,
    /// Print the result as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Read everything, write nothing to the repository.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// REPO::ARCHIVE; the name may hold {hostname} {now} ... as for `create`.
    pub archive: String,
    /// The tar file (plain, gzip, zstd or xz: recognised by its first
    /// bytes), or `-` for standard input.
    pub file: String,
}

#[derive(Args, Debug)]
pub struct ExportTarArgs {
    /// Compression of the tar: auto (by FILE's extension: .tar.gz/.tgz,
    /// .tar.zst, .tar.xz; plain otherwise and for `-`), none, gzip[,L],
    /// zstd[,L], xz[,L]. borg's `gzip -9`-style filters are understood.
    #[arg(long, value_name = "FILTER", default_value = "auto")]
    pub tar_filter: String,
    /// Remove N leading path components from every item.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub strip_components: usize,
    /// Show a live progress line.
    #[arg(short, long)]
    pub progress: bool,
    /// Print each item as it is written.
    #[arg(long)]
    pub list: bool,
    /// Print a summary as JSON on standard output (FILE cannot be `-`).
    #[arg(long)]
    pub json: bool,
    /// REPO::ARCHIVE.
    pub archive: String,
    /// Output file, or `-` for standard output.
    pub file: String,
    /// Only these archive paths (and what is below them).
    pub paths: Vec<String>,
}

pub fn import(a: ImportTarArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.archive)?;
    let name = placeholders::expand(loc.archive()?)?;
    let time_start = match &a.timestamp {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| {
                    format!("--timestamp {t}: use RFC 3339, e.g. 2026-01-31T23:00:00Z")
                })?
                .with_timezone(&chrono::Utc)
                .to_rfc3339(),
        ),
        None => None,
    };
    let opts = BuildOptions {
        name,
        compression: Compression::parse(&a.compression)?,
        comment: a.comment.clone(),
        time_end: time_start.clone(),
        time_start,
        command_line: std::env::args().collect(),
        dry_run: a.dry_run,
        threads: common::threads(),
        ..BuildOptions::default()
    };
    let input: Box<dyn std::io::BufRead + Send> = if a.file == "-" {
        Box::new(BufReader::with_capacity(1 << 20, std::io::stdin()))
    } else {
        let f = std::fs::File::open(&a.file)
            .with_context(|| format!("opening {}: check the path", a.file))?;
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    let (reader, _) = compress::decoder(input)?;
    let mut repo = common::open(&loc, LockMode::Exclusive, lock_wait, true)?;
    let mut term = Terminal::new(a.list, a.progress, "imported");
    let r = import_tar(&mut repo, reader, &opts, &mut term);
    term.finish();
    let r = r?;
    report(&repo, &r, a.json, a.stats)?;
    Ok(exit_code(&r))
}

/// `create`'s JSON, plus the skipped members and the tar's size.
pub fn json_of(repo: &Repository, r: &ImportResult) -> serde_json::Value {
    let mut v = super::cmd_create::json(repo, &r.result);
    v["skipped"] = r.skipped.into();
    v["warnings"] = r.warnings.into();
    v["tar_bytes"] = r.tar_bytes.into();
    v
}

/// The summary of an import, as `create` prints it, plus skipped members.
pub fn report(repo: &Repository, r: &ImportResult, json: bool, stats: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&json_of(repo, r))?);
    } else if stats {
        print!("{}", super::cmd_create::stats_table(repo, &r.result));
    }
    if r.skipped > 0 {
        eprintln!(
            "strata: warning: {} tar member{} skipped (see the warnings above)",
            r.skipped,
            if r.skipped == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

pub fn exit_code(r: &ImportResult) -> i32 {
    if r.warnings > 0 {
        super::EXIT_WARNING
    } else {
        super::EXIT_OK
    }
}

pub fn export(a: ExportTarArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.archive)?;
    let name = loc.archive()?.to_string();
    if a.json && a.file == "-" {
        anyhow::bail!("--json prints on standard output: write the tar to a FILE, not `-`");
    }
    let compression = match a.tar_filter.as_str() {
        "auto" => TarCompression::from_file_name(&a.file),
        spec => TarCompression::parse(spec)?,
    };
    let repo = common::open(&loc, LockMode::Shared, lock_wait, true)?;
    let archive = Archive::find(&repo, &name)?;
    let opts = ExportOptions {
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
    };
    let out: Box<dyn std::io::Write + Send> = if a.file == "-" {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout(),
        ))
    } else {
        let f = std::fs::File::create(&a.file)
            .with_context(|| format!("creating {}: check the directory and permissions", a.file))?;
        Box::new(std::io::BufWriter::with_capacity(1 << 20, f))
    };
    let sink = compress::encoder(out, compression)?;
    let total = (opts.paths.is_empty() && opts.strip_components == 0)
        .then_some(archive.stats.original_size);
    let mut term = match total {
        Some(t) => Terminal::with_total(a.list, a.progress, "exported", t),
        None => Terminal::new(a.list, a.progress, "exported"),
    };
    let started = std::time::Instant::now();
    let r = strata::ops::tar::export_to(&repo, &archive, &opts, sink, &mut term);
    term.finish();
    if r.is_err() && a.file != "-" {
        // A partial tar must not be mistaken for the archive.
        let _ = std::fs::remove_file(&a.file);
    }
    let r = r?;
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let v = serde_json::json!({
            "archive": archive.name,
            "file": a.file,
            "compression": compression.name(),
            "items": r.files,
            "content_bytes": r.bytes,
            "tar_bytes": r.tar_bytes,
            "duration": secs,
            "warnings": r.warnings,
            "errors": r.errors,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    if a.progress {
        eprintln!(
            "{} items, {} of content, {} of tar ({}) in {secs:.1} s",
            r.files,
            size(r.bytes),
            size(r.tar_bytes),
            compression.name()
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
