//! Repository locks: a file per holder in `locks/`. Writers take an
//! exclusive lock, readers a shared one; operations that delete data
//! (compact, repair) a destructive one; `replicate`, which copies the
//! repository's files without reading them as a repository, a pin. A lock
//! is stale when its holder is a dead process on this host, or when it has
//! not been refreshed for `STALE_AFTER` (holders refresh every
//! `REFRESH_EVERY`).

use crate::backend::{Backend, FileKind};
use crate::error::{Error, Result};
use crossbeam_channel::{Sender, bounded};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// What a lock holder does, and so whom it excludes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Readers of archives (list, extract, check).
    Shared,
    /// Writers that only add files (create, prune, delete): they may delete
    /// nothing but manifest generations older than the newest three.
    Exclusive,
    /// Writers that delete packs or index files (compact, repair).
    Destructive,
    /// Copiers of the raw files (replicate): they need only that no pack or
    /// index file disappears, so they run beside readers and adding writers.
    Pin,
}

impl LockMode {
    pub fn conflicts_with(self, other: LockMode) -> bool {
        use LockMode::*;
        match (self, other) {
            (Destructive, _) | (_, Destructive) => true,
            (Pin, _) | (_, Pin) => false,
            (Shared, Shared) => false,
            _ => true,
        }
    }

    fn is_exclusive(self) -> bool {
        matches!(self, LockMode::Exclusive | LockMode::Destructive)
    }

    fn prefix(self) -> &'static str {
        match self {
            LockMode::Shared => "s",
            LockMode::Exclusive | LockMode::Destructive => "x",
            LockMode::Pin => "p",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockInfo {
    pub hostname: String,
    pub pid: u32,
    /// Kept beside `mode` for humans and older readers.
    pub exclusive: bool,
    /// Absent in locks written before pins existed: derived from `exclusive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<LockMode>,
    /// /etc/machine-id of the holder: two machines with one hostname (Pis
    /// are all `raspberrypi` out of the box) must not judge each other's
    /// pids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Unix seconds when this lock file was written.
    pub time: i64,
}

impl LockInfo {
    pub fn mode(&self) -> LockMode {
        self.mode.unwrap_or(if self.exclusive {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        })
    }

    fn describe(&self) -> String {
        let kind = match self.mode() {
            LockMode::Shared => "a shared",
            LockMode::Exclusive => "an exclusive",
            LockMode::Destructive => "an exclusive (compacting)",
            LockMode::Pin => "a pin (replicate or mount)",
        };
        let when = chrono::DateTime::from_timestamp(self.time, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        format!(
            "{kind} lock of pid {} on {} since {when}",
            self.pid, self.hostname
        )
    }

    fn is_stale(&self, now: i64) -> bool {
        let same_machine = match (&self.machine, machine_id()) {
            (Some(theirs), Some(ours)) => *theirs == ours,
            _ => true,
        };
        if self.hostname == hostname() && same_machine && !process_alive(self.pid) {
            return true;
        }
        now.saturating_sub(self.time) > STALE_AFTER.as_secs() as i64
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// This machine's id (systemd's /etc/machine-id), if it has one.
pub fn machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn process_alive(pid: u32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// Held lock; removing it on drop. Refreshes itself from a thread.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    name: Arc<Mutex<String>>,
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LockGuard {
    /// Fails if our lock file is gone (another process judged it stale and
    /// broke it): a writer must not commit then.
    pub fn verify(&self) -> Result<()> {
        let name = self.name.lock().map(|n| n.clone()).unwrap_or_default();
        if name.is_empty() || self.backend.exists(FileKind::Lock, &name)? {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "our lock on {} was removed by another process (it judged it stale): nothing was committed, run the command again",
                self.backend.location()
            )))
        }
    }

    pub fn release(mut self) {
        self.stop_refresh();
        self.remove();
    }

    fn stop_refresh(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn remove(&self) {
        if let Ok(name) = self.name.lock()
            && !name.is_empty()
        {
            let _ = self.backend.delete(FileKind::Lock, &name);
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.stop_refresh();
            self.remove();
        }
    }
}

fn new_name(mode: LockMode) -> Result<String> {
    let mut r = [0u8; 8];
    crate::crypto::random_bytes(&mut r)?;
    Ok(format!("{}-{}", mode.prefix(), hex::encode(r)))
}

fn write_lock(backend: &dyn Backend, mode: LockMode) -> Result<String> {
    let info = LockInfo {
        hostname: hostname(),
        pid: std::process::id(),
        exclusive: mode.is_exclusive(),
        mode: Some(mode),
        machine: machine_id(),
        time: chrono::Utc::now().timestamp(),
    };
    let name = new_name(mode)?;
    let data = serde_json::to_vec(&info).map_err(|e| Error::invalid(e.to_string()))?;
    backend.write(FileKind::Lock, &name, &data)?;
    Ok(name)
}

/// Finds a lock that conflicts with ours, removing stale ones on the way.
fn conflict(backend: &dyn Backend, ours: &str, mode: LockMode) -> Result<Option<LockInfo>> {
    let now = chrono::Utc::now().timestamp();
    for f in backend.list(FileKind::Lock)? {
        if f.name == ours {
            continue;
        }
        let info: LockInfo = match backend.read(FileKind::Lock, &f.name) {
            Ok(d) => match serde_json::from_slice(&d) {
                Ok(i) => i,
                // Lock files are written atomically, so an unreadable one is
                // foreign or damaged: respect it (break-lock removes it).
                Err(_) => LockInfo {
                    hostname: format!("unknown host (unreadable locks/{})", f.name),
                    pid: 0,
                    exclusive: true,
                    mode: Some(LockMode::Destructive),
                    machine: None,
                    time: now,
                },
            },
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue; // removed meanwhile
            }
            // Unreadable for another reason: respect it rather than ignore it.
            Err(_) => LockInfo {
                hostname: format!("unknown host (unreadable locks/{})", f.name),
                pid: 0,
                exclusive: true,
                mode: Some(LockMode::Destructive),
                machine: None,
                time: now,
            },
        };
        if info.pid != 0 && info.is_stale(now) {
            let _ = backend.delete(FileKind::Lock, &f.name);
            continue;
        }
        if mode.conflicts_with(info.mode()) {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

/// Takes a lock, waiting up to `wait` for conflicting holders to finish.
/// `waiting` is told once, with the holder, when we start to wait.
pub fn acquire(
    backend: Arc<dyn Backend>,
    mode: LockMode,
    wait: Duration,
    waiting: &dyn Fn(&str),
) -> Result<LockGuard> {
    if backend.read_only() {
        // Nothing can change a read-only store (a replica): nothing to lock.
        return if matches!(mode, LockMode::Shared | LockMode::Pin) {
            Ok(LockGuard {
                backend,
                name: Arc::new(Mutex::new(String::new())),
                stop: None,
                thread: None,
            })
        } else {
            Err(Error::ReadOnly(format!(
                "{} is read-only: only reading commands (list, info, extract, diff, check, mount) work on it",
                backend.location()
            )))
        };
    }
    let deadline = Instant::now() + wait;
    let mut backoff = Duration::from_millis(50);
    let mut told = false;
    loop {
        let name = write_lock(backend.as_ref(), mode)?;
        match conflict(backend.as_ref(), &name, mode)? {
            None => return Ok(start_refresh(backend, name, mode)),
            Some(holder) => {
                backend.delete(FileKind::Lock, &name)?;
                if Instant::now() >= deadline {
                    return Err(Error::Locked {
                        repo: backend.location().to_string(),
                        holder: holder.describe(),
                    });
                }
                if !told {
                    waiting(&holder.describe());
                    told = true;
                }
                // Waiting for another process to release its lock: a timed
                // retry is the only signal a dumb file store offers.
                let jitter = Duration::from_millis(u64::from(rand_u8()) % 50);
                std::thread::sleep(
                    (backoff + jitter).min(deadline.saturating_duration_since(Instant::now())),
                );
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn rand_u8() -> u8 {
    let mut b = [0u8; 1];
    let _ = crate::crypto::random_bytes(&mut b);
    b[0]
}

fn start_refresh(backend: Arc<dyn Backend>, name: String, mode: LockMode) -> LockGuard {
    let (tx, rx) = bounded::<()>(0);
    let name = Arc::new(Mutex::new(name));
    let (b, n) = (backend.clone(), name.clone());
    let thread = std::thread::spawn(move || {
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH_EVERY)
        {
            // New file first, then remove the old one: never a moment unlocked.
            if let Ok(fresh) = write_lock(b.as_ref(), mode)
                && let Ok(mut cur) = n.lock()
            {
                let _ = b.delete(FileKind::Lock, &cur);
                *cur = fresh;
            }
        }
    });
    LockGuard {
        backend,
        name,
        stop: Some(tx),
        thread: Some(thread),
    }
}

/// Removes every lock (`strata break-lock`).
pub fn break_all(backend: &dyn Backend) -> Result<usize> {
    let files = backend.list(FileKind::Lock)?;
    for f in &files {
        backend.delete(FileKind::Lock, &f.name)?;
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use LockMode::*;

    #[test]
    fn conflict_matrix_is_symmetric_and_lets_pins_beside_adding_writers() {
        let all = [Shared, Exclusive, Destructive, Pin];
        for a in all {
            for b in all {
                assert_eq!(a.conflicts_with(b), b.conflicts_with(a), "{a:?} {b:?}");
            }
        }
        assert!(!Pin.conflicts_with(Exclusive));
        assert!(!Pin.conflicts_with(Shared));
        assert!(!Pin.conflicts_with(Pin));
        assert!(Pin.conflicts_with(Destructive));
        assert!(Exclusive.conflicts_with(Exclusive));
        assert!(Shared.conflicts_with(Exclusive));
        assert!(!Shared.conflicts_with(Shared));
    }

    #[test]
    fn a_pin_waits_for_nothing_but_compaction_and_blocks_it() {
        let dir = tempfile::tempdir().unwrap();
        let b: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        b.create().unwrap();
        let none = |_: &str| {};
        let writer = acquire(b.clone(), Exclusive, Duration::ZERO, &none).unwrap();
        let pin = acquire(b.clone(), Pin, Duration::ZERO, &none).unwrap();
        writer.release();
        let err = acquire(b.clone(), Destructive, Duration::ZERO, &none)
            .err()
            .expect("compaction must not start while a pin is held");
        assert!(
            err.to_string().contains("pin (replicate or mount)"),
            "{err}"
        );
        pin.release();
        let compactor = acquire(b.clone(), Destructive, Duration::ZERO, &none).unwrap();
        assert!(acquire(b.clone(), Pin, Duration::ZERO, &none).is_err());
        compactor.release();
    }

    #[test]
    fn a_dead_pid_on_another_machine_with_our_hostname_is_not_stale() {
        let now = chrono::Utc::now().timestamp();
        let dead_pid = 999_999_999;
        let mut l = LockInfo {
            hostname: hostname(),
            pid: dead_pid,
            exclusive: true,
            mode: Some(Exclusive),
            machine: Some("another machine".into()),
            time: now,
        };
        if machine_id().is_some() {
            assert!(
                !l.is_stale(now),
                "another machine's lock was judged by our pids"
            );
        }
        l.machine = machine_id();
        assert!(l.is_stale(now), "our own dead process's lock is stale");
        l.time = now - STALE_AFTER.as_secs() as i64 - 1;
        l.machine = Some("another machine".into());
        assert!(
            l.is_stale(now),
            "any lock not refreshed for 30 minutes is stale"
        );
    }

    #[test]
    fn locks_written_before_modes_existed_keep_their_meaning() {
        let old: LockInfo =
            serde_json::from_str(r#"{"hostname":"h","pid":1,"exclusive":true,"time":0}"#).unwrap();
        assert_eq!(old.mode(), Exclusive);
        let old: LockInfo =
            serde_json::from_str(r#"{"hostname":"h","pid":1,"exclusive":false,"time":0}"#).unwrap();
        assert_eq!(old.mode(), Shared);
    }
}
