//! A backend wrapper that crashes the process at a chosen mutation, for the
//! crash-safety tests. `STRATA_FAULT_CRASH_AT=N` aborts (like a power cut or
//! `kill -9`: no destructors, no flushing) at the N-th write or delete of the
//! process; `STRATA_FAULT_CRASH_WHEN=after` crashes just after it completed
//! instead of just before. Test-only; documented in docs/FORMAT.md.
//!
//! Finer failpoints inside the local store (also what `strata serve` writes
//! through): `STRATA_FAULT_STEP_AT=N` acts at the N-th durable step of the
//! process (a data write, an fsync, a rename, a directory fsync, a delete;
//! `STRATA_FAULT_STEP_KINDS=fsync,rename` counts only those).
//! `STRATA_FAULT_STEP_ACTION=crash` (the default) aborts just before the
//! step; `eio` makes that one step fail with EIO, once, the way a dying disk
//! does (tests/it/campaign.rs; docs/reliability.md).

use super::{Backend, FileInfo, FileKind, Space};
use crate::error::Result;
use std::sync::atomic::{AtomicU64, Ordering};

pub const CRASH_ENV: &str = "STRATA_FAULT_CRASH_AT";
pub const STEP_AT_ENV: &str = "STRATA_FAULT_STEP_AT";
pub const STEP_ACTION_ENV: &str = "STRATA_FAULT_STEP_ACTION";
pub const STEP_KINDS_ENV: &str = "STRATA_FAULT_STEP_KINDS";
pub const STEP_LOG_ENV: &str = "STRATA_FAULT_STEP_LOG";

/// A durable step of the local store.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Write,
    Fsync,
    Rename,
    DirSync,
    Delete,
}

impl Step {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "write" => Self::Write,
            "fsync" => Self::Fsync,
            "rename" => Self::Rename,
            "dirsync" => Self::DirSync,
            "delete" => Self::Delete,
            _ => return None,
        })
    }
}

struct StepFault {
    at: u64,
    eio: bool,
    kinds: Vec<Step>,
    count: AtomicU64,
}

impl StepFault {
    fn from_env() -> Option<Self> {
        let at = std::env::var(STEP_AT_ENV).ok()?.parse().ok()?;
        let eio = std::env::var(STEP_ACTION_ENV).is_ok_and(|a| a == "eio");
        let kinds = match std::env::var(STEP_KINDS_ENV) {
            Ok(k) => k.split(',').filter_map(Step::parse).collect(),
            Err(_) => vec![
                Step::Write,
                Step::Fsync,
                Step::Rename,
                Step::DirSync,
                Step::Delete,
            ],
        };
        Some(Self {
            at,
            eio,
            kinds,
            count: AtomicU64::new(0),
        })
    }
}

static STEP_FAULT: std::sync::OnceLock<Option<StepFault>> = std::sync::OnceLock::new();

/// Called by the local store before each durable step: Ok unless the
/// failpoint variables chose this step (then EIO, or an abort). With
/// `STRATA_FAULT_STEP_LOG=FILE` each step also appends its kind to FILE, so
/// a campaign knows how many steps of each kind a clean run takes.
pub fn step(kind: Step) -> std::io::Result<()> {
    static LOG: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();
    if let Some(path) = LOG.get_or_init(|| std::env::var_os(STEP_LOG_ENV)) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{kind:?}")?;
    }
    let Some(f) = STEP_FAULT.get_or_init(StepFault::from_env) else {
        return Ok(());
    };
    if !f.kinds.contains(&kind) || f.count.fetch_add(1, Ordering::SeqCst) + 1 != f.at {
        return Ok(());
    }
    if f.eio {
        return Err(std::io::Error::from_raw_os_error(
            nix::errno::Errno::EIO as i32,
        ));
    }
    std::process::abort()
}
pub const CRASH_WHEN_ENV: &str = "STRATA_FAULT_CRASH_WHEN";

pub struct CrashAt<B> {
    inner: B,
    at: u64,
    after: bool,
    count: AtomicU64,
}

impl<B: Backend> CrashAt<B> {
    pub fn new(inner: B, at: u64, after: bool) -> Self {
        Self {
            inner,
            at,
            after,
            count: AtomicU64::new(0),
        }
    }

    /// Runs one mutation, aborting before or after it if it is the chosen one.
    fn mutate(&self, op: impl FnOnce() -> Result<()>) -> Result<()> {
        let hit = self.count.fetch_add(1, Ordering::SeqCst) + 1 == self.at;
        if hit && !self.after {
            std::process::abort();
        }
        let r = op();
        if hit {
            std::process::abort();
        }
        r
    }
}

/// Refuses every delete except of lock files: the client-side half of an
/// append-only repository (the serving side enforces it for remote ones).
pub struct AppendOnly(pub std::sync::Arc<dyn Backend>);

impl Backend for AppendOnly {
    fn location(&self) -> &str {
        self.0.location()
    }
    fn identity(&self) -> String {
        self.0.identity()
    }
    fn high_latency(&self) -> bool {
        self.0.high_latency()
    }
    fn create(&self) -> Result<()> {
        self.0.create()
    }
    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        self.0.list(kind)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.0.read(kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.0.read_range(kind, name, offset, len)
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.0.write(kind, name, data)
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        if kind == FileKind::Lock {
            return self.0.delete(kind, name);
        }
        Err(crate::error::Error::invalid(format!(
            "append-only repository {}: refusing to delete {}/{name}",
            self.0.location(),
            kind.dir()
        )))
    }
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        self.0.exists(kind, name)
    }
    fn space(&self) -> Result<Space> {
        self.0.space()
    }
    fn append_only(&self) -> bool {
        true
    }
    fn read_only(&self) -> bool {
        self.0.read_only()
    }
    fn traffic(&self) -> Option<super::Traffic> {
        self.0.traffic()
    }
    fn remove_stale_temporaries(&self, _older_than_secs: u64) -> Result<u64> {
        Ok(0) // append-only: nothing is removed
    }
}

/// Wraps `b` when the crash variable is set.
pub fn wrap_from_env<B: Backend + 'static>(b: B) -> Box<dyn Backend> {
    let after = std::env::var(CRASH_WHEN_ENV).is_ok_and(|w| w == "after");
    match std::env::var(CRASH_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(at) => Box::new(CrashAt::new(b, at, after)),
        None => Box::new(b),
    }
}

impl<B: Backend> Backend for CrashAt<B> {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn identity(&self) -> String {
        self.inner.identity()
    }
    fn high_latency(&self) -> bool {
        self.inner.high_latency()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        self.inner.list(kind)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.inner.read_range(kind, name, offset, len)
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.mutate(|| self.inner.write(kind, name, data))
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.mutate(|| self.inner.delete(kind, name))
    }
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        self.inner.exists(kind, name)
    }
    fn space(&self) -> Result<Space> {
        self.inner.space()
    }
    fn append_only(&self) -> bool {
        self.inner.append_only()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn traffic(&self) -> Option<super::Traffic> {
        self.inner.traffic()
    }
    fn remove_stale_temporaries(&self, older_than_secs: u64) -> Result<u64> {
        self.inner.remove_stale_temporaries(older_than_secs)
    }
}
