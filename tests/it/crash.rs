//! Crash safety: an operation killed (abort: like kill -9 or a power cut,
//! no destructors, no flushing) just before or just after each of its
//! writes and deletes in turn leaves a repository that opens, passes
//! `check --verify-data`, restores every committed archive exactly, and on
//! which running the operation again succeeds.

use crate::util::*;
use std::path::{Path, PathBuf};

/// Runs `op` on a fresh copy of `template` with a crash at mutation 1, 2, …
/// (before or after it) until it runs to the end; calls `verify` after each
/// crash. Returns the number of crash points.
fn crash_points(
    template: &Env,
    op: &dyn Fn(&Env) -> Vec<String>,
    when: &str,
    verify: &dyn Fn(&Env, u32),
) -> u32 {
    for at in 1u32.. {
        let env = copy_of(template);
        let args = op(&env);
        let out = env
            .cmd()
            .env("STRATA_FAULT_CRASH_AT", at.to_string())
            .env("STRATA_FAULT_CRASH_WHEN", when)
            .args(&args)
            .output()
            .unwrap();
        if out.status.code().is_some() {
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "{args:?} failed without a crash: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return at - 1;
        }
        verify(&env, at);
        // running it again completes the job
        let again = env.cmd().args(&args).output().unwrap();
        assert!(
            matches!(again.status.code(), Some(0 | 1)),
            "{args:?} after a crash {when} mutation {at}: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        env.ok(&["check", "--verify-data", &env.repo()]);
    }
    unreachable!()
}

fn restores(env: &Env, archive: &str, src: &Path) {
    let dest = env.path(&format!("restore-{archive}"));
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::{archive}", env.repo()),
    ]);
    assert_same_tree(src, &restored(&dest, src));
}

/// A repository with small packs, so that one operation has many writes.
fn template(archives: &[&str]) -> (Env, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("base"), random("base", 1 << 20)).unwrap();
    env.init(&["--chunker-params", "64K,256K,1M", "--pack-size", "1M"]);
    for a in archives {
        env.ok(&[
            "create",
            &format!("{}::{a}", env.repo()),
            src.to_str().unwrap(),
        ]);
    }
    (env, src)
}

#[test]
fn create_crashing_before_or_after_any_mutation() {
    let (template, src) = template(&["base"]);
    // the new backup: 3 MiB of new data, so several packs and an index
    let new_src = template.path("src2");
    std::fs::create_dir(&new_src).unwrap();
    std::fs::write(new_src.join("new"), random("new", 3 << 20)).unwrap();
    let op = |env: &Env| {
        vec![
            "create".to_string(),
            format!("{}::new", env.repo()),
            env.path("src2").display().to_string(),
        ]
    };
    for when in ["before", "after"] {
        let verify = |env: &Env, at: u32| {
            let listed = env.ok(&["list", "--short", &env.repo()]);
            assert!(
                listed == "base\n" || listed == "base\nnew\n",
                "{when} {at}: {listed}"
            );
            env.ok(&["check", "--verify-data", &env.repo()]);
            restores(env, "base", &src);
            if listed.contains("new") {
                // committed just before the crash: complete and restorable;
                // renamed so that running the same command again can work
                restores(env, "new", &env.path("src2"));
                env.ok(&["rename", &format!("{}::new", env.repo()), "new-committed"]);
            }
        };
        let points = crash_points(&template, &op, when, &verify);
        assert!(points >= 8, "{when}: only {points} mutations");
    }
}

#[test]
fn prune_crashing_before_or_after_any_mutation() {
    let (template, src) = template(&["a1", "a2", "a3", "a4"]);
    let op = |env: &Env| {
        vec![
            "prune".to_string(),
            "--keep-last".into(),
            "1".into(),
            env.repo(),
        ]
    };
    for when in ["before", "after"] {
        let verify = |env: &Env, at: u32| {
            let listed = env.ok(&["list", "--short", &env.repo()]);
            assert!(
                listed == "a1\na2\na3\na4\n" || listed == "a4\n",
                "{when} {at}: {listed}"
            );
            env.ok(&["check", "--verify-data", &env.repo()]);
            restores(env, "a4", &src);
        };
        let points = crash_points(&template, &op, when, &verify);
        assert!(points >= 3, "{when}: only {points} mutations");
    }
}

#[test]
fn repair_crashing_before_or_after_any_mutation() {
    let (template, src) = template(&["a"]);
    // damage one pack: repair must salvage, reindex and delete
    let pack = walkdir::WalkDir::new(template.path("repo/data"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .into_path();
    let mut d = std::fs::read(&pack).unwrap();
    d[100] ^= 1;
    std::fs::write(&pack, d).unwrap();
    // the lost chunk comes back from a second source holding the same data
    let op = |env: &Env| vec!["check".to_string(), "--repair".into(), env.repo()];
    for when in ["before", "after"] {
        let verify = |env: &Env, at: u32| {
            // a crashed repair leaves a repository that opens and lists
            assert_eq!(
                env.ok(&["list", "--short", &env.repo()]),
                "a\n",
                "{when} {at}"
            );
            let r = env.run(&["check", "--repair", "--json", &env.repo()]);
            assert!(
                matches!(r.status.code(), Some(0 | 1)),
                "repair after a crash {when} {at}: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            // the data heals from a new backup of the same source
            env.ok(&[
                "create",
                &format!("{}::heal", env.repo()),
                src.to_str().unwrap(),
            ]);
            env.ok(&["check", "--verify-data", &env.repo()]);
            restores(env, "a", &src);
        };
        let points = crash_points(&template, &op, when, &verify);
        assert!(points >= 3, "{when}: only {points} mutations");
    }
}
