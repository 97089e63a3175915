//! `strata info`.

use super::common::{self, Location, duration, size};
use super::filters::ArchiveFilter;
use anyhow::Result;
use clap::Args;
use strata::archive::Archive;
use strata::repo::LockMode;
use strata::repo::Repository;
use strata::repo::manifest::{ArchiveRef, ArchiveStats};

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Print JSON on standard output.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub filter: ArchiveFilter,
    /// REPO or REPO::ARCHIVE.
    pub location: String,
}

pub fn run(a: InfoArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.location)?;
    let repo = common::open(&loc, LockMode::Shared, lock_wait, true)?;
    let archives: Vec<ArchiveRef> = match &loc.archive {
        Some(name) => vec![
            repo.manifest()
                .find(name)
                .cloned()
                .ok_or_else(|| strata::Error::ArchiveNotFound(name.clone()))?,
        ],
        None if a.filter.glob.is_some() || a.filter.first.is_some() || a.filter.last.is_some() => {
            a.filter.apply(&repo.manifest().archives)?
        }
        None => vec![],
    };
    let loaded: Vec<Archive> = archives
        .iter()
        .map(|r| Archive::load(&repo, r))
        .collect::<strata::Result<_>>()?;
    if a.json {
        let arch: Vec<_> = loaded
            .iter()
            .zip(&archives)
            .map(|(x, r)| archive_json(x, r))
            .collect();
        let v = serde_json::json!({"repository": repo_json(&repo), "archives": arch});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(super::EXIT_OK);
    }
    let rule = super::cmd_create::RULE;
    if loaded.is_empty() {
        print!("{}", repo_text(&repo));
        println!("{rule}");
        print!("{}", sizes_table(&repo, None));
    }
    for (x, r) in loaded.iter().zip(&archives) {
        print!("{}", archive_text(x, r));
        println!("{rule}");
        print!("{}", sizes_table(&repo, Some(&x.stats)));
    }
    Ok(super::EXIT_OK)
}

fn totals(repo: &Repository) -> ArchiveStats {
    let mut t = ArchiveStats::default();
    for a in &repo.manifest().archives {
        t.files += a.stats.files;
        t.original_size += a.stats.original_size;
        t.compressed_size += a.stats.compressed_size;
        t.chunks += a.stats.chunks;
    }
    t.deduplicated_size = repo.index().stored_bytes();
    t.unique_chunks = repo.index().len() as u64;
    t
}

/// borg's size table: this archive (optional), all archives, chunk counts.
pub fn sizes_table(repo: &Repository, this: Option<&ArchiveStats>) -> String {
    let t = totals(repo);
    let mut out = format!(
        "{:<21}{:>20}{:>20}{:>20}\n",
        "", "Original size", "Compressed size", "Deduplicated size"
    );
    if let Some(s) = this {
        out.push_str(&format!(
            "{:<21}{:>20}{:>20}{:>20}\n",
            "This archive:",
            size(s.original_size),
            size(s.compressed_size),
            size(s.deduplicated_size)
        ));
    }
    out.push_str(&format!(
        "{:<21}{:>20}{:>20}{:>20}\n\n",
        "All archives:",
        size(t.original_size),
        size(t.compressed_size),
        size(t.deduplicated_size)
    ));
    out.push_str(&format!(
        "{:<21}{:>20}{:>20}\n",
        "", "Unique chunks", "Total chunks"
    ));
    out.push_str(&format!(
        "{:<21}{:>20}{:>20}\n",
        "Chunk index:", t.unique_chunks, t.chunks
    ));
    out
}

fn repo_text(repo: &Repository) -> String {
    let c = repo.config();
    let cipher = c.cipher.map(|x| x.name()).unwrap_or("-");
    let space = repo.backend().space().ok();
    let mut s = format!(
        "Repository ID: {}\nLocation: {}\nEncrypted: {} ({}, {})\nArchives: {}\nPacks: {}\nManifest generation: {}\n",
        c.id,
        repo.location(),
        if c.encryption.encrypts() { "Yes" } else { "No" },
        c.encryption.name(),
        cipher,
        repo.manifest().archives.len(),
        repo.index().pack_count(),
        repo.manifest().generation,
    );
    if let Some(sp) = space {
        s.push_str(&format!(
            "Disk: {} free of {}\n",
            size(sp.free),
            size(sp.total)
        ));
    }
    s
}

fn repo_json(repo: &Repository) -> serde_json::Value {
    let c = repo.config();
    let t = totals(repo);
    serde_json::json!({
        "id": c.id,
        "location": repo.location(),
        "encryption": {"mode": c.encryption.name(), "cipher": c.cipher.map(|x| x.name())},
        "archives": repo.manifest().archives.len(),
        "generation": repo.manifest().generation,
        "packs": repo.index().pack_count(),
        "stats": {
            "total_size": t.original_size,
            "total_csize": t.compressed_size,
            "unique_csize": t.deduplicated_size,
            "total_chunks": t.chunks,
            "total_unique_chunks": t.unique_chunks,
        },
    })
}

fn seconds_between(a: &str, b: &str) -> f64 {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(x), Ok(y)) => (y - x).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    }
}

fn archive_text(x: &Archive, r: &ArchiveRef) -> String {
    let imported = x
        .imported_from
        .as_deref()
        .map(|m| format!("Imported from: {m}\n"))
        .unwrap_or_default();
    format!(
        "Archive name: {}\nArchive fingerprint: {}\nComment: {}\nHostname: {}\nUsername: {}\nTime (start): {}\nTime (end): {}\nDuration: {}\nNumber of files: {}\nCommand line: {}\n{imported}",
        x.name,
        r.id,
        x.comment,
        x.hostname,
        x.username,
        common::time(&x.time_start),
        common::time(&x.time_end),
        duration(seconds_between(&x.time_start, &x.time_end)),
        x.stats.files,
        x.command_line.join(" "),
    )
}

fn archive_json(x: &Archive, r: &ArchiveRef) -> serde_json::Value {
    serde_json::json!({
        "name": x.name,
        "id": r.id.to_hex(),
        "comment": x.comment,
        "hostname": x.hostname,
        "username": x.username,
        "start": x.time_start,
        "end": x.time_end,
        "duration": seconds_between(&x.time_start, &x.time_end),
        "command_line": x.command_line,
        "imported_from": x.imported_from,
        "stats": {
            "nfiles": x.stats.files,
            "original_size": x.stats.original_size,
            "compressed_size": x.stats.compressed_size,
            "deduplicated_size": x.stats.deduplicated_size,
            "total_chunks": x.stats.chunks,
            "unique_chunks": x.stats.unique_chunks,
        },
    })
}
