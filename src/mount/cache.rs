//! Decrypted chunks for the mount: bounded in bytes, least recently used
//! out first, each chunk fetched once however many readers want it, and
//! read-ahead done by a few worker threads so that decryption and
//! decompression of the next chunks overlap the reader's copying.

use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::Repository;
use crossbeam_channel::{Sender, TrySendError, bounded};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};

/// Where chunks come from: the repository, or a test's table.
pub trait ChunkSource: Send + Sync + 'static {
    fn chunk(&self, id: &BlobId) -> Result<Vec<u8>>;
}

impl ChunkSource for Repository {
    fn chunk(&self, id: &BlobId) -> Result<Vec<u8>> {
        self.read_blob(ObjectType::Data, id)
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<BlobId, (Arc<Vec<u8>>, u64)>,
    bytes: usize,
    tick: u64,
    inflight: HashSet<BlobId>,
}

struct Flight<'a> {
    cache: &'a ChunkCache,
    id: BlobId,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.cache.inner.lock() {
            inner.inflight.remove(&self.id);
        }
        self.cache.fetched.notify_all();
    }
}

pub struct ChunkCache {
    source: Arc<dyn ChunkSource>,
    inner: Mutex<Inner>,
    fetched: Condvar,
    limit: usize,
    ahead: Option<Sender<BlobId>>,
}

impl ChunkCache {
    /// `limit` bytes of chunks; `workers` read-ahead threads (0: none).
    pub fn new(source: Arc<dyn ChunkSource>, limit: usize, workers: usize) -> Arc<Self> {
        let (tx, rx) = bounded::<BlobId>(64);
        let cache = Arc::new(Self {
            source,
            inner: Mutex::new(Inner::default()),
            fetched: Condvar::new(),
            limit,
            ahead: (workers > 0).then_some(tx),
        });
        for _ in 0..workers {
            let rx = rx.clone();
            // A weak handle: the workers end when the cache is dropped.
            let weak = Arc::downgrade(&cache);
            std::thread::spawn(move || {
                while let Ok(id) = rx.recv() {
                    let Some(cache) = weak.upgrade() else { break };
                    // A failure is reported when a reader asks for the chunk.
                    let _ = cache.get(&id);
                }
            });
        }
        cache
    }

    /// Bytes held now (for tests and the memory bound).
    pub fn held(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.inner
            .lock()
            .map(|i| i.map.contains_key(id))
            .unwrap_or(false)
    }

    /// The chunk, from memory or fetched (once, whoever else waits for it).
    pub fn get(&self, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        let mut inner = self.inner.lock().map_err(|_| Error::Interrupted)?;
        loop {
            inner.tick += 1;
            let tick = inner.tick;
            if let Some((data, used)) = inner.map.get_mut(id) {
                *used = tick;
                return Ok(data.clone());
            }
            if !inner.inflight.contains(id) {
                break;
            }
            inner = self.fetched.wait(inner).map_err(|_| Error::Interrupted)?;
        }
        inner.inflight.insert(*id);
        drop(inner);
        // Whatever happens to the fetch (even a panic), the chunk leaves
        // `inflight` and the waiters wake, so none waits forever.
        let flight = Flight {
            cache: self,
            id: *id,
        };
        let got = self.source.chunk(id).map(Arc::new);
        if let (Ok(data), Ok(mut inner)) = (&got, self.inner.lock()) {
            self.insert(&mut inner, *id, data.clone());
        }
        drop(flight);
        got
    }

    fn insert(&self, inner: &mut Inner, id: BlobId, data: Arc<Vec<u8>>) {
        inner.tick += 1;
        inner.bytes += data.len();
        let tick = inner.tick;
        inner.map.insert(id, (data, tick));
        // Evict the least recently used, but never the chunk just read.
        while inner.bytes > self.limit && inner.map.len() > 1 {
            let Some(old) = inner
                .map
                .iter()
                .filter(|(k, _)| **k != id)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((d, _)) = inner.map.remove(&old) {
                inner.bytes -= d.len();
            }
        }
    }

    /// Asks the workers to fetch these chunks; never blocks (read-ahead
    /// that cannot be queued is dropped).
    pub fn read_ahead(&self, ids: impl IntoIterator<Item = BlobId>) {
        let Some(tx) = &self.ahead else { return };
        for id in ids {
            if self.contains(&id) {
                continue;
            }
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(id) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        reads: AtomicUsize,
    }

    impl ChunkSource for Counting {
        fn chunk(&self, id: &BlobId) -> Result<Vec<u8>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if id.0[0] == 0xff {
                return Err(Error::corrupt("damaged"));
            }
            Ok(vec![id.0[0]; 100])
        }
    }

    fn id(n: u8) -> BlobId {
        BlobId([n; 32])
    }

    #[test]
    fn memory_stays_under_the_limit_and_recent_chunks_stay() {
        let src = Arc::new(Counting {
            reads: AtomicUsize::new(0),
        });
        let cache = ChunkCache::new(src.clone(), 350, 0);
        for n in 0..3 {
            assert_eq!(*cache.get(&id(n)).unwrap(), vec![n; 100]);
        }
        cache.get(&id(0)).unwrap(); // 0 is now the most recent
        cache.get(&id(3)).unwrap(); // evicts 1, the least recent
        assert!(cache.held() <= 350);
        assert!(cache.contains(&id(0)) && !cache.contains(&id(1)));
        assert_eq!(src.reads.load(Ordering::SeqCst), 4);
        cache.get(&id(1)).unwrap();
        assert_eq!(src.reads.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn a_failed_read_is_reported_and_not_kept() {
        let src = Arc::new(Counting {
            reads: AtomicUsize::new(0),
        });
        let cache = ChunkCache::new(src.clone(), 1000, 0);
        assert!(cache.get(&id(0xff)).is_err());
        assert!(cache.get(&id(0xff)).is_err());
        assert_eq!(src.reads.load(Ordering::SeqCst), 2);
        assert_eq!(cache.held(), 0);
    }

    #[test]
    fn many_readers_of_one_chunk_fetch_it_once() {
        let src = Arc::new(Counting {
            reads: AtomicUsize::new(0),
        });
        let cache = ChunkCache::new(src.clone(), 1000, 2);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| assert_eq!(cache.get(&id(7)).unwrap().len(), 100));
            }
        });
        cache.read_ahead([id(7)]);
        assert_eq!(src.reads.load(Ordering::SeqCst), 1);
    }
}
