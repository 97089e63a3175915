//! FastCDC at the default parameters (512 KiB / 2 MiB / 8 MiB).

use crate::data::{MIB, random, size};
use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use std::sync::LazyLock;
use strata::chunker::{Chunker, ChunkerParams};

static INPUT: LazyLock<Vec<u8>> = LazyLock::new(|| random(size(64 * MIB, 9 * MIB), 1));

fn chunker() -> Chunker {
    Chunker::new(ChunkerParams::default(), &[7; 32])
}

/// What `create` does per file: read through the reused window, cut.
#[divan::bench(sample_count = 20)]
fn stream_64mib(bencher: Bencher) {
    let (c, input) = (chunker(), &*INPUT);
    let mut window = c.window();
    bencher
        .counter(BytesCount::of_slice(input))
        .bench_local(|| {
            let mut stream = c.chunks_with(&input[..], std::mem::take(&mut window));
            let mut n = 0;
            while let Some(chunk) = stream.next_chunk() {
                n += black_box(chunk.unwrap()).len();
            }
            window = stream.into_window();
            n
        });
}

/// The cut-point search alone, over a slice already in memory.
#[divan::bench(sample_count = 20)]
fn cut_64mib(bencher: Bencher) {
    let (c, input) = (chunker(), &*INPUT);
    bencher.counter(BytesCount::of_slice(input)).bench(|| {
        let mut start = 0;
        while start < input.len() {
            start += c.cut(black_box(&input[start..]));
        }
        start
    });
}
