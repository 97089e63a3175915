//! Deterministic inputs: the same bytes on every run and every machine.

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

/// Whether divan runs each benchmark once, as CI does (`--test`, or
/// `cargo test --bench micro`, which passes no `--bench`).
fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

/// `n`, or at most `quick_n` when running once: the unoptimised build
/// that `cargo test --bench micro` makes then runs every benchmark in seconds.
pub fn size(n: usize, quick_n: usize) -> usize {
    if quick() { n.min(quick_n) } else { n }
}

/// xorshift64*: enough for benchmark inputs, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `n` incompressible bytes.
pub fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(n);
    v
}

/// `n` bytes of log-like text (words and numbers). Of 2 MiB, zstd,1
/// keeps 34 % (the `zstd -1` command line as much), zstd,3 33 %, lz4 56 %.
pub fn text(n: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "backup",
        "of",
        "file",
        "chunk",
        "pack",
        "index",
        "error",
        "ok",
        "read",
        "write",
        "host",
        "repository",
        "strata",
        "session",
        "fn",
        "let",
        "mut",
        "return",
        "if",
        "else",
        "for",
        "in",
        "struct",
        "impl",
        "self",
        "data",
        "len",
        "size",
        "bytes",
        "warning",
        "info",
    ];
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(n + 64);
    while v.len() < n {
        let r = rng.next();
        match r % 8 {
            0 => v.extend_from_slice(format!("{} ", r >> 40).as_bytes()),
            1 => v.push(b'\n'),
            _ => {
                v.extend_from_slice(WORDS[(r >> 8) as usize % WORDS.len()].as_bytes());
                v.push(b' ');
            }
        }
    }
    v.truncate(n);
    v
}
