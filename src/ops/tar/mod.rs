//! Tar streams in and out of archives: `import-tar`, `export-tar`, and the
//! tar half of `import-borg`.

pub mod compress;
pub mod export;
pub mod format;
pub mod import;

use crate::archive::Archive;
use crate::archive::create::Observer;
use crate::error::{Error, Result};
use crate::repo::Repository;
use compress::FinishWrite;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Buffers handed to the compressing thread: 1 MiB each, at most 8 queued.
const PIPE_BUFFER: usize = 1 << 20;
const PIPE_DEPTH: usize = 8;

/// A `Write` that hands full buffers to another thread.
struct Pipe {
    tx: Option<Sender<Vec<u8>>>,
    buf: Vec<u8>,
}

impl Pipe {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_BUFFER));
        match &self.tx {
            Some(tx) => tx
                .send(full)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the output stopped")),
            None => Ok(()),
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIPE_BUFFER - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= PIPE_BUFFER {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Writes what arrives; finishes the compressed stream only if the export
/// did not fail (a failed export must not look like a complete file).
fn drain_into(
    rx: Receiver<Vec<u8>>,
    mut sink: Box<dyn FinishWrite>,
    failed: &AtomicBool,
) -> io::Result<()> {
    for buf in rx {
        sink.write_all(&buf)?;
    }
    if failed.load(Ordering::SeqCst) {
        return sink.flush();
    }
    sink.finish_stream()
}

/// Exports `archive` into `sink`: reading and decrypting on this thread,
/// compressing and writing on another, with a bounded queue between them.
pub fn export_to(
    repo: &Repository,
    archive: &Archive,
    opts: &export::ExportOptions,
    sink: Box<dyn FinishWrite>,
    obs: &mut dyn Observer,
) -> Result<export::ExportResult> {
    let (tx, rx) = bounded::<Vec<u8>>(PIPE_DEPTH);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let failed = &failed;
        let writer = s.spawn(move || drain_into(rx, sink, failed));
        let mut pipe = Pipe {
            tx: Some(tx),
            buf: Vec::with_capacity(PIPE_BUFFER),
        };
        let result = export::export_tar(repo, archive, opts, &mut pipe, obs).and_then(|r| {
            pipe.flush()
                .map_err(|e| Error::io("writing the tar stream", e))?;
            Ok(r)
        });
        failed.store(result.is_err(), Ordering::SeqCst);
        drop(pipe); // closes the queue: the writer finishes the stream
        let written = writer
            .join()
            .map_err(|_| Error::invalid("the tar writer thread panicked"))?;
        // The writer's error (a full disk, a closed pipe) explains ours.
        written.map_err(|e| Error::io("writing the tar stream", e))?;
        result
    })
}
