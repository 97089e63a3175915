//! check --repair: rebuilds what can be rebuilt, reports what is lost,
//! never touches an intact file, is idempotent, and lost data heals.

use crate::util::*;
use std::path::{Path, PathBuf};

struct Setup {
    env: Env,
    src: PathBuf,
}

fn setup() -> Setup {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(
            src.join(format!("file{i}")),
            random(&format!("f{i}"), 6 << 20),
        )
        .unwrap();
    }
    std::fs::write(src.join("small"), b"small\n").unwrap();
    env.init(&["--chunker-params", "64K,256K,1M"]);
    env.ok(&[
        "create",
        &format!("{}::one", env.repo()),
        src.to_str().unwrap(),
    ]);
    env.ok(&[
        "create",
        &format!("{}::two", env.repo()),
        src.to_str().unwrap(),
    ]);
    Setup { env, src }
}

fn repair(env: &Env) -> serde_json::Value {
    let out = env.run(&["check", "--repair", "--json", &env.repo()]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "repair failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn repo_files(env: &Env) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = walkdir::WalkDir::new(env.path("repo"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !e.path().starts_with(env.path("repo/locks")))
        .map(|e| (e.path().display().to_string(), e.metadata().unwrap().len()))
        .collect();
    v.sort();
    v
}

fn biggest_pack(env: &Env) -> PathBuf {
    walkdir::WalkDir::new(env.path("repo/data"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .into_path()
}

fn extract(env: &Env, archive: &str, dest: &Path) -> std::process::Output {
    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest).unwrap();
    env.run(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::{archive}", env.repo()),
    ])
}

#[test]
fn lost_chunks_are_reported_restored_as_holes_and_heal() {
    let Setup { env, src } = setup();
    let pack = biggest_pack(&env);
    let mut d = std::fs::read(&pack).unwrap();
    d[1000] ^= 0x80; // inside the first blob
    std::fs::write(&pack, d).unwrap();
    let r = repair(&env);
    assert_eq!(r["blobs_lost"], 1, "{r}");
    let damaged = r["damaged_files"].as_array().unwrap();
    assert_eq!(
        damaged.len(),
        2,
        "the file is damaged in both archives: {r}"
    );
    // repair is idempotent: a second run changes no file
    let before = repo_files(&env);
    let again = repair(&env);
    assert_eq!(again["blobs_lost"], 0);
    assert_eq!(
        repo_files(&env),
        before,
        "second repair changed the repository"
    );
    // check still reports the missing chunk; extraction writes everything
    // else exactly and the damaged file with a hole, and says so
    assert_eq!(env.run(&["check", &env.repo()]).status.code(), Some(2));
    let dest = env.path("out");
    let out = extract(&env, "two", &dest);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("restored as holes"), "{err}");
    let back = restored(&dest, &src);
    let diffs = strata::archive::compare::compare_trees(&src, &back).unwrap();
    assert_eq!(
        diffs.len(),
        1,
        "only the damaged file may differ: {diffs:?}"
    );
    // a new backup of the same data brings the chunk back: everything heals
    env.ok(&[
        "create",
        &format!("{}::three", env.repo()),
        src.to_str().unwrap(),
    ]);
    env.ok(&["check", "--verify-data", &env.repo()]);
    let out = extract(&env, "two", &dest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&src, &restored(&dest, &src));
}

#[test]
fn lost_index_and_manifest_are_rebuilt() {
    let Setup { env, src } = setup();
    for f in std::fs::read_dir(env.path("repo/index")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let newest = std::fs::read_dir(env.path("repo/manifest"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .max()
        .unwrap();
    let mut m = std::fs::read(&newest).unwrap();
    m[20] ^= 1;
    std::fs::write(&newest, m).unwrap();
    assert_eq!(env.run(&["list", &env.repo()]).status.code(), Some(2));
    let r = repair(&env);
    assert_eq!(r["manifest_rebuilt"], true, "{r}");
    assert_eq!(r["blobs_lost"], 0, "{r}");
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "one\ntwo\n");
    env.ok(&["check", "--verify-data", &env.repo()]);
    let dest = env.path("out");
    assert!(extract(&env, "one", &dest).status.success());
    assert_same_tree(&src, &restored(&dest, &src));
}

#[test]
fn a_healthy_repository_is_left_alone() {
    let Setup { env, .. } = setup();
    let before = repo_files(&env);
    let r = repair(&env);
    assert_eq!(r["clean"], true, "{r}");
    assert_eq!(repo_files(&env), before);
}

#[test]
fn partial_verification_rotates_through_every_pack() {
    let Setup { env, .. } = setup();
    let packs: std::collections::BTreeSet<String> = walkdir::WalkDir::new(env.path("repo/data"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(packs.len() >= 3, "{packs:?}");
    // with no time at all, each run still verifies one pack, the next one
    let mut seen = std::collections::BTreeSet::new();
    let mut complete = false;
    for _ in 0..packs.len() {
        let v: serde_json::Value =
            serde_json::from_str(&env.ok(&["check", "--max-duration", "0", "--json", &env.repo()]))
                .unwrap();
        let run: Vec<String> = v["packs_verified"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        assert_eq!(run.len(), 1, "{v}");
        assert!(
            seen.insert(run[0].clone()),
            "pack verified twice before the rotation ended: {v}"
        );
        complete = v["cycle_complete"].as_bool().unwrap();
    }
    assert_eq!(seen, packs);
    assert!(complete, "the last run should end a full pass");
    // damage is found when the damaged pack's turn comes
    let victim = biggest_pack(&env);
    let mut d = std::fs::read(&victim).unwrap();
    d[5000] ^= 1;
    std::fs::write(&victim, d).unwrap();
    let mut found = false;
    for _ in 0..packs.len() {
        found |= env
            .run(&["check", "--max-duration", "0", &env.repo()])
            .status
            .code()
            == Some(2);
    }
    assert!(found, "damage not found in a full rotation");
}
