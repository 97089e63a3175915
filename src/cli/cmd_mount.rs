//! `strata mount` and `strata umount`.
//!
//! In the background (the default) the command starts itself again as a
//! child with STRATA_MOUNT_CHILD set: the child opens the repository (and
//! asks for a passphrase on the terminal if it must), mounts, says "ready"
//! on its standard output, leaves the terminal's session and serves. The
//! parent returns once the mount is there, or with the child's error. No
//! fork() of a process that already runs threads.

use super::common::{self, Location};
use super::filters::ArchiveFilter;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use strata::mount::{self, Access, MountOptions, fs::Owner};
use strata::repo::LockMode;

const CHILD_ENV: &str = "STRATA_MOUNT_CHILD";

#[derive(Args, Debug)]
#[command(
    long_about = "Mount a repository or an archive as a read-only file system (FUSE), to browse \
backups and copy single files back with any tool.\n\nREPO shows one directory per archive (read \
when first opened, so mounting is instant however many archives there are); REPO::ARCHIVE shows \
that archive's tree. With --versions, every file path of the archives becomes a directory holding \
each distinct version of the file (name.00001.ext, name.00002.ext, ... oldest first).\n\nWorks on \
local, ssh:// and replica repositories (--replica TIER[::NIGHT] HOST). While mounted, the \
repository is pinned: backups go on, `compact` waits. Files show their stored owners and modes, \
and the kernel enforces those modes for other users.\n\nRuns in the background until `strata \
umount MOUNTPOINT`; with -f it stays in the foreground and Ctrl-C unmounts.",
    after_help = "Examples:\n  strata mount /backup/repo /mnt/b && ls /mnt/b\n  strata mount -f /backup/repo::web-2026-12-01 /mnt/b\n  strata mount --versions -a 'web-*' /backup/repo /mnt/b\n  strata mount --replica ssh://pi-family/mnt/usb/strata/offsite knode01 /mnt/b\n  strata umount /mnt/b"
)]
pub struct MountArgs {
    /// Stay in the foreground; Ctrl-C (or SIGTERM) unmounts.
    #[arg(short, long)]
    pub foreground: bool,
    /// One directory per file path, holding every distinct version of the
    /// file across the archives.
    #[arg(long)]
    pub versions: bool,
    /// Mount options, comma-separated: allow_other (everyone may look, the
    /// stored modes still apply), allow_root, uid=N and gid=N (show every
    /// entry as owned by N).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Option<String>,
    /// Memory for decrypted chunks (read-ahead and re-reads).
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub cache_size: String,
    #[command(flatten)]
    pub filter: ArchiveFilter,
    /// REPO or REPO::ARCHIVE.
    pub location: String,
    /// An existing directory to mount on.
    pub mountpoint: PathBuf,
}

#[derive(Args, Debug)]
pub struct UmountArgs {
    /// Detach now even if files are open there; the mount goes when they
    /// are closed.
    #[arg(short = 'l', long)]
    pub lazy: bool,
    /// Where a repository is mounted.
    pub mountpoint: PathBuf,
}

/// `-o` as parsed.
#[derive(Debug, Default, PartialEq)]
struct Options {
    access: Access,
    owner: Owner,
}

fn parse_options(s: Option<&str>) -> Result<Options> {
    let mut o = Options::default();
    for opt in s.unwrap_or("").split(',').filter(|x| !x.is_empty()) {
        let num = |v: &str| {
            v.parse::<u32>()
                .with_context(|| format!("-o {opt}: a number is expected"))
        };
        match opt.split_once('=') {
            None if opt == "allow_other" => o.access = Access::Everyone,
            None if opt == "allow_root" => o.access = Access::Root,
            // What every strata mount is anyway.
            None if ["ro", "default_permissions", "nodev", "nosuid"].contains(&opt) => {}
            Some(("uid", v)) => o.owner.uid = Some(num(v)?),
            Some(("gid", v)) => o.owner.gid = Some(num(v)?),
            _ => {
                bail!("-o {opt}: unknown mount option (use allow_other, allow_root, uid=N, gid=N)")
            }
        }
    }
    Ok(o)
}

pub fn run(a: MountArgs, lock_wait: u64) -> Result<i32> {
    let options = parse_options(a.options.as_deref())?;
    let cache_bytes = usize::try_from(strata::chunker::parse_size(&a.cache_size)?)
        .context("--cache-size is larger than this machine's address space")?;
    mount::preflight(&a.mountpoint)?;
    let child = std::env::var_os(CHILD_ENV).is_some();
    if !a.foreground && !child {
        return spawn_background();
    }
    let loc = Location::parse(&a.location)?;
    // A pin keeps every pack the mounted archives need, and lets backups
    // go on beside the mount (only compaction waits).
    common::set_tier_lock(LockMode::Pin);
    let repo = common::open(&loc, LockMode::Pin, lock_wait, true)?;
    let archives = a.filter.apply(&repo.manifest().archives)?;
    let threads = common::threads().clamp(2, 8);
    let detached = child;
    let fs = mount::file_system(
        repo,
        MountOptions {
            archive: loc.archive.clone(),
            archives,
            versions: a.versions,
            access: options.access,
            owner: options.owner,
            cache_bytes,
            threads,
            log: Box::new(move |msg| {
                if !detached {
                    eprintln!("strata: warning: {msg}");
                }
            }),
        },
    )?;
    let fsname = match &loc.archive {
        Some(name) => format!("{}::{name}", loc.repo),
        None => loc.repo.clone(),
    };
    // Handlers first: a signal between mounting and serving must not kill
    // the process and leave a dead mount behind.
    let signals = stop_signals()?;
    let session = mount::mount(fs, &a.mountpoint, &fsname, options.access, threads)?;
    watch_signals(signals, a.mountpoint.clone());
    if child {
        detach()?;
    }
    session
        .run()
        .with_context(|| format!("serving the mount on {}", a.mountpoint.display()))?;
    Ok(super::EXIT_OK)
}

/// Starts the child that mounts and serves; returns when it has mounted
/// (exit 0) or failed (its exit code; it printed why).
fn spawn_background() -> Result<i32> {
    let exe = std::env::current_exe().context("finding the strata program to start")?;
    let mut child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the background mount")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    if line.trim() == "ready" {
        return Ok(super::EXIT_OK);
    }
    let status = child.wait()?;
    Ok(status
        .code()
        .unwrap_or(super::EXIT_ERROR)
        .max(super::EXIT_ERROR))
}

/// The background child, once mounted: tells the parent, leaves the
/// terminal's session (so closing it does not end the mount) and drops
/// the standard streams.
fn detach() -> Result<()> {
    nix::unistd::setsid().context("leaving the terminal's session")?;
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    redirect_std(&null)
}

fn redirect_std(null: &std::fs::File) -> Result<()> {
    use std::os::fd::AsFd;
    let fd = null.as_fd();
    rustix::stdio::dup2_stdin(fd).context("redirecting standard input")?;
    rustix::stdio::dup2_stdout(fd).context("redirecting standard output")?;
    rustix::stdio::dup2_stderr(fd).context("redirecting standard error")?;
    Ok(())
}

fn stop_signals() -> Result<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")
}

/// The first SIGINT, SIGTERM or SIGHUP unmounts (lazily if files are open
/// there, so the process ends once they are closed); a second one ends the
/// process at once. After a lazy detach the path is never unmounted again:
/// something else may be mounted there by then.
fn watch_signals(mut signals: signal_hook::iterator::Signals, mountpoint: PathBuf) {
    std::thread::spawn(move || {
        let mut first = true;
        for _ in signals.forever() {
            if !first {
                std::process::exit(super::EXIT_ERROR);
            }
            first = false;
            if mount::unmount(&mountpoint, false).is_err() {
                let _ = mount::unmount(&mountpoint, true);
            }
        }
    });
}

pub fn umount(a: UmountArgs) -> Result<i32> {
    unmount_path(&a.mountpoint, a.lazy)?;
    Ok(super::EXIT_OK)
}

fn unmount_path(p: &Path, lazy: bool) -> Result<()> {
    Ok(mount::unmount(p, lazy)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_parse_and_unknown_ones_are_refused() {
        let o = parse_options(Some("allow_other,uid=1000,gid=100,ro")).unwrap();
        assert_eq!(o.access, Access::Everyone);
        assert_eq!(o.owner.uid, Some(1000));
        assert_eq!(o.owner.gid, Some(100));
        assert_eq!(parse_options(None).unwrap(), Options::default());
        assert!(parse_options(Some("rw")).is_err());
        assert!(parse_options(Some("uid=me")).is_err());
    }
}
