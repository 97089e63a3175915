//! check, delete, rename, and the corruption matrix.

use crate::util::*;
use std::path::{Path, PathBuf};

fn setup() -> (Env, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init(&["--chunker-params", "64K,256K,1M"]);
    env.ok(&[
        "create",
        &format!("{}::one", env.repo()),
        src.to_str().unwrap(),
    ]);
    // the tree as archive `one` saw it
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(env.path("src-one"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(src.join("dir/new.txt"), random("new", 300_000)).unwrap();
    env.ok(&[
        "create",
        &format!("{}::two", env.repo()),
        src.to_str().unwrap(),
    ]);
    (env, src)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

#[test]
fn check_passes_on_a_healthy_repository() {
    let (env, _) = setup();
    let out: serde_json::Value =
        serde_json::from_str(&env.ok(&["check", "--verify-data", "--json", &env.repo()])).unwrap();
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["archives"], 2);
    assert!(out["bytes_verified"].as_u64().unwrap() > 3_000_000);
}

#[test]
fn delete_and_rename() {
    let (env, src) = setup();
    env.ok(&["rename", &format!("{}::one", env.repo()), "first"]);
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "first\ntwo\n");
    env.ok(&["delete", &format!("{}::two", env.repo())]);
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "first\n");
    env.ok(&["check", "--verify-data", &env.repo()]);
    // the renamed archive still restores exactly
    let dest = env.path("out");
    std::fs::create_dir(&dest).unwrap();
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::first", env.repo()),
    ]);
    assert_same_tree(&env.path("src-one"), &restored(&dest, &src));
    let out = env.run(&["delete", &format!("{}::nope", env.repo())]);
    assert_eq!(out.status.code(), Some(2));
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    FlipBit,
    Truncate,
    Delete,
}

fn damage(path: &Path, how: Damage) {
    match how {
        Damage::FlipBit => {
            let mut d = std::fs::read(path).unwrap();
            let at = d.len() / 2;
            d[at] ^= 0x01;
            std::fs::write(path, d).unwrap();
        }
        Damage::Truncate => {
            let d = std::fs::read(path).unwrap();
            std::fs::write(path, &d[..d.len() / 2]).unwrap();
        }
        Damage::Delete => std::fs::remove_file(path).unwrap(),
    }
}

/// Every kind of repository file, damaged every way: `check --verify-data`
/// (or opening the repository) fails, and extraction never exits 0 with
/// wrong bytes on disk.
#[test]
fn corruption_matrix_is_always_detected() {
    let (template, src) = setup();
    let mut cases = 0;
    for kind in ["data", "index", "manifest", "keys", "config"] {
        let n = if kind == "config" {
            1
        } else {
            files_in(&template.path(&format!("repo/{kind}"))).len()
        };
        for which in 0..n {
            for how in [Damage::FlipBit, Damage::Truncate, Damage::Delete] {
                let env = Env::new();
                copy_dir(template.dir.path(), env.dir.path());
                let target = if kind == "config" {
                    env.path("repo/config")
                } else {
                    files_in(&env.path(&format!("repo/{kind}")))[which].clone()
                };
                let newest = files_in(&env.path("repo/manifest")).last() == Some(&target);
                if kind == "manifest" && !newest && matches!(how, Damage::Delete) {
                    continue; // older generations are a spare, removing one loses nothing
                }
                damage(&target, how);
                cases += 1;
                let what = format!(
                    "{how:?} of {}",
                    target.strip_prefix(env.dir.path()).unwrap().display()
                );
                let out = env.run(&["check", "--verify-data", &env.repo()]);
                assert_eq!(
                    out.status.code(),
                    Some(2),
                    "check missed {what}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                for archive in ["one", "two"] {
                    let dest = env.path(&format!("out-{archive}"));
                    std::fs::create_dir_all(&dest).unwrap();
                    let out = env.run(&[
                        "extract",
                        "--target",
                        dest.to_str().unwrap(),
                        &format!("{}::{archive}", env.repo()),
                    ]);
                    if out.status.success() {
                        // a success must be a perfect restore
                        let back = restored(&dest, &src);
                        let original = if archive == "one" {
                            env.path("src-one")
                        } else {
                            src.clone()
                        };
                        let diffs =
                            strata::archive::compare::compare_trees(&original, &back).unwrap();
                        assert!(
                            diffs.is_empty(),
                            "extract of {archive} after {what} succeeded with wrong data: {diffs:?}"
                        );
                    }
                }
            }
        }
    }
    assert!(cases >= 30, "only {cases} cases");
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn prune_keeps_by_rule_within_one_series() {
    let env = Env::new();
    env.init(&[]);
    let src = env.path("repo/config");
    for n in ["web-1", "db-1", "web-2", "web-3"] {
        env.ok(&[
            "create",
            &format!("{}::{n}", env.repo()),
            src.to_str().unwrap(),
        ]);
    }
    let dry = env.ok(&[
        "prune",
        "--dry-run",
        "-a",
        "web-*",
        "--keep-last",
        "1",
        &env.repo(),
    ]);
    assert!(
        dry.contains("Keeping archive (rule: secondly #1)") && dry.contains("web-3"),
        "{dry}"
    );
    assert_eq!(dry.matches("Would prune").count(), 2, "{dry}");
    assert_eq!(
        env.ok(&["list", "--short", &env.repo()]),
        "web-1\ndb-1\nweb-2\nweb-3\n"
    );
    env.ok(&["prune", "-a", "web-*", "--keep-last", "1", &env.repo()]);
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "db-1\nweb-3\n");
    env.ok(&["prune", "--keep-within", "1H", &env.repo()]);
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "db-1\nweb-3\n");
    let out = env.run(&["prune", &env.repo()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "prune without rules must refuse"
    );
    env.ok(&["check", &env.repo()]);
}

#[test]
fn diff_reports_added_removed_modified_and_metadata() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("same"), b"same\n").unwrap();
    std::fs::write(src.join("gone"), b"bye\n").unwrap();
    std::fs::write(src.join("grows"), random("g", 100_000)).unwrap();
    std::fs::write(src.join("chmod"), b"x\n").unwrap();
    env.init(&[]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    std::fs::remove_file(src.join("gone")).unwrap();
    std::fs::write(src.join("new"), b"hello\n").unwrap();
    let mut g = random("g", 100_000);
    g.extend_from_slice(&random("more", 50_000));
    std::fs::write(src.join("grows"), g).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("chmod"), std::fs::Permissions::from_mode(0o700)).unwrap();
    env.ok(&[
        "create",
        &format!("{}::b", env.repo()),
        src.to_str().unwrap(),
    ]);
    let lines = env.ok(&["diff", "--json-lines", &format!("{}::a", env.repo()), "b"]);
    let by_path: std::collections::HashMap<String, serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                v["changes"].clone(),
            )
        })
        .collect();
    assert_eq!(by_path["new"][0]["type"], "added");
    assert_eq!(by_path["new"][0]["size"], 6);
    assert_eq!(by_path["gone"][0]["type"], "removed");
    assert_eq!(by_path["grows"][0]["type"], "modified");
    assert_eq!(by_path["grows"][0]["added"], 150_000);
    assert!(
        by_path["chmod"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "mode" && c["new_mode"] == "-rwx------")
    );
    assert!(!by_path.contains_key("same"), "{lines}");
    let text = env.ok(&["diff", "--content-only", &format!("{}::a", env.repo()), "b"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("added") && l.ends_with("/new")),
        "{text}"
    );
    assert!(!text.contains("/chmod"), "{text}");
}

#[test]
fn key_export_import_and_change_passphrase() {
    let env = Env::new();
    env.init(&["--encryption", "keyfile"]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        env.path("repo/config").to_str().unwrap(),
    ]);
    let html = env.ok(&["key", "export", "--qr-html", &env.repo()]);
    assert!(
        html.contains("<svg") && html.contains("STRATA PAPER KEY v1"),
        "{html}"
    );
    let paper = env.ok(&["key", "export", "--paper", &env.repo()]);
    assert!(paper.starts_with("STRATA PAPER KEY v1"));
    std::fs::write(env.path("paper.txt"), &paper).unwrap();
    // a new client without the key cannot open the repository, then imports it
    std::fs::remove_dir_all(env.path("keys")).unwrap();
    assert_eq!(env.run(&["list", &env.repo()]).status.code(), Some(2));
    env.ok(&[
        "key",
        "import",
        "--paper",
        &env.repo(),
        env.path("paper.txt").to_str().unwrap(),
    ]);
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "a\n");
    // change the passphrase: the old one stops working, the new one works
    env.cmd()
        .env("STRATA_NEW_PASSPHRASE", "a new secret")
        .args(["key", "change-passphrase", &env.repo()])
        .assert()
        .success();
    assert_eq!(env.run(&["list", &env.repo()]).status.code(), Some(2));
    env.cmd()
        .env("STRATA_PASSPHRASE", "a new secret")
        .args(["list", &env.repo()])
        .assert()
        .success();
}

#[test]
fn repokey_change_passphrase_and_import_after_damage() {
    let env = Env::new();
    env.init(&[]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        env.path("repo/config").to_str().unwrap(),
    ]);
    env.ok(&[
        "key",
        "export",
        &env.repo(),
        env.path("key.json").to_str().unwrap(),
    ]);
    env.cmd()
        .env("STRATA_NEW_PASSPHRASE", "second")
        .args(["key", "change-passphrase", &env.repo()])
        .assert()
        .success();
    assert_eq!(
        std::fs::read_dir(env.path("repo/keys")).unwrap().count(),
        1,
        "old key file left behind"
    );
    env.cmd()
        .env("STRATA_PASSPHRASE", "second")
        .args(["list", &env.repo()])
        .assert()
        .success();
    // the key is destroyed; the export (sealed with the first passphrase) brings it back
    for f in std::fs::read_dir(env.path("repo/keys")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let out = env.run(&["list", &env.repo()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("key import"));
    env.ok(&[
        "key",
        "import",
        &env.repo(),
        env.path("key.json").to_str().unwrap(),
    ]);
    assert_eq!(env.ok(&["list", "--short", &env.repo()]), "a\n");
}
