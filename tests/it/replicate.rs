//! `strata replicate` on local repositories: what a replica holds, what a
//! second run reads, consistency beside backups and compaction, damaged
//! sources, dry runs and failing targets. The multi-host, real-SSH version
//! is in `offsite.rs`.

use crate::util::{Env, assert_same_tree, make_tree, random, restored};
use std::collections::BTreeMap;
use std::path::Path;

/// Every file of a repository directory but its locks: relative path → bytes.
fn repo_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        if rel.starts_with("locks/") {
            continue;
        }
        out.insert(rel, std::fs::read(e.path()).unwrap());
    }
    out
}

fn replicate_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["replicate", "--json"];
    all.extend_from_slice(args);
    let out = env.ok(&all);
    serde_json::from_str(&out).unwrap()
}

fn only_replica(v: &serde_json::Value) -> &serde_json::Value {
    let list = v["replicas"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["ok"], true, "{v}");
    &list[0]
}

fn extract_to(env: &Env, archive: &str, dest: &str) {
    let dest = env.path(dest);
    std::fs::create_dir_all(&dest).unwrap();
    let out = env
        .cmd()
        .arg("extract")
        .arg(archive)
        .current_dir(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn replica_restores_the_host_repository_and_a_second_run_reads_only_new_files() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let host = env.path("central/host1");
    let host_s = host.display().to_string();
    env.ok(&["init", "-e", "repokey", &host_s]);
    env.ok(&["create", &format!("{host_s}::one"), src.to_str().unwrap()]);
    let pi = env.path("pi").display().to_string();
    env.ok(&["init", "-e", "none", &pi]);

    let first = replicate_json(&env, &["--to", &pi, &host_s]);
    let r1 = only_replica(&first);
    let before = repo_files(&host);
    assert_eq!(r1["files"], before.len() as u64);
    assert_eq!(r1["read_files"], before.len() as u64);
    assert_eq!(r1["unchanged_files"], 0);

    std::fs::write(src.join("new-file"), random("replicate-new", 3_000_000)).unwrap();
    env.ok(&["create", &format!("{host_s}::two"), src.to_str().unwrap()]);
    let after = repo_files(&host);
    let second = replicate_json(&env, &["--to", &pi, &host_s]);
    let r2 = only_replica(&second);
    // Packs and index files already replicated are not read again; the
    // small metadata files (config, keys, manifests) always are.
    let content_addressed = |p: &str| p.starts_with("data/") || p.starts_with("index/");
    let reused = after
        .keys()
        .filter(|p| content_addressed(p) && before.contains_key(*p))
        .count() as u64;
    assert!(reused > 0);
    assert_eq!(r2["unchanged_files"], reused, "{r2}");
    assert_eq!(r2["read_files"], after.len() as u64 - reused, "{r2}");
    assert_eq!(r2["previous"], r1["archive"]);
    let new_bytes: u64 = after
        .iter()
        .filter(|(p, _)| !(content_addressed(p) && before.contains_key(*p)))
        .map(|(_, d)| d.len() as u64)
        .sum();
    assert_eq!(r2["read_bytes"], new_bytes);

    // The newest replica is the repository, byte for byte, and opens with
    // the host's passphrase.
    let name2 = r2["archive"].as_str().unwrap();
    extract_to(&env, &format!("{pi}::{name2}"), "out2");
    assert_eq!(repo_files(&env.path("out2/host1")), after);
    let nested = env.path("out2/host1").display().to_string();
    extract_to(&env, &format!("{nested}::two"), "files2");
    assert_same_tree(&src, &restored(&env.path("files2"), &src));

    // The first replica is the repository as it was: a client that never
    // saw the newer state (the host's key, a fresh machine) restores `one`.
    let name1 = r1["archive"].as_str().unwrap();
    extract_to(&env, &format!("{pi}::{name1}"), "out1");
    assert_eq!(repo_files(&env.path("out1/host1")), before);
    let fresh = env.path("fresh-cache").display().to_string();
    let list = env.ok_with(
        &[("STRATA_CACHE_DIR", &fresh)],
        &["list", "--short", env.path("out1/host1").to_str().unwrap()],
    );
    assert_eq!(list.trim(), "one");

    env.ok(&["check", "--verify-data", &pi]);
}

fn write_pin(repo: &Path) -> std::path::PathBuf {
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let pin = serde_json::json!({
        "hostname": host, "pid": std::process::id(), "exclusive": false,
        "mode": "pin", "time": chrono::Utc::now().timestamp(),
    });
    let path = repo.join("locks/p-0123456789abcdef");
    std::fs::write(&path, pin.to_string()).unwrap();
    path
}

#[test]
fn replication_runs_beside_a_backup_and_compaction_waits_for_it() {
    let env = Env::new();
    env.init(&["-e", "repokey"]);
    let src = env.path("src");
    make_tree(&src);
    let repo = env.repo();
    env.ok(&["create", &format!("{repo}::one"), src.to_str().unwrap()]);
    let pi = env.path("pi").display().to_string();
    env.ok(&["init", "-e", "none", &pi]);

    // A backup holds the exclusive lock: replication still runs, and copies
    // the last committed state.
    let mut writer = env.spawn_locked_writer("two");
    let v = replicate_json(&env, &["--lock-wait", "0", "--to", &pi, &repo]);
    let r = only_replica(&v);
    {
        use std::io::Write;
        let mut stdin = writer.stdin.take().unwrap();
        stdin.write_all(&random("beside", 1_000_000)).unwrap();
    }
    assert!(writer.wait().unwrap().success());
    extract_to(
        &env,
        &format!("{pi}::{}", r["archive"].as_str().unwrap()),
        "out",
    );
    let fresh = env.path("fresh-cache").display().to_string();
    let list = env.ok_with(
        &[("STRATA_CACHE_DIR", &fresh)],
        &["list", "--short", env.path("out/repo").to_str().unwrap()],
    );
    assert_eq!(list.trim(), "one");
    env.ok_with(
        &[("STRATA_CACHE_DIR", &fresh)],
        &["check", env.path("out/repo").to_str().unwrap()],
    );

    // While a replication pin is held, compaction (which deletes packs)
    // refuses, and backups go on.
    let pin = write_pin(&env.path("repo"));
    let out = env.run(&["--lock-wait", "0", "compact", &repo]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pin (replicate or mount)"), "{err}");
    env.ok(&[
        "--lock-wait",
        "0",
        "create",
        &format!("{repo}::three"),
        src.to_str().unwrap(),
    ]);
    std::fs::remove_file(pin).unwrap();
    env.ok(&["--lock-wait", "0", "compact", &repo]);
}

/// The pack file (relative path) a fresh backup of `data` adds.
fn new_pack_of(repo: &Path, before: &BTreeMap<String, Vec<u8>>) -> String {
    let after = repo_files(repo);
    let mut added: Vec<_> = after
        .iter()
        .filter(|(p, _)| p.starts_with("data/") && !before.contains_key(*p))
        .collect();
    added.sort_by_key(|(_, d)| std::cmp::Reverse(d.len()));
    added[0].0.clone()
}

#[test]
fn damaged_source_packs_are_reported_and_never_replace_a_good_copy() {
    let env = Env::new();
    env.init(&["-e", "repokey"]);
    let repo = env.repo();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), random("damage-a", 4_000_000)).unwrap();
    env.ok(&["create", &format!("{repo}::one"), src.to_str().unwrap()]);
    let pi = env.path("pi").display().to_string();
    env.ok(&["init", "-e", "none", &pi]);
    env.ok(&["replicate", "--to", &pi, &repo]);

    // Bit rot that changes a replicated pack's size: the replica keeps the
    // good copy it has.
    let repo_dir = env.path("repo");
    let big = new_pack_of(&repo_dir, &BTreeMap::new());
    let good = std::fs::read(repo_dir.join(&big)).unwrap();
    std::fs::write(repo_dir.join(&big), &good[..good.len() - 1]).unwrap();
    let out = env.run(&["replicate", "--json", "--to", &pi, &repo]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&big) && err.contains("earlier good copy"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = v["replicas"][0]["archive"].as_str().unwrap().to_string();
    extract_to(&env, &format!("{pi}::{name}"), "out");
    assert_eq!(
        std::fs::read(env.path("out/repo").join(&big)).unwrap(),
        good
    );

    // A new pack damaged before its first replication is copied as it is
    // (repair can salvage its intact blobs) and reported.
    std::fs::write(repo_dir.join(&big), &good).unwrap();
    let before = repo_files(&repo_dir);
    std::fs::write(src.join("b"), random("damage-b", 3_000_000)).unwrap();
    env.ok(&["create", &format!("{repo}::two"), src.to_str().unwrap()]);
    let fresh = new_pack_of(&repo_dir, &before);
    let mut bytes = std::fs::read(repo_dir.join(&fresh)).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(repo_dir.join(&fresh), &bytes).unwrap();
    let out = env.run(&["replicate", "--to", &pi, &repo]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&fresh) && err.contains("copied as it is"),
        "{err}"
    );
    // Once the source is repaired, the next run copies the good pack under
    // its name: the damaged copy was kept aside, not trusted.
    bytes[100] ^= 0x40;
    std::fs::write(repo_dir.join(&fresh), &bytes).unwrap();
    let v = replicate_json(&env, &["--to", &pi, &repo]);
    let name = only_replica(&v)["archive"].as_str().unwrap().to_string();
    extract_to(&env, &format!("{pi}::{name}"), "out-repaired");
    assert_eq!(
        std::fs::read(env.path("out-repaired/repo").join(&fresh)).unwrap(),
        bytes
    );
    assert!(!env.path("out-repaired/repo/damaged").exists());
}

#[test]
fn dry_run_changes_nothing_and_one_failing_target_does_not_stop_the_others() {
    let env = Env::new();
    env.init(&["-e", "repokey"]);
    let repo = env.repo();
    let src = env.path("src");
    make_tree(&src);
    env.ok(&["create", &format!("{repo}::one"), src.to_str().unwrap()]);
    let pi = env.path("pi").display().to_string();
    env.ok(&["init", "-e", "none", &pi]);

    let out = env.run(&["replicate", "--dry-run", "--to", &pi, &repo]);
    assert!(out.status.success());
    let files = repo_files(&env.path("repo"));
    let total: u64 = files.values().map(|d| d.len() as u64).sum();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "would copy {} of {} files",
            files.len(),
            files.len()
        )),
        "{err}"
    );
    assert!(
        err.contains(&strata_size(total)),
        "{err} (expected {total} bytes)"
    );
    assert_eq!(env.ok(&["list", "--short", &pi]).trim(), "");

    // The first target does not exist: exit status 64 + bit 0, and the
    // second target is still served, verified by reading it back.
    let out = env.run(&[
        "replicate",
        "--verify",
        "--json",
        "--to",
        "missing",
        "--to",
        &pi,
        &repo,
    ]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FAILED repo → missing"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v["replicas"].as_array().unwrap();
    assert_eq!(list[0]["ok"], false);
    assert_eq!(list[1]["ok"], true);
    assert_eq!(list[1]["verified_files"], list[1]["files"]);
    assert_eq!(env.ok(&["list", "--short", &pi]).lines().count(), 1);
}

/// Sizes as strata prints them (decimal units, two decimals).
fn strata_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", units[i])
    }
}

fn dir_bytes(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn an_interrupted_replication_commits_nothing_and_the_next_run_sends_only_the_rest() {
    let env = Env::new();
    let repo = env.repo();
    env.ok(&["init", "-e", "repokey", "--pack-size", "1M", &repo]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), random("resume", 12 << 20)).unwrap();
    env.ok(&["create", &format!("{repo}::one"), src.to_str().unwrap()]);
    let pi = env.path("pi").display().to_string();
    let small = ["--pack-size", "1M", "--chunker-params", "64K,256K,1M"];
    env.ok(&[&["init", "-e", "none"][..], &small, &[&pi]].concat());
    let source_bytes = dir_bytes(&env.path("repo")) - dir_bytes(&env.path("repo/locks"));

    // The process dies at its 8th write (a lock, then target packs): the
    // power cut or killed job of a real night.
    let out = env
        .cmd()
        .env("STRATA_FAULT_CRASH_AT", "8")
        .args(["replicate", "--to", &pi, &repo])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        env.ok(&["list", "--short", &pi]).trim(),
        "",
        "nothing may be committed"
    );
    let landed = dir_bytes(&env.path("pi/data"));
    assert!(
        landed > 2 << 20,
        "only {landed} bytes landed before the crash"
    );

    let v = replicate_json(&env, &["--to", &pi, &repo]);
    let r = only_replica(&v);
    let stored = r["stored_bytes"].as_u64().unwrap();
    // Up to three packs were in flight (uploaders) and are sent again.
    assert!(
        stored < source_bytes - landed + (3 << 20),
        "stored {stored} of {source_bytes} after {landed} had landed"
    );
    env.ok(&["check", "--verify-data", &pi]);
    extract_to(
        &env,
        &format!("{pi}::{}", r["archive"].as_str().unwrap()),
        "out",
    );
    assert_eq!(
        repo_files(&env.path("out/repo")),
        repo_files(&env.path("repo"))
    );
}

#[test]
fn a_pack_cut_short_by_a_power_loss_is_harmless_and_the_next_upload_replaces_it() {
    let env = Env::new();
    let repo = env.repo();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), random("cut-pack", 6 << 20)).unwrap();
    // Unencrypted, like a replica tier: the same data packs to the same bytes.
    env.ok(&["init", "-e", "none", "--pack-size", "1M", &repo]);
    let out = env
        .cmd()
        // Dies right after its first pack (the lock is write 1): the rerun
        // has nothing to adopt and packs the same bytes again.
        .env("STRATA_FAULT_CRASH_AT", "2")
        .env("STRATA_FAULT_CRASH_WHEN", "after")
        .env("STRATA_THREADS", "1")
        .args(["create", &format!("{repo}::a"), src.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // A pack no index names (the uploaders race the index writer, so which
    // packs an index names before the crash varies).
    let indexed: std::collections::HashSet<String> = {
        struct NoPass;
        impl strata::repo::Passphrase for NoPass {
            fn get(&self, _: bool) -> strata::Result<Vec<u8>> {
                Ok(Vec::new())
            }
        }
        let r = strata::repo::Repository::open(
            std::sync::Arc::new(strata::backend::local::LocalBackend::new(env.path("repo"))),
            &strata::repo::OpenOptions {
                lock: strata::repo::LockMode::Shared,
                lock_wait: std::time::Duration::from_secs(5),
                passphrase: &NoPass,
                dirs: strata::repo::client::ClientDirs {
                    cache: env.path("lib-cache"),
                    keys: env.path("keys"),
                },
                load_index: true,
                repair: false,
                lock_notice: None,
            },
        )
        .unwrap();
        r.index().iter().map(|(_, p, _)| p.to_hex()).collect()
    };
    let packs: Vec<_> = walkdir::WalkDir::new(env.path("repo/data"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .filter(|p| !indexed.contains(&p.file_name().unwrap().to_string_lossy().into_owned()))
        .collect();
    assert!(!packs.is_empty(), "the crash left no unindexed pack");
    // Every orphan is cut (an uploader may have finished a second pack
    // before the crash): the rerun adopts none and packs the same bytes.
    let wholes: Vec<Vec<u8>> = packs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    for (p, whole) in packs.iter().zip(&wholes) {
        std::fs::write(p, &whole[..whole.len() / 2]).unwrap();
    }

    // Harmless: no archive uses it, and check says so without failing.
    let out = env.run(&["check", "--verify-data", &repo]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The next backup uploads the same pack again: it replaces the damaged one.
    env.ok_with(
        &[("STRATA_THREADS", "1")],
        &["create", &format!("{repo}::a"), src.to_str().unwrap()],
    );
    // Data packs come back byte for byte; a pack that also held items may
    // differ (a file's atime changed when the first run read it) and then
    // stays an unused orphan, which check tolerates and compact removes.
    let replaced = packs
        .iter()
        .zip(&wholes)
        .filter(|(victim, whole)| std::fs::read(victim).unwrap() == **whole)
        .count();
    assert!(
        replaced >= 1,
        "no damaged pack was replaced by its good bytes"
    );
    env.ok(&["check", "--verify-data", &repo]);
}
