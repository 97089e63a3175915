//! The file store under a repository.
//!
//! Contract (every implementation MUST):
//! - `write` creates a new file atomically and durably: when it returns Ok the
//!   complete file survives a crash, and a reader never sees a partial file.
//!   It MUST fail with `AlreadyExists` semantics (an error) rather than
//!   replace an existing file of a different size, except that rewriting a
//!   content-addressed file (pack, index) with identical bytes is allowed.
//!   (Rewriting another file with identical bytes may succeed or fail: the
//!   S3 store accepts it, because a retried PUT whose answer was lost
//!   meets its own object.)
//! - `read`/`read_range` return exactly the bytes written, or an error.
//! - `list` returns every complete file of a kind (never temporary files).
//! - `delete` of a missing file is not an error (crash recovery re-runs it).

pub mod fault;
pub mod local;
pub mod remote;
pub mod s3;

use crate::error::Result;

/// Largest range a reader asks for: a blob is at most the chunker maximum
/// (16 MiB) plus envelope; a hostile index cannot make us allocate more.
pub const MAX_READ_RANGE: u32 = 64 * 1024 * 1024;

/// The kinds of files in a repository, each in its own directory.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Config,
    Key,
    Pack,
    Index,
    Manifest,
    Lock,
}

impl FileKind {
    pub fn dir(self) -> &'static str {
        match self {
            Self::Config => "",
            Self::Key => "keys",
            Self::Pack => "data",
            Self::Index => "index",
            Self::Manifest => "manifest",
            Self::Lock => "locks",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub name: String,
    pub size: u64,
    /// Unix seconds of the last modification (creation: files never
    /// change), 0 when the store does not say.
    pub modified: i64,
}

/// Bytes a network backend has sent and received so far.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
}

/// Free and total bytes of the file system holding the repository.
#[derive(Copy, Clone, Debug, Default)]
pub struct Space {
    pub total: u64,
    pub free: u64,
}

pub trait Backend: Send + Sync {
    /// Human-readable location, for messages.
    fn location(&self) -> &str;
    /// A stable name of the location (an absolute path, a URL), under which
    /// the client remembers which repository it found there.
    fn identity(&self) -> String {
        self.location().to_string()
    }
    /// Round trips are expensive (a network): readers fetch whole packs
    /// rather than one blob at a time.
    fn high_latency(&self) -> bool {
        false
    }
    /// Creates the empty layout. Fails if the location holds files.
    fn create(&self) -> Result<()>;
    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>>;
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;
    /// `read` into a buffer the caller reuses (cleared first): a loop over
    /// many packs then does not allocate and fault in 16 MiB per pack.
    fn read_into(&self, kind: FileKind, name: &str, out: &mut Vec<u8>) -> Result<()> {
        *out = self.read(kind, name)?;
        Ok(())
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>>;
    /// `read_range` into `out[..len]`, a buffer the caller reuses: `out` is
    /// only grown, so its first `len` bytes are the range afterwards.
    fn read_range_into(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        len: u32,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        *out = self.read_range(kind, name, offset, len)?;
        Ok(())
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()>;
    /// `write` of bytes the caller no longer needs: a store that keeps them
    /// past the call (an asynchronous upload) takes them without a copy.
    fn write_owned(&self, kind: FileKind, name: &str, data: Vec<u8>) -> Result<()> {
        self.write(kind, name, &data)
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()>;
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool>;
    fn space(&self) -> Result<Space>;
    /// The store refuses deletes and overwrites (an append-only repository,
    /// or `strata serve --append-only`): writers keep old manifest
    /// generations instead of failing to delete them.
    fn append_only(&self) -> bool {
        false
    }
    /// Nothing can be written, not even a lock (a replica inside an
    /// archive): readers open it without locking.
    fn read_only(&self) -> bool {
        false
    }
    /// Bytes on the connection, for backends that have one.
    fn traffic(&self) -> Option<Traffic> {
        None
    }
    /// Removes temporary files (left by writers that crashed or lost their
    /// connection mid-write) not modified for `older_than_secs`; returns
    /// how many. Only `compact` calls this.
    fn remove_stale_temporaries(&self, _older_than_secs: u64) -> Result<u64> {
        Ok(0)
    }
}

/// A location that is not a local path: an `ssh://`, `user@host:path` or
/// `s3://` URL.
pub fn is_url(location: &str) -> bool {
    s3::S3Url::is_s3(location) || remote::RemoteUrl::parse(location).is_some()
}

/// The backend for a location: an `s3://` URL (S3 settings from `s3`, then
/// the environment), an `ssh://` URL or `user@host:path` (served by
/// `remote_path serve` on the other end), or a local path. Test fault
/// injection (`STRATA_FAULT_*`) wraps it when asked for.
pub fn open_location(
    location: &str,
    create: bool,
    remote_path: &str,
    ssh: Option<remote::ssh::SshOptions>,
) -> Result<std::sync::Arc<dyn Backend>> {
    open_location_with(location, create, remote_path, ssh, None)
}

/// [`open_location`] with a repository's S3 settings.
pub fn open_location_with(
    location: &str,
    create: bool,
    remote_path: &str,
    ssh: Option<remote::ssh::SshOptions>,
    s3: Option<&s3::S3Settings>,
) -> Result<std::sync::Arc<dyn Backend>> {
    if let Some(url) = s3::S3Url::parse(location) {
        let url = url?;
        let opts = s3::S3Options::resolve(s3, location)?;
        let b = s3::S3Backend::open(&url, location, &opts)?;
        return Ok(std::sync::Arc::from(fault::wrap_from_env(b)));
    }
    if let Some(url) = remote::RemoteUrl::parse(location) {
        let ssh = ssh.unwrap_or_else(remote::ssh::SshOptions::from_env);
        let r = remote::RemoteBackend::connect_with(&url, location, create, remote_path, ssh)?;
        return Ok(std::sync::Arc::from(fault::wrap_from_env(r)));
    }
    let local = local::LocalBackend::new(std::path::PathBuf::from(location));
    Ok(std::sync::Arc::from(fault::wrap_from_env(local)))
}

/// File names are lower-case hex or short `[a-z0-9._-]` words; anything else
/// (slashes, `..`) is refused so a name can never escape its directory.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
}
