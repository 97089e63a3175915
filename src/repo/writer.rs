//! The write half of the pipeline: compress + seal into packs on worker
//! threads, write packs on uploader threads, then index files. Packs are durable
//! before the index file naming them is written (docs/FORMAT.md, "Ordering").

use super::index;
use super::pack::{PackBuilder, PackBytes, PackEntry};
use crate::backend::{Backend, FileKind};
use crate::compress::{Compression, Compressor};
use crate::crypto::{ObjectType, Sealer};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// An index file is written after this many packs, so an interrupted
/// backup leaves reusable data behind.
pub const INDEX_EVERY_PACKS: usize = 64;

/// Blobs go to the workers in batches of about this many bytes: a small
/// file's chunk then does not cost a wake-up and two context switches of
/// its own (42k small files made ~20k switches a second on two cores).
/// A chunk this size or larger travels alone.
pub const BATCH_BYTES: usize = 1 << 20;

/// Blobs for one worker, their bytes one after another in `data`.
#[derive(Default)]
struct Job {
    data: Vec<u8>,
    blobs: Vec<JobBlob>,
}

struct JobBlob {
    ty: ObjectType,
    id: BlobId,
    len: u32,
    compression: Compression,
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

/// Packs written at once to a local disk: while one is written and
/// fsynced, the workers build the next ones. One suffices: with `O_DIRECT`
/// a 16 MiB pack takes ~20 ms here, and a slow disk is the bottleneck
/// whatever the count. A second cost 17 MiB of peak memory (each pack
/// buffer holds up to a pack plus its largest blob) for no measurable time.
pub const UPLOADS_IN_FLIGHT: usize = 1;
/// Over a network (SSH, S3) more packs travel at once: each waits out the
/// link's round trips and window, not the CPU.
pub const REMOTE_UPLOADS_IN_FLIGHT: usize = 4;

/// An upload's outcome, with the pack's buffer for the next pack.
type Done = (PackId, Result<()>, Vec<u8>);
/// A pack for an uploader.
type Upload = (PackId, PackBytes);

/// What the workers share: finished packs go to the uploaders, and every
/// INDEX_EVERY_PACKS of them into an index file once they have landed.
struct Packing {
    summary: WriteSummary,
    unindexed: usize,
    tx: Option<Sender<Upload>>,
    done: Receiver<Done>,
    landed: std::collections::HashSet<PackId>,
    /// Buffers of landed packs, reused for the next ones.
    buffers: Vec<Vec<u8>>,
}

/// What a worker needs besides its queue.
#[derive(Clone)]
struct Context {
    backend: Arc<dyn Backend>,
    sealer: Arc<Sealer>,
    packing: Arc<Mutex<Packing>>,
    failure: Arc<Mutex<Option<Error>>>,
    inputs: Pool,
    /// Bytes reserved per pack: its size plus the largest blob.
    pack_room: usize,
    pack_size: usize,
}

pub struct BlobWriter {
    jobs: Option<Sender<Job>>,
    /// Blobs added but not yet handed to a worker.
    batch: Mutex<Job>,
    ctx: Context,
    /// The largest blob expected (the chunker's maximum): the size of
    /// the chunk buffers.
    max_blob: usize,
    workers: Vec<JoinHandle<Result<PackBuilder>>>,
    uploaders: Vec<JoinHandle<()>>,
}

impl BlobWriter {
    /// Each worker compresses and seals its blobs straight into a pack of
    /// its own (no copy, no packer thread, no queue of sealed blobs: the
    /// order of blobs in packs does not matter); a full pack goes to one
    /// of UPLOADS_IN_FLIGHT uploaders.
    pub fn new(
        backend: Arc<dyn Backend>,
        sealer: Arc<Sealer>,
        pack_size: u32,
        max_blob: usize,
        threads: usize,
    ) -> Self {
        let threads = threads.max(1);
        // One queued batch, ready when a worker is free, while the next one
        // fills: measured 7 % faster than a rendezvous, for one more buffer
        // of up to `max_blob`; more only hold memory.
        let (job_tx, job_rx) = bounded::<Job>(1);
        // A rendezvous: a pack is handed over only to an idle uploader.
        let (up_tx, up_rx) = bounded::<Upload>(0);
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
        let in_flight = if backend.high_latency() {
            REMOTE_UPLOADS_IN_FLIGHT
        } else {
            UPLOADS_IN_FLIGHT
        };
        let uploaders = (0..in_flight)
            .map(|_| {
                let (up_rx, done_tx, backend) = (up_rx.clone(), done_tx.clone(), backend.clone());
                std::thread::spawn(move || {
                    for (id, bytes) in up_rx {
                        let r = backend.write(FileKind::Pack, &id.to_hex(), &bytes);
                        if done_tx.send((id, r, bytes.into_buffer())).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        let ctx = Context {
            backend,
            sealer,
            packing: Arc::new(Mutex::new(Packing {
                summary: WriteSummary::default(),
                unindexed: 0,
                tx: Some(up_tx),
                done: done_rx,
                landed: Default::default(),
                buffers: Vec::new(),
            })),
            failure: Arc::new(Mutex::new(None)),
            // A buffer per worker, the queued one and the one being filled.
            inputs: Pool::new(threads + 2),
            pack_room: pack_size as usize + max_blob + (1 << 16),
            pack_size: pack_size as usize,
        };
        let workers = (0..threads)
            .map(|_| {
                let (rx, ctx) = (job_rx.clone(), ctx.clone());
                std::thread::spawn(move || {
                    let r = worker(&rx, &ctx);
                    if let Err(e) = &r {
                        ctx.fail(e);
                    }
                    r
                })
            })
            .collect();
        Self {
            jobs: Some(job_tx),
            batch: Mutex::new(Job::default()),
            ctx,
            max_blob,
            workers,
            uploaders,
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
        if let Some(e) = self.ctx.failed() {
            return Err(e);
        }
        let mut batch = self
            .batch
            .lock()
            .map_err(|_| Error::invalid("a blob writer panicked"))?;
        if !batch.blobs.is_empty() && batch.data.len() + blob.len() > batch.data.capacity() {
            self.send(std::mem::take(&mut *batch))?;
        }
        if batch.blobs.is_empty() {
            batch.data = self.ctx.inputs.get(blob.len().max(self.max_blob));
        }
        batch.data.extend_from_slice(blob);
        batch.blobs.push(JobBlob {
            ty,
            id,
            len: blob.len() as u32,
            compression,
        });
        if batch.data.len() >= BATCH_BYTES {
            self.send(std::mem::take(&mut *batch))?;
        }
        Ok(())
    }

    fn send(&self, job: Job) -> Result<()> {
        let tx = self.jobs.as_ref().ok_or(Error::Interrupted)?;
        tx.send(job).map_err(|_| {
            self.ctx
                .failed()
                .unwrap_or_else(|| Error::invalid("the write pipeline stopped"))
        })
    }

    /// Drains the pipeline, writes the last packs and index file.
    pub fn finish(mut self) -> Result<WriteSummary> {
        let result = self.drain().and_then(|()| self.ctx.index_rest());
        self.stop_uploaders();
        result
    }

    /// Stops the workers and ships what their packs hold, merged: the same
    /// blobs then make the same number of packs whichever worker sealed
    /// them (the crash campaigns count a run's steps).
    fn drain(&mut self) -> Result<()> {
        let last = match self.batch.get_mut() {
            Ok(b) => std::mem::take(b),
            Err(_) => Job::default(),
        };
        // Not sent if a worker failed: its error is reported below.
        let sent = if last.blobs.is_empty() {
            Ok(())
        } else {
            self.send(last)
        };
        self.jobs.take();
        let mut first_err = None;
        let mut partial = Vec::new();
        for w in self.workers.drain(..) {
            match w.join() {
                Ok(Ok(p)) => partial.push(p),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::invalid("a compression worker panicked"));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => sent.and_then(|()| self.ctx.ship_merged(partial)),
        }
    }

    fn stop_uploaders(&mut self) {
        if let Ok(mut p) = self.ctx.packing.lock() {
            p.tx.take();
        }
        for u in self.uploaders.drain(..) {
            let _ = u.join();
        }
    }
}

impl Drop for BlobWriter {
    /// Without `finish` (an error or an interruption upstream): the blobs
    /// queued still go into packs, and the packs into an index file, so
    /// the next run reuses them.
    fn drop(&mut self) {
        if !self.workers.is_empty() && self.drain().is_ok() {
            let _ = self.ctx.index_rest();
        }
        self.stop_uploaders();
    }
}

impl Context {
    fn fail(&self, e: &Error) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert_with(|| clone_error(e));
        }
    }

    /// Why the pipeline stopped (e.g. a full disk or a lost connection).
    fn failed(&self) -> Option<Error> {
        let f = self.failure.lock().ok()?;
        f.as_ref().map(clone_error)
    }

    fn new_pack(&self) -> Result<PackBuilder> {
        let mut p = self.lock()?;
        while let Ok(done) = p.done.try_recv() {
            p.landed(done)?;
        }
        let buf = p.buffers.pop().unwrap_or_default();
        Ok(PackBuilder::with_buffer(buf, self.pack_room))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Packing>> {
        self.packing
            .lock()
            .map_err(|_| Error::invalid("a pack writer panicked"))
    }

    /// Finishes a pack, hands it to an uploader and, every
    /// INDEX_EVERY_PACKS packs, writes an index file for those that landed.
    fn ship(&self, pack: PackBuilder) -> Result<()> {
        let (id, bytes, entries) = pack.finish(&self.sealer)?;
        let mut p = self.lock()?;
        p.summary.blobs += entries.len() as u64;
        p.summary.stored_bytes += entries.iter().map(|e| e.length as u64).sum::<u64>();
        p.summary.raw_bytes += entries.iter().map(|e| e.raw_length as u64).sum::<u64>();
        p.send(id, bytes)?;
        p.summary.packs.push((id, entries));
        p.unindexed += 1;
        if p.unindexed >= INDEX_EVERY_PACKS {
            p.write_batch(self.backend.as_ref(), &self.sealer)?;
        }
        Ok(())
    }

    /// Ships the workers' last packs, merged into as few as the pack size
    /// allows (envelopes do not depend on where they lie in a pack).
    fn ship_merged(&self, packs: Vec<PackBuilder>) -> Result<()> {
        let mut into: Option<PackBuilder> = None;
        for p in packs.into_iter().filter(|p| !p.is_empty()) {
            let Some(a) = into.as_mut() else {
                into = Some(p);
                continue;
            };
            for e in p.entries() {
                a.add(e.ty, e.id, e.raw_length, p.envelope(e));
                if a.len() >= self.pack_size {
                    self.ship(std::mem::take(a))?;
                    *a = self.new_pack()?;
                }
            }
        }
        match into {
            Some(a) if !a.is_empty() => self.ship(a),
            _ => Ok(()),
        }
    }

    /// The index file for the packs not yet in one; returns the summary.
    fn index_rest(&self) -> Result<WriteSummary> {
        let mut p = self.lock()?;
        if p.unindexed > 0 {
            p.write_batch(self.backend.as_ref(), &self.sealer)?;
        }
        Ok(std::mem::take(&mut p.summary))
    }
}

impl Packing {
    fn landed(&mut self, (id, r, bytes): Done) -> Result<()> {
        r?;
        self.landed.insert(id);
        if self.buffers.len() < UPLOADS_IN_FLIGHT {
            self.buffers.push(bytes);
        }
        Ok(())
    }

    fn send(&mut self, id: PackId, bytes: PackBytes) -> Result<()> {
        // Report a failed upload (full disk, lost connection) as soon as it
        // is known, not only at the next index file.
        while let Ok(done) = self.done.try_recv() {
            self.landed(done)?;
        }
        let tx = self.tx.as_ref().ok_or(Error::Interrupted)?;
        tx.send((id, bytes))
            .map_err(|_| Error::invalid("pack uploaders stopped"))
    }

    /// Waits until the unindexed packs are durable (rule 1 of the
    /// ordering: packs before the index file that lists them), then
    /// writes their index file.
    fn write_batch(&mut self, backend: &dyn Backend, sealer: &Sealer) -> Result<()> {
        let n = self.unindexed;
        let from = self.summary.packs.len() - n;
        for i in from..self.summary.packs.len() {
            let id = self.summary.packs[i].0;
            while !self.landed.contains(&id) {
                let done = self
                    .done
                    .recv()
                    .map_err(|_| Error::invalid("pack uploaders stopped"))?;
                self.landed(done)?;
            }
        }
        write_index(backend, sealer, &self.summary.packs[from..])?;
        self.unindexed = 0;
        Ok(())
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

/// Compresses and seals each blob straight into this worker's pack: the
/// payload is compressed after room for the envelope header and encrypted
/// where it lies. Stops early when another worker failed.
fn worker(rx: &Receiver<Job>, ctx: &Context) -> Result<PackBuilder> {
    let mut compressor = Compressor::default();
    let head = ctx.sealer.envelope_header_len();
    let mut pack = ctx.new_pack()?;
    for job in rx {
        let mut at = 0;
        for blob in &job.blobs {
            if ctx.failed().is_some() {
                return Ok(PackBuilder::default()); // the failing worker reports why
            }
            let data = &job.data[at..at + blob.len as usize];
            at += blob.len as usize;
            pack.add_with(blob.ty, blob.id, blob.len, |buf| {
                let start = buf.len();
                buf.resize(start + head, 0);
                blob.compression.compress_into(data, buf, &mut compressor);
                ctx.sealer.seal_in_place(blob.ty, &blob.id.0, buf, start)
            })?;
            if pack.len() >= ctx.pack_size {
                // Shipped first: the next pack then reuses the buffer of one
                // that landed meanwhile, instead of a fifth pack in memory.
                ctx.ship(std::mem::take(&mut pack))?;
                pack = ctx.new_pack()?;
            }
        }
        ctx.inputs.put(job.data);
    }
    Ok(pack) // shipped by `BlobWriter::drain`, merged with the others
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
