//! Content-defined chunking: FastCDC 2020 with a gear table derived from the
//! repository's secret chunker seed.
//!
//! `fastcdc`'s own seeding XORs one u64 into the public table, which leaks
//! the seed through chunk sizes ("Breaking and Fixing Content-Defined
//! Chunking", 2025). We derive all 256 entries from the seed with the BLAKE3
//! XOF and drive `fastcdc::v2020::cut_gear` with them.

use crate::error::{Error, Result};
use fastcdc::v2020::{Normalization, cut_gear, select_masks};
use serde::{Deserialize, Serialize};
use std::io::Read;

pub const CHUNKER_ALGORITHM: &str = "fastcdc-2020";
pub const DEFAULT_MIN: u32 = 512 * 1024;
pub const DEFAULT_AVG: u32 = 2 * 1024 * 1024;
pub const DEFAULT_MAX: u32 = 8 * 1024 * 1024;
/// Domain separation for the gear-table XOF.
pub const GEAR_XOF_LABEL: &[u8] = b"strata gear table v1";

/// Chunker parameters, fixed at `init` and stored in the repository config.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self {
            min: DEFAULT_MIN,
            avg: DEFAULT_AVG,
            max: DEFAULT_MAX,
        }
    }
}

impl ChunkerParams {
    /// Parses `MIN,AVG,MAX` as byte counts with K/M suffixes (`512K,2M,8M`),
    /// or borg's exponent form `fastcdc,19,21,23` / `19,21,23` (2^N bytes).
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.strip_prefix("fastcdc,").unwrap_or(spec);
        let nums: Vec<u64> = spec.split(',').map(parse_size).collect::<Result<_>>()?;
        let [min, avg, max] = nums[..] else {
            return Err(Error::invalid(format!(
                "chunker params `{spec}`: expected MIN,AVG,MAX"
            )));
        };
        let exp = |n: u64| if n < 32 { 1u64 << n } else { n };
        let p = Self {
            min: exp(min) as u32,
            avg: exp(avg) as u32,
            max: exp(max) as u32,
        };
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020 as f;
        let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&(self.min as usize))
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&(self.avg as usize))
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&(self.max as usize))
            && self.min < self.avg
            && self.avg < self.max
            && self.min.is_multiple_of(2)
            && self.avg.is_multiple_of(2)
            && self.max.is_multiple_of(2);
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "chunker params {},{},{}: need even MIN<AVG<MAX with MIN in 64..1M, AVG in 256..4M, MAX in 1K..16M",
                self.min, self.avg, self.max
            )))
        }
    }
}

/// Parses a byte count with an optional binary suffix: `512K`, `16M`,
/// `500G`, `2T`, or plain bytes. Shared by every size option.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, shift) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 30),
        Some('T' | 't') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| {
            Error::invalid(format!(
                "size `{s}` is not a number of bytes (like 512K, 16M, 500G)"
            ))
        })
}

/// A seeded FastCDC cutter. Cheap to share between threads.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    pub fn new(params: ChunkerParams, seed: &[u8; 32]) -> Self {
        let mut bytes = [0u8; 256 * 8];
        let mut h = blake3::Hasher::new_keyed(seed);
        h.update(GEAR_XOF_LABEL);
        h.finalize_xof().fill(&mut bytes);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for (i, c) in bytes.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            gear[i] = u64::from_le_bytes(w);
            gear_ls[i] = gear[i] << 1;
        }
        let (mask_s, mask_l) = select_masks(params.avg as usize, Normalization::Level1);
        Self {
            params,
            gear,
            gear_ls,
            mask_s,
            mask_l,
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// A window for [`Chunker::chunks_with`] at its final size, made at
    /// once: grown by doubling it would end at up to twice the size.
    pub fn window(&self) -> Vec<u8> {
        Vec::with_capacity(2 * self.params.max as usize)
    }

    /// Length of the next chunk at the start of `buf`. `buf` must hold at
    /// least `max` bytes unless it is the end of the input.
    pub fn cut(&self, buf: &[u8]) -> usize {
        let p = self.params;
        let (_, n) = cut_gear(
            buf,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        n
    }

    /// Streams chunks from a reader.
    pub fn chunks<R: Read>(&self, reader: R) -> ChunkStream<'_, R> {
        self.chunks_with(reader, Vec::new())
    }

    /// Streams chunks from a reader through `window`, a buffer handed
    /// from one stream to the next (`ChunkStream::into_window`): a tree of
    /// many files then reuses one window instead of allocating (and
    /// faulting in) up to 2×MAX bytes per file.
    pub fn chunks_with<R: Read>(&self, reader: R, mut window: Vec<u8>) -> ChunkStream<'_, R> {
        window.clear();
        ChunkStream {
            chunker: self,
            reader,
            buf: window,
            start: 0,
            eof: false,
        }
    }
}

/// Iterator over the chunks of a reader; keeps at most 2×MAX bytes buffered.
pub struct ChunkStream<'a, R> {
    chunker: &'a Chunker,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
}

impl<R: Read> ChunkStream<'_, R> {
    fn fill(&mut self) -> std::io::Result<()> {
        let max = self.chunker.params.max as usize;
        if self.buf.len() - self.start >= max || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        // `read_to_end` through `take` fills spare capacity without zeroing
        // it first, which matters for the many small files of a tree.
        let want = 2 * max - self.buf.len();
        let n = (&mut self.reader)
            .take(want as u64)
            .read_to_end(&mut self.buf)?;
        if n < want {
            self.eof = true;
        }
        Ok(())
    }
}

impl<R: Read> ChunkStream<'_, R> {
    /// The next chunk, borrowed from the window (no copy).
    pub fn next_chunk(&mut self) -> Option<std::io::Result<&[u8]>> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        let rest = &self.buf[self.start..];
        if rest.is_empty() {
            return None;
        }
        let n = self.chunker.cut(rest);
        self.start += n;
        Some(Ok(&self.buf[self.start - n..self.start]))
    }

    /// The window buffer, for the next stream.
    pub fn into_window(self) -> Vec<u8> {
        self.buf
    }
}

impl<R: Read> Iterator for ChunkStream<'_, R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().map(|r| r.map(<[u8]>::to_vec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        blake3::Hasher::new()
            .update(b"x")
            .finalize_xof()
            .fill(&mut v);
        v
    }

    #[test]
    fn chunks_reassemble_and_respect_bounds() {
        let p = ChunkerParams::parse("4K,16K,64K").unwrap();
        let c = Chunker::new(p, &[1; 32]);
        let d = data(1_000_000);
        let chunks: Vec<Vec<u8>> = c.chunks(&d[..]).map(|r| r.unwrap()).collect();
        assert_eq!(chunks.concat(), d);
        for ch in &chunks[..chunks.len() - 1] {
            assert!(ch.len() >= 4096 && ch.len() <= 65536);
        }
    }

    #[test]
    fn seed_changes_boundaries_and_insertion_resyncs() {
        let p = ChunkerParams::parse("4K,16K,64K").unwrap();
        let d = data(500_000);
        let a: Vec<usize> = Chunker::new(p, &[1; 32])
            .chunks(&d[..])
            .map(|c| c.unwrap().len())
            .collect();
        let b: Vec<usize> = Chunker::new(p, &[2; 32])
            .chunks(&d[..])
            .map(|c| c.unwrap().len())
            .collect();
        assert_ne!(a, b);
        // an insertion in the middle changes only chunks near it
        let c = Chunker::new(p, &[1; 32]);
        let mut e = d.clone();
        e.splice(250_000..250_000, data(1000));
        let ids = |v: &[u8]| -> std::collections::HashSet<Vec<u8>> {
            c.chunks(v).map(|c| c.unwrap()).collect()
        };
        let (x, y) = (ids(&d), ids(&e));
        assert!(x.intersection(&y).count() >= x.len() - 3);
    }

    #[test]
    fn params_parse_both_forms() {
        assert_eq!(
            ChunkerParams::parse("19,21,23").unwrap(),
            ChunkerParams {
                min: 1 << 19,
                avg: 1 << 21,
                max: 1 << 23
            }
        );
        assert_eq!(
            ChunkerParams::parse("fastcdc,512K,2M,8M").unwrap(),
            ChunkerParams::default()
        );
        assert!(ChunkerParams::parse("2M,1M,8M").is_err());
        assert!(ChunkerParams::parse("1,2").is_err());
    }
}
