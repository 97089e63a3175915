//! `check --repair`: rebuilds the index from the packs, salvages every blob
//! that still authenticates, rebuilds a lost manifest from the archive
//! objects, removes archives whose metadata is gone, and reports the files
//! that lost chunks.
//!
//! Lost chunks are not replaced in the archives: items keep their content
//! ids, extraction writes a hole where a chunk is missing and reports the
//! file, and a later backup that meets the same data stores the chunk again
//! under the same id, which heals every archive that needs it. Repair is
//! idempotent and never deletes a readable blob (damaged packs are left
//! unindexed; `compact` removes them after the grace period).

use super::compact::replace_index;
use crate::archive::Archive;
use crate::archive::item::{ItemsReader, KIND_FILE};
use crate::backend::FileKind;
use crate::crypto::ObjectType;
use crate::error::Result;
use crate::id::PackId;
use crate::repo::Repository;
use crate::repo::manifest::ArchiveRef;
use crate::repo::pack::{PackEntry, read_header};
use crate::repo::writer::PackCopier;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct RepairReport {
    pub packs: u64,
    /// Packs whose readable blobs were moved to new packs; deleted.
    pub damaged_packs: Vec<String>,
    /// Packs that could not be read at all; left in place, unindexed.
    pub unreadable_packs: Vec<String>,
    pub blobs_lost: u64,
    pub manifest_rebuilt: bool,
    pub archives_removed: Vec<String>,
    /// `archive: path (N chunks missing)`.
    pub damaged_files: Vec<String>,
}

pub fn repair(repo: &mut Repository) -> Result<RepairReport> {
    if repo.config().append_only {
        return Err(crate::error::Error::invalid(
            "this repository is append-only: repair deletes damaged files; run it where the repository is not append-only",
        ));
    }
    let mut report = RepairReport::default();
    let manifest_ok = newest_manifest_readable(repo)?;
    let packs = salvage_packs(repo, &mut report)?;
    if !index_matches(repo, &packs)? {
        replace_index(repo, packs)?;
    }
    let mut archives = if manifest_ok {
        repo.manifest().archives.clone()
    } else {
        report.manifest_rebuilt = true;
        archives_from_blobs(repo)
    };
    archives.retain(|r| match archive_damage(repo, r, &mut report) {
        Ok(()) => true,
        Err(e) => {
            report.archives_removed.push(format!("{}: {e}", r.name));
            false
        }
    });
    if report.manifest_rebuilt || !report.archives_removed.is_empty() {
        repo.write_manifest(archives)?;
    }
    // Only now that their content is indexed elsewhere (or was unreadable)
    // do damaged packs and unreadable old manifests go.
    for name in &report.damaged_packs {
        repo.backend().delete(FileKind::Pack, name)?;
    }
    for f in repo.backend().list(FileKind::Manifest)? {
        if let Some(g) = crate::repo::manifest::parse_file_name(&f.name)
            && g != repo.manifest().generation
            && crate::repo::read_manifest(repo.backend().as_ref(), repo.sealer(), g).is_err()
        {
            repo.backend().delete(FileKind::Manifest, &f.name)?;
        }
    }
    Ok(report)
}

/// True when the index files on disk all loaded and list exactly these
/// packs and blobs: then there is nothing to rewrite (repair stays idempotent).
fn index_matches(repo: &Repository, packs: &[(PackId, Vec<PackEntry>)]) -> Result<bool> {
    let on_disk = repo.backend().list(FileKind::Index)?.len();
    if on_disk != repo.index_file_count() {
        return Ok(false);
    }
    let blobs: usize = packs.iter().map(|(_, e)| e.len()).sum();
    if blobs != repo.index().len() || packs.len() != repo.index().pack_count() {
        return Ok(false);
    }
    Ok(packs.iter().all(|(p, entries)| {
        entries.iter().all(|e| {
            repo.index()
                .get(&e.id)
                .is_some_and(|(q, l)| q == *p && l.offset == e.offset)
        })
    }))
}

fn newest_manifest_readable(repo: &Repository) -> Result<bool> {
    let newest = repo
        .backend()
        .list(FileKind::Manifest)?
        .iter()
        .filter_map(|f| crate::repo::manifest::parse_file_name(&f.name))
        .max();
    Ok(match newest {
        None => true,
        Some(g) => crate::repo::read_manifest(repo.backend().as_ref(), repo.sealer(), g).is_ok(),
    })
}

/// Reads every pack: intact packs are kept as they are; from damaged ones
/// every blob that still authenticates is copied into a new pack.
fn salvage_packs(
    repo: &Repository,
    report: &mut RepairReport,
) -> Result<Vec<(PackId, Vec<PackEntry>)>> {
    let mut keep = Vec::new();
    let mut copier = PackCopier::new(
        repo.backend().as_ref(),
        repo.sealer(),
        repo.config().pack_size,
    );
    for f in repo.backend().list(FileKind::Pack)? {
        report.packs += 1;
        // A pack that cannot be read at all (I/O error) is left alone: the
        // error may pass. It stays unindexed.
        let Ok(data) = repo.backend().read(FileKind::Pack, &f.name) else {
            report.unreadable_packs.push(f.name);
            continue;
        };
        let intact = blake3::hash(&data).to_hex().as_str() == f.name;
        // A pack whose header (at its end) is damaged or cut off still has
        // its blobs where the old index says they are.
        let header = match read_header(repo.sealer(), &data, &f.name) {
            Ok(h) => h,
            Err(_) => match PackId::from_hex(&f.name).map(|id| entries_from_index(repo, id)) {
                Some(entries) if !entries.is_empty() => entries,
                _ => {
                    report.damaged_packs.push(f.name);
                    continue;
                }
            },
        };
        let intact = intact && read_header(repo.sealer(), &data, &f.name).is_ok();
        let good: Vec<&PackEntry> = header.iter().filter(|e| blob_ok(repo, &data, e)).collect();
        report.blobs_lost += (header.len() - good.len()) as u64;
        match PackId::from_hex(&f.name) {
            Some(id) if intact && good.len() == header.len() => keep.push((id, header)),
            _ => {
                report.damaged_packs.push(f.name.clone());
                for e in good {
                    let env = &data[e.offset as usize..(e.offset + e.length) as usize];
                    copier.add(e, env)?;
                }
            }
        }
    }
    keep.extend(copier.finish()?.packs);
    Ok(keep)
}

fn entries_from_index(repo: &Repository, pack: PackId) -> Vec<PackEntry> {
    let mut v: Vec<PackEntry> = repo
        .index()
        .iter()
        .filter(|(_, p, _)| *p == pack)
        .map(|(id, _, l)| l.entry(*id))
        .collect();
    v.sort_by_key(|e| e.offset);
    v
}

fn blob_ok(repo: &Repository, pack: &[u8], e: &PackEntry) -> bool {
    let Some(env) = pack.get(e.offset as usize..e.offset as usize + e.length as usize) else {
        return false;
    };
    repo.sealer()
        .open(e.ty, &e.id.0, env.to_vec(), &String::new)
        .and_then(crate::compress::decompress)
        .is_ok_and(|plain| {
            plain.len() == e.raw_length as usize && repo.sealer().blob_id(e.ty, &plain) == e.id
        })
}

/// A manifest from the archive objects in the repository; for a name seen
/// more than once the newest archive wins. Archives deleted but not yet
/// compacted come back (as with borg).
fn archives_from_blobs(repo: &Repository) -> Vec<ArchiveRef> {
    let mut by_name: HashMap<String, (Archive, ArchiveRef)> = HashMap::new();
    let ids: Vec<_> = repo
        .index()
        .iter()
        .filter(|(_, _, l)| l.ty == ObjectType::Archive)
        .map(|(id, _, _)| *id)
        .collect();
    for id in ids {
        let Ok(data) = repo.read_blob(ObjectType::Archive, &id) else {
            continue;
        };
        let Ok(a) = rmp_serde::from_slice::<Archive>(&data) else {
            continue;
        };
        let r = ArchiveRef {
            name: a.name.clone(),
            id,
            time: a.time_start.clone(),
            hostname: a.hostname.clone(),
            username: a.username.clone(),
            stats: a.stats,
        };
        match by_name.get(&a.name) {
            Some((old, _)) if old.time_end >= a.time_end => {}
            _ => {
                by_name.insert(a.name.clone(), (a, r));
            }
        }
    }
    let mut out: Vec<ArchiveRef> = by_name.into_values().map(|(_, r)| r).collect();
    out.sort_by(|a, b| a.time.cmp(&b.time));
    out
}

/// Err if the archive's metadata is unreadable (it must go); otherwise
/// records its files with missing chunks.
fn archive_damage(repo: &Repository, r: &ArchiveRef, report: &mut RepairReport) -> Result<()> {
    let archive = Archive::load(repo, r)?;
    for item in ItemsReader::new(repo, archive.items.clone()) {
        let item = item?;
        if item.kind != KIND_FILE {
            continue;
        }
        let missing = item
            .chunks
            .iter()
            .filter(|c| !repo.index().contains(&c.0))
            .count();
        if missing > 0 {
            report.damaged_files.push(format!(
                "{}: {} ({missing} chunks missing)",
                r.name,
                item.path_lossy()
            ));
        }
    }
    Ok(())
}
