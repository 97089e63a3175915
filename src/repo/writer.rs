//! The write half of the pipeline: compress + seal on worker threads, pack
//! and write on one packer thread, then index files. Packs are durable
//! before the index file naming them is written (docs/FORMAT.md, "Ordering").

use super::index;
use super::pack::{PackBuilder, PackEntry};
use crate::backend::{Backend, FileKind};
use crate::compress::Compression;
use crate::crypto::{ObjectType, Sealer};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::sync::Arc;
use std::thread::JoinHandle;

/// An index file is written after this many packs, so an interrupted
/// backup leaves reusable data behind.
pub const INDEX_EVERY_PACKS: usize = 64;

struct Job {
    ty: ObjectType,
    id: BlobId,
    data: Vec<u8>,
    compression: Compression,
}

struct Sealed {
    ty: ObjectType,
    id: BlobId,
    raw_length: u32,
    bytes: Vec<u8>,
}

/// What a writer added to the repository.
#[derive(Default)]
pub struct WriteSummary {
    pub packs: Vec<(PackId, Vec<PackEntry>)>,
    pub blobs: u64,
    pub stored_bytes: u64,
    pub raw_bytes: u64,
}

pub struct BlobWriter {
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<Result<()>>>,
    packer: Option<JoinHandle<Result<WriteSummary>>>,
    /// The packer's error, kept for the caller whose `add` found the
    /// pipeline stopped (the packer thread's result then holds a copy).
    failure: Arc<std::sync::Mutex<Option<Error>>>,
}

impl BlobWriter {
    pub fn new(
        backend: Arc<dyn Backend>,
        sealer: Arc<Sealer>,
        pack_size: u32,
        threads: usize,
    ) -> Self {
        let threads = threads.max(1);
        // Bounded queues keep memory at a few chunks per thread.
        let (job_tx, job_rx) = bounded::<Job>(threads * 2);
        let (sealed_tx, sealed_rx) = bounded::<Sealed>(threads * 2);
        let workers = (0..threads)
            .map(|_| {
                let (rx, tx, s) = (job_rx.clone(), sealed_tx.clone(), sealer.clone());
                std::thread::spawn(move || worker(rx, tx, &s))
            })
            .collect();
        drop(sealed_tx);
        let failure = Arc::new(std::sync::Mutex::new(None));
        let fail = failure.clone();
        let packer = std::thread::spawn(move || {
            // The error is recorded while `sealed_rx` is still open, so a
            // caller whose `add` fails (after the workers stop, which is
            // after the receiver closes) always finds it.
            let r = packer(&sealed_rx, backend.as_ref(), &sealer, pack_size);
            if let Err(e) = &r
                && let Ok(mut f) = fail.lock()
            {
                *f = Some(clone_error(e));
            }
            drop(sealed_rx);
            r
        });
        Self {
            jobs: Some(job_tx),
            workers,
            packer: Some(packer),
            failure,
        }
    }

    /// Queues a blob; blocks while the pipeline is full.
    pub fn add(
        &self,
        ty: ObjectType,
        id: BlobId,
        data: Vec<u8>,
        compression: Compression,
    ) -> Result<()> {
        let tx = self.jobs.as_ref().ok_or(Error::Interrupted)?;
        tx.send(Job {
            ty,
            id,
            data,
            compression,
        })
        .map_err(|_| self.failure())
    }

    /// Why the pipeline stopped (the packer's error, e.g. a full disk or a
    /// lost connection).
    fn failure(&self) -> Error {
        self.failure
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .unwrap_or_else(|| Error::invalid("the write pipeline stopped"))
    }

    /// Drains the pipeline, writes the last pack and index file.
    pub fn finish(mut self) -> Result<WriteSummary> {
        self.jobs.take();
        let mut first_err = None;
        for w in self.workers.drain(..) {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::invalid("a compression worker panicked"));
                }
            }
        }
        let packed = match self.packer.take().map(|p| p.join()) {
            Some(Ok(r)) => r,
            _ => Err(Error::invalid("the packer thread panicked")),
        };
        // A packer error (disk full, say) explains a worker's failed send.
        match (packed, first_err) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(e)) => Err(e),
            (Ok(s), None) => Ok(s),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(p) = self.packer.take() {
            let _ = p.join();
        }
    }
}

/// Errors are not Clone (they hold io::Error); this keeps kind and message.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::DiskFull(c) => Error::DiskFull(c.clone()),
        Error::Remote(m) => Error::Remote(m.clone()),
        Error::Denied(m) => Error::Denied(m.clone()),
        Error::Io { context, source } => Error::Io {
            context: context.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::invalid(other.to_string()),
    }
}

fn worker(rx: Receiver<Job>, tx: Sender<Sealed>, sealer: &Sealer) -> Result<()> {
    for job in rx {
        let payload = job.compression.compress(&job.data);
        let bytes = sealer.seal(job.ty, &job.id.0, &payload)?;
        let s = Sealed {
            ty: job.ty,
            id: job.id,
            raw_length: job.data.len() as u32,
            bytes,
        };
        if tx.send(s).is_err() {
            break; // the packer failed; it reports why
        }
    }
    Ok(())
}

/// Packs uploaded at once: while one pack travels (or is fsynced), the
/// next ones are built, so a slow link or disk does not stall sealing.
pub const UPLOADS_IN_FLIGHT: usize = 3;

fn packer(
    rx: &Receiver<Sealed>,
    backend: &dyn Backend,
    sealer: &Sealer,
    pack_size: u32,
) -> Result<WriteSummary> {
    std::thread::scope(|scope| {
        let (up_tx, up_rx) = bounded::<(PackId, Vec<u8>)>(1);
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<(PackId, Result<()>)>();
        for _ in 0..UPLOADS_IN_FLIGHT {
            let (up_rx, done_tx) = (up_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                for (id, bytes) in up_rx {
                    let r = backend.write_owned(FileKind::Pack, &id.to_hex(), bytes);
                    if done_tx.send((id, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((up_rx, done_tx));
        let mut uploads = Uploads {
            tx: Some(up_tx),
            done: done_rx,
            landed: Default::default(),
        };
        let result = pack_all(rx, &mut uploads, backend, sealer, pack_size);
        uploads.tx.take(); // uploaders end once their queue is empty
        result
    })
}

/// Packs handed to the uploaders, and which of them have landed.
struct Uploads {
    tx: Option<Sender<(PackId, Vec<u8>)>>,
    done: Receiver<(PackId, Result<()>)>,
    landed: std::collections::HashSet<PackId>,
}

impl Uploads {
    fn send(&mut self, id: PackId, bytes: Vec<u8>) -> Result<()> {
        // Report a failed upload (full disk, lost connection) as soon as it
        // is known, not only at the next index file.
        while let Ok((done, r)) = self.done.try_recv() {
            r?;
            self.landed.insert(done);
        }
        let tx = self.tx.as_ref().ok_or(Error::Interrupted)?;
        tx.send((id, bytes))
            .map_err(|_| Error::invalid("pack uploaders stopped"))
    }

    /// Waits until every pack in `ids` is durable (rule 1 of the ordering:
    /// packs before the index file that lists them).
    fn wait_for(&mut self, ids: impl Iterator<Item = PackId>) -> Result<()> {
        for id in ids {
            while !self.landed.contains(&id) {
                let (done, r) = self
                    .done
                    .recv()
                    .map_err(|_| Error::invalid("pack uploaders stopped"))?;
                r?;
                self.landed.insert(done);
            }
        }
        Ok(())
    }
}

fn pack_all(
    rx: &Receiver<Sealed>,
    uploads: &mut Uploads,
    backend: &dyn Backend,
    sealer: &Sealer,
    pack_size: u32,
) -> Result<WriteSummary> {
    let mut summary = WriteSummary::default();
    let mut pack = PackBuilder::default();
    let mut unindexed = 0usize;
    let write_batch = |summary: &WriteSummary, n: usize, uploads: &mut Uploads| -> Result<()> {
        let batch = &summary.packs[summary.packs.len() - n..];
        uploads.wait_for(batch.iter().map(|(id, _)| *id))?;
        write_index(backend, sealer, batch).map(|_| ())
    };
    for s in rx {
        summary.blobs += 1;
        summary.stored_bytes += s.bytes.len() as u64;
        summary.raw_bytes += s.raw_length as u64;
        pack.add(s.ty, s.id, s.raw_length, &s.bytes);
        if pack.len() >= pack_size as usize {
            let (id, bytes, entries) = std::mem::take(&mut pack).finish(sealer)?;
            uploads.send(id, bytes)?;
            summary.packs.push((id, entries));
            unindexed += 1;
            if unindexed >= INDEX_EVERY_PACKS {
                write_batch(&summary, unindexed, uploads)?;
                unindexed = 0;
            }
        }
    }
    if !pack.is_empty() {
        let (id, bytes, entries) = pack.finish(sealer)?;
        uploads.send(id, bytes)?;
        summary.packs.push((id, entries));
        unindexed += 1;
    }
    if unindexed > 0 {
        write_batch(&summary, unindexed, uploads)?;
    }
    Ok(summary)
}

/// Copies already-sealed blobs into new packs (compact and repair move
/// blobs without decrypting them: envelopes are bound to type and id only).
pub(crate) struct PackCopier<'a> {
    backend: &'a dyn Backend,
    sealer: &'a Sealer,
    pack_size: usize,
    builder: PackBuilder,
    summary: WriteSummary,
}

impl<'a> PackCopier<'a> {
    pub fn new(backend: &'a dyn Backend, sealer: &'a Sealer, pack_size: u32) -> Self {
        Self {
            backend,
            sealer,
            pack_size: pack_size as usize,
            builder: PackBuilder::default(),
            summary: WriteSummary::default(),
        }
    }

    pub fn add(&mut self, e: &PackEntry, envelope: &[u8]) -> Result<()> {
        self.builder.add(e.ty, e.id, e.raw_length, envelope);
        if self.builder.len() >= self.pack_size {
            flush_pack(
                std::mem::take(&mut self.builder),
                self.backend,
                self.sealer,
                &mut self.summary,
            )?;
        }
        Ok(())
    }

    /// Writes the last pack; returns the packs written.
    pub fn finish(mut self) -> Result<WriteSummary> {
        if !self.builder.is_empty() {
            flush_pack(self.builder, self.backend, self.sealer, &mut self.summary)?;
        }
        Ok(self.summary)
    }
}

pub(crate) fn flush_pack(
    pack: PackBuilder,
    backend: &dyn Backend,
    sealer: &Sealer,
    summary: &mut WriteSummary,
) -> Result<()> {
    let (id, bytes, entries) = pack.finish(sealer)?;
    backend.write(FileKind::Pack, &id.to_hex(), &bytes)?;
    summary.packs.push((id, entries));
    Ok(())
}

/// Seals and writes one index file; its name is the BLAKE3 of its bytes.
pub fn write_index(
    backend: &dyn Backend,
    sealer: &Sealer,
    packs: &[(PackId, Vec<PackEntry>)],
) -> Result<String> {
    let payload = index::encode(packs);
    let sealed = sealer.seal(ObjectType::Index, &index::INDEX_AAD_ID, &payload)?;
    let name = blake3::hash(&sealed).to_hex().to_string();
    backend.write(FileKind::Index, &name, &sealed)?;
    Ok(name)
}
