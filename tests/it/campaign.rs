//! Crash and fault campaigns (docs/reliability.md): `create`, `prune`,
//! `compact`, `check --repair` and `replicate` are killed at every durable
//! step of the local store (each data write, fsync, rename, directory fsync
//! and delete, through the `STRATA_FAULT_STEP_*` failpoints) and by SIGKILL
//! at random moments. After each trial: the repository opens, `check
//! --verify-data` passes, every committed archive restores byte-identical,
//! running the operation again succeeds, and the second run re-sends at
//! most 10% of what the first one had landed. An EIO at any one step (an
//! fsync failing, say) makes the operation fail, commit nothing and leave a
//! valid repository: it is never retried and then committed.
//!
//! In the suite the campaign is bounded (every 8th step, 2 random
//! kills); `scripts/crash-campaign.sh` runs it long:
//! `STRATA_CAMPAIGN_STRIDE=1 STRATA_CAMPAIGN_KILLS=100`. Each test prints
//! its trial and failure counts (and appends them to
//! `$STRATA_CAMPAIGN_REPORT` when set).

use crate::util::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: reproducible random moments from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Bytes of complete pack files under `dir/data` (temporaries excluded).
fn pack_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir.join("data"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// An archive, the path it backed up, and a tree with what that path held
/// then (paths relative: in the trial's copy).
type Source = (&'static str, PathBuf, PathBuf);

/// One operation under test, with the state it starts from.
struct Campaign {
    name: &'static str,
    template: Env,
    args: fn(&Env) -> Vec<String>,
    /// Archives of the repository and the trees they hold (relative: in
    /// the trial's copy), restored whenever they are listed.
    sources: Vec<Source>,
    /// The repository the operation adds data to (re-sends are measured
    /// there), if it adds data.
    grows: Option<&'static str>,
    /// The repository starts damaged (for `check --repair`): it must open
    /// after a crash, and pass `check` once repaired and given the lost
    /// data again by a new backup of `heal`.
    heal: Option<PathBuf>,
}

#[derive(Default)]
struct Tally {
    trials: u32,
    failures: Vec<String>,
    landed: u64,
    resent: u64,
}

enum Trial {
    Step(u64),
    Eio(u64),
    Kill(Duration),
}

impl std::fmt::Display for Trial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trial::Step(n) => write!(f, "crash at step {n}"),
            Trial::Eio(n) => write!(f, "EIO at step {n}"),
            Trial::Kill(d) => write!(f, "SIGKILL after {} µs", d.as_micros()),
        }
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

impl Campaign {
    fn cmd(&self, env: &Env) -> std::process::Command {
        let mut c = env.std_cmd();
        c.args((self.args)(env))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    }

    /// A clean run on a copy: its duration, the pack bytes it adds, and
    /// its durable steps (all kinds, then fsyncs alone).
    fn baseline(&self) -> (Duration, u64, u64, u64) {
        let env = copy_of(&self.template);
        let before = self.grows.map_or(0, |g| pack_bytes(&env.path(g)));
        let log = env.path("steps.log");
        let start = Instant::now();
        let out = self
            .cmd(&env)
            .env("STRATA_FAULT_STEP_LOG", &log)
            .output()
            .unwrap();
        let elapsed = start.elapsed();
        assert!(
            matches!(code(&out), Some(0 | 1)),
            "{}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let grown = self.grows.map_or(0, |g| pack_bytes(&env.path(g)) - before);
        let steps = std::fs::read_to_string(&log).unwrap_or_default();
        let fsyncs = steps.lines().filter(|l| *l == "Fsync").count() as u64;
        (elapsed, grown, steps.lines().count() as u64, fsyncs)
    }

    /// Runs one trial; None when the operation ran to its end untouched
    /// (a step number past its last step).
    fn trial(&self, t: &Trial, baseline: u64, tally: &mut Tally) -> Option<()> {
        let env = copy_of(&self.template);
        let before = self.grows.map_or(0, |g| pack_bytes(&env.path(g)));
        let mut cmd = self.cmd(&env);
        let out = match t {
            Trial::Step(n) => cmd.env("STRATA_FAULT_STEP_AT", n.to_string()).output(),
            Trial::Eio(n) => cmd
                .env("STRATA_FAULT_STEP_AT", n.to_string())
                .env("STRATA_FAULT_STEP_KINDS", "fsync")
                .env("STRATA_FAULT_STEP_ACTION", "eio")
                .output(),
            Trial::Kill(d) => {
                let mut child = cmd.spawn().unwrap();
                std::thread::sleep(*d); // the random moment, not a synchronisation
                let _ = child.kill();
                child.wait_with_output()
            }
        }
        .unwrap();
        let completed = matches!(code(&out), Some(0 | 1));
        if completed && matches!(t, Trial::Step(_)) {
            return None;
        }
        tally.trials += 1;
        let r = self.verify(&env, t, &out, before, baseline, tally);
        if let Err(e) = r {
            eprintln!("{}: {t}: FAILED: {e}", self.name);
            tally.failures.push(format!("{t}: {e}"));
        }
        Some(())
    }

    fn verify(
        &self,
        env: &Env,
        t: &Trial,
        out: &std::process::Output,
        before: u64,
        baseline: u64,
        tally: &mut Tally,
    ) -> Result<(), String> {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Trial::Eio(_) = t {
            // a failed step fails the operation with one clear line
            // (2, or `replicate`'s own code for a failed replica)
            check(!matches!(code(out), Some(0 | 1) | None), || {
                format!("EIO did not fail the operation: {:?} {stderr}", code(out))
            })?;
            check(stderr.trim_end().lines().count() == 1, || {
                format!("not one line: {stderr}")
            })?;
        }
        let repos: Vec<&str> = match self.grows {
            Some(g) if g != "repo" => vec!["repo", g],
            _ => vec!["repo"],
        };
        for r in &repos {
            let loc = env.path(r).display().to_string();
            let listed = env.run(&["list", "--short", &loc]);
            check(listed.status.success(), || {
                format!(
                    "{r} does not open: {}",
                    String::from_utf8_lossy(&listed.stderr)
                )
            })?;
            if self.heal.is_none() {
                let c = env.run(&["check", "--verify-data", &loc]);
                check(c.status.success(), || {
                    format!("check of {r}: {}", String::from_utf8_lossy(&c.stderr))
                })?;
            }
        }
        let listed = env.ok(&["list", "--short", &env.repo()]);
        if self.heal.is_none() {
            for (name, src, held) in &self.sources {
                if listed.lines().any(|l| l == *name) {
                    restores(env, name, src, held)?;
                }
            }
        }
        if let Trial::Eio(_) = t {
            // nothing was committed by the failed operation
            if self.name == "create" {
                check(!listed.lines().any(|l| l == "new"), || {
                    "an operation that failed committed its archive".into()
                })?;
            }
        }
        if self.name == "create" && listed.lines().any(|l| l == "new") {
            // committed just before the end: the same command again needs a free name
            env.ok(&["rename", &format!("{}::new", env.repo()), "new-committed"]);
        }
        let landed = self.grows.map_or(0, |g| pack_bytes(&env.path(g)) - before);
        let again = self.cmd(env).output().unwrap();
        check(matches!(code(&again), Some(0 | 1)), || {
            format!(
                "running it again failed: {}",
                String::from_utf8_lossy(&again.stderr)
            )
        })?;
        if let Some(heal) = &self.heal {
            let out = env.run(&[
                "create",
                &format!("{}::heal", env.repo()),
                heal.to_str().unwrap(),
            ]);
            check(out.status.success(), || {
                format!(
                    "a backup after the repair: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        }
        for r in &repos {
            let loc = env.path(r).display().to_string();
            let c = env.run(&["check", "--verify-data", &loc]);
            check(c.status.success(), || {
                format!(
                    "check of {r} after the re-run: {}",
                    String::from_utf8_lossy(&c.stderr)
                )
            })?;
        }
        if let Some(g) = self.grows {
            let total = pack_bytes(&env.path(g)) - before;
            let resent = total.saturating_sub(baseline);
            tally.landed += landed;
            tally.resent += resent;
            // packs of a re-run group blobs differently: a few bytes of
            // envelope and header differ even when nothing is re-sent
            check(resent <= landed / 10 + 4096, || {
                format!("re-sent {resent} bytes of the {landed} that had landed")
            })?;
        }
        let listed = env.ok(&["list", "--short", &env.repo()]);
        for (name, src, held) in &self.sources {
            if listed.lines().any(|l| l == *name) {
                restores(env, name, src, held)?;
            }
        }
        Ok(())
    }

    /// Every `stride`-th step crashed, then the same with EIO, then `kills`
    /// random SIGKILLs. Panics with the failures, after reporting counts.
    fn run(&self) {
        let stride = env_u64("STRATA_CAMPAIGN_STRIDE", 8).max(1);
        let kills = env_u64("STRATA_CAMPAIGN_KILLS", 2);
        let seed = env_u64("STRATA_CAMPAIGN_SEED", 0)
            .max(1)
            .wrapping_add(self.name.len() as u64 * 0x9e37_79b9);
        let mut rng = Rng(seed | 1);
        let (duration, baseline, steps, fsyncs) = self.baseline();
        let mut tally = Tally::default();
        // a phase offset, so that short runs still reach different steps
        let first = 1 + rng.next() % stride;
        for at in (first..=steps).step_by(stride as usize) {
            if self.trial(&Trial::Step(at), baseline, &mut tally).is_none() {
                tally.failures.push(format!(
                    "step {at} of {steps}: the operation did not reach it"
                ));
            }
        }
        let crash_trials = tally.trials;
        for at in (first.min(fsyncs)..=fsyncs).step_by(stride as usize) {
            self.trial(&Trial::Eio(at), baseline, &mut tally);
        }
        let eio_trials = tally.trials - crash_trials;
        let micros = duration.as_micros().max(1) as u64;
        for _ in 0..kills {
            let d = Duration::from_micros(rng.next() % micros);
            self.trial(&Trial::Kill(d), baseline, &mut tally);
        }
        let line = format!(
            "campaign {}: {} trials ({crash_trials} crashes of {steps} steps, stride {stride}; {eio_trials} EIO of {fsyncs} fsyncs; {kills} SIGKILL within {} ms, seed {seed}), {} failures; re-sent {} of {} landed bytes",
            self.name,
            tally.trials,
            duration.as_millis(),
            tally.failures.len(),
            tally.resent,
            tally.landed
        );
        eprintln!("{line}");
        if let Ok(p) = std::env::var("STRATA_CAMPAIGN_REPORT") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let _ = writeln!(f, "{line}");
            }
        }
        assert!(
            steps >= 3 && crash_trials >= 1,
            "{}: only {steps} steps",
            self.name
        );
        assert!(
            tally.failures.is_empty(),
            "{line}:\n{}",
            tally.failures.join("\n")
        );
    }
}

fn restores(env: &Env, archive: &str, src: &Path, held: &Path) -> Result<(), String> {
    // a relative path is in this copy (joining keeps an absolute one)
    let (src, held) = (&env.dir.path().join(src), &env.dir.path().join(held));
    let dest = env.path(&format!("restore-{archive}"));
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    let out = env.run(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::{archive}", env.repo()),
    ]);
    check(out.status.success(), || {
        format!(
            "extract {archive}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let r = std::panic::catch_unwind(|| assert_same_tree(held, &restored(&dest, src)));
    check(r.is_ok(), || {
        format!("{archive} does not restore byte-identical")
    })
}

/// A repository with small packs (so one operation has many steps) and
/// archives of `src`.
fn template(archives: &[&'static str]) -> (Env, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("base"), random("base", 1 << 20)).unwrap();
    env.init(&["--chunker-params", "64K,256K,1M", "--pack-size", "1M"]);
    for (i, a) in archives.iter().enumerate() {
        std::fs::write(src.join("changing"), random(a, 300_000)).unwrap();
        env.ok(&[
            "create",
            &format!("{}::{a}", env.repo()),
            src.to_str().unwrap(),
        ]);
        if i + 1 < archives.len() {
            // keep what this archive holds, for restores
            let keep = env.path(&format!("src-{a}"));
            let ok = std::process::Command::new("cp")
                .arg("-a")
                .arg(&src)
                .arg(&keep)
                .status()
                .unwrap();
            assert!(ok.success());
        }
    }
    (env, src)
}

fn sources(archives: &[&'static str], src: &Path) -> Vec<Source> {
    let last = archives.len() - 1;
    archives
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let held = if i == last {
                PathBuf::from("src")
            } else {
                PathBuf::from(format!("src-{a}"))
            };
            (*a, src.to_path_buf(), held)
        })
        .collect()
}

#[test]
fn campaign_create() {
    let archives = ["a1"];
    let (env, src) = template(&archives);
    let new_src = env.path("src2");
    std::fs::create_dir(&new_src).unwrap();
    std::fs::write(new_src.join("new"), random("new", 3 << 20)).unwrap();
    let mut sources = sources(&archives, &src);
    // made by the trial, in its own copy
    drop(new_src);
    for a in ["new", "new-committed"] {
        sources.push((a, PathBuf::from("src2"), PathBuf::from("src2")));
    }
    Campaign {
        name: "create",
        args: |env| {
            vec![
                "create".into(),
                format!("{}::new", env.repo()),
                env.path("src2").display().to_string(),
            ]
        },
        template: env,
        sources,
        grows: Some("repo"),
        heal: None,
    }
    .run();
}

#[test]
fn campaign_prune_and_compact() {
    let archives = ["a1", "a2", "a3", "a4"];
    let (env, src) = template(&archives);
    let sources = sources(&archives, &src);
    let prune = Campaign {
        name: "prune",
        args: |env| vec!["prune".into(), "--keep-last".into(), "2".into(), env.repo()],
        template: copy_of(&env),
        sources: sources.clone(),
        grows: None,
        heal: None,
    };
    prune.run();
    env.ok(&["prune", "--keep-last", "2", &env.repo()]);
    Campaign {
        name: "compact",
        args: |env| {
            vec![
                "compact".into(),
                "--grace-period".into(),
                "0".into(),
                "--threshold".into(),
                "0".into(),
                env.repo(),
            ]
        },
        template: env,
        sources,
        grows: None,
        heal: None,
    }
    .run();
}

#[test]
fn campaign_check_repair() {
    let archives = ["a1"];
    let (env, src) = template(&archives);
    let sources = sources(&archives, &src);
    // damage the largest pack: repair salvages, reindexes and deletes
    let pack = walkdir::WalkDir::new(env.path("repo/data"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .into_path();
    let mut d = std::fs::read(&pack).unwrap();
    d[100] ^= 1;
    std::fs::write(&pack, d).unwrap();
    Campaign {
        name: "check --repair",
        args: |env| vec!["check".into(), "--repair".into(), env.repo()],
        template: env,
        sources,
        grows: None,
        heal: Some(src),
    }
    .run();
}

#[test]
fn campaign_replicate() {
    let archives = ["a1", "a2"];
    let (env, src) = template(&archives);
    let sources = sources(&archives, &src);
    env.ok(&["init", "-e", "none", env.path("pi").to_str().unwrap()]);
    Campaign {
        name: "replicate",
        args: |env| {
            vec![
                "replicate".into(),
                "--to".into(),
                env.path("pi").display().to_string(),
                env.repo(),
            ]
        },
        template: env,
        sources,
        grows: Some("pi"),
        heal: None,
    }
    .run();
}
