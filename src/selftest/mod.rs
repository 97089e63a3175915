//! `strata selftest`: known-answer tests of every primitive whose result is
//! stored on disk, so a build that computes wrong answers on an odd machine
//! (a 32-bit ARM Pi, a new compiler, a miscompiled C dependency) is caught
//! before it writes a repository that nobody else can read. borg does the
//! same at start-up (`selftest.py`).
//!
//! The answers were computed once on x86_64 and are pinned below; a build
//! that disagrees on any of them is broken on its platform. To re-pin after
//! an intended format change: `cargo test selftest::tests::print_answers --
//! --ignored --nocapture` on x86_64, and paste.

pub mod bench;
mod kats;

use crate::crypto::{Cipher, cpu_has_aes};

/// One known-answer test: `run` computes the answer (or fails outright,
/// e.g. when a round trip does not give back its input).
pub struct Kat {
    pub name: &'static str,
    pub want: &'static str,
    pub run: fn() -> Result<String, String>,
}

/// A known-answer test that did not give its known answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KatFailure {
    pub name: &'static str,
    pub detail: String,
}

impl std::fmt::Display for KatFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.detail)
    }
}

/// The selftest failed: this build must not touch repositories.
#[derive(Debug, thiserror::Error)]
#[error(
    "selftest failed on {platform}: {}; this build of strata computes wrong results on this machine: do not use it (details: `strata selftest --verbose`)",
    summary(.failures)
)]
pub struct SelftestError {
    pub platform: String,
    pub failures: Vec<KatFailure>,
}

fn summary(failures: &[KatFailure]) -> String {
    let mut s = failures
        .first()
        .map(|f| f.to_string())
        .unwrap_or_else(|| "no test ran".into());
    if failures.len() > 1 {
        let rest: Vec<&str> = failures[1..].iter().map(|f| f.name).collect();
        s.push_str(&format!(" (also failed: {})", rest.join(", ")));
    }
    s
}

/// What a passing selftest found out about this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub passed: usize,
    pub platform: String,
    pub aes_instructions: bool,
    pub default_cipher: Cipher,
}

/// `aarch64 (64-bit, little-endian)`.
pub fn platform() -> String {
    format!(
        "{} ({}-bit, {}-endian)",
        std::env::consts::ARCH,
        usize::BITS,
        if cfg!(target_endian = "little") {
            "little"
        } else {
            "big"
        }
    )
}

/// Every known-answer test strata runs.
pub fn all() -> &'static [Kat] {
    kats::ALL
}

/// Runs every known-answer test (a few milliseconds on a Pi).
pub fn run() -> Result<Report, SelftestError> {
    run_with(all(), &mut |_, _| {})
}

/// Runs `kats`, telling `each` about every one (with its failure, if any).
pub fn run_with(
    kats: &[Kat],
    each: &mut dyn FnMut(&Kat, Option<&KatFailure>),
) -> Result<Report, SelftestError> {
    let mut failures = Vec::new();
    for kat in kats {
        let failure = check(kat);
        each(kat, failure.as_ref());
        failures.extend(failure);
    }
    let platform = platform();
    if !failures.is_empty() || kats.is_empty() {
        return Err(SelftestError { platform, failures });
    }
    let aes = cpu_has_aes();
    Ok(Report {
        passed: kats.len(),
        platform,
        aes_instructions: aes,
        default_cipher: Cipher::default_for(aes),
    })
}

fn check(kat: &Kat) -> Option<KatFailure> {
    // A dependency that panics on this platform is a failed test, not a
    // crashed daemon.
    let got = std::panic::catch_unwind(kat.run).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(format!("panicked: {msg}"))
    });
    let detail = match got {
        Ok(got) if got == kat.want => return None,
        Ok(got) => format!("got {}, known answer {}", short(&got), short(kat.want)),
        Err(e) => e,
    };
    Some(KatFailure {
        name: kat.name,
        detail,
    })
}

/// Long answers are cut for the one-line message; `--verbose` has them all.
fn short(s: &str) -> String {
    if s.len() <= 80 {
        s.to_string()
    } else {
        let cut = (0..=80).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        format!("{}...", &s[..cut])
    }
}

/// Deterministic bytes (xorshift64*), independent of every primitive under
/// test, so a failure points at the primitive and not at its input.
pub fn pseudo_random(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Deterministic log-like text: compresses about as well as /var/log.
pub fn log_text(seed: u64, n: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "backup", "chunk", "ok", "pack", "index", "manifest", "sync", "error", "retry", "wrote",
        "read", "usb",
    ];
    let r = pseudo_random(seed, n / 4 + 64);
    let mut out = Vec::with_capacity(n + 128);
    let mut i = 0usize;
    while out.len() < n {
        let b = |k: usize| r[(i + k) % r.len()] as u32;
        let line = format!(
            "2026-11-25T{:02}:{:02}:{:02} pi-{} strata[{}]: {} {} {} bytes={}\n",
            b(0) % 24,
            b(1) % 60,
            b(2) % 60,
            b(3) % 4,
            1000 + b(4) * 7,
            WORDS[b(5) as usize % WORDS.len()],
            WORDS[b(6) as usize % WORDS.len()],
            WORDS[b(7) as usize % WORDS.len()],
            b(8) * b(9) * 31
        );
        out.extend_from_slice(line.as_bytes());
        i += 10;
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_answer_holds() {
        let mut failed = Vec::new();
        let r = run_with(all(), &mut |k, f| {
            if let Some(f) = f {
                failed.push(format!("{}: {}", k.name, f.detail));
            }
        });
        assert!(failed.is_empty(), "{failed:#?}");
        let r = r.unwrap();
        assert_eq!(r.passed, all().len());
        assert_eq!(r.default_cipher, Cipher::default_for_cpu());
    }

    #[test]
    fn a_wrong_answer_fails_with_one_line_naming_it() {
        let kats = [
            Kat {
                name: "good",
                want: "42",
                run: || Ok("42".into()),
            },
            Kat {
                name: "chunker cut points",
                want: "1,2,3",
                run: || Ok("1,2,4".into()),
            },
            Kat {
                name: "round trip",
                want: "x",
                run: || Err("decompressed bytes differ".into()),
            },
            Kat {
                name: "panics",
                want: "x",
                run: || panic!("boom"),
            },
        ];
        let e = run_with(&kats, &mut |_, _| {}).unwrap_err();
        assert_eq!(e.failures.len(), 3);
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.contains("chunker cut points: got 1,2,4, known answer 1,2,3"),
            "{msg}"
        );
        assert!(msg.contains("also failed: round trip, panics"), "{msg}");
        assert!(msg.contains(&platform()), "{msg}");
        assert_eq!(e.failures[2].detail, "panicked: boom");
    }

    #[test]
    fn no_tests_is_a_failure() {
        assert!(run_with(&[], &mut |_, _| {}).is_err());
    }

    #[test]
    fn inputs_are_deterministic() {
        assert_eq!(pseudo_random(1, 100), pseudo_random(1, 100));
        assert_ne!(pseudo_random(1, 100), pseudo_random(2, 100));
        assert_eq!(log_text(5, 1000).len(), 1000);
        assert!(log_text(5, 1000).starts_with(b"2026-11-25T"));
    }

    /// Writes src/selftest/known/*.bin from this build's compressors.
    #[test]
    #[ignore]
    fn write_known_forms() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/selftest/known");
        for (spec, _) in kats::KNOWN_FORMS {
            let form = crate::compress::Compression::parse(spec)
                .unwrap()
                .compress(&kats::known_input());
            assert_ne!(form[0], crate::compress::COMPRESSION_NONE, "{spec}");
            let file = spec.split(',').next().unwrap();
            std::fs::write(dir.join(format!("{file}.bin")), form).unwrap();
        }
    }

    /// Prints the current answers, for pinning in kats.rs.
    #[test]
    #[ignore]
    fn print_answers() {
        for k in all() {
            println!("{:<40} {:?}", k.name, (k.run)());
        }
        println!("{}", kats::make_pinned_key_file());
    }
}
