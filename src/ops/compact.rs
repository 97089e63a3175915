//! `compact`: reclaims the space of blobs no archive uses.
//!
//! Plan (pure): per pack, the bytes of used blobs; a pack is deleted when
//! nothing in it is used, rewritten when at least `threshold` percent is
//! unused, and left alone otherwise. Packs (and unindexed leftovers of
//! crashed writers) younger than the grace period are never touched.
//!
//! Execution order, each step durable before the next: new packs (the used
//! blobs' sealed bytes, copied as they are), then one complete new index,
//! then removal of the old index files, then of the old packs. A crash
//! between any two steps leaves a valid repository (see docs/FORMAT.md).

use super::check::{CheckReport, check_archives};
use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::repo::Repository;
use crate::repo::pack::PackEntry;
use crate::repo::writer::{PackCopier, WriteSummary, write_index};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// An index file lists at most this many blobs (about 4.5 MB).
pub const INDEX_FILE_MAX_BLOBS: usize = 100_000;

#[derive(Clone, Copy, Debug)]
pub struct CompactOptions {
    /// Rewrite a pack when at least this percentage of it is unused.
    pub threshold_pct: u8,
    /// Leave files younger than this alone (a paused writer's data).
    pub grace: Duration,
    pub dry_run: bool,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            threshold_pct: 10,
            grace: Duration::from_secs(3600),
            dry_run: false,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactPlan {
    pub rewrite: Vec<PackId>,
    pub delete: Vec<PackId>,
    /// Pack files in no index (left by crashed writers), old enough to go.
    pub orphans: Vec<String>,
    pub bytes_freed: u64,
}

#[derive(Debug, Default)]
pub struct CompactReport {
    pub plan: CompactPlan,
    /// Temporary files of interrupted writes removed.
    pub temporaries: u64,
    pub new_packs: usize,
    pub blobs_dropped: u64,
}

struct PackUse {
    size: u64,
    modified: i64,
    used_bytes: u64,
    blobs: Vec<(BlobId, PackEntry)>,
}

pub fn compact(repo: &mut Repository, opts: &CompactOptions) -> Result<CompactReport> {
    if repo.config().append_only {
        return Err(Error::invalid(
            "this repository is append-only: nothing may be deleted; compact it where it is not append-only",
        ));
    }
    let mut errors = CheckReport::default();
    let mut used = check_archives(repo, &repo.manifest().archives, &mut errors, &|_, _, _| {})?;
    if !errors.ok() {
        return Err(Error::corrupt(format!(
            "compact refuses to delete anything while archives are damaged ({}); run `strata check`",
            errors.errors.first().cloned().unwrap_or_default()
        )));
    }
    // Archives dropped by a manifest written within the grace period stay
    // recoverable (from that older generation) until the period ends: a
    // rogue or mistaken prune is not made final by the next compact.
    let recent = recently_dropped_archives(repo, opts.grace)?;
    used.extend(check_archives(
        repo,
        &recent,
        &mut CheckReport::default(),
        &|_, _, _| {},
    )?);
    let packs = pack_usage(repo, &used)?;
    let now = chrono::Utc::now().timestamp();
    let plan = make_plan(&packs, repo, opts, now)?;
    let mut report = CompactReport {
        plan,
        ..Default::default()
    };
    if !opts.dry_run {
        report.temporaries = repo
            .backend()
            .remove_stale_temporaries(opts.grace.as_secs())?;
    }
    if opts.dry_run
        || (report.plan.rewrite.is_empty()
            && report.plan.delete.is_empty()
            && report.plan.orphans.is_empty())
    {
        return Ok(report);
    }
    let rewrite = report.plan.rewrite.clone();
    let summary = copy_used_blobs(repo, &packs, &rewrite, &used, &mut report)?;
    swap_index(repo, &report.plan, summary)?;
    for p in report.plan.rewrite.iter().chain(&report.plan.delete) {
        repo.backend().delete(FileKind::Pack, &p.to_hex())?;
    }
    for name in &report.plan.orphans {
        repo.backend().delete(FileKind::Pack, name)?;
    }
    Ok(report)
}

/// Archives in manifest generations younger than `grace` that the current
/// manifest no longer lists.
fn recently_dropped_archives(
    repo: &Repository,
    grace: Duration,
) -> Result<Vec<crate::repo::manifest::ArchiveRef>> {
    let now = chrono::Utc::now().timestamp();
    let current: HashSet<BlobId> = repo.manifest().archives.iter().map(|a| a.id).collect();
    let mut out = Vec::new();
    for f in repo.backend().list(FileKind::Manifest)? {
        let Some(g) = crate::repo::manifest::parse_file_name(&f.name) else {
            continue;
        };
        if g == repo.manifest().generation
            || now.saturating_sub(f.modified) >= grace.as_secs() as i64
        {
            continue;
        }
        if let Ok(m) = crate::repo::read_manifest(repo.backend().as_ref(), repo.sealer(), g) {
            out.extend(m.archives.into_iter().filter(|a| !current.contains(&a.id)));
        }
    }
    Ok(out)
}

fn pack_usage(repo: &Repository, used: &HashSet<BlobId>) -> Result<HashMap<PackId, PackUse>> {
    let files: HashMap<String, (u64, i64)> = repo
        .backend()
        .list(FileKind::Pack)?
        .into_iter()
        .map(|f| (f.name, (f.size, f.modified)))
        .collect();
    let mut packs: HashMap<PackId, PackUse> = HashMap::new();
    for (id, pack, loc) in repo.index().iter() {
        let Some(&(size, modified)) = files.get(&pack.to_hex()) else {
            continue; // missing pack: `check` reports it, compact leaves it
        };
        let p = packs.entry(pack).or_insert(PackUse {
            size,
            modified,
            used_bytes: 0,
            blobs: Vec::new(),
        });
        if used.contains(id) {
            p.used_bytes += loc.length as u64;
        }
        p.blobs.push((*id, loc.entry(*id)));
    }
    Ok(packs)
}

fn make_plan(
    packs: &HashMap<PackId, PackUse>,
    repo: &Repository,
    opts: &CompactOptions,
    now: i64,
) -> Result<CompactPlan> {
    let old_enough = |modified: i64| now.saturating_sub(modified) >= opts.grace.as_secs() as i64;
    let mut plan = CompactPlan::default();
    for (id, p) in packs {
        if !old_enough(p.modified) {
            continue;
        }
        // Header and trailer of a pack holding exactly its indexed blobs.
        let overhead = 64 + (crate::repo::pack::PACK_HEADER_ENTRY_LEN * p.blobs.len()) as u64;
        let unused = p.size.saturating_sub(p.used_bytes + overhead);
        if p.used_bytes == 0 {
            plan.delete.push(*id);
            plan.bytes_freed += p.size;
        } else if unused > 0 && unused * 100 >= p.size * opts.threshold_pct as u64 {
            plan.rewrite.push(*id);
            plan.bytes_freed += unused;
        }
    }
    let indexed: HashSet<String> = repo.index().iter().map(|(_, p, _)| p.to_hex()).collect();
    for f in repo.backend().list(FileKind::Pack)? {
        if !indexed.contains(&f.name) && old_enough(f.modified) {
            plan.bytes_freed += f.size;
            plan.orphans.push(f.name);
        }
    }
    plan.rewrite.sort();
    plan.delete.sort();
    plan.orphans.sort();
    Ok(plan)
}

/// Copies the used blobs of the packs to rewrite into new packs, as sealed
/// bytes (no decryption needed: envelopes are bound to type and id only).
fn copy_used_blobs(
    repo: &Repository,
    packs: &HashMap<PackId, PackUse>,
    rewrite: &[PackId],
    used: &HashSet<BlobId>,
    report: &mut CompactReport,
) -> Result<WriteSummary> {
    let mut copier = PackCopier::new(
        repo.backend().as_ref(),
        repo.sealer(),
        repo.config().pack_size,
    );
    for id in rewrite {
        let Some(p) = packs.get(id) else { continue };
        let data = repo.backend().read(FileKind::Pack, &id.to_hex())?;
        if blake3::hash(&data).as_bytes() != &id.0 {
            return Err(Error::corrupt(format!(
                "pack {id} is damaged; compact stops (run `strata check --verify-data`)"
            )));
        }
        for (blob, e) in &p.blobs {
            if !used.contains(blob) {
                report.blobs_dropped += 1;
                continue;
            }
            let env = data
                .get(e.offset as usize..e.offset as usize + e.length as usize)
                .ok_or_else(|| {
                    Error::corrupt(format!(
                        "pack {id}: blob {} lies beyond its end",
                        blob.short()
                    ))
                })?;
            copier.add(e, env)?;
        }
    }
    let summary = copier.finish()?;
    report.new_packs = summary.packs.len();
    Ok(summary)
}

/// Writes one complete index of what remains, then removes the old files.
fn swap_index(repo: &mut Repository, plan: &CompactPlan, summary: WriteSummary) -> Result<()> {
    let gone: HashSet<PackId> = plan.rewrite.iter().chain(&plan.delete).copied().collect();
    let mut remaining: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for (id, pack, loc) in repo.index().iter() {
        if !gone.contains(&pack) {
            remaining.entry(pack).or_default().push(loc.entry(*id));
        }
    }
    let mut all: Vec<(PackId, Vec<PackEntry>)> = remaining.into_iter().collect();
    all.extend(summary.packs);
    replace_index(repo, all)
}

/// Writes a complete index of `packs` (in files of at most
/// `INDEX_FILE_MAX_BLOBS` blobs), then removes every other index file and
/// reloads. Used by compact and repair.
pub(crate) fn replace_index(
    repo: &mut Repository,
    mut all: Vec<(PackId, Vec<PackEntry>)>,
) -> Result<()> {
    all.sort_by_key(|(p, _)| *p);
    let mut names = Vec::new();
    let mut batch: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    let mut blobs = 0;
    for (pack, entries) in all {
        blobs += entries.len();
        batch.push((pack, entries));
        if blobs >= INDEX_FILE_MAX_BLOBS {
            names.push(write_index(repo.backend().as_ref(), repo.sealer(), &batch)?);
            batch.clear();
            blobs = 0;
        }
    }
    if !batch.is_empty() {
        names.push(write_index(repo.backend().as_ref(), repo.sealer(), &batch)?);
    }
    repo.verify_lock()?;
    let keep: HashSet<&String> = names.iter().collect();
    for f in repo.backend().list(FileKind::Index)? {
        if !keep.contains(&f.name) {
            repo.backend().delete(FileKind::Index, &f.name)?;
        }
    }
    repo.reload_index()?;
    Ok(())
}
