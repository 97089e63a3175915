//! The write half of the pipeline: compress + seal on worker threads, pack
//! and write on one packer thread, then index files. Packs are durable
//! before the index file naming them is written (docs/FORMAT.md, "Ordering").

use super::index;
use super::pack::{PackBuilder, PackEntry};
use crate::backend::{Backend, FileKind};
use crate::compress::{Compression, Compressor};
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

/// A free list of buffers handed back by the stage that consumed them, so
/// the hot path reuses warm memory instead of allocating (and faulting in)
/// a fresh buffer per chunk. Holding both ends, it never disconnects; a
/// full list drops what it is given.
#[derive(Clone)]
struct Pool {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl Pool {
    fn new(n: usize) -> Self {
        let (tx, rx) = bounded(n);
        Self { tx, rx }
    }

    /// An empty buffer with room for `capacity` bytes. Buffers are made
    /// with room for the largest blob at once, never grown: growing
    /// leaves freed blocks behind in the allocator, and memory crept up.
    fn get(&self, capacity: usize) -> Vec<u8> {
        match self.rx.try_recv() {
            Ok(mut v) if v.capacity() >= capacity => {
                v.clear();
                v
            }
            _ => Vec::with_capacity(capacity),
        }
    }

    fn put(&self, v: Vec<u8>) {
        let _ = self.tx.try_send(v);
    }
}

pub struct BlobWriter {
    jobs: Option<Sender<Job>>,
    /// Chunk buffers, back from the workers.
    inputs: Pool,
    /// The largest blob expected (the chunker's maximum): the size of
    /// the buffers.
    max_blob: usize,
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
        max_blob: usize,
        threads: usize,
    ) -> Self {
        let threads = threads.max(1);
        // Bounded queues keep memory at a few chunks per thread: one queued
        // per worker is enough to keep it busy.
        let (job_tx, job_rx) = bounded::<Job>(threads);
        let (sealed_tx, sealed_rx) = bounded::<Sealed>(threads);
        let inputs = Pool::new(threads + 1);
        let outputs = Pool::new(threads + 1);
        let workers = (0..threads)
            .map(|_| {
                let (rx, tx, s) = (job_rx.clone(), sealed_tx.clone(), sealer.clone());
                let pools = (inputs.clone(), outputs.clone(), max_blob);
                std::thread::spawn(move || worker(rx, tx, &s, pools))
            })
            .collect();
        drop(sealed_tx);
        let failure = Arc::new(std::sync::Mutex::new(None));
        let fail = failure.clone();
        let packer = std::thread::spawn(move || {
            // The error is recorded while `sealed_rx` is still open, so a
            // caller whose `add` fails (after the workers stop, which is
            // after the receiver closes) always finds it.
            let r = packer(&sealed_rx, backend.as_ref(), &sealer, pack_size, &outputs);
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
            inputs,
            max_blob,
            workers,
            packer: Some(packer),
            failure,
        }
    }

    /// Queues a copy of a blob; blocks while the pipeline is full.
    pub fn add(
        &self,
        ty: ObjectType,
        id: BlobId,
        blob: &[u8],
        compression: Compression,
    ) -> Result<()> {
        let tx = self.jobs.as_ref().ok_or(Error::Interrupted)?;
        let mut data = self.inputs.get(blob.len().max(self.max_blob));
        data.extend_from_slice(blob);
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

/// Compresses and seals into one buffer: the payload is compressed right
/// after room for the envelope header and encrypted where it lies.
fn worker(
    rx: Receiver<Job>,
    tx: Sender<Sealed>,
    sealer: &Sealer,
    (inputs, outputs, max_blob): (Pool, Pool, usize),
) -> Result<()> {
    let mut ctx = Compressor::default();
    let head = sealer.envelope_header_len();
    for job in rx {
        // Room for the envelope around the worst case of any compressor.
        let room = |n: usize| head + 1 + n + n / 8 + 1024 + crate::crypto::ENVELOPE_TRAILER_MAX;
        let mut bytes = outputs.get(room(job.data.len().max(max_blob)));
        bytes.resize(head, 0);
        job.compression
            .compress_into(&job.data, &mut bytes, &mut ctx);
        sealer.seal_in_place(job.ty, &job.id.0, &mut bytes)?;
        let s = Sealed {
            ty: job.ty,
            id: job.id,
            raw_length: job.data.len() as u32,
            bytes,
        };
        inputs.put(job.data);
        if tx.send(s).is_err() {
            break; // the packer failed; it reports why
        }
    }
    Ok(())
}

/// Packs uploaded at once: while one pack travels (or is fsynced), the
/// next ones are built, so a slow link or disk does not stall sealing.
pub const UPLOADS_IN_FLIGHT: usize = 2;

fn packer(
    rx: &Receiver<Sealed>,
    backend: &dyn Backend,
    sealer: &Sealer,
    pack_size: u32,
    sealed: &Pool,
) -> Result<WriteSummary> {
    std::thread::scope(|scope| {
        // A rendezvous: a pack is handed over only to an idle uploader, so
        // at most UPLOADS_IN_FLIGHT finished packs are held in memory.
        let (up_tx, up_rx) = bounded::<(PackId, Vec<u8>)>(0);
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
        for _ in 0..UPLOADS_IN_FLIGHT {
            let (up_rx, done_tx) = (up_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                for (id, bytes) in up_rx {
                    let r = backend.write(FileKind::Pack, &id.to_hex(), &bytes);
                    if done_tx.send((id, r, bytes)).is_err() {
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
            buffers: Vec::new(),
        };
        let result = pack_all(rx, &mut uploads, backend, sealer, pack_size, sealed);
        uploads.tx.take(); // uploaders end once their queue is empty
        result
    })
}

/// An upload's outcome, with the pack's buffer for the next pack.
type Done = (PackId, Result<()>, Vec<u8>);

/// Packs handed to the uploaders, and which of them have landed.
struct Uploads {
    tx: Option<Sender<(PackId, Vec<u8>)>>,
    done: Receiver<Done>,
    landed: std::collections::HashSet<PackId>,
    /// Buffers of landed packs, reused for the next ones.
    buffers: Vec<Vec<u8>>,
}

impl Uploads {
    fn landed(&mut self, (id, r, bytes): Done) -> Result<()> {
        r?;
        self.landed.insert(id);
        if self.buffers.len() <= UPLOADS_IN_FLIGHT {
            self.buffers.push(bytes);
        }
        Ok(())
    }

    /// A buffer for the next pack: a landed pack's, or a new one.
    fn buffer(&mut self) -> Vec<u8> {
        let mut v = self.buffers.pop().unwrap_or_default();
        v.clear();
        v
    }

    fn send(&mut self, id: PackId, bytes: Vec<u8>) -> Result<()> {
        // Report a failed upload (full disk, lost connection) as soon as it
        // is known, not only at the next index file.
        while let Ok(done) = self.done.try_recv() {
            self.landed(done)?;
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
                let done = self
                    .done
                    .recv()
                    .map_err(|_| Error::invalid("pack uploaders stopped"))?;
                self.landed(done)?;
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
    sealed: &Pool,
) -> Result<WriteSummary> {
    let mut summary = WriteSummary::default();
    let mut pack = PackBuilder::with_buffer(uploads.buffer(), pack_size);
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
        sealed.put(s.bytes);
        if pack.len() >= pack_size as usize {
            let next = PackBuilder::with_buffer(uploads.buffer(), pack_size);
            let (id, bytes, entries) = std::mem::replace(&mut pack, next).finish(sealer)?;
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
