//! Compression of object payloads. The first payload byte names the
//! algorithm, so each object decompresses on its own and `auto` can store
//! incompressible data as-is.

use crate::error::{Error, Result};
use std::io::Read;

pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_LZ4: u8 = 1;
pub const COMPRESSION_ZSTD: u8 = 2;
pub const COMPRESSION_XZ: u8 = 3;
pub const COMPRESSION_ZLIB: u8 = 4;
/// Largest decompressed object accepted: a hostile object cannot make us
/// allocate more than this.
pub const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;
/// An xz stream may not ask for a larger dictionary than this (xz -9 uses 64 MiB).
pub const XZ_MEMLIMIT: u64 = 256 * 1024 * 1024;
/// `auto` stores data uncompressed unless lz4 saves at least 3%.
const AUTO_RATIO: f64 = 0.97;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Algorithm {
    None,
    Lz4,
    Zstd(i32),
    Xz(u32),
    Zlib(u32),
}

/// A `--compression` setting: an algorithm, optionally behind `auto`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Compression {
    pub algorithm: Algorithm,
    pub auto: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Lz4,
            auto: false,
        }
    }
}

impl Compression {
    /// Parses `none`, `lz4`, `zstd[,L]`, `xz[,L]`, `zlib[,L]`, `auto,ALGO[,L]`.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut parts: Vec<&str> = spec.split(',').collect();
        let auto = parts.first() == Some(&"auto");
        if auto {
            parts.remove(0);
        }
        let bad = || {
            Error::invalid(format!(
                "bad compression `{spec}`: use none, lz4, zstd[,1-22], xz[,0-9], zlib[,0-9] or auto,ALGO[,LEVEL]"
            ))
        };
        let level = |default: i64, lo: i64, hi: i64| -> Result<i64> {
            match parts.get(1) {
                None => Ok(default),
                Some(l) => l
                    .parse::<i64>()
                    .ok()
                    .filter(|l| (lo..=hi).contains(l))
                    .ok_or_else(bad),
            }
        };
        if parts.len() > 2 {
            return Err(bad());
        }
        let algorithm = match *parts.first().ok_or_else(bad)? {
            "none" if parts.len() == 1 => Algorithm::None,
            "lz4" if parts.len() == 1 => Algorithm::Lz4,
            "zstd" => Algorithm::Zstd(level(3, 1, 22)? as i32),
            "xz" | "lzma" => Algorithm::Xz(level(6, 0, 9)? as u32),
            "zlib" => Algorithm::Zlib(level(6, 0, 9)? as u32),
            _ => return Err(bad()),
        };
        Ok(Self { algorithm, auto })
    }

    /// Returns the payload: one algorithm byte followed by the data.
    pub fn compress(&self, data: &[u8]) -> Vec<u8> {
        if self.auto && self.algorithm != Algorithm::None {
            let trial = compress_with(Algorithm::Lz4, data);
            if (trial.len() as f64) > AUTO_RATIO * data.len() as f64 {
                return stored(data);
            }
            if self.algorithm == Algorithm::Lz4 {
                return trial;
            }
        }
        compress_with(self.algorithm, data)
    }
}

fn stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(COMPRESSION_NONE);
    out.extend_from_slice(data);
    out
}

/// Compresses with one algorithm, falling back to storing when the result
/// would be larger than the input.
fn compress_with(algorithm: Algorithm, data: &[u8]) -> Vec<u8> {
    let packed = match algorithm {
        Algorithm::None => None,
        Algorithm::Lz4 => {
            let mut out = vec![COMPRESSION_LZ4];
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&lz4_flex::block::compress(data));
            Some(out)
        }
        Algorithm::Zstd(level) => zstd::bulk::compress(data, level)
            .ok()
            .map(|c| prefixed(COMPRESSION_ZSTD, c)),
        Algorithm::Xz(level) => {
            let mut out = vec![COMPRESSION_XZ];
            let mut enc = liblzma::read::XzEncoder::new(data, level);
            enc.read_to_end(&mut out).ok().map(|_| out)
        }
        Algorithm::Zlib(level) => {
            let mut out = vec![COMPRESSION_ZLIB];
            let mut enc = flate2::read::ZlibEncoder::new(data, flate2::Compression::new(level));
            enc.read_to_end(&mut out).ok().map(|_| out)
        }
    };
    match packed {
        Some(p) if p.len() < data.len() + 1 => p,
        _ => stored(data),
    }
}

fn prefixed(byte: u8, data: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(byte);
    out.extend_from_slice(&data);
    out
}

/// Reverses [`Compression::compress`].
pub fn decompress(mut payload: Vec<u8>) -> Result<Vec<u8>> {
    let bad = |what: &str| Error::corrupt(format!("object payload: {what}"));
    let algo = *payload.first().ok_or_else(|| bad("empty"))?;
    match algo {
        COMPRESSION_NONE => {
            payload.remove(0);
            Ok(payload)
        }
        COMPRESSION_LZ4 => {
            let len_bytes: [u8; 4] = payload
                .get(1..5)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| bad("short lz4 header"))?;
            let len = u32::from_le_bytes(len_bytes) as usize;
            if len > MAX_DECOMPRESSED {
                return Err(bad("lz4 size too large"));
            }
            lz4_flex::block::decompress(&payload[5..], len).map_err(|_| bad("lz4 data"))
        }
        COMPRESSION_ZSTD => {
            read_limited(zstd::stream::read::Decoder::new(&payload[1..]).ok(), "zstd")
        }
        COMPRESSION_XZ => read_limited(
            liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
                .ok()
                .map(|s| liblzma::read::XzDecoder::new_stream(&payload[1..], s)),
            "xz",
        ),
        COMPRESSION_ZLIB => {
            read_limited(Some(flate2::read::ZlibDecoder::new(&payload[1..])), "zlib")
        }
        other => Err(bad(&format!("unknown compression {other}"))),
    }
}

fn read_limited<R: Read>(r: Option<R>, name: &str) -> Result<Vec<u8>> {
    let bad = || Error::corrupt(format!("object payload: {name} data"));
    let r = r.ok_or_else(bad)?;
    let mut out = Vec::new();
    r.take(MAX_DECOMPRESSED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| bad())?;
    if out.len() > MAX_DECOMPRESSED {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_round_trips() {
        let text: Vec<u8> = b"strata strata strata ".repeat(1000);
        let mut random = vec![0u8; 10000];
        crate::crypto::random_bytes(&mut random).unwrap();
        for spec in [
            "none",
            "lz4",
            "zstd",
            "zstd,19",
            "xz",
            "xz,1",
            "zlib",
            "zlib,9",
            "auto,zstd,3",
            "auto,lz4",
        ] {
            let c = Compression::parse(spec).unwrap();
            for data in [&text[..], &random[..], b""] {
                let p = c.compress(data);
                assert_eq!(decompress(p).unwrap(), data, "{spec}");
            }
        }
    }

    #[test]
    fn auto_stores_incompressible() {
        let mut random = vec![0u8; 100_000];
        crate::crypto::random_bytes(&mut random).unwrap();
        let p = Compression::parse("auto,zstd,3").unwrap().compress(&random);
        assert_eq!(p[0], COMPRESSION_NONE);
        let t = Compression::parse("auto,zstd,3")
            .unwrap()
            .compress(&[b'a'; 100_000]);
        assert_eq!(t[0], COMPRESSION_ZSTD);
    }

    #[test]
    fn bad_specs_rejected() {
        for s in [
            "", "gzip", "zstd,0", "zstd,23", "lz4,3", "auto", "zlib,x", "xz,1,2",
        ] {
            assert!(Compression::parse(s).is_err(), "{s}");
        }
    }
}
