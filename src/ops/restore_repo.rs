//! `restore-repo`: copies a repository, file by file, from any backend (a
//! replica inside an archive on a Pi, usually) into a new repository
//! location, checking every file on the way in and reading it back.
//! `config` is written last, so an interrupted restore is never mistaken
//! for a repository; running it again continues where it stopped.

use super::replicate::{SourceFile, take_snapshot};
use crate::archive::create::{Observer, Progress};
use crate::backend::{Backend, FileKind};
use crate::error::{Error, Result};
use crate::repo::config::CONFIG_FILE;

#[derive(Clone, Debug, Default)]
pub struct RestoreRepoResult {
    pub repository_id: String,
    pub files: u64,
    pub bytes: u64,
    /// Files a previous, interrupted run had already restored intact.
    pub kept: u64,
}

fn hash_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Packs and index files are named by the BLAKE3 of their bytes.
fn content_addressed(kind: FileKind) -> bool {
    matches!(kind, FileKind::Pack | FileKind::Index)
}

/// Copies `src` into `dest`. A source that can change (not a replica) is
/// read under a pin lock, as `replicate` does: backups may go on, nothing is
/// deleted meanwhile, and the copy is the newest manifest generation with
/// every file it needs (manifest first, then index/, then data/).
pub fn restore_repo(
    src: std::sync::Arc<dyn Backend>,
    dest: &dyn Backend,
    lock_wait: std::time::Duration,
    obs: &mut dyn Observer,
) -> Result<RestoreRepoResult> {
    if !src.exists(FileKind::Config, CONFIG_FILE)? {
        return Err(Error::NotARepository(src.location().to_string()));
    }
    let _pin = if src.read_only() {
        None
    } else {
        Some(crate::repo::lock::acquire(
            src.clone(),
            crate::repo::lock::LockMode::Pin,
            lock_wait,
            &|_| {},
        )?)
    };
    let snap = take_snapshot(src.as_ref())?;
    let config = &snap.config;
    // Packs first, config last (module doc).
    let order = |k: FileKind| match k {
        FileKind::Pack => 0,
        FileKind::Index => 1,
        FileKind::Key => 2,
        _ => 3,
    };
    let mut plan: Vec<&SourceFile> = snap
        .files
        .iter()
        .filter(|f| f.kind != FileKind::Config)
        .collect();
    plan.sort_by_key(|f| order(f.kind));
    if dest.exists(FileKind::Config, CONFIG_FILE)? {
        return Err(Error::RepositoryExists(dest.location().to_string()));
    }
    match dest.create() {
        // Files but no config: an interrupted restore, continued.
        Ok(()) | Err(Error::RepositoryExists(_)) => {}
        Err(e) => return Err(e),
    }
    let mut result = RestoreRepoResult {
        repository_id: config.id.clone(),
        ..Default::default()
    };
    let mut progress = Progress::default();
    let mut present: std::collections::HashMap<(FileKind, String), u64> =
        std::collections::HashMap::new();
    for kind in [
        FileKind::Pack,
        FileKind::Index,
        FileKind::Key,
        FileKind::Manifest,
    ] {
        for f in dest.list(kind)? {
            present.insert((kind, f.name), f.size);
        }
    }
    {
        for f in plan {
            let kind = f.kind;
            if obs.cancelled() {
                return Err(Error::Interrupted);
            }
            let what = format!("{}/{}", kind.dir(), f.name);
            let present_size = present.get(&(kind, f.name.clone())).copied();
            progress.path = what.clone();
            // A content-addressed file an interrupted run already restored
            // intact is kept without reading the source again.
            if present_size == Some(f.size) && content_addressed(kind) {
                let have = dest.read(kind, &f.name)?;
                if hash_hex(&have) == f.name {
                    result.kept += 1;
                    continue;
                }
            }
            let data = if let Some(d) = snap.preread(f) {
                d.clone()
            } else {
                match src.read(kind, &f.name) {
                    Ok(d) => d,
                    // Older generations and replaced key files may go while
                    // we copy; nothing else may (the pin).
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound
                            && matches!(kind, FileKind::Manifest | FileKind::Key) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            if present_size == Some(f.size) {
                let have = dest.read(kind, &f.name)?;
                if have == data || (content_addressed(kind) && hash_hex(&have) == f.name) {
                    result.kept += 1;
                    continue;
                }
                dest.delete(kind, &f.name)?;
            } else if present_size.is_some() {
                dest.delete(kind, &f.name)?;
            }
            if content_addressed(kind) && hash_hex(&data) != f.name {
                return Err(Error::Mismatch(format!(
                    "{what} in {} is damaged (its bytes do not hash to its name): restore from another tier, or restore this one and run `strata check --repair`",
                    src.location()
                )));
            }
            copy_checked(dest, kind, &f.name, &data, &what)?;
            result.files += 1;
            result.bytes += data.len() as u64;
            progress.files = result.files;
            progress.original = result.bytes;
            obs.progress(&progress);
        }
    }
    let config_file = snap
        .files
        .iter()
        .find(|f| f.kind == FileKind::Config)
        .and_then(|f| snap.preread(f))
        .ok_or_else(|| Error::NotARepository(src.location().to_string()))?;
    copy_checked(
        dest,
        FileKind::Config,
        CONFIG_FILE,
        config_file,
        CONFIG_FILE,
    )?;
    result.files += 1;
    result.bytes += config_file.len() as u64;
    Ok(result)
}

/// Writes a file and reads it back.
fn copy_checked(
    dest: &dyn Backend,
    kind: FileKind,
    name: &str,
    data: &[u8],
    what: &str,
) -> Result<()> {
    dest.write(kind, name, data)?;
    let back = dest.read(kind, name)?;
    if blake3::hash(&back) != blake3::hash(data) {
        return Err(Error::Mismatch(format!(
            "{what} reads back differently from {}: its disk or connection corrupts data",
            dest.location()
        )));
    }
    Ok(())
}
