//! `strata selftest --bench`: the throughput of each primitive of the
//! backup pipeline on this machine, to size a Pi's job (how long a night's
//! replication takes, which compressor and cipher it can afford).

use super::{log_text, pseudo_random};
use crate::chunker::{Chunker, ChunkerParams};
use crate::compress::{Compression, decompress};
use crate::crypto::{Cipher, Mode, ObjectType, RepoKeys, Sealer};
use crate::error::Result;
use std::hint::black_box;
use std::time::Instant;

/// Compressors measured: the defaults of each `--compression` choice.
pub const COMPRESSORS: [&str; 4] = ["lz4", "zstd,3", "zlib,6", "xz,6"];

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Each primitive runs at least this long (and at least once).
    pub seconds: f64,
    /// Bytes per call: about one chunk, as in `create`.
    pub piece: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            seconds: 1.0,
            piece: 1 << 20,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BenchResult {
    pub name: String,
    /// Input bytes processed.
    pub bytes: u64,
    pub seconds: f64,
    /// E.g. the compression ratio.
    pub note: String,
}

impl BenchResult {
    /// Decimal megabytes of input per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }
}

/// Runs `f` (which handles `bytes` input bytes per call) until `seconds`
/// have passed, at least once.
fn measure(
    name: &str,
    bytes: usize,
    seconds: f64,
    mut f: impl FnMut() -> Result<()>,
) -> Result<BenchResult> {
    let start = Instant::now();
    let mut calls = 0u64;
    loop {
        f()?;
        calls += 1;
        if start.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    Ok(BenchResult {
        name: name.to_string(),
        bytes: calls * bytes as u64,
        seconds: start.elapsed().as_secs_f64(),
        note: String::new(),
    })
}

/// Measures every primitive, telling `each` as each result comes in.
pub fn run(opts: &BenchOptions, each: &mut dyn FnMut(&BenchResult)) -> Result<Vec<BenchResult>> {
    let mut out = Vec::new();
    let mut emit = |r: BenchResult| {
        each(&r);
        out.push(r);
    };
    let random = pseudo_random(20, opts.piece);
    let keys = RepoKeys::from_master(Mode::Repokey, None, &pseudo_random(21, 64));
    emit(chunker(opts, &keys)?);
    emit(measure(
        "blake3 keyed (chunk ids)",
        random.len(),
        opts.seconds,
        || {
            black_box(keys.blob_id(ObjectType::Data, &random));
            Ok(())
        },
    )?);
    let text = log_text(22, opts.piece);
    for spec in COMPRESSORS {
        let (c, d) = compressor(opts, spec, &text)?;
        emit(c);
        emit(d);
    }
    for cipher in [Cipher::Aes256Gcm, Cipher::Chacha20Poly1305] {
        let (s, o) = aead(opts, cipher, &random)?;
        emit(s);
        emit(o);
    }
    Ok(out)
}

/// The repository default (512K,2M,8M) over 16 MiB, so that the bytes the
/// chunker skips after each cut count as they do in `create`.
fn chunker(opts: &BenchOptions, keys: &RepoKeys) -> Result<BenchResult> {
    let p = ChunkerParams::default();
    let c = Chunker::new(p, &keys.chunker_seed);
    let data = pseudo_random(23, 16 << 20);
    let mut n = 0usize;
    let mut r = measure(
        "chunker fastcdc-2020 (512K,2M,8M)",
        data.len(),
        opts.seconds,
        || {
            let mut rest = &data[..];
            while !rest.is_empty() {
                let cut = c.cut(rest);
                rest = &rest[cut..];
                n += 1;
            }
            Ok(())
        },
    )?;
    let passes = (r.bytes / data.len() as u64).max(1);
    r.note = format!("{} cuts per 16 MiB", n as u64 / passes);
    Ok(r)
}

fn compressor(opts: &BenchOptions, spec: &str, text: &[u8]) -> Result<(BenchResult, BenchResult)> {
    let c = Compression::parse(spec)?;
    let packed = c.compress(text);
    let mut comp = measure(
        &format!("{spec} compress"),
        text.len(),
        opts.seconds,
        || {
            black_box(c.compress(text));
            Ok(())
        },
    )?;
    comp.note = format!(
        "ratio {:.2} on log text",
        text.len() as f64 / packed.len() as f64
    );
    let decomp = measure(
        &format!("{spec} decompress"),
        text.len(),
        opts.seconds,
        || {
            black_box(decompress(packed.clone())?);
            Ok(())
        },
    )?;
    Ok((comp, decomp))
}

fn aead(opts: &BenchOptions, cipher: Cipher, data: &[u8]) -> Result<(BenchResult, BenchResult)> {
    let keys = RepoKeys::from_master(Mode::Repokey, Some(cipher), &pseudo_random(24, 64));
    let sealer = Sealer::new(keys)?;
    let id = [1; 32];
    let env = sealer.seal(ObjectType::Data, &id, data)?;
    let seal = measure(
        &format!("{} seal", cipher.name()),
        data.len(),
        opts.seconds,
        || {
            black_box(sealer.seal(ObjectType::Data, &id, data)?);
            Ok(())
        },
    )?;
    let open = measure(
        &format!("{} open", cipher.name()),
        data.len(),
        opts.seconds,
        || {
            black_box(sealer.open(ObjectType::Data, &id, env.clone(), &|| "bench".into())?);
            Ok(())
        },
    )?;
    Ok((seal, open))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_quick_pass_measures_every_primitive() {
        let opts = BenchOptions {
            seconds: 0.0,
            piece: 64 * 1024,
        };
        let mut seen = 0;
        let r = run(&opts, &mut |_| seen += 1).unwrap();
        assert_eq!(seen, r.len());
        // chunker, blake3, 2 per compressor, 2 per cipher
        assert_eq!(r.len(), 2 + 2 * COMPRESSORS.len() + 4);
        for b in &r {
            assert!(b.bytes > 0 && b.mb_per_s() > 0.0, "{b:?}");
        }
        assert!(r.iter().any(|b| b.name == "chacha20-poly1305 seal"));
        assert!(r.iter().any(|b| b.name == "xz,6 decompress"));
    }
}
