//! A backend wrapper that crashes the process at a chosen write, for the
//! crash-safety tests: `STRATA_FAULT_CRASH_AT_WRITE=N` aborts (like a power
//! cut or `kill -9`: no destructors, no flushing) just before the N-th file
//! write of the process. Test-only; documented in docs/FORMAT.md.

use super::{Backend, FileInfo, FileKind, Space};
use crate::error::Result;
use std::sync::atomic::{AtomicU64, Ordering};

pub const CRASH_ENV: &str = "STRATA_FAULT_CRASH_AT_WRITE";

pub struct CrashAtWrite<B> {
    inner: B,
    at: u64,
    count: AtomicU64,
}

impl<B: Backend> CrashAtWrite<B> {
    pub fn new(inner: B, at: u64) -> Self {
        Self {
            inner,
            at,
            count: AtomicU64::new(0),
        }
    }
}

/// Wraps `b` when the crash variable is set.
pub fn wrap_from_env<B: Backend + 'static>(b: B) -> Box<dyn Backend> {
    match std::env::var(CRASH_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(at) => Box::new(CrashAtWrite::new(b, at)),
        None => Box::new(b),
    }
}

impl<B: Backend> Backend for CrashAtWrite<B> {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn identity(&self) -> String {
        self.inner.identity()
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
        if self.count.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            std::process::abort();
        }
        self.inner.write(kind, name, data)
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)
    }
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        self.inner.exists(kind, name)
    }
    fn space(&self) -> Result<Space> {
        self.inner.space()
    }
}
