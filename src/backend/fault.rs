//! A backend wrapper that crashes the process at a chosen mutation, for the
//! crash-safety tests. `STRATA_FAULT_CRASH_AT=N` aborts (like a power cut or
//! `kill -9`: no destructors, no flushing) at the N-th write or delete of the
//! process; `STRATA_FAULT_CRASH_WHEN=after` crashes just after it completed
//! instead of just before. Test-only; documented in docs/FORMAT.md.

use super::{Backend, FileInfo, FileKind, Space};
use crate::error::Result;
use std::sync::atomic::{AtomicU64, Ordering};

pub const CRASH_ENV: &str = "STRATA_FAULT_CRASH_AT";
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
