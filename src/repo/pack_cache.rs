//! Whole packs kept in memory for readers of a high-latency store: blobs are
//! read in pack order (extraction follows the items stream, which follows
//! the order the data was written), so one fetch serves many blobs instead
//! of one round trip per blob.

use crate::backend::{Backend, FileKind};
use crate::error::{Error, Result};
use crate::id::PackId;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

/// Packs kept (16 MiB each by default).
pub const CACHED_PACKS: usize = 4;

#[derive(Default)]
pub struct PackCache {
    packs: Mutex<VecDeque<(PackId, Arc<Vec<u8>>)>>,
    /// Packs being fetched: a worker wanting one of them waits for it
    /// instead of fetching it again; different packs are fetched at once
    /// (over several connections, see `RemoteBackend`).
    inflight: Mutex<HashSet<PackId>>,
    fetched: Condvar,
}

impl PackCache {
    pub fn blob(
        &self,
        backend: &dyn Backend,
        pack: PackId,
        offset: u32,
        length: u32,
    ) -> Result<Vec<u8>> {
        let data = loop {
            if let Some(d) = self.get(&pack) {
                break d;
            }
            let mut inflight = self.inflight.lock().map_err(|_| Error::Interrupted)?;
            if inflight.contains(&pack) {
                // Another worker fetches it: wait for that, then look again
                // (if its fetch failed, this worker tries itself).
                drop(
                    self.fetched
                        .wait(inflight)
                        .map_err(|_| Error::Interrupted)?,
                );
                continue;
            }
            inflight.insert(pack);
            drop(inflight);
            let got = backend.read(FileKind::Pack, &pack.to_hex()).map(Arc::new);
            if let Ok(d) = &got {
                self.put(pack, d.clone());
            }
            if let Ok(mut inflight) = self.inflight.lock() {
                inflight.remove(&pack);
            }
            self.fetched.notify_all();
            break got?;
        };
        data.get(offset as usize..offset as usize + length as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "pack {} is shorter than the index says",
                    pack.short()
                ))
            })
    }

    fn get(&self, pack: &PackId) -> Option<Arc<Vec<u8>>> {
        let packs = self.packs.lock().ok()?;
        packs
            .iter()
            .find(|(p, _)| p == pack)
            .map(|(_, d)| d.clone())
    }

    fn put(&self, pack: PackId, data: Arc<Vec<u8>>) {
        if let Ok(mut packs) = self.packs.lock() {
            if packs.iter().any(|(p, _)| *p == pack) {
                return;
            }
            if packs.len() == CACHED_PACKS {
                packs.pop_front();
            }
            packs.push_back((pack, data));
        }
    }
}
