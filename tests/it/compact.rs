//! compact: frees space, keeps every used byte, survives crashes at every
//! write and delete, a full disk, and a writer paused in the middle.

use crate::util::*;
use std::path::Path;

fn du(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Two archives sharing half their data; `a` then deleted.
fn setup(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("keep")).unwrap();
    std::fs::create_dir_all(src.join("drop")).unwrap();
    std::fs::write(src.join("keep/k1"), random("k1", 3 << 20)).unwrap();
    std::fs::write(src.join("drop/d1"), random("d1", 4 << 20)).unwrap();
    env.init(&["--chunker-params", "64K,256K,1M", "--pack-size", "1M"]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(src.join("drop")).unwrap();
    std::fs::write(src.join("keep/k2"), random("k2", 1 << 20)).unwrap();
    env.ok(&[
        "create",
        &format!("{}::b", env.repo()),
        src.to_str().unwrap(),
    ]);
    env.ok(&["delete", &format!("{}::a", env.repo())]);
    src
}

fn assert_b_restores(env: &Env, src: &Path) {
    let dest = env.path("restore-b");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir(&dest).unwrap();
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::b", env.repo()),
    ]);
    assert_same_tree(src, &restored(&dest, src));
}

#[test]
fn compact_frees_unused_space_and_keeps_everything_used() {
    let env = Env::new();
    let src = setup(&env);
    let before = du(&env.path("repo"));
    // within the grace period nothing is touched
    env.ok(&["compact", &env.repo()]);
    assert_eq!(du(&env.path("repo")), before);
    env.ok(&[
        "compact",
        "--grace-period",
        "0",
        "--threshold",
        "0",
        &env.repo(),
    ]);
    let after = du(&env.path("repo"));
    assert!(
        after + (3 << 20) < before,
        "freed only {} bytes",
        before.saturating_sub(after)
    );
    let report: serde_json::Value =
        serde_json::from_str(&env.ok(&["check", "--verify-data", "--json", &env.repo()])).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["notes"].as_array().unwrap().len(),
        0,
        "leftovers after compact: {report}"
    );
    assert_b_restores(&env, &src);
    // compacting a compact repository changes nothing
    env.ok(&[
        "compact",
        "--grace-period",
        "0",
        "--threshold",
        "0",
        &env.repo(),
    ]);
    assert_eq!(du(&env.path("repo")), after);
}

#[test]
fn compact_crashing_before_or_after_any_write_or_delete_loses_nothing() {
    for when in ["before", "after"] {
        let template = Env::new();
        let src = setup(&template);
        let mut crashes = 0;
        for at in 1.. {
            let env = Env::new();
            std::process::Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", template.dir.path().display()))
                .arg(env.dir.path())
                .status()
                .unwrap();
            let out = env
                .cmd()
                .env("STRATA_FAULT_CRASH_AT", at.to_string())
                .env("STRATA_FAULT_CRASH_WHEN", when)
                .args(["compact", "--grace-period", "0", &env.repo()])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert_eq!(
                out.status.code(),
                None,
                "{when} {at}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            crashes += 1;
            let check = env.run(&["check", "--verify-data", &env.repo()]);
            assert!(
                check.status.success(),
                "check after a crash {when} mutation {at}: {}",
                String::from_utf8_lossy(&check.stderr)
            );
            let src_here = src.clone();
            assert_b_restores(&env, &src_here);
            // running compact again completes the job
            env.ok(&["compact", "--grace-period", "0", &env.repo()]);
            let report: serde_json::Value =
                serde_json::from_str(&env.ok(&["check", "--verify-data", "--json", &env.repo()]))
                    .unwrap();
            assert_eq!(report["ok"], true);
            assert_b_restores(&env, &src_here);
        }
        assert!(crashes >= 4, "{when}: only {crashes} crash points");
    }
}

#[test]
fn a_writer_paused_during_compaction_commits_nothing_and_loses_nothing() {
    let env = Env::new();
    let src = setup(&env);
    // a writer blocked on its standard input holds the exclusive lock
    let mut writer = env.spawn_locked_writer("paused");
    // the writer "hangs"; an operator breaks its lock and compacts
    env.ok(&["break-lock", &env.repo()]);
    env.ok(&["compact", "--grace-period", "0", &env.repo()]);
    use std::io::Write;
    let mut stdin = writer.stdin.take().unwrap();
    stdin.write_all(&random("late", 2 << 20)).unwrap();
    drop(stdin);
    let out = writer.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "the paused writer must not commit"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run the command again"), "{err}");
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "b\n");
    env.ok(&["check", "--verify-data", &env.repo()]);
    assert_b_restores(&env, &src);
}

#[test]
fn compact_on_a_full_disk_fails_cleanly_then_succeeds() {
    let env = Env::new();
    let disk = Tmpfs::mount(env.path("small"), "40m");
    let mnt = disk.0.clone();
    let repo = mnt.join("repo").display().to_string();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // one pack mostly unused, so compact must write a new pack to free it
    std::fs::write(src.join("keep"), random("keep", 4 << 20)).unwrap();
    std::fs::write(src.join("drop"), random("drop", 8 << 20)).unwrap();
    env.ok(&["init", &repo]);
    env.ok(&["create", &format!("{repo}::a"), src.to_str().unwrap()]);
    std::fs::remove_file(src.join("drop")).unwrap();
    env.ok(&["create", &format!("{repo}::b"), src.to_str().unwrap()]);
    env.ok(&["delete", &format!("{repo}::a")]);
    // fill the disk so that the rewritten pack cannot be written
    let free = rustix::fs::statvfs(&mnt).unwrap();
    let fill = free.f_bavail * free.f_frsize - (1 << 20);
    std::fs::write(mnt.join("filler"), vec![1u8; fill as usize]).unwrap();
    let out = env.run(&["compact", "--grace-period", "0", &repo]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no space left"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["check", "--verify-data", &repo]);
    std::fs::remove_file(mnt.join("filler")).unwrap();
    env.ok(&["compact", "--grace-period", "0", &repo]);
    env.ok(&["check", "--verify-data", &repo]);
    let dest = env.path("out");
    std::fs::create_dir(&dest).unwrap();
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{repo}::b"),
    ]);
    assert_same_tree(&src, &restored(&dest, &src));
}

fn age_files(dir: &Path, secs: i64) {
    let t = chrono::Utc::now().timestamp() - secs;
    let ts = rustix::fs::Timespec {
        tv_sec: t,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    for e in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
    {
        rustix::fs::utimensat(
            rustix::fs::CWD,
            e.path(),
            &times,
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    }
}

#[test]
fn archives_dropped_within_the_grace_period_keep_their_data() {
    let env = Env::new();
    let src = setup(&env); // `a` was deleted just now
    age_files(&env.path("repo/data"), 7200);
    let before = du(&env.path("repo/data"));
    env.ok(&["compact", "--threshold", "0", &env.repo()]);
    assert_eq!(
        du(&env.path("repo/data")),
        before,
        "data of a just-deleted archive was reclaimed"
    );
    // once the manifests that still list it are older than the grace period
    age_files(&env.path("repo/manifest"), 7200);
    env.ok(&["compact", "--threshold", "0", &env.repo()]);
    assert!(du(&env.path("repo/data")) + (3 << 20) < before);
    env.ok(&["check", "--verify-data", &env.repo()]);
    assert_b_restores(&env, &src);
}

#[test]
fn append_only_repositories_never_lose_a_file() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), random("f", 1 << 20)).unwrap();
    env.init(&["--append-only"]);
    let files = |env: &Env| -> std::collections::BTreeSet<String> {
        walkdir::WalkDir::new(env.path("repo"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && !e.path().starts_with(env.path("repo/locks")))
            .map(|e| e.path().display().to_string())
            .collect()
    };
    let mut seen = files(&env);
    let mut step = |args: &[&str], expect_ok: bool| {
        let out = env.run(args);
        assert_eq!(
            out.status.success(),
            expect_ok,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let now = files(&env);
        assert!(now.is_superset(&seen), "{args:?} deleted a file");
        seen = now;
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for n in ["a", "b", "c", "d"] {
        step(
            &[
                "create",
                &format!("{}::{n}", env.repo()),
                src.to_str().unwrap(),
            ],
            true,
        );
    }
    step(&["delete", &format!("{}::a", env.repo())], true);
    step(&["prune", "--keep-last", "1", &env.repo()], true);
    let err = step(&["compact", "--grace-period", "0", &env.repo()], false);
    assert!(err.contains("append-only"), "{err}");
    let err = step(&["check", "--repair", &env.repo()], false);
    assert!(err.contains("append-only"), "{err}");
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "d\n");
    // every manifest generation is still there: the dropped archives' history
    assert_eq!(
        std::fs::read_dir(env.path("repo/manifest"))
            .unwrap()
            .count(),
        6
    );
    env.ok(&["check", "--verify-data", &env.repo()]);
    // the history is readable and recoverable: generation 4 listed a..d
    let gens = env.ok(&["list", "--generations", &env.repo()]);
    assert_eq!(gens.lines().count(), 6, "{gens}");
    assert_eq!(
        env.ok(&["--generation", "4", "list", "--short", &env.repo()]),
        "a\nb\nc\nd\n"
    );
    let out = env.run(&["--generation", "4", "delete", &format!("{}::d", env.repo())]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--generation must not allow writes"
    );
    let back = env.ok(&["undelete", "--from-generation", "4", &env.repo()]);
    assert_eq!(back, "Restored: a\nRestored: b\nRestored: c\n");
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "a\nb\nc\nd\n");
    env.ok(&["check", "--verify-data", &env.repo()]);
    let dest = env.path("out");
    std::fs::create_dir(&dest).unwrap();
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::a", env.repo()),
    ]);
    assert_same_tree(&src, &restored(&dest, &src));
}

#[test]
fn compact_removes_temporary_files_of_interrupted_writes_after_the_grace_period() {
    let env = Env::new();
    setup(&env);
    let old = env.path("repo/data/00/.tmp-0123456789abcdef-old");
    let young = env.path("repo/index/.tmp-0123456789abcdef-young");
    std::fs::write(&old, vec![0u8; 4096]).unwrap();
    age_files(&env.path("repo/data/00"), 7200);
    std::fs::write(&young, vec![0u8; 4096]).unwrap();
    let out = env.run(&["compact", &env.repo()]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 temporary files removed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!old.exists(), "a stale temporary file was left");
    assert!(
        young.exists(),
        "a temporary file of a running writer was removed"
    );
    env.ok(&["check", "--verify-data", &env.repo()]);
}
