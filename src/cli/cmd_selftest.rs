//! `strata selftest`: the known-answer tests, and `--bench` for the
//! throughput of each primitive on this machine.

use anyhow::Result;
use clap::Args;
use std::io::Write;
use strata::selftest::{self, bench};

#[derive(Args, Debug)]
#[command(after_help = "\
Checks that this build computes the known answers of every primitive that \
reaches the disk: BLAKE3 (plain, keyed ids, subkeys), AES-256-GCM and \
ChaCha20-Poly1305 envelopes, Argon2id, the key file, the chunker's cut \
points, every compressor, and the encodings of index, pack, manifest, item \
and archive. The answers were computed on x86_64; a build that disagrees \
(a miscompiled dependency on a 32-bit Pi, say) must not write repositories. \
The daemon runs it at start and refuses to start if it fails. Exit status \
0 when every test passes, 2 otherwise.\n\n\
--bench then prints the throughput of the chunker, BLAKE3, each compressor \
and each cipher (MB/s = 10^6 bytes per second of input), e.g. to choose \
--compression on a Raspberry Pi. See docs/arm.md.")]
pub struct SelftestArgs {
    /// Print every test and its answer.
    #[arg(short, long)]
    pub verbose: bool,
    /// Also measure the throughput of each primitive.
    #[arg(long)]
    pub bench: bool,
    /// With --bench: run each primitive at least this long (0: once, to
    /// check it runs, e.g. under emulation).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 1.0,
        requires = "bench"
    )]
    pub seconds: f64,
}

pub fn run(a: SelftestArgs) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    // The first write error (a closed pipe) ends the command; see cli::run.
    let mut io: std::io::Result<()> = Ok(());
    let verbose = a.verbose;
    let report = selftest::run_with(selftest::all(), &mut |kat, failure| {
        if verbose && io.is_ok() {
            io = match failure {
                None => writeln!(out, "ok     {:<44} {}", kat.name, kat.want),
                Some(f) => writeln!(out, "FAILED {:<44} {}", kat.name, f.detail),
            };
        }
    });
    std::mem::replace(&mut io, Ok(()))?;
    let report = report.map_err(strata::Error::from)?;
    writeln!(
        out,
        "selftest: {} known-answer tests passed on {}; AES instructions: {}, default cipher {}",
        report.passed,
        report.platform,
        if report.aes_instructions { "yes" } else { "no" },
        report.default_cipher.name()
    )?;
    if !a.bench {
        return Ok(super::EXIT_OK);
    }
    if !(a.seconds.is_finite() && a.seconds >= 0.0) {
        anyhow::bail!("--seconds must be a number of seconds, 0 or more");
    }
    let opts = bench::BenchOptions {
        seconds: a.seconds,
        ..Default::default()
    };
    writeln!(out, "{:<36} {:>10}", "primitive (1 MiB per call)", "MB/s")?;
    out.flush()?;
    bench::run(&opts, &mut |r| {
        if io.is_ok() {
            io = writeln!(out, "{:<36} {:>10.1}  {}", r.name, r.mb_per_s(), r.note)
                .and_then(|_| out.flush());
        }
    })?;
    io?;
    Ok(super::EXIT_OK)
}
