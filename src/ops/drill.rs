//! Restore drills: prove, per tier, that a host's backups restore.
//!
//! With the host's key, a drill restores a random sample of files of the
//! newest archive and of every Nth older one into a scratch directory,
//! through the normal extract path, then reads each restored file back and
//! checks it against the archive: size, and every chunk's keyed id
//! recomputed from the restored bytes. Without the key (a Pi checking its
//! own replicas) it reads a random sample of packs and checks that their
//! bytes hash to their names, which proves the ciphertext intact.

use crate::archive::Archive;
use crate::archive::create::NoObserver;
use crate::archive::extract::{ExtractOptions, extract};
use crate::archive::item::{ItemsReader, KIND_FILE};
use crate::backend::{Backend, FileKind};
use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::repo::Repository;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// The tier does not hold this host (unreachable, no replica, no repository).
    Missing,
    /// The tier holds it, but something read back wrong or not at all.
    Corrupt,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Missing => "missing",
            Outcome::Corrupt => "corrupt",
        }
    }

    /// How an error met while drilling a tier counts.
    pub fn of_error(e: &Error) -> Self {
        match e {
            Error::Integrity { .. }
            | Error::Corrupt(_)
            | Error::Mismatch(_)
            | Error::Io { .. }
            | Error::UnsafePath(_) => Outcome::Corrupt,
            _ => Outcome::Missing,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TierReport {
    pub tier: String,
    pub outcome: Outcome,
    /// Archives sampled (with the key) or none (ciphertext drill).
    pub archives: Vec<String>,
    pub files: u64,
    pub bytes: u64,
    pub packs: u64,
    pub problems: Vec<String>,
    pub seconds: f64,
}

impl TierReport {
    pub fn new(tier: &str) -> Self {
        Self {
            tier: tier.to_string(),
            outcome: Outcome::Ok,
            archives: Vec::new(),
            files: 0,
            bytes: 0,
            packs: 0,
            problems: Vec::new(),
            seconds: 0.0,
        }
    }

    pub fn fail(&mut self, outcome: Outcome, problem: String) {
        if self.outcome != Outcome::Corrupt {
            self.outcome = outcome;
        }
        self.problems.push(problem);
    }
}

pub struct DrillOptions {
    /// Files sampled per archive.
    pub sample: usize,
    /// Besides the newest, every Nth archive (0: the newest only).
    pub every: usize,
    pub scratch: PathBuf,
    pub threads: usize,
}

/// A uniformly random index below `n`.
fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    let _ = crate::crypto::random_bytes(&mut b);
    u64::from_le_bytes(b) % n.max(1)
}

/// Archives to drill: the newest, then every `every`th older one.
fn pick_archives(repo: &Repository, every: usize) -> Vec<crate::repo::manifest::ArchiveRef> {
    let mut all = repo.manifest().archives.clone();
    all.sort_by(|a, b| b.time.cmp(&a.time));
    all.into_iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || (every > 0 && i % every == 0))
        .map(|(_, a)| a)
        .collect()
}

/// The drill with the key, on an opened repository.
pub fn drill_with_key(repo: &Repository, opts: &DrillOptions, report: &mut TierReport) {
    let archives = pick_archives(repo, opts.every);
    if archives.is_empty() {
        report.fail(Outcome::Missing, "the repository holds no archive".into());
        return;
    }
    for (n, a) in archives.iter().enumerate() {
        report.archives.push(a.name.clone());
        if let Err(e) = drill_archive(repo, a, opts, n, report) {
            report.fail(Outcome::of_error(&e), format!("archive {}: {e}", a.name));
        }
    }
}

fn drill_archive(
    repo: &Repository,
    r: &crate::repo::manifest::ArchiveRef,
    opts: &DrillOptions,
    n: usize,
    report: &mut TierReport,
) -> Result<()> {
    let archive = Archive::load(repo, r)?;
    // Reservoir sample of regular files with data of their own.
    let mut sample = Vec::new();
    let mut seen = 0u64;
    for item in ItemsReader::new(repo, archive.items.clone()) {
        let item = item?;
        if item.kind != KIND_FILE || item.link.is_some() {
            continue;
        }
        seen += 1;
        if sample.len() < opts.sample {
            sample.push(item);
        } else {
            let j = random_below(seen) as usize;
            if j < opts.sample {
                sample[j] = item;
            }
        }
    }
    if sample.is_empty() {
        return Ok(());
    }
    let dest = opts.scratch.join(format!("archive-{n}"));
    let eopts = ExtractOptions {
        dest: dest.clone(),
        paths: sample.iter().map(|i| i.path.to_vec()).collect(),
        strip_components: 0,
        sparse: false,
        numeric_ids: true,
        dry_run: false,
        threads: opts.threads,
    };
    let res = extract(repo, &archive, &eopts, &mut NoObserver)?;
    if res.errors > 0 {
        report.fail(
            Outcome::Corrupt,
            format!("archive {}: {} files did not restore", r.name, res.errors),
        );
    }
    for item in &sample {
        let path = dest.join(std::ffi::OsStr::from_bytes(&item.path));
        match verify_restored(repo, &path, item) {
            Ok(()) => {
                report.files += 1;
                report.bytes += item.size;
            }
            Err(e) => report.fail(
                Outcome::Corrupt,
                format!("archive {}: {}: {e}", r.name, item.path_lossy()),
            ),
        }
    }
    let _ = std::fs::remove_dir_all(&dest);
    Ok(())
}

/// The restored file has the item's size, and each piece of it hashes
/// (with the repository's key) to the chunk id the archive recorded.
fn verify_restored(
    repo: &Repository,
    path: &Path,
    item: &crate::archive::item::Item,
) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io(path.display().to_string(), e))?
        .len();
    if len != item.size {
        return Err(Error::Mismatch(format!(
            "restored {len} bytes, the archive says {}",
            item.size
        )));
    }
    for (i, c) in item.chunks.iter().enumerate() {
        let mut piece = vec![0u8; c.1 as usize];
        f.read_exact(&mut piece)
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        if repo.sealer().blob_id(ObjectType::Data, &piece) != c.0 {
            return Err(Error::Mismatch(format!(
                "chunk {i} restored differently from what was backed up"
            )));
        }
    }
    Ok(())
}

/// The drill without the key: a random sample of packs, and every index
/// file, must hash to their names.
pub fn drill_ciphertext(backend: &dyn Backend, sample: usize, report: &mut TierReport) {
    let run = |report: &mut TierReport| -> Result<()> {
        if !backend.exists(FileKind::Config, crate::repo::config::CONFIG_FILE)? {
            return Err(Error::NotARepository(backend.location().to_string()));
        }
        let mut packs = backend.list(FileKind::Pack)?;
        let mut chosen = Vec::new();
        while chosen.len() < sample && !packs.is_empty() {
            let i = random_below(packs.len() as u64) as usize;
            chosen.push((FileKind::Pack, packs.swap_remove(i)));
        }
        for f in backend.list(FileKind::Index)? {
            chosen.push((FileKind::Index, f));
        }
        for (kind, f) in chosen {
            match backend.read(kind, &f.name) {
                Ok(d) if blake3::hash(&d).to_hex().as_str() == f.name => {
                    report.packs += 1;
                    report.bytes += d.len() as u64;
                }
                Ok(_) => report.fail(
                    Outcome::Corrupt,
                    format!("{}/{} does not hash to its name", kind.dir(), f.name),
                ),
                Err(e) => report.fail(Outcome::Corrupt, format!("{}/{}: {e}", kind.dir(), f.name)),
            }
        }
        Ok(())
    };
    if let Err(e) = run(report) {
        report.fail(Outcome::of_error(&e), e.to_string());
    }
}

/// What the daemon and metrics read: per host, the last drill of each
/// tier and when each tier last passed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DrillRecord {
    pub host: String,
    pub tiers: BTreeMap<String, TierRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TierRecord {
    /// RFC 3339.
    pub last_run: String,
    pub outcome: Outcome,
    pub last_ok: Option<String>,
    pub files: u64,
    pub problems: Vec<String>,
}

pub fn record_path(cache: &Path, host: &str) -> PathBuf {
    cache.join("drills").join(format!("{host}.json"))
}

/// Merges this drill's reports into the host's record file.
pub fn record(cache: &Path, host: &str, reports: &[TierReport]) -> Result<()> {
    let path = record_path(cache, host);
    let mut rec: DrillRecord = std::fs::read(&path)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    rec.host = host.to_string();
    let now = chrono::Utc::now().to_rfc3339();
    for r in reports {
        let last_ok = if r.outcome == Outcome::Ok {
            Some(now.clone())
        } else {
            rec.tiers.get(&r.tier).and_then(|t| t.last_ok.clone())
        };
        rec.tiers.insert(
            r.tier.clone(),
            TierRecord {
                last_run: now.clone(),
                outcome: r.outcome,
                last_ok,
                files: r.files,
                problems: r.problems.clone(),
            },
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    }
    let data = serde_json::to_vec_pretty(&rec).map_err(|e| Error::invalid(e.to_string()))?;
    crate::repo::client::replace_file(&path, &data)
}
