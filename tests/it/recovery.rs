//! docs/disaster-recovery.md, run as written: its shell blocks, in order,
//! with local tiers in place of the settings block.

use crate::util::{Env, assert_same_tree, make_tree, restored};

/// The fenced `sh` blocks of a Markdown page, in order.
fn sh_blocks(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in page.lines() {
        match (&mut cur, line.trim_end()) {
            (None, "```sh") => cur = Some(String::new()),
            (Some(b), "```") => {
                out.push(std::mem::take(b));
                cur = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

#[test]
fn disaster_recovery_walkthrough_runs_as_written() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let host = env.path("central/knode01").display().to_string();
    let home = env.path("pi-home").display().to_string();
    let family = env.path("pi-family").display().to_string();
    env.ok(&["init", "-e", "repokey", &host]);
    env.ok(&["init", "-e", "none", &home]);
    env.ok(&["init", "-e", "none", &family]);
    env.ok(&["create", &format!("{host}::monday"), src.to_str().unwrap()]);
    env.ok(&["replicate", "--to", &home, "--to", &family, &host]);
    std::fs::remove_dir_all(env.path("central")).unwrap();

    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/disaster-recovery.md"),
    )
    .unwrap();
    let blocks = sh_blocks(&page);
    assert!(blocks.len() >= 5, "the walk-through lost its steps");
    assert!(
        blocks[0].contains("PI_FAMILY=") && blocks[0].contains("NEW="),
        "the first block is the settings block: {}",
        blocks[0]
    );
    let settings = format!(
        "PI_HOME={home}\nPI_FAMILY={family}\nHOST=knode01\nNEW={}\nSCRATCH={}\n",
        env.path("new-central/knode01").display(),
        env.path("scratch").display()
    );
    let script = format!("set -euo pipefail\n{settings}{}", blocks[1..].join(""));
    let bin = assert_cmd::cargo::cargo_bin("strata");
    // A new machine: only the passphrase, no cache.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("STRATA_PASSPHRASE", "test passphrase")
        .env("STRATA_INSECURE_FAST_KDF", "1")
        .env("STRATA_CACHE_DIR", env.path("new-machine-cache"))
        .env("STRATA_KEYS_DIR", env.path("keys"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the walk-through failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("replicas of knode01"), "{stdout}");
    // Step 3 restored the files from the Pi, step 4 the repository.
    assert_same_tree(&src, &restored(&env.path("scratch"), &src));
    let list = env.ok_with(
        &[(
            "STRATA_CACHE_DIR",
            env.path("new-machine-cache").to_str().unwrap(),
        )],
        &[
            "list",
            "--short",
            env.path("new-central/knode01").to_str().unwrap(),
        ],
    );
    assert_eq!(list, "monday\n");
}
