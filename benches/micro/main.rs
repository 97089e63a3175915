//! Micro-benchmarks of the stages of `create`'s pipeline, one module per
//! stage, through the same library calls the pipeline makes.
//!
//! `cargo bench --bench micro` runs them all (bench/micro.sh saves the
//! output); `cargo bench --bench micro -- aead` runs the ones whose path
//! matches; `cargo test --bench micro` runs each once, as CI does. Inputs are
//! deterministic (`data`), so two runs time the same bytes.

mod aead;
mod chunker;
mod compress;
mod data;
mod hash;
mod index;
mod pack;

fn main() {
    // At most 3 s per benchmark, so all of them take a few minutes;
    // `-- --max-time 10` (or any divan flag) overrides it.
    divan::Divan::default()
        .max_time(std::time::Duration::from_secs(3))
        .config_with_args()
        .main();
}
