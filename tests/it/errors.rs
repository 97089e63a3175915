use crate::util::*;

fn one_line_error(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "expected exit 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("strata: error: ") && err.contains(needle),
        "{err}"
    );
}

#[test]
fn missing_repository_and_archive() {
    let env = Env::new();
    one_line_error(
        &env.run(&["list", env.path("nope").to_str().unwrap()]),
        "is not a strata repository",
    );
    env.init(&[]);
    one_line_error(
        &env.run(&["extract", &format!("{}::ghost", env.repo())]),
        "archive `ghost` does not exist",
    );
    one_line_error(&env.run(&["init", &env.repo()]), "already exists");
    let src = env.path("repo/config");
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    one_line_error(
        &env.run(&[
            "create",
            &format!("{}::a", env.repo()),
            src.to_str().unwrap(),
        ]),
        "already exists",
    );
    one_line_error(
        &env.run(&[
            "create",
            "-C",
            "gzip",
            &format!("{}::b", env.repo()),
            src.to_str().unwrap(),
        ]),
        "bad compression",
    );
}

#[test]
fn missing_source_path_is_a_warning() {
    let env = Env::new();
    env.init(&[]);
    let out = env.run(&[
        "create",
        &format!("{}::a", env.repo()),
        env.path("does-not-exist").to_str().unwrap(),
        env.path("repo/config").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "a\n");
}

#[test]
fn rolled_back_manifest_is_detected() {
    let env = Env::new();
    env.init(&[]);
    let src = env.path("repo/config");
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    let m1 = env.path("repo/manifest/00000000000000000001");
    let saved = std::fs::read(&m1).unwrap();
    env.ok(&[
        "create",
        &format!("{}::b", env.repo()),
        src.to_str().unwrap(),
    ]);
    // an attacker (or a bad restore) puts back the older manifest
    std::fs::remove_file(env.path("repo/manifest/00000000000000000002")).unwrap();
    std::fs::write(&m1, saved).unwrap();
    one_line_error(&env.run(&["list", &env.repo()]), "rolled back");
    // a manifest renamed to a newer generation fails authentication
    std::fs::rename(&m1, env.path("repo/manifest/00000000000000000003")).unwrap();
    one_line_error(&env.run(&["list", &env.repo()]), "authentication failed");
}

#[test]
fn downgrade_to_unencrypted_config_is_refused() {
    let env = Env::new();
    env.init(&[]);
    let cfg_path = env.path("repo/config");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["encryption"] = "none".into();
    cfg["cipher"] = serde_json::Value::Null;
    cfg["public_chunker_seed"] = "00".repeat(32).into();
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    one_line_error(&env.run(&["list", &env.repo()]), "downgrade");
    // the same with a fresh repository id (no per-id record to compare with)
    cfg["id"] = "ab".repeat(32).into();
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    one_line_error(
        &env.run(&["list", &env.repo()]),
        "replaced or tampered with",
    );
    // an id that is not hex would put client files anywhere: refused
    cfg["id"] = "../../../../tmp/evil".into();
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    one_line_error(&env.run(&["list", &env.repo()]), "64 lower-case hex");
}

#[test]
fn locks_exclude_writers_and_stale_locks_are_broken() {
    let env = Env::new();
    env.init(&[]);
    // a writer blocked on its standard input holds the exclusive lock
    let mut holder = env.spawn_locked_writer("held");
    let locks = env.path("repo/locks");
    let out = env.run(&[
        "--lock-wait",
        "0",
        "create",
        &format!("{}::second", env.repo()),
        env.path("repo/config").to_str().unwrap(),
    ]);
    one_line_error(&out, "is locked by");
    drop(holder.stdin.take()); // EOF: the writer finishes and unlocks
    assert!(holder.wait().unwrap().success());
    assert_eq!(
        std::fs::read_dir(&locks).unwrap().count(),
        0,
        "lock not removed"
    );
    // a lock left by a dead process on this host is stale
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let host = strata::repo::lock::hostname();
    let stale = serde_json::json!({"hostname": host, "pid": pid, "exclusive": true, "time": chrono::Utc::now().timestamp()});
    std::fs::write(locks.join("x-0000000000000000"), stale.to_string()).unwrap();
    env.ok(&[
        "--lock-wait",
        "0",
        "create",
        &format!("{}::after-stale", env.repo()),
        env.path("repo/config").to_str().unwrap(),
    ]);
}

#[test]
fn full_disk_fails_cleanly_and_keeps_the_repository() {
    let env = Env::new();
    let disk = Tmpfs::mount(env.path("small"), "6m");
    let mnt = disk.0.clone();
    let repo = mnt.join("repo").display().to_string();
    env.ok(&["init", &repo]);
    let small = env.path("small-src");
    std::fs::create_dir(&small).unwrap();
    std::fs::write(small.join("a"), random("a", 100_000)).unwrap();
    env.ok(&["create", &format!("{repo}::fits"), small.to_str().unwrap()]);
    let big = env.path("big-src");
    std::fs::create_dir(&big).unwrap();
    std::fs::write(big.join("b"), random("b", 20 << 20)).unwrap();
    let out = env.run(&["create", &format!("{repo}::too-big"), big.to_str().unwrap()]);
    one_line_error(&out, "no space left");
    assert_eq!(env.ok(&["list", "--short", &repo]), "fits\n");
    let dest = env.path("out");
    std::fs::create_dir(&dest).unwrap();
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{repo}::fits"),
    ]);
    assert_same_tree(&small, &restored(&dest, &small));
}

#[test]
fn a_second_writer_waits_for_the_lock_then_succeeds() {
    let env = Env::new();
    env.init(&[]);
    // a writer blocked on its standard input holds the exclusive lock
    let mut holder = env.spawn_locked_writer("first");
    let mut waiter = env
        .std_cmd()
        .args([
            "--lock-wait",
            "60",
            "create",
            &format!("{}::second", env.repo()),
            env.path("repo/config").to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // the waiter says when it starts waiting: only then let the holder end
    use std::io::{BufRead, Write};
    let mut err = std::io::BufReader::new(waiter.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(
        line.contains("waiting up to 60 s for an exclusive lock"),
        "{line}"
    );
    holder.stdin.take().unwrap().write_all(b"data").unwrap();
    assert!(holder.wait().unwrap().success());
    assert!(waiter.wait().unwrap().success());
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "first\nsecond\n");
}
