//! Whole packs kept in memory for readers of a high-latency store: blobs are
//! read in pack order (extraction follows the items stream, which follows
//! the order the data was written), so one fetch serves many blobs instead
//! of one round trip per blob.

use crate::backend::{Backend, FileKind};
use crate::error::{Error, Result};
use crate::id::PackId;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Packs kept (16 MiB each by default).
pub const CACHED_PACKS: usize = 4;

#[derive(Default)]
pub struct PackCache {
    packs: Mutex<VecDeque<(PackId, Arc<Vec<u8>>)>>,
    /// One fetch at a time: workers wanting the pack being fetched wait for
    /// it instead of fetching it again.
    fetching: Mutex<()>,
}

impl PackCache {
    pub fn blob(
        &self,
        backend: &dyn Backend,
        pack: PackId,
        offset: u32,
        length: u32,
    ) -> Result<Vec<u8>> {
        let data = match self.get(&pack) {
            Some(d) => d,
            None => {
                let _one = self.fetching.lock().map_err(|_| Error::Interrupted)?;
                match self.get(&pack) {
                    Some(d) => d,
                    None => {
                        let d = Arc::new(backend.read(FileKind::Pack, &pack.to_hex())?);
                        self.put(pack, d.clone());
                        d
                    }
                }
            }
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
