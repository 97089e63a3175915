//! Restoring from any tier: reading a host's repository straight out of a
//! replica archive, `restore-repo`, `replicas` and `drill`, on local tiers.
//! (The same over SSH between network namespaces is in `offsite.rs`.)

use crate::util::{Env, assert_same_tree, make_tree, random, restored};
use std::path::Path;
use std::sync::Arc;

/// A host repository `central/host1` with two archives of `src`, replicated
/// into the tiers `pi-home` and `pi-family` after each backup.
struct Tiers {
    env: Env,
    src: std::path::PathBuf,
    host: String,
    home: String,
    family: String,
}

fn setup() -> Tiers {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let host = env.path("central/host1").display().to_string();
    let home = env.path("pi-home").display().to_string();
    let family = env.path("pi-family").display().to_string();
    env.ok(&["init", "-e", "repokey", "--pack-size", "1M", &host]);
    env.ok(&["init", "-e", "none", &home]);
    env.ok(&["init", "-e", "none", &family]);
    env.ok(&["create", &format!("{host}::one"), src.to_str().unwrap()]);
    env.ok(&["replicate", "--to", &home, "--to", &family, &host]);
    std::fs::write(src.join("later"), random("tiers-later", 3 << 20)).unwrap();
    env.ok(&["create", &format!("{host}::two"), src.to_str().unwrap()]);
    env.ok(&["replicate", "--to", &home, "--to", &family, &host]);
    Tiers {
        env,
        src,
        host,
        home,
        family,
    }
}

#[test]
fn every_reading_command_works_on_a_replica_without_extracting_it() {
    let t = setup();
    let env = &t.env;
    // A fresh client: only the host's passphrase, none of its cache.
    let fresh = env.path("fresh").display().to_string();
    let run = |args: &[&str]| env.ok_with(&[("STRATA_CACHE_DIR", &fresh)], args);
    for (n, tier) in [&t.home, &t.family].into_iter().enumerate() {
        let list = run(&["list", "--short", "--replica", tier, "host1"]);
        assert_eq!(list, "one\ntwo\n");
        run(&["check", "--verify-data", "--replica", tier, "host1"]);
        let info = run(&["info", "--replica", tier, "host1::two"]);
        assert!(info.contains("Archive name: two"), "{info}");
        let dest = env.path(&format!("out-{n}"));
        std::fs::create_dir_all(&dest).unwrap();
        let out = env
            .cmd()
            .env("STRATA_CACHE_DIR", &fresh)
            .args(["extract", "--replica", tier, "host1::two"])
            .current_dir(&dest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same_tree(&t.src, &restored(&dest, &t.src));
    }
    // An older night: the first replica holds only `one`.
    let replicas = run(&["replicas", "--json", "host1", &t.home]);
    let v: serde_json::Value = serde_json::from_str(&replicas).unwrap();
    let nights = v["tiers"][0]["replicas"].as_array().unwrap();
    assert_eq!(nights.len(), 2);
    let first = nights[0]["archive"].as_str().unwrap();
    let list = run(&[
        "list",
        "--short",
        "--replica",
        &format!("{}::{first}", t.home),
        "host1",
    ]);
    assert_eq!(list, "one\n");
    // Writing is refused with a one-line reason.
    let out = env
        .cmd()
        .env("STRATA_CACHE_DIR", &fresh)
        .args(["delete", "--replica", &t.home, "host1::one"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("read-only"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn restore_repo_rebuilds_the_central_repository_from_a_pi_and_resumes_after_a_crash() {
    let t = setup();
    let env = &t.env;
    std::fs::remove_dir_all(env.path("central")).unwrap(); // the central node burns
    let new = env.path("new-central/host1").display().to_string();
    // The copy dies at its 5th write: the rerun keeps what landed intact.
    let out = env
        .cmd()
        .env("STRATA_FAULT_CRASH_AT", "5")
        .args(["restore-repo", "--replica", &t.family, "host1", &new])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !Path::new(&new).join("config").exists(),
        "an interrupted restore must not look like a repository"
    );
    let out = env.ok(&[
        "restore-repo",
        "--json",
        "--replica",
        &t.family,
        "host1",
        &new,
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["kept"].as_u64().unwrap() >= 3, "{v}");
    let fresh = env.path("fresh").display().to_string();
    let run = |args: &[&str]| env.ok_with(&[("STRATA_CACHE_DIR", &fresh)], args);
    run(&["check", "--verify-data", &new]);
    let dest = env.path("restored");
    std::fs::create_dir_all(&dest).unwrap();
    let out = env
        .cmd()
        .env("STRATA_CACHE_DIR", &fresh)
        .args(["extract", &format!("{new}::two")])
        .current_dir(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&t.src, &restored(&dest, &t.src));
    // The restored repository is a normal one: backups go on into it.
    run(&["create", &format!("{new}::three"), t.src.to_str().unwrap()]);
    // Restoring over an existing repository is refused.
    let out = env
        .cmd()
        .args(["restore-repo", "--replica", &t.home, "host1", &new])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Flips a byte in every pack of `repo` that holds data (not the newest
/// small packs of metadata): the whole tier is damaged.
fn corrupt_packs(repo: &Path) {
    for e in walkdir::WalkDir::new(repo.join("data")) {
        let e = e.unwrap();
        if e.file_type().is_file() && e.metadata().unwrap().len() > 100_000 {
            let mut d = std::fs::read(e.path()).unwrap();
            d[1000] ^= 0x55;
            std::fs::write(e.path(), d).unwrap();
        }
    }
}

#[test]
fn a_drill_names_the_corrupt_tier_and_the_other_tier_still_restores() {
    let t = setup();
    let env = &t.env;
    corrupt_packs(&env.path("pi-home"));
    let out = env
        .cmd()
        .args([
            "drill", "--json", "--sample", "1000", "--every", "1", "host1", "--repo", &t.host,
            "--tier", &t.home, "--tier", &t.family, "--tier",
        ])
        .arg(env.path("pi-nowhere"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tiers = v["tiers"].as_array().unwrap();
    let outcome = |i: usize| tiers[i]["outcome"].as_str().unwrap().to_string();
    assert_eq!(outcome(0), "ok", "{v}");
    assert_eq!(outcome(1), "corrupt", "{v}");
    assert_eq!(outcome(2), "ok", "{v}");
    assert_eq!(outcome(3), "missing", "{v}");
    assert_eq!(tiers[2]["archives"].as_array().unwrap().len(), 2);
    assert!(tiers[2]["files"].as_u64().unwrap() >= 5);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("corrupt  {}", t.home)), "{err}");

    // Without the key the damage is found too (ciphertext hashes).
    let out = env
        .cmd()
        .env_remove("STRATA_PASSPHRASE")
        .args([
            "drill",
            "--without-key",
            "--sample",
            "1000",
            "host1",
            "--tier",
            &t.home,
            "--tier",
            &t.family,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("corrupt  {}", t.home)), "{err}");
    assert!(err.contains(&format!("ok       {}", t.family)), "{err}");

    // The record keeps the last success of the tier that is now failing.
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("cache/drills/host1.json")).unwrap())
            .unwrap();
    assert_eq!(rec["tiers"][&t.home]["outcome"], "corrupt");
    assert!(rec["tiers"][&t.family]["last_ok"].is_string());
}

#[test]
fn restoring_one_small_file_from_a_large_nested_repository_reads_only_its_pack() {
    use strata::archive::nested::NestedBackend;
    use strata::backend::Backend;
    use strata::repo::{LockMode, OpenOptions, Passphrase, Repository};
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..16 {
        std::fs::write(
            src.join(format!("big{i:02}")),
            random(&format!("big{i}"), 4 << 20),
        )
        .unwrap();
    }
    std::fs::write(src.join("small.txt"), b"the one file we need\n").unwrap();
    let host = env.path("host1").display().to_string();
    let pi = env.path("pi").display().to_string();
    env.ok(&["init", "-e", "repokey", "--pack-size", "1M", &host]);
    env.ok(&["create", &format!("{host}::a"), src.to_str().unwrap()]);
    env.ok(&["init", "-e", "none", &pi]);
    env.ok(&["replicate", "--to", &pi, &host]);

    struct Pass;
    impl Passphrase for Pass {
        fn get(&self, _: bool) -> strata::Result<Vec<u8>> {
            Ok(b"test passphrase".to_vec())
        }
    }
    let dirs = strata::repo::client::ClientDirs {
        cache: env.path("lib-cache"),
        keys: env.path("keys"),
    };
    let opts = |load_index| OpenOptions {
        lock: LockMode::Shared,
        lock_wait: std::time::Duration::from_secs(1),
        passphrase: &Pass,
        dirs: dirs.clone(),
        load_index,
        repair: false,
        lock_notice: None,
    };
    // The key file records the (test-cheap) KDF cost it was made with.
    let outer = Repository::open(
        Arc::new(strata::backend::local::LocalBackend::new(&pi)),
        &opts(true),
    )
    .unwrap();
    let archive = strata::ops::replicate::newest_replica(&outer, "host1").unwrap();
    let nested = Arc::new(NestedBackend::open(outer, &archive, "host1").unwrap());
    let repo = Repository::open(nested.clone(), &opts(true)).unwrap();
    let a = strata::archive::Archive::find(&repo, "a").unwrap();
    let small = strata::archive::create::archive_path(&src.join("small.txt"));
    let dest = env.path("out");
    let r = strata::archive::extract::extract(
        &repo,
        &a,
        &strata::archive::extract::ExtractOptions {
            dest: dest.clone(),
            paths: vec![small.clone()],
            strip_components: 0,
            sparse: false,
            numeric_ids: true,
            dry_run: false,
            threads: 2,
        },
        &mut strata::archive::create::NoObserver,
    )
    .unwrap();
    assert_eq!(r.files, 1);
    assert_eq!(
        std::fs::read(restored(&dest, &src).join("small.txt")).unwrap(),
        b"the one file we need\n"
    );
    let fetched = nested.traffic().unwrap().received;
    let nested_total: u64 = nested
        .list(strata::backend::FileKind::Pack)
        .unwrap()
        .iter()
        .map(|f| f.size)
        .sum();
    // The index, the manifest, the items and the small file's pack: a few
    // MiB of the 64 MiB repository (outer chunks are up to 8 MiB, so a
    // pack costs at most the chunks it lies in).
    assert!(nested_total > 60 << 20, "{nested_total}");
    assert!(
        fetched < 12 << 20,
        "fetched {fetched} bytes of a {nested_total}-byte repository"
    );
}

#[test]
fn restore_repo_of_a_live_repository_copies_a_consistent_state_beside_a_backup() {
    let env = Env::new();
    env.init(&["-e", "repokey"]);
    let src = env.path("src");
    make_tree(&src);
    let repo = env.repo();
    env.ok(&["create", &format!("{repo}::one"), src.to_str().unwrap()]);
    // A backup holds the exclusive lock: the copy runs beside it (pin).
    let mut writer = env.spawn_locked_writer("two");
    let new = env.path("copy").display().to_string();
    env.ok(&["--lock-wait", "0", "restore-repo", &repo, &new]);
    {
        use std::io::Write;
        let mut stdin = writer.stdin.take().unwrap();
        stdin.write_all(&random("live", 2_000_000)).unwrap();
    }
    assert!(writer.wait().unwrap().success());
    let fresh = env.path("fresh").display().to_string();
    let run = |args: &[&str]| env.ok_with(&[("STRATA_CACHE_DIR", &fresh)], args);
    assert_eq!(run(&["list", "--short", &new]), "one\n");
    run(&["check", "--verify-data", &new]);
    // Compaction waits for nothing now that the copy is done.
    env.ok(&["--lock-wait", "0", "compact", &repo]);
}
