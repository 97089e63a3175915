//! Client-side state kept outside the repository: key files of `keyfile`
//! repositories, and per-repository cache (security record, files cache).

use crate::crypto::Mode;
use crate::error::{IoContext, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the client keeps keys and caches. Tests point both at temp dirs.
#[derive(Clone, Debug)]
pub struct ClientDirs {
    pub cache: PathBuf,
    pub keys: PathBuf,
}

impl ClientDirs {
    /// `STRATA_CACHE_DIR` / `STRATA_KEYS_DIR`, else the XDG locations.
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        let xdg = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(default))
        };
        let cache = std::env::var_os("STRATA_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| xdg("XDG_CACHE_HOME", ".cache").join("strata"));
        let keys = std::env::var_os("STRATA_KEYS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                xdg("XDG_CONFIG_HOME", ".config")
                    .join("strata")
                    .join("keys")
            });
        Self { cache, keys }
    }

    pub fn repo_cache(&self, repo_id: &str) -> PathBuf {
        self.cache.join(repo_id)
    }

    pub fn security_file(&self, repo_id: &str) -> PathBuf {
        self.repo_cache(repo_id).join("security.json")
    }

    /// The record of which repository was found at a location.
    pub fn location_file(&self, identity: &str) -> PathBuf {
        let h = blake3::hash(identity.as_bytes());
        self.cache
            .join("locations")
            .join(format!("{}.json", &h.to_hex()[..32]))
    }

    pub fn key_file(&self, repo_id: &str) -> PathBuf {
        self.keys.join(repo_id)
    }
}

/// What this client last knew about a repository, to detect a rolled-back
/// manifest or a config swapped for an unencrypted one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecurityRecord {
    pub location: String,
    pub mode: Mode,
    pub generation: u64,
}

impl SecurityRecord {
    pub fn load(path: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    pub fn store(&self, path: &Path) -> Result<()> {
        let data = serde_json::to_vec_pretty(self).unwrap_or_default();
        replace_file(path, &data)
    }
}

/// Which repository (id, mode) this client found at a location. Without it
/// a store could swap in an unencrypted repository with a fresh id, which
/// the per-id security record cannot notice.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocationRecord {
    pub location: String,
    pub id: String,
    pub mode: Mode,
}

impl LocationRecord {
    pub fn load(path: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    pub fn store(&self, path: &Path) -> Result<()> {
        replace_file(path, &serde_json::to_vec_pretty(self).unwrap_or_default())
    }
}

/// Replaces a client-side file atomically (temp file, fsync, rename).
pub fn replace_file(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .ctx(|| format!("writing {}", tmp.display()))?;
    f.sync_all().ctx(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("renaming {}", path.display()))
}
