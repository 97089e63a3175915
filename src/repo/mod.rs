//! The repository: config, keys, packs, index, manifest and locks over a
//! [`Backend`]. See docs/FORMAT.md for the bytes and the ordering rules.

pub mod client;
pub mod config;
pub mod index;
pub mod keys;
pub mod lock;
pub mod manifest;
pub mod pack;
mod pack_cache;
pub mod writer;

use crate::backend::{Backend, FileKind};
use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::keyfile::{KeyFile, KeyPayload};
use crate::crypto::{Cipher, MASTER_SECRET_LEN, Mode, ObjectType, RepoKeys, Sealer, random_bytes};
use crate::error::{Error, Result};
use crate::id::BlobId;
use client::{ClientDirs, LocationRecord, SecurityRecord};
use config::{CONFIG_FILE, RepoConfig};
use index::Index;
use lock::LockGuard;
pub use lock::LockMode;
use manifest::{ArchiveRef, Manifest};
use std::sync::Arc;
use std::time::Duration;

/// Supplies a passphrase when a key must be unlocked or created.
pub trait Passphrase {
    /// `new_key` asks for a passphrase to protect a new key (confirm it).
    fn get(&self, new_key: bool) -> Result<Vec<u8>>;
}

pub struct InitOptions {
    pub mode: Mode,
    pub cipher: Cipher,
    pub chunker: ChunkerParams,
    /// Argon2id (memory KiB, iterations, parallelism).
    pub kdf_cost: (u32, u32, u32),
    /// Target pack size in bytes (1 MiB ..= 1 GiB).
    pub pack_size: u32,
    pub append_only: bool,
}

/// Creates a repository; returns its config.
pub fn init(
    backend: &dyn Backend,
    opts: &InitOptions,
    pass: &dyn Passphrase,
    dirs: &ClientDirs,
) -> Result<RepoConfig> {
    opts.chunker.validate()?;
    let mut config = RepoConfig::new(opts.mode, Some(opts.cipher), opts.chunker)?;
    if !(config::MIN_PACK_SIZE..=config::MAX_PACK_SIZE).contains(&opts.pack_size) {
        return Err(Error::invalid(format!(
            "pack size {} is outside 1 MiB ..= 1 GiB",
            opts.pack_size
        )));
    }
    config.pack_size = opts.pack_size;
    config.append_only = opts.append_only;
    if opts.mode == Mode::Keyfile && dirs.key_file(&config.id).exists() {
        return Err(Error::invalid(
            "a key file for this repository id already exists",
        ));
    }
    backend.create()?;
    if opts.mode.has_key() {
        let mut master = [0u8; MASTER_SECRET_LEN];
        random_bytes(&mut master)?;
        let payload = KeyPayload {
            repository_id: config.id.clone(),
            mode: opts.mode,
            cipher: config.cipher,
            master: hex::encode(master),
        };
        let kf = KeyFile::seal(&payload, &pass.get(true)?, opts.kdf_cost)?;
        match opts.mode {
            Mode::Keyfile => {
                std::fs::create_dir_all(&dirs.keys)
                    .map_err(|e| Error::io(format!("creating {}", dirs.keys.display()), e))?;
                crate::backend::local::write_durable(&dirs.key_file(&config.id), &kf.to_json())?;
            }
            _ => backend.write(FileKind::Key, "repokey", &kf.to_json())?,
        }
    }
    // The config is written last: a half-created directory is not a repository.
    backend.write(FileKind::Config, CONFIG_FILE, &config.to_json())?;
    let record = SecurityRecord {
        location: backend.location().into(),
        mode: opts.mode,
        generation: 0,
    };
    record.store(&dirs.security_file(&config.id))?;
    let here = LocationRecord {
        location: backend.identity(),
        id: config.id.clone(),
        mode: opts.mode,
    };
    here.store(&dirs.location_file(&backend.identity()))?;
    Ok(config)
}

/// How to open a repository.
pub struct OpenOptions<'a> {
    pub lock: LockMode,
    pub lock_wait: Duration,
    pub passphrase: &'a dyn Passphrase,
    pub dirs: ClientDirs,
    /// Skip loading the index (commands that only read the manifest).
    pub load_index: bool,
    /// Told when we start waiting for another process's lock.
    pub lock_notice: Option<&'a dyn Fn(&str)>,
    /// For `check --repair`: skip unreadable index files, fall back to an
    /// older manifest generation, and accept a generation older than seen.
    pub repair: bool,
}

pub struct Repository {
    backend: Arc<dyn Backend>,
    config: RepoConfig,
    sealer: Arc<Sealer>,
    index: Index,
    manifest: Manifest,
    dirs: ClientDirs,
    index_files: Vec<String>,
    lock: LockGuard,
    pack_cache: pack_cache::PackCache,
    /// `view_generation` was used: the manifest in memory is not the newest.
    viewing_old: bool,
}

/// Where [`Repository::read_blob_into`] put a blob.
pub enum Decoded {
    /// In the caller's buffer, this many bytes.
    Into(usize),
    /// In a buffer of its own (it did not fit, or takes a slower format).
    Owned(Vec<u8>),
}

impl Repository {
    pub fn open(backend: Arc<dyn Backend>, opts: &OpenOptions) -> Result<Self> {
        let location = backend.location().to_string();
        let config_bytes = match backend.read(FileKind::Config, CONFIG_FILE) {
            Ok(b) => b,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotARepository(location));
            }
            Err(e) => return Err(e),
        };
        let config = RepoConfig::parse(&config_bytes, &location)?;
        let backend: Arc<dyn Backend> = if config.append_only {
            Arc::new(crate::backend::fault::AppendOnly(backend))
        } else {
            backend
        };
        let loc_path = opts.dirs.location_file(&backend.identity());
        if let Some(rec) = LocationRecord::load(&loc_path)
            && rec.id != config.id
        {
            return Err(Error::Replaced {
                location,
                known: rec.id,
                found: config.id,
                record: loc_path,
            });
        }
        let sec_path = opts.dirs.security_file(&config.id);
        let known = SecurityRecord::load(&sec_path);
        if let Some(k) = &known
            && k.mode.has_key()
            && k.mode != config.encryption
        {
            return Err(Error::Downgrade {
                repo: location,
                claimed: config.encryption.name().into(),
                known: k.mode.name().into(),
                cache: sec_path,
            });
        }
        let keys = load_keys(backend.as_ref(), &config, opts)?;
        let sealer = Arc::new(Sealer::new(keys)?);
        let lock = lock::acquire(backend.clone(), opts.lock, opts.lock_wait, &|holder| {
            if let Some(notice) = opts.lock_notice {
                notice(holder)
            }
        })?;
        let manifest = if opts.repair {
            load_manifest_tolerant(backend.as_ref(), &sealer)?
        } else {
            load_manifest(backend.as_ref(), &sealer)?
        };
        let seen = known.as_ref().map(|k| k.generation).unwrap_or(0);
        // A replica is an older state by design (the night it was copied):
        // it is read, never written, so it neither trips nor moves the
        // rollback record.
        let replica = backend.read_only();
        if manifest.generation < seen && !opts.repair && !replica {
            return Err(Error::Rollback {
                repo: location,
                found: manifest.generation,
                seen,
                cache: sec_path,
            });
        }
        let record = SecurityRecord {
            location,
            mode: config.encryption,
            generation: manifest.generation,
        };
        if !replica || manifest.generation >= seen {
            record.store(&sec_path)?;
        }
        let here = LocationRecord {
            location: backend.identity(),
            id: config.id.clone(),
            mode: config.encryption,
        };
        here.store(&loc_path)?;
        let (index, index_files) = if opts.load_index {
            load_index(backend.as_ref(), &sealer, opts.repair)?
        } else {
            (Index::default(), Vec::new())
        };
        Ok(Self {
            backend,
            config,
            sealer,
            index,
            manifest,
            dirs: opts.dirs.clone(),
            index_files,
            lock,
            pack_cache: pack_cache::PackCache::default(),
            viewing_old: false,
        })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn sealer(&self) -> &Arc<Sealer> {
        &self.sealer
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn index_mut(&mut self) -> &mut Index {
        &mut self.index
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dirs(&self) -> &ClientDirs {
        &self.dirs
    }

    pub fn location(&self) -> &str {
        self.backend.location()
    }

    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker.params, &self.sealer.keys().chunker_seed)
    }

    /// Reads, authenticates and decompresses one blob.
    pub fn read_blob(&self, ty: ObjectType, id: &BlobId) -> Result<Vec<u8>> {
        let (pack, env) = self.read_envelope(ty, id)?;
        let payload = self.sealer.open(ty, &id.0, env, &|| {
            format!("blob {} in pack {}", id.short(), pack.short())
        })?;
        crate::compress::decompress(payload)
    }

    /// A blob decoded into `out`, through `env`, a buffer the caller keeps
    /// for the envelopes: no allocation per blob on a local disk (restores
    /// write straight from `out`). A blob that does not fit in `out`, or is
    /// in a slower format (xz, zlib), is decoded into a buffer of its own.
    pub fn read_blob_into(
        &self,
        ty: ObjectType,
        id: &BlobId,
        env: &mut Vec<u8>,
        out: &mut [u8],
    ) -> Result<Decoded> {
        let (pack, len) = self.read_envelope_into(ty, id, env)?;
        let env = &mut env[..len];
        let payload = self.sealer.open_in_place(ty, &id.0, env, &|| {
            format!("blob {} in pack {}", id.short(), pack.short())
        })?;
        let payload = &env[payload];
        Ok(match crate::compress::decompress_into(payload, out) {
            Some(n) => Decoded::Into(n),
            None => Decoded::Owned(crate::compress::decompress_slice(payload)?.into_owned()),
        })
    }

    /// Where the index says a blob of type `ty` lies.
    fn locate(
        &self,
        ty: ObjectType,
        id: &BlobId,
    ) -> Result<(crate::id::PackId, index::BlobLocation)> {
        let (pack, loc) = self.index.get(id).ok_or_else(|| {
            Error::corrupt(format!("blob {} is missing from the index", id.short()))
        })?;
        if loc.ty != ty {
            return Err(Error::corrupt(format!(
                "blob {} has type {:?}, expected {ty:?}",
                id.short(),
                loc.ty
            )));
        }
        Ok((pack, loc))
    }

    /// A blob's envelope as stored, and the pack holding it.
    fn read_envelope(&self, ty: ObjectType, id: &BlobId) -> Result<(crate::id::PackId, Vec<u8>)> {
        let mut env = Vec::new();
        let (pack, len) = self.read_envelope_into(ty, id, &mut env)?;
        env.truncate(len);
        Ok((pack, env))
    }

    /// A blob's envelope read into `env[..len]` (`env` is only grown), the
    /// pack holding it, and `len`.
    fn read_envelope_into(
        &self,
        ty: ObjectType,
        id: &BlobId,
        env: &mut Vec<u8>,
    ) -> Result<(crate::id::PackId, usize)> {
        let (pack, loc) = self.locate(ty, id)?;
        if self.backend.high_latency() {
            *env = self
                .pack_cache
                .blob(self.backend.as_ref(), pack, loc.offset, loc.length)?;
        } else {
            self.backend.read_range_into(
                FileKind::Pack,
                &pack.to_hex(),
                loc.offset as u64,
                loc.length,
                env,
            )?;
        }
        let len = loc.length as usize;
        if env.len() < len {
            return Err(Error::corrupt(format!(
                "blob {} in pack {}: short read",
                id.short(),
                pack.short()
            )));
        }
        Ok((pack, len))
    }

    pub fn writer(&self, threads: usize) -> writer::BlobWriter {
        writer::BlobWriter::new(
            self.backend.clone(),
            self.sealer.clone(),
            self.config.pack_size,
            self.config.chunker.params.max as usize,
            threads,
        )
    }

    /// Makes written packs visible to this process's index.
    pub fn absorb(&mut self, summary: &writer::WriteSummary) {
        for (pack, entries) in &summary.packs {
            self.index.add_pack(*pack, entries);
        }
    }

    /// Writes the next manifest generation with `archives` (after the data
    /// and index it refers to are durable), then trims old generations.
    /// Returns warnings about housekeeping after the commit, which has
    /// happened by then and is not undone by them.
    pub fn write_manifest(&mut self, archives: Vec<ArchiveRef>) -> Result<Vec<String>> {
        if self.viewing_old {
            return Err(Error::invalid(
                "an older manifest generation is open for reading; nothing can be written",
            ));
        }
        self.check_unchanged()?;
        let generation = self.manifest.generation + 1;
        let next = Manifest {
            version: manifest::MANIFEST_VERSION,
            generation,
            timestamp: chrono::Utc::now().to_rfc3339(),
            archives,
        };
        let mut payload = vec![crate::compress::COMPRESSION_NONE];
        payload.extend_from_slice(&next.encode()?);
        let sealed = self.sealer.seal(
            ObjectType::Manifest,
            &manifest::aad_id(generation),
            &payload,
        )?;
        self.backend.write(
            FileKind::Manifest,
            &manifest::file_name(generation),
            &sealed,
        )?;
        self.manifest = next;
        let mut warnings = Vec::new();
        let record = SecurityRecord {
            location: self.location().into(),
            mode: self.config.encryption,
            generation,
        };
        if let Err(e) = record.store(&self.dirs.security_file(&self.config.id)) {
            warnings.push(format!(
                "could not record manifest generation {generation}: {e}"
            ));
        }
        if let Err(e) = self.trim_manifests(generation) {
            warnings.push(format!("could not remove old manifest generations: {e}"));
        }
        Ok(warnings)
    }

    fn trim_manifests(&self, generation: u64) -> Result<()> {
        if self.config.append_only || self.backend.append_only() {
            return Ok(()); // every generation stays: the history of the archive list
        }
        for f in self.backend.list(FileKind::Manifest)? {
            if let Some(g) = manifest::parse_file_name(&f.name)
                && g.saturating_add(manifest::MANIFEST_KEEP as u64) <= generation
            {
                self.backend.delete(FileKind::Manifest, &f.name)?;
            }
        }
        Ok(())
    }

    /// Before a commit: we still hold our lock, nobody committed since we
    /// read the manifest, and no index file we loaded was removed (by a
    /// compaction, which may have dropped blobs we deduplicated against).
    fn check_unchanged(&self) -> Result<()> {
        self.lock.verify()?;
        let changed = |what: &str| {
            Error::invalid(format!(
                "{} changed while this command ran ({what}): nothing was committed, run the command again",
                self.location()
            ))
        };
        let newest = self
            .backend
            .list(FileKind::Manifest)?
            .iter()
            .filter_map(|f| manifest::parse_file_name(&f.name))
            .max()
            .unwrap_or(0);
        if newest != self.manifest.generation {
            return Err(changed("another process wrote a manifest"));
        }
        if !self.index_files.is_empty() {
            let present: std::collections::HashSet<String> = self
                .backend
                .list(FileKind::Index)?
                .into_iter()
                .map(|f| f.name)
                .collect();
            if self.index_files.iter().any(|n| !present.contains(n)) {
                return Err(changed("it was compacted"));
            }
        }
        Ok(())
    }

    /// Adds complete packs that no index lists (an interrupted backup's
    /// data) to the index, so a resumed backup does not send them again.
    /// Returns how many packs were adopted; unreadable ones are left alone.
    pub fn adopt_orphan_packs(&mut self) -> Result<usize> {
        let indexed: std::collections::HashSet<String> =
            self.index.iter().map(|(_, p, _)| p.to_hex()).collect();
        let mut adopted = Vec::new();
        for f in self.backend.list(FileKind::Pack)? {
            if indexed.contains(&f.name) {
                continue;
            }
            let Some(id) = crate::id::PackId::from_hex(&f.name) else {
                continue;
            };
            if let Ok(entries) =
                pack::read_header_of(self.backend.as_ref(), &self.sealer, &f.name, f.size)
            {
                adopted.push((id, entries));
            }
        }
        if adopted.is_empty() {
            return Ok(0);
        }
        let name = writer::write_index(self.backend.as_ref(), &self.sealer, &adopted)?;
        for (id, entries) in &adopted {
            self.index.add_pack(*id, entries);
        }
        self.index_files.push(name);
        Ok(adopted.len())
    }

    /// Every manifest generation present, oldest first, each read and
    /// authenticated (or why it could not be).
    pub fn manifest_generations(&self) -> Result<Vec<(u64, Result<Manifest>)>> {
        let mut gens: Vec<u64> = self
            .backend
            .list(FileKind::Manifest)?
            .iter()
            .filter_map(|f| manifest::parse_file_name(&f.name))
            .collect();
        gens.sort_unstable();
        Ok(gens
            .into_iter()
            .map(|g| (g, read_manifest(self.backend.as_ref(), &self.sealer, g)))
            .collect())
    }

    /// Shows the archive list of an older generation (read-only: a
    /// repository opened this way refuses to write a manifest).
    pub fn view_generation(&mut self, generation: u64) -> Result<()> {
        let m = read_manifest(self.backend.as_ref(), &self.sealer, generation)?;
        self.manifest.archives = m.archives;
        self.viewing_old = true;
        Ok(())
    }

    /// How many index files were loaded.
    pub fn index_file_count(&self) -> usize {
        self.index_files.len()
    }

    /// Fails if our lock was broken by another process.
    pub fn verify_lock(&self) -> Result<()> {
        self.lock.verify()
    }

    /// Loads the index again (after this process rewrote it).
    pub fn reload_index(&mut self) -> Result<()> {
        let (index, files) = load_index(self.backend.as_ref(), &self.sealer, false)?;
        self.index = index;
        self.index_files = files;
        Ok(())
    }
}

/// The newest manifest, read without a lock: generations never change once
/// written, so this is a consistent (if possibly one generation old) view,
/// for status and metrics that must not wait for a running backup.
pub fn peek_manifest(
    backend: &dyn Backend,
    passphrase: &dyn Passphrase,
    dirs: &ClientDirs,
) -> Result<(RepoConfig, Manifest)> {
    let location = backend.location().to_string();
    let config_bytes = match backend.read(FileKind::Config, CONFIG_FILE) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotARepository(location));
        }
        Err(e) => return Err(e),
    };
    let config = RepoConfig::parse(&config_bytes, &location)?;
    let opts = OpenOptions {
        lock: LockMode::Shared,
        lock_wait: Duration::ZERO,
        passphrase,
        dirs: dirs.clone(),
        load_index: false,
        repair: false,
        lock_notice: None,
    };
    let sealer = Sealer::new(load_keys(backend, &config, &opts)?)?;
    let manifest = load_manifest(backend, &sealer)?;
    Ok((config, manifest))
}

fn load_keys(backend: &dyn Backend, config: &RepoConfig, opts: &OpenOptions) -> Result<RepoKeys> {
    if !config.encryption.has_key() {
        return Ok(RepoKeys::unkeyed(config.public_seed()?));
    }
    // Find the key before asking for a passphrase: a missing key is the
    // better message.
    keys::find(backend, config, &opts.dirs)?;
    let (_, payload) = keys::unlock(backend, config, &opts.dirs, &opts.passphrase.get(false)?)?;
    Ok(RepoKeys::from_master(
        payload.mode,
        payload.cipher,
        &payload.master_bytes()?,
    ))
}

fn load_manifest(backend: &dyn Backend, sealer: &Sealer) -> Result<Manifest> {
    let newest = backend
        .list(FileKind::Manifest)?
        .iter()
        .filter_map(|f| manifest::parse_file_name(&f.name))
        .max();
    match newest {
        Some(generation) => read_manifest(backend, sealer, generation),
        None => Ok(Manifest::empty()),
    }
}

/// Reads and authenticates one manifest generation.
pub fn read_manifest(backend: &dyn Backend, sealer: &Sealer, generation: u64) -> Result<Manifest> {
    let name = manifest::file_name(generation);
    let env = backend.read(FileKind::Manifest, &name)?;
    let payload = sealer.open(
        ObjectType::Manifest,
        &manifest::aad_id(generation),
        env,
        &|| format!("manifest {name}"),
    )?;
    let m = Manifest::decode(&crate::compress::decompress(payload)?, &name)?;
    if m.generation != generation {
        return Err(Error::corrupt(format!(
            "manifest {name} holds generation {}",
            m.generation
        )));
    }
    Ok(m)
}

/// Loads every index file; with `skip_bad`, unreadable ones are left out
/// (repair rebuilds the index from the packs anyway).
fn load_index(
    backend: &dyn Backend,
    sealer: &Sealer,
    skip_bad: bool,
) -> Result<(Index, Vec<String>)> {
    let mut idx = index::IndexLoader::default();
    let mut names = Vec::new();
    for f in backend.list(FileKind::Index)? {
        let read = || -> Result<Vec<(crate::id::PackId, Vec<pack::PackEntry>)>> {
            let env = backend.read(FileKind::Index, &f.name)?;
            let payload = sealer.open(ObjectType::Index, &index::INDEX_AAD_ID, env, &|| {
                format!("index file {}", f.name)
            })?;
            index::decode(&crate::compress::decompress(payload)?, &f.name)
        };
        match read() {
            Ok(packs) => {
                for (pack, entries) in packs {
                    idx.add_pack(pack, &entries);
                }
                names.push(f.name.clone());
            }
            Err(_) if skip_bad => {}
            Err(e) => return Err(e),
        }
    }
    Ok((idx.finish(), names))
}

/// The newest manifest that can be read, with the generation number of the
/// newest file present (so the next write does not collide with a damaged
/// one); an empty manifest if none is readable.
fn load_manifest_tolerant(backend: &dyn Backend, sealer: &Sealer) -> Result<Manifest> {
    let mut gens: Vec<u64> = backend
        .list(FileKind::Manifest)?
        .iter()
        .filter_map(|f| manifest::parse_file_name(&f.name))
        .collect();
    gens.sort_unstable();
    let newest = gens.last().copied().unwrap_or(0);
    let mut m = gens
        .iter()
        .rev()
        .find_map(|g| read_manifest(backend, sealer, *g).ok())
        .unwrap_or_else(Manifest::empty);
    m.generation = newest;
    Ok(m)
}
