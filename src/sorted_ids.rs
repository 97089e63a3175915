//! A sorted array of records keyed by hash values, with a directory of where
//! each key prefix starts: the in-memory form of the blob index and of the
//! files cache.
//!
//! Why not a hash map: a hash table keeps 1/8 to 1/2 of its slots empty
//! (it doubles when 7/8 full), so 1M entries of 52 bytes took 104 MB; the
//! array takes 52 MB plus a directory of ~2 bytes per entry. Keys are
//! hashes (BLAKE3), spread evenly, so the directory narrows a lookup to a
//! handful of records, found by binary search: about as fast as a hash
//! probe (both miss the CPU cache about once). Keys chosen by an attacker
//! (a forged index) can only make one range larger, and the binary search
//! keeps such a lookup logarithmic.

/// A record with a hash key of at least 4 bytes.
pub trait Keyed {
    type Key: Ord + Copy + AsRef<[u8]>;
    fn key(&self) -> Self::Key;
}

/// Which of several records with the same key stays.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    First,
    Last,
}

pub struct SortedIds<T> {
    items: Vec<T>,
    /// `starts[p]..starts[p + 1]`: the records whose key begins with the
    /// `bits`-bit prefix p.
    starts: Vec<u32>,
    bits: u32,
}

impl<T> Default for SortedIds<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            starts: vec![0, 0],
            bits: 0,
        }
    }
}

impl<T: Keyed> SortedIds<T> {
    /// Sorts `items` (stable: of equal keys, `keep` says which one stays)
    /// and builds the directory. Memory is returned to the allocator.
    pub fn new(mut items: Vec<T>, keep: Keep) -> Self {
        items.sort_by_key(|t| t.key());
        match keep {
            Keep::First => items.dedup_by_key(|t| t.key()),
            // `later` is dropped; what it held moves into the record kept.
            Keep::Last => items.dedup_by(|later, kept| {
                let same = later.key() == kept.key();
                if same {
                    std::mem::swap(later, kept);
                }
                same
            }),
        }
        items.shrink_to_fit();
        let n = items.len();
        // About two records per directory slot, at most 16M slots.
        let bits = (usize::BITS - n.leading_zeros()).saturating_sub(1).min(24);
        let buckets = 1usize << bits;
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut at = 0usize;
        for p in 0..buckets {
            while at < n && prefix(items[at].key().as_ref(), bits) < p {
                at += 1;
            }
            starts.push(at as u32);
        }
        starts.push(n as u32);
        Self {
            items,
            starts,
            bits,
        }
    }

    /// Where the record of `key` is.
    pub fn position(&self, key: &T::Key) -> Option<usize> {
        let p = prefix(key.as_ref(), self.bits);
        let lo = *self.starts.get(p)? as usize;
        let hi = *self.starts.get(p + 1)? as usize;
        let range = self.items.get(lo..hi)?;
        Some(lo + range.binary_search_by(|t| t.key().cmp(key)).ok()?)
    }

    pub fn get(&self, key: &T::Key) -> Option<&T> {
        self.items.get(self.position(key)?)
    }

    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// The records, to change anything but their keys.
    pub fn items_mut(&mut self) -> &mut [T] {
        &mut self.items
    }

    pub fn into_items(self) -> Vec<T> {
        self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The first `bits` bits of a key (keys shorter than 4 bytes are padded).
fn prefix(key: &[u8], bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    let mut top = [0u8; 4];
    let n = key.len().min(4);
    top[..n].copy_from_slice(&key[..n]);
    (u32::from_be_bytes(top) >> (32 - bits)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct R([u8; 8], u32);

    impl Keyed for R {
        type Key = [u8; 8];
        fn key(&self) -> [u8; 8] {
            self.0
        }
    }

    fn k(n: u64) -> [u8; 8] {
        let h = blake3::hash(&n.to_le_bytes());
        h.as_bytes()[..8].try_into().unwrap()
    }

    #[test]
    fn every_key_is_found_and_no_other() {
        for n in [0u64, 1, 2, 3, 100, 4097] {
            let items: Vec<R> = (0..n).map(|i| R(k(i), i as u32)).collect();
            let t = SortedIds::new(items, Keep::First);
            assert_eq!(t.len(), n as usize);
            for i in 0..n {
                assert_eq!(t.get(&k(i)), Some(&R(k(i), i as u32)), "{i} of {n}");
            }
            for i in n..n + 50 {
                assert_eq!(t.get(&k(i)), None);
            }
            assert!(t.items().windows(2).all(|w| w[0].0 < w[1].0));
        }
    }

    #[test]
    fn duplicates_keep_the_first_or_the_last() {
        let items = vec![R(k(1), 1), R(k(2), 2), R(k(1), 3), R(k(1), 4)];
        let first = SortedIds::new(items.clone(), Keep::First);
        assert_eq!(first.len(), 2);
        assert_eq!(first.get(&k(1)).map(|r| r.1), Some(1));
        let last = SortedIds::new(items, Keep::Last);
        assert_eq!(last.len(), 2);
        assert_eq!(last.get(&k(1)).map(|r| r.1), Some(4));
        assert_eq!(last.get(&k(2)).map(|r| r.1), Some(2));
    }

    #[test]
    fn keys_sharing_a_prefix_are_still_found() {
        // A forged index: every key in one directory slot.
        let items: Vec<R> = (0..1000u32)
            .map(|i| {
                let mut key = [0u8; 8];
                key[4..].copy_from_slice(&i.to_be_bytes());
                R(key, i)
            })
            .collect();
        let t = SortedIds::new(items.clone(), Keep::First);
        for r in &items {
            assert_eq!(t.get(&r.0), Some(r));
        }
    }
}
