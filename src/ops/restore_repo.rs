//! `restore-repo`: copies a repository, file by file, from any backend (a
//! replica inside an archive on a Pi, usually) into a new repository
//! location, checking every file on the way in and reading it back.
//! `config` is written last, so an interrupted restore is never mistaken
//! for a repository; running it again continues where it stopped.

use crate::archive::create::{Observer, Progress};
use crate::backend::{Backend, FileKind};
use crate::error::{Error, Result};
use crate::repo::config::{CONFIG_FILE, RepoConfig};

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

pub fn restore_repo(
    src: &dyn Backend,
    dest: &dyn Backend,
    obs: &mut dyn Observer,
) -> Result<RestoreRepoResult> {
    let config_bytes = match src.read(FileKind::Config, CONFIG_FILE) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotARepository(src.location().to_string()));
        }
        Err(e) => return Err(e),
    };
    let config = RepoConfig::parse(&config_bytes, src.location())?;
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
    for kind in [
        FileKind::Pack,
        FileKind::Index,
        FileKind::Key,
        FileKind::Manifest,
    ] {
        let present: std::collections::HashMap<String, u64> = dest
            .list(kind)?
            .into_iter()
            .map(|f| (f.name, f.size))
            .collect();
        for f in src.list(kind)? {
            let what = format!("{}/{}", kind.dir(), f.name);
            progress.path = what.clone();
            if present.get(&f.name) == Some(&f.size) {
                let have = dest.read(kind, &f.name)?;
                let intact = if content_addressed(kind) {
                    hash_hex(&have) == f.name
                } else {
                    have == src.read(kind, &f.name)?
                };
                if intact {
                    result.kept += 1;
                    continue;
                }
                dest.delete(kind, &f.name)?;
            } else if present.contains_key(&f.name) {
                dest.delete(kind, &f.name)?;
            }
            let data = src.read(kind, &f.name)?;
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
    copy_checked(
        dest,
        FileKind::Config,
        CONFIG_FILE,
        &config_bytes,
        CONFIG_FILE,
    )?;
    result.files += 1;
    result.bytes += config_bytes.len() as u64;
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
