//! Compression of a 2 MiB chunk (the default average), with the reused
//! compressor and output buffer of a `create` worker, and decompression
//! as `read_blob` does it. Throughput counts uncompressed bytes.

use crate::data::{KIB, MIB, random, size, text};
use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use strata::compress::{Compression, Compressor, decompress};

const SPECS: [&str; 4] = ["lz4", "zstd,1", "zstd,3", "auto,zstd,1"];
const SIZE: usize = 2 * MIB;

fn compress(bencher: Bencher, spec: &str, data: &[u8]) {
    let c = Compression::parse(spec).unwrap();
    let mut ctx = Compressor::default();
    let mut out = Vec::with_capacity(2 * data.len());
    bencher.counter(BytesCount::of_slice(data)).bench_local(|| {
        out.clear();
        c.compress_into(black_box(data), &mut out, &mut ctx);
        out.len()
    });
}

fn decompress_(bencher: Bencher, spec: &str, data: &[u8]) {
    let payload = Compression::parse(spec).unwrap().compress(data);
    bencher
        .counter(BytesCount::of_slice(data))
        .with_inputs(|| payload.clone())
        .bench_values(|p| decompress(p).unwrap());
}

#[divan::bench(args = SPECS)]
fn compress_text(bencher: Bencher, spec: &str) {
    compress(bencher, spec, &text(size(SIZE, 256 * KIB), 3));
}

#[divan::bench(args = SPECS)]
fn compress_random(bencher: Bencher, spec: &str) {
    compress(bencher, spec, &random(size(SIZE, 256 * KIB), 3));
}

#[divan::bench(args = SPECS)]
fn decompress_text(bencher: Bencher, spec: &str) {
    decompress_(bencher, spec, &text(size(SIZE, 256 * KIB), 3));
}

#[divan::bench(args = SPECS)]
fn decompress_random(bencher: Bencher, spec: &str) {
    decompress_(bencher, spec, &random(size(SIZE, 256 * KIB), 3));
}
