//! Typed errors of the library. Every variant renders as one line that names
//! the thing that failed and, where there is one, the fix.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no space left on the repository's disk while {0}: free space and run the command again (the repository is unchanged)"
    )]
    DiskFull(String),
    /// The disk a restore writes to is full (not the repository's).
    #[error(
        "no space left on the disk restoring into {0}: free space there or restore elsewhere (--target), then run the command again (the repository is unchanged)"
    )]
    RestoreDiskFull(String),
    #[error(
        "{0} is not a strata repository (no config file): check the path, or create one with `strata init`"
    )]
    NotARepository(String),
    #[error("{0} already exists and is not empty: choose a new path for `strata init`")]
    RepositoryExists(String),
    #[error("wrong passphrase for repository {0}: check STRATA_PASSPHRASE / STRATA_PASSCOMMAND")]
    WrongPassphrase(String),
    #[error("no key for repository {repo}: {hint}")]
    KeyMissing { repo: String, hint: String },
    #[error("repository is corrupt: {0}; run `strata check` for details")]
    Corrupt(String),
    #[error("integrity error in {what}: authentication failed (data was modified or damaged)")]
    Integrity { what: String },
    #[error(
        "repository {repo} was rolled back: manifest generation {found} is older than generation {seen} seen before; someone removed newer data. If this is expected (restored from an old copy), delete {cache}"
    )]
    Rollback {
        repo: String,
        found: u64,
        seen: u64,
        cache: PathBuf,
    },
    #[error(
        "repository {repo} claims encryption mode `{claimed}` but was `{known}` when last used: refusing a possible downgrade attack. If intended, delete {cache}"
    )]
    Downgrade {
        repo: String,
        claimed: String,
        known: String,
        cache: PathBuf,
    },
    #[error(
        "the repository at {location} is not the one this client used there before (id {known}, now {found}): it was replaced or tampered with. If you re-created it yourself, delete {record}"
    )]
    Replaced {
        location: String,
        known: String,
        found: String,
        record: PathBuf,
    },
    #[error(
        "repository {repo} is locked by {holder}: wait for it to finish, use --lock-wait SECONDS, or remove a stale lock with `strata break-lock`"
    )]
    Locked { repo: String, holder: String },
    #[error("archive `{0}` does not exist: see `strata list` for the names")]
    ArchiveNotFound(String),
    #[error("archive `{0}` already exists: choose another name (placeholders like {{now}} help)")]
    ArchiveExists(String),
    #[error("unsafe path in archive, skipped: {0}")]
    UnsafePath(String),
    #[error("{0}")]
    Remote(String),
    /// A write to a store that cannot take one (a replica inside an archive).
    #[error("{0}")]
    ReadOnly(String),
    /// A configuration file problem, `FILE:LINE: what`.
    #[error("{0}")]
    Config(String),
    /// A copy does not match what it was copied from (replication checks).
    #[error("{0}")]
    Mismatch(String),
    #[error("refused by the server: {0}")]
    Denied(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{tier} holds no replica of `{name}`: see `strata replicas {name} {tier}`")]
    NoReplica { tier: String, name: String },
    #[error("unsupported repository: {0}")]
    Unsupported(String),
    /// A known-answer test failed: this build is broken on this machine.
    #[error(transparent)]
    Selftest(#[from] crate::selftest::SelftestError),
    #[error("interrupted")]
    Interrupted,
    /// Mounting or unmounting failed; the message names the fix.
    #[error("{0}")]
    Mount(String),
    /// Input that is not what it claims to be (a truncated or malformed
    /// tar stream, another program's failed export); the message says so.
    #[error("{0}")]
    BadInput(String),
}

impl Error {
    /// Wraps an I/O error with a one-line context, recognising a full disk.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        if source.raw_os_error() == Some(libc_enospc()) {
            return Error::DiskFull(context);
        }
        Error::Io { context, source }
    }

    pub fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt(what.into())
    }

    pub fn invalid(what: impl Into<String>) -> Self {
        Error::Invalid(what.into())
    }
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

/// Adds context to `std::io::Result`s in one call.
pub trait IoContext<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}
