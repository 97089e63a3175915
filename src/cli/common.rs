//! Shared CLI plumbing: locations, passphrases, opening repositories,
//! human sizes and times.

use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::time::Duration;
use strata::backend::Backend;
use strata::repo::client::ClientDirs;
use strata::repo::{LockMode, OpenOptions, Passphrase, Repository};

static REMOTE_PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static GENERATION: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();

/// `--generation`: readers see that manifest generation.
pub fn set_generation(g: Option<u64>) {
    let _ = GENERATION.set(g);
}

pub fn generation() -> Option<u64> {
    GENERATION.get().copied().flatten()
}

static LOCK_WAIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

pub fn set_lock_wait(s: u64) {
    let _ = LOCK_WAIT.set(s);
}

static REPLICA: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// `--replica TIER[::ARCHIVE]`: repositories are read from replicas there.
pub fn set_replica(r: Option<String>) {
    let _ = REPLICA.set(r);
}

pub fn replica() -> Option<String> {
    REPLICA.get().cloned().flatten()
}

/// The passphrase of a replica tier (normally an unencrypted repository,
/// so never asked): STRATA_REPLICA_PASSPHRASE, so that STRATA_PASSPHRASE
/// stays the host repository's.
struct ReplicaPassphrase;

impl Passphrase for ReplicaPassphrase {
    fn get(&self, new_key: bool) -> strata::Result<Vec<u8>> {
        match std::env::var("STRATA_REPLICA_PASSPHRASE") {
            Ok(p) => Ok(p.into_bytes()),
            Err(_) => CliPassphrase.get(new_key),
        }
    }
}

static TIER_LOCK: std::sync::OnceLock<LockMode> = std::sync::OnceLock::new();

/// How `--replica` holds its tier: shared (the default, for commands that
/// end), or pinned (`mount`, which may stay for days: the tier's next
/// replication goes on beside it, only its compaction waits).
pub fn set_tier_lock(mode: LockMode) {
    let _ = TIER_LOCK.set(mode);
}

/// Opens a replica tier (the repository holding replica archives) to read.
pub fn open_tier(repo: &str, lock_wait: u64) -> Result<Repository> {
    let loc = Location::parse_plain(repo);
    Ok(Repository::open(
        loc.backend_for(false)?,
        &OpenOptions {
            lock: TIER_LOCK.get().copied().unwrap_or(LockMode::Shared),
            lock_wait: Duration::from_secs(lock_wait),
            passphrase: &ReplicaPassphrase,
            dirs: ClientDirs::from_env(),
            load_index: true,
            repair: false,
            lock_notice: None,
        },
    )?)
}

/// Opens the tier of `--replica TIER[::ARCHIVE]` and serves repository
/// `name` from the chosen replica archive.
pub fn replica_backend(spec: &str, name: &str, lock_wait: u64) -> Result<Arc<dyn Backend>> {
    let tier = Location::parse_plain(spec);
    let outer = open_tier(&tier.repo, lock_wait)?;
    let nested = strata::ops::replicate::open_replica(outer, name, tier.archive.as_deref())?;
    Ok(Arc::new(nested))
}

/// `--remote-path`: the strata program on servers.
pub fn set_remote_path(p: &str) {
    let _ = REMOTE_PATH.set(p.to_string());
}

/// `REPO`, `REPO::ARCHIVE`, `::ARCHIVE` (with STRATA_REPO).
#[derive(Clone, Debug)]
pub struct Location {
    pub repo: String,
    pub archive: Option<String>,
}

impl Location {
    pub fn parse(s: &str) -> Result<Self> {
        let (repo, archive) = match s.rsplit_once("::") {
            Some((r, a)) => (r.to_string(), (!a.is_empty()).then(|| a.to_string())),
            None => (s.to_string(), None),
        };
        let repo = if repo.is_empty() {
            std::env::var("STRATA_REPO")
                .context("no repository given and STRATA_REPO is not set")?
        } else {
            repo
        };
        Ok(Self { repo, archive })
    }

    pub fn is_remote(&self) -> bool {
        strata::backend::is_url(&self.repo)
    }

    pub fn archive(&self) -> Result<&str> {
        match &self.archive {
            Some(a) => Ok(a),
            None => bail!("{} names no archive: use REPO::ARCHIVE", self.repo),
        }
    }

    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        if let Some(spec) = replica() {
            return replica_backend(&spec, &self.repo, LOCK_WAIT.get().copied().unwrap_or(1));
        }
        self.backend_for(false)
    }

    /// `REPO[::ARCHIVE]` without the STRATA_REPO default.
    pub fn parse_plain(s: &str) -> Self {
        match s.rsplit_once("::") {
            Some((r, a)) => Self {
                repo: r.to_string(),
                archive: (!a.is_empty()).then(|| a.to_string()),
            },
            None => Self {
                repo: s.to_string(),
                archive: None,
            },
        }
    }

    /// The backend; `create` asks a remote server to allow creating it.
    pub fn backend_for(&self, create: bool) -> Result<Arc<dyn Backend>> {
        let remote_path = REMOTE_PATH.get().map(String::as_str).unwrap_or("strata");
        Ok(strata::backend::open_location(
            &self.repo,
            create,
            remote_path,
            None,
        )?)
    }
}

/// Passphrase from STRATA_PASSPHRASE, STRATA_PASSCOMMAND or the terminal.
pub struct CliPassphrase;

impl Passphrase for CliPassphrase {
    fn get(&self, new_key: bool) -> strata::Result<Vec<u8>> {
        let err = |m: String| strata::Error::invalid(m);
        if let Ok(p) = std::env::var("STRATA_PASSPHRASE") {
            return Ok(p.into_bytes());
        }
        if let Ok(cmd) = std::env::var("STRATA_PASSCOMMAND") {
            let out = std::process::Command::new("sh")
                .args(["-c", &cmd])
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| err(format!("running STRATA_PASSCOMMAND: {e}")))?;
            if !out.status.success() {
                return Err(err(format!(
                    "STRATA_PASSCOMMAND failed with {}",
                    out.status
                )));
            }
            let mut p = out.stdout;
            while p.last() == Some(&b'\n') || p.last() == Some(&b'\r') {
                p.pop();
            }
            return Ok(p);
        }
        let prompt = |q: &str| {
            rpassword::prompt_password(q).map_err(|_| {
                err("no passphrase: set STRATA_PASSPHRASE or STRATA_PASSCOMMAND, or run on a terminal".into())
            })
        };
        let p = prompt("Enter passphrase for key: ")?;
        if new_key {
            if p.is_empty() {
                return Err(err(
                    "an empty passphrase protects nothing: choose one".into()
                ));
            }
            if prompt("Enter the same passphrase again: ")? != p {
                return Err(err("the passphrases do not match".into()));
            }
        }
        Ok(p.into_bytes())
    }
}

pub fn open(
    loc: &Location,
    lock: LockMode,
    lock_wait: u64,
    load_index: bool,
) -> Result<Repository> {
    open_with(loc, lock, lock_wait, load_index, false)
}

/// `open`, optionally in repair mode (see `OpenOptions::repair`).
pub fn open_with(
    loc: &Location,
    lock: LockMode,
    lock_wait: u64,
    load_index: bool,
    repair: bool,
) -> Result<Repository> {
    let backend = loc.backend()?;
    let opts = OpenOptions {
        lock,
        lock_wait: Duration::from_secs(lock_wait),
        passphrase: &CliPassphrase,
        dirs: ClientDirs::from_env(),
        load_index,
        repair,
        lock_notice: Some(&|holder: &str| {
            eprintln!("strata: waiting up to {lock_wait} s for {holder}")
        }),
    };
    let mut repo = Repository::open(backend, &opts)?;
    if let Some(g) = generation() {
        if !matches!(lock, LockMode::Shared | LockMode::Pin) {
            bail!(
                "--generation is for reading (list, info, extract, diff, check, mount); use `strata undelete` to bring archives back"
            );
        }
        repo.view_generation(g)?;
    }
    Ok(repo)
}

pub fn threads() -> usize {
    std::env::var("STRATA_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
}

/// Decimal units, as borg prints them: `1.05 GB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// `Wed, 2026-11-25 12:00:00` in local time, from RFC 3339.
pub fn time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%a, %Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

pub fn time_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .map(|t| {
        t.with_timezone(&chrono::Local)
            .format("%a, %Y-%m-%d %H:%M:%S")
            .to_string()
    })
    .unwrap_or_default()
}

pub fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.2} seconds")
    } else {
        let s = seconds as u64;
        format!("{} minutes {} seconds", s / 60, s % 60)
    }
}
