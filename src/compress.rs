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

/// The default `--compression`: on the `mixed` benchmark zstd level 1
/// stores 2 % more than restic's zstd (level 3 class) for about half of
/// level 3's CPU time, and 13 % less than lz4 for about the same CPU time
/// (the smaller repository also costs fewer writes). See docs/performance.md.
pub const DEFAULT_SPEC: &str = "zstd,1";

impl Default for Compression {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Zstd(1),
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
        let mut out = Vec::new();
        self.compress_into(data, &mut out, &mut Compressor::default());
        out
    }

    /// Appends the payload (the same bytes as [`Compression::compress`]) to
    /// `out`, using `ctx`'s reusable state: the hot path of `create` calls
    /// this once per chunk on each worker, with a recycled `out`.
    pub fn compress_into(&self, data: &[u8], out: &mut Vec<u8>, ctx: &mut Compressor) {
        let start = out.len();
        if self.auto && self.algorithm != Algorithm::None {
            compress_with(Algorithm::Lz4, data, out, ctx);
            let trial = out.len() - start;
            if (trial as f64) > AUTO_RATIO * data.len() as f64 {
                out.truncate(start);
                stored(data, out);
                return;
            }
            if self.algorithm == Algorithm::Lz4 {
                return;
            }
            out.truncate(start);
        }
        compress_with(self.algorithm, data, out, ctx);
    }
}

/// Per-thread compressor state, reused from one object to the next. zstd
/// allocates and clears several MiB of tables for a new context; doing that
/// per chunk cost more than compressing small chunks.
#[derive(Default)]
pub struct Compressor {
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
}

impl Compressor {
    fn zstd(&mut self, level: i32) -> Option<&mut zstd::bulk::Compressor<'static>> {
        if self.zstd.as_ref().map(|(l, _)| *l) != Some(level) {
            self.zstd = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        self.zstd.as_mut().map(|(_, c)| c)
    }
}

fn stored(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + 1);
    out.push(COMPRESSION_NONE);
    out.extend_from_slice(data);
}

/// The xz dictionary never needs to be larger than the object: a preset's
/// (8 MiB for level 6, 64 MiB for 9) would be allocated and cleared for
/// every chunk. Readers accept any dictionary size up to `XZ_MEMLIMIT`.
pub fn xz_dict_size(level: u32, len: usize) -> u32 {
    const LZMA_DICT_SIZE_MIN: u32 = 4096;
    // xz's presets 0..=9 (liblzma's `lzma_lzma_preset`).
    const PRESET_DICT: [u32; 10] = [
        256 << 10,
        1 << 20,
        2 << 20,
        4 << 20,
        4 << 20,
        8 << 20,
        8 << 20,
        16 << 20,
        32 << 20,
        64 << 20,
    ];
    let preset = PRESET_DICT[level.min(9) as usize];
    let want = u32::try_from(len.max(1).next_power_of_two()).unwrap_or(u32::MAX);
    want.clamp(LZMA_DICT_SIZE_MIN, preset)
}

fn xz_encoder(level: u32, len: usize) -> Option<liblzma::stream::Stream> {
    use liblzma::stream::{Check, Filters, LzmaOptions, Stream};
    let mut opts = LzmaOptions::new_preset(level).ok()?;
    opts.dict_size(xz_dict_size(level, len));
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    Stream::new_stream_encoder(&filters, Check::Crc64).ok()
}

/// Appends `data` compressed with one algorithm to `out`, falling back to
/// storing when the result would be larger than the input.
fn compress_with(algorithm: Algorithm, data: &[u8], out: &mut Vec<u8>, ctx: &mut Compressor) {
    let start = out.len();
    let packed = match algorithm {
        Algorithm::None => false,
        Algorithm::Lz4 => {
            out.push(COMPRESSION_LZ4);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            let at = out.len();
            out.resize(at + lz4_flex::block::get_maximum_output_size(data.len()), 0);
            match lz4_flex::block::compress_into(data, &mut out[at..]) {
                Ok(n) => {
                    out.truncate(at + n);
                    true
                }
                Err(_) => false,
            }
        }
        Algorithm::Zstd(level) => {
            out.push(COMPRESSION_ZSTD);
            out.reserve(zstd::zstd_safe::compress_bound(data.len()));
            let at = out.len() as u64;
            match ctx.zstd(level) {
                Some(z) => {
                    let mut cursor = std::io::Cursor::new(&mut *out);
                    cursor.set_position(at);
                    z.compress_to_buffer(data, &mut cursor).is_ok()
                }
                None => false,
            }
        }
        Algorithm::Xz(level) => {
            out.push(COMPRESSION_XZ);
            match xz_encoder(level, data.len()) {
                Some(s) => liblzma::read::XzEncoder::new_stream(data, s)
                    .read_to_end(out)
                    .is_ok(),
                None => false,
            }
        }
        Algorithm::Zlib(level) => {
            out.push(COMPRESSION_ZLIB);
            let mut enc = flate2::read::ZlibEncoder::new(data, flate2::Compression::new(level));
            enc.read_to_end(out).is_ok()
        }
    };
    if !packed || out.len() - start > data.len() {
        out.truncate(start);
        stored(data, out);
    }
}

/// Reverses [`Compression::compress`].
pub fn decompress(mut payload: Vec<u8>) -> Result<Vec<u8>> {
    if payload.first() == Some(&COMPRESSION_NONE) {
        payload.remove(0);
        return Ok(payload);
    }
    decompress_slice(&payload).map(std::borrow::Cow::into_owned)
}

/// [`decompress`] of a borrowed payload: stored data is returned borrowed,
/// not copied.
pub fn decompress_slice(payload: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    let bad = |what: &str| Error::corrupt(format!("object payload: {what}"));
    let algo = *payload.first().ok_or_else(|| bad("empty"))?;
    let owned = match algo {
        COMPRESSION_NONE => return Ok(Cow::Borrowed(&payload[1..])),
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
            let data = &payload[1..];
            match zstd::zstd_safe::get_frame_content_size(data) {
                // Frames written in one call record their size: decode into
                // one buffer of that size (the stream decoder grows and
                // copies its output several times per chunk).
                Ok(Some(n)) if n <= MAX_DECOMPRESSED as u64 => {
                    zstd_bulk_decompress(data).map_err(|_| bad("zstd data"))
                }
                Ok(Some(_)) => Err(bad("zstd data")),
                _ => read_limited(zstd::stream::read::Decoder::new(data).ok(), "zstd"),
            }
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
    };
    owned.map(Cow::Owned)
}

/// [`decompress_slice`] into `out`, which must hold the whole result:
/// returns its length. `None` when it does not fit (or for the slower
/// formats, xz and zlib): the caller then takes [`decompress_slice`]'s
/// owned result, whose errors also name the problem. Restores decode each
/// chunk straight into their aligned write buffer this way (no fresh
/// allocation and no copy per chunk).
pub fn decompress_into(payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let (&algo, data) = payload.split_first()?;
    match algo {
        COMPRESSION_NONE => {
            out.get_mut(..data.len())?.copy_from_slice(data);
            Some(data.len())
        }
        COMPRESSION_LZ4 => {
            let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
            let n = lz4_flex::block::decompress_into(&data[4..], out.get_mut(..len)?).ok()?;
            (n == len).then_some(n)
        }
        COMPRESSION_ZSTD => {
            // Only frames that record their size (all that strata writes):
            // the bound check below is then exact.
            let n = zstd::zstd_safe::get_frame_content_size(data).ok()??;
            let out = out.get_mut(..usize::try_from(n).ok()?)?;
            zstd_with_context(|d| d.decompress_to_buffer(data, out)).ok()
        }
        _ => None,
    }
}

/// One zstd decompression context per thread: creating one per blob (it
/// allocates and clears its tables) was 2 % of a restore's CPU.
fn zstd_bulk_decompress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd_with_context(|d| d.decompress(data, MAX_DECOMPRESSED))
}

fn zstd_with_context<R>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<R>,
) -> std::io::Result<R> {
    use std::cell::RefCell;
    thread_local! {
        static CONTEXT: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }
    CONTEXT.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new()?);
        }
        match cell.as_mut() {
            Some(d) => f(d),
            None => f(&mut zstd::bulk::Decompressor::new()?),
        }
    })
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
    fn decompresses_into_a_buffer_or_says_it_cannot() {
        let text: Vec<u8> = b"strata strata strata ".repeat(1000);
        let mut out = vec![0u8; text.len() + 100];
        for spec in ["none", "lz4", "zstd", "zstd,19"] {
            let p = Compression::parse(spec).unwrap().compress(&text);
            out.fill(0xaa);
            assert_eq!(decompress_into(&p, &mut out), Some(text.len()), "{spec}");
            assert_eq!(&out[..text.len()], &text[..], "{spec}");
            // One byte too small: refused, not truncated.
            assert_eq!(
                decompress_into(&p, &mut out[..text.len() - 1]),
                None,
                "{spec}"
            );
        }
        // The slower formats are left to decompress_slice.
        let xz = Compression::parse("xz").unwrap().compress(&text);
        assert_eq!(decompress_into(&xz, &mut out), None);
        // Damaged data is not reported as decoded.
        let mut z = Compression::parse("zstd").unwrap().compress(&text);
        let mid = z.len() / 2;
        z[mid] ^= 0xff;
        z.truncate(z.len() - 3);
        assert_eq!(decompress_into(&z, &mut out), None);
        assert_eq!(decompress_into(&[], &mut out), None);
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
