//! `delete` and `rename`: new manifest generations; the data stays until
//! `compact` reclaims blobs no archive uses.

use crate::archive::item::ITEMS_COMPRESSION;
use crate::archive::{Archive, validate_name};
use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::repo::Repository;

/// Removes the named archives; returns how many were removed and warnings
/// about housekeeping after the commit.
pub fn delete(
    repo: &mut Repository,
    names: &[String],
    dry_run: bool,
) -> Result<(usize, Vec<String>)> {
    for n in names {
        if repo.manifest().find(n).is_none() {
            return Err(Error::ArchiveNotFound(n.clone()));
        }
    }
    let keep: Vec<_> = repo
        .manifest()
        .archives
        .iter()
        .filter(|a| !names.contains(&a.name))
        .cloned()
        .collect();
    let removed = repo.manifest().archives.len() - keep.len();
    let mut warnings = Vec::new();
    if !dry_run && removed > 0 {
        warnings = repo.write_manifest(keep)?;
    }
    Ok((removed, warnings))
}

/// Renames an archive: the archive object names itself, so a new archive
/// object is written (its items are shared) and the manifest points to it.
pub fn rename(repo: &mut Repository, from: &str, to: &str) -> Result<Vec<String>> {
    validate_name(to)?;
    if repo.manifest().find(to).is_some() {
        return Err(Error::ArchiveExists(to.into()));
    }
    let mut archive = Archive::find(repo, from)?;
    archive.name = to.into();
    let data = archive.encode()?;
    let id = repo.sealer().blob_id(ObjectType::Archive, &data);
    if !repo.index().contains(&id) {
        let w = repo.writer(1);
        w.add(ObjectType::Archive, id, &data, ITEMS_COMPRESSION)?;
        let summary = w.finish()?;
        repo.absorb(&summary);
    }
    let mut archives = repo.manifest().archives.clone();
    for a in archives.iter_mut().filter(|a| a.name == from) {
        a.name = to.into();
        a.id = id;
    }
    repo.write_manifest(archives)
}

/// Puts archives listed by an older manifest generation back into the
/// current list (after a mistaken or malicious delete/prune, while their
/// data is still there: append-only repositories, or within compact's
/// grace period). Returns the names restored.
pub fn undelete(
    repo: &mut Repository,
    generation: u64,
    names: &[String],
) -> Result<(Vec<String>, Vec<String>)> {
    let old = crate::repo::read_manifest(repo.backend().as_ref(), repo.sealer(), generation)?;
    let mut archives = repo.manifest().archives.clone();
    let mut restored = Vec::new();
    for a in old.archives {
        let wanted = names.is_empty() || names.contains(&a.name);
        if wanted && !archives.iter().any(|x| x.name == a.name) {
            if !repo.index().contains(&a.id) {
                return Err(Error::corrupt(format!(
                    "archive {} of generation {generation} has lost its data (compacted)",
                    a.name
                )));
            }
            restored.push(a.name.clone());
            archives.push(a);
        }
    }
    for n in names {
        if !restored.contains(n) {
            return Err(Error::invalid(format!(
                "generation {generation} has no archive `{n}` that is missing now"
            )));
        }
    }
    archives.sort_by(|a, b| a.time.cmp(&b.time));
    let warnings = if restored.is_empty() {
        vec![]
    } else {
        repo.write_manifest(archives)?
    };
    Ok((restored, warnings))
}
