//! `strata serve`: a dumb, restricted file store behind the protocol. Every
//! restriction is enforced here, from the server's own command line; nothing
//! the client sends can widen it (SSH_ORIGINAL_COMMAND is ignored).

use super::proto::*;
use crate::backend::local::LocalBackend;
use crate::backend::{Backend, FileKind};
use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// The repository must be at or below one of these directories.
    pub restrict_to_paths: Vec<PathBuf>,
    /// The repository must be exactly one of these.
    pub restrict_to_repositories: Vec<PathBuf>,
    /// No deletes and no overwrites (lock files excepted).
    pub append_only: bool,
    /// No writes or deletes (lock files excepted, so clients can lock).
    pub read_only: bool,
    /// The repository may not grow beyond this many bytes.
    pub quota: Option<u64>,
}

fn denied(message: impl Into<String>) -> RemoteError {
    RemoteError {
        code: ErrorCode::Denied,
        message: message.into(),
    }
}

/// Converts a library error for the wire.
pub fn to_remote(e: &Error) -> RemoteError {
    let code = match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            ErrorCode::NotFound
        }
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            ErrorCode::AlreadyExists
        }
        Error::DiskFull(_) => ErrorCode::DiskFull,
        Error::RepositoryExists(_) => ErrorCode::RepositoryExists,
        Error::NotARepository(_) => ErrorCode::NotARepository,
        Error::Invalid(_) => ErrorCode::Invalid,
        _ => ErrorCode::Io,
    };
    RemoteError {
        code,
        message: e.to_string(),
    }
}

/// Absolute, symlink-free form of a path that may not exist yet (its
/// parent must).
fn canonical(p: &Path) -> std::io::Result<PathBuf> {
    match p.canonicalize() {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let name = match p.components().next_back() {
                Some(Component::Normal(n)) => n.to_owned(),
                _ => return Err(e),
            };
            let parent = p
                .parent()
                .filter(|x| !x.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Ok(parent.canonicalize()?.join(name))
        }
        Err(e) => Err(e),
    }
}

/// The repository directory a client may use, or why not.
pub fn resolve(requested: &str, opts: &ServeOptions) -> std::result::Result<PathBuf, RemoteError> {
    let p = Path::new(requested);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(p)
    };
    let repo = canonical(&p).map_err(|e| RemoteError {
        code: ErrorCode::NotFound,
        message: format!("{requested}: {e}"),
    })?;
    let allowed = |list: &[PathBuf], exact: bool| {
        list.iter().any(|r| match canonical(r) {
            // Path::starts_with compares whole components: /foo does not
            // contain /foo-home.
            Ok(c) => {
                if exact {
                    repo == c
                } else {
                    repo.starts_with(&c)
                }
            }
            Err(_) => false,
        })
    };
    if !opts.restrict_to_paths.is_empty() && !allowed(&opts.restrict_to_paths, false) {
        return Err(denied(format!(
            "{requested} is outside the paths this key may use"
        )));
    }
    if !opts.restrict_to_repositories.is_empty() && !allowed(&opts.restrict_to_repositories, true) {
        return Err(denied(format!(
            "{requested} is not a repository this key may use"
        )));
    }
    Ok(repo)
}

fn du(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Largest lock file a client may write (they are about 100 bytes).
pub const MAX_LOCK_FILE: usize = 4096;

struct Session {
    backend: LocalBackend,
    opts: ServeOptions,
    create: bool,
    used: u64,
    /// Lock files this client wrote and has not removed: removed when it
    /// disconnects, so a dropped link leaves no lock behind.
    locks: std::collections::HashSet<String>,
}

impl Session {
    fn handle(&mut self, op: Op) -> std::result::Result<Payload, RemoteError> {
        let r = |e: Error| to_remote(&e);
        match op {
            Op::Create => {
                if self.opts.read_only || !self.create {
                    return Err(denied("creating a repository is not allowed here"));
                }
                self.backend.create().map_err(r)?;
                Ok(Payload::Done)
            }
            Op::List { kind } => {
                let files = self.backend.list(kind.into()).map_err(r)?;
                Ok(Payload::Files {
                    files: files.iter().map(WireFile::from).collect(),
                })
            }
            Op::Read { kind, name } => Ok(Payload::Bytes {
                data: self.backend.read(kind.into(), &name).map_err(r)?,
            }),
            Op::ReadRange {
                kind,
                name,
                offset,
                len,
            } => Ok(Payload::Bytes {
                data: self
                    .backend
                    .read_range(kind.into(), &name, offset, len)
                    .map_err(r)?,
            }),
            Op::Exists { kind, name } => Ok(Payload::Flag {
                value: self.backend.exists(kind.into(), &name).map_err(r)?,
            }),
            Op::Space => Ok(self.backend.space().map_err(r)?.into()),
            Op::Write { kind, name, data } => self.write(kind.into(), &name, &data),
            Op::Delete { kind, name } => self.delete(kind.into(), &name),
            Op::RemoveStaleTemporaries { older_than_secs } => {
                if self.opts.append_only || self.opts.read_only {
                    return Err(denied("this key may not remove files"));
                }
                Ok(Payload::Count {
                    n: self
                        .backend
                        .remove_stale_temporaries(older_than_secs)
                        .map_err(r)?,
                })
            }
        }
    }

    fn write(
        &mut self,
        kind: FileKind,
        name: &str,
        data: &[u8],
    ) -> std::result::Result<Payload, RemoteError> {
        if self.opts.read_only && kind != FileKind::Lock {
            return Err(denied("this key has read-only access"));
        }
        // Packs and index files are named by the BLAKE3 of their bytes: a
        // file that is not is refused, so no client can plant a corrupt one.
        if matches!(kind, FileKind::Pack | FileKind::Index)
            && blake3::hash(data).to_hex().as_str() != name
        {
            return Err(denied(format!(
                "{}/{name}: its bytes do not hash to its name",
                kind.dir()
            )));
        }
        // Lock files are small JSON; every key may write them, so bound them.
        if kind == FileKind::Lock && data.len() > MAX_LOCK_FILE {
            return Err(denied(format!(
                "a lock file of {} bytes is more than the {MAX_LOCK_FILE} allowed",
                data.len()
            )));
        }
        if let Some(q) = self.opts.quota
            && kind != FileKind::Lock
            && self.used + data.len() as u64 > q
        {
            return Err(RemoteError {
                code: ErrorCode::QuotaExceeded,
                message: format!(
                    "storage quota of {q} bytes exceeded ({} used): prune and compact, or raise --storage-quota",
                    self.used
                ),
            });
        }
        // The local backend never replaces a file (except identical or
        // repaired content-addressed ones), so append-only needs nothing more
        // for data; a manifest must not drop archives.
        if kind == FileKind::Manifest && self.opts.append_only {
            self.refuse_dropped_archives(name, data)?;
        }
        self.backend
            .write(kind, name, data)
            .map_err(|e| to_remote(&e))?;
        self.used += data.len() as u64;
        if kind == FileKind::Lock {
            self.locks.insert(name.to_string());
        }
        Ok(Payload::Done)
    }

    fn delete(&mut self, kind: FileKind, name: &str) -> std::result::Result<Payload, RemoteError> {
        if kind != FileKind::Lock && (self.opts.append_only || self.opts.read_only) {
            return Err(denied(format!(
                "this key may not delete ({} access): {}/{name}",
                if self.opts.read_only {
                    "read-only"
                } else {
                    "append-only"
                },
                kind.dir()
            )));
        }
        let size = self.backend.file_size(kind, name).unwrap_or(0);
        self.backend.delete(kind, name).map_err(|e| to_remote(&e))?;
        self.used = self.used.saturating_sub(size);
        if kind == FileKind::Lock {
            self.locks.remove(name);
        }
        Ok(Payload::Done)
    }

    /// Append-only access to an unencrypted repository (an off-site node's
    /// replicas): the server can read manifests, so a new generation that
    /// drops an archive of the newest one is refused, and a client cannot
    /// hide history that the node's own compaction would then free. For
    /// encrypted repositories the older generations stay as tombstones
    /// (FORMAT.md §3.2).
    fn refuse_dropped_archives(
        &self,
        name: &str,
        data: &[u8],
    ) -> std::result::Result<(), RemoteError> {
        use crate::crypto::{Mode, ObjectType, RepoKeys, Sealer};
        use crate::repo::manifest;
        let r = |e: Error| to_remote(&e);
        let config = crate::repo::config::RepoConfig::parse(
            &self.backend.read(FileKind::Config, "config").map_err(r)?,
            "the repository",
        )
        .map_err(r)?;
        if config.encryption != Mode::None {
            return Ok(());
        }
        let sealer = Sealer::new(RepoKeys::unkeyed(config.public_seed().map_err(r)?)).map_err(r)?;
        let generation = manifest::parse_file_name(name)
            .ok_or_else(|| denied(format!("`{name}` is not a manifest name")))?;
        let payload = sealer
            .open(
                ObjectType::Manifest,
                &manifest::aad_id(generation),
                data.to_vec(),
                &|| format!("manifest {name}"),
            )
            .map_err(r)?;
        let new =
            manifest::Manifest::decode(&crate::compress::decompress(payload).map_err(r)?, name)
                .map_err(r)?;
        let newest = self
            .backend
            .list(FileKind::Manifest)
            .map_err(r)?
            .iter()
            .filter_map(|f| manifest::parse_file_name(&f.name))
            .max();
        let Some(newest) = newest else {
            return Ok(());
        };
        let current = crate::repo::read_manifest(&self.backend, &sealer, newest).map_err(r)?;
        for a in &current.archives {
            if !new
                .archives
                .iter()
                .any(|b| b.name == a.name && b.id == a.id)
            {
                return Err(denied(format!(
                    "this key may not delete archives (append-only access): the new manifest drops {}; prune on the node itself",
                    a.name
                )));
            }
        }
        Ok(())
    }

    /// The client is gone: its locks go too.
    fn release_locks(&mut self) {
        for name in self.locks.drain() {
            let _ = self.backend.delete(FileKind::Lock, &name);
        }
    }
}

/// Serves one client on `input`/`output` until it disconnects.
pub fn serve(opts: &ServeOptions, mut input: impl Read, mut output: impl Write) -> Result<()> {
    let io = |e: std::io::Error| Error::io("writing to the client", e);
    let Some(hello) = read_frame::<Hello>(&mut input)? else {
        return Ok(());
    };
    let welcome = open(&hello, opts);
    let session = match welcome {
        Ok((w, s)) => {
            write_frame(&mut output, &Ok::<Welcome, RemoteError>(w)).map_err(io)?;
            s
        }
        Err(e) => {
            write_frame(&mut output, &Err::<Welcome, RemoteError>(e.clone())).map_err(io)?;
            return Err(Error::invalid(e.message));
        }
    };
    let mut session = session;
    let result = (|| {
        while let Some(req) = read_frame::<Request>(&mut input)? {
            let result = session.handle(req.op);
            write_frame(&mut output, &Response { id: req.id, result }).map_err(io)?;
        }
        Ok(())
    })();
    session.release_locks();
    result
}

fn open(
    hello: &Hello,
    opts: &ServeOptions,
) -> std::result::Result<(Welcome, Session), RemoteError> {
    if hello.magic != PROTOCOL_MAGIC || hello.version != PROTOCOL_VERSION {
        return Err(RemoteError {
            code: ErrorCode::Invalid,
            message: format!(
                "client speaks {} version {}, this server speaks {PROTOCOL_MAGIC} version {PROTOCOL_VERSION}: use the same strata version on both sides",
                hello.magic, hello.version
            ),
        });
    }
    let path = resolve(&hello.path, opts)?;
    let backend = LocalBackend::new(&path);
    if !hello.create && !path.join("config").is_file() {
        return Err(RemoteError {
            code: ErrorCode::NotARepository,
            message: format!("{} is not a strata repository", hello.path),
        });
    }
    let used = if opts.quota.is_some() { du(&path) } else { 0 };
    let welcome = Welcome {
        magic: PROTOCOL_MAGIC.into(),
        version: PROTOCOL_VERSION,
        server: format!("strata {}", env!("CARGO_PKG_VERSION")),
        append_only: opts.append_only,
        read_only: opts.read_only,
        quota: opts.quota,
    };
    Ok((
        welcome,
        Session {
            backend,
            opts: opts.clone(),
            create: hello.create,
            used,
            locks: Default::default(),
        },
    ))
}
