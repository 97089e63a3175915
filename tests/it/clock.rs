//! Clock skew of ±1 day, on the clients that make archives and on the
//! node (a Pi) that runs retention: `prune` and `compact` may drop what
//! the rules say, but never data a kept archive references, and never the
//! newest archive. The clocks are shifted with libfaketime (Debian package
//! `faketime`, which scripts/test.sh installs).

use crate::util::*;
use std::path::Path;

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn skewed(env: &Env, skew: &str, args: &[&str]) -> String {
    assert!(
        Path::new(FAKETIME).exists(),
        "{FAKETIME} missing: install the Debian package faketime (scripts/test.sh does)"
    );
    let out = env
        .cmd()
        .env("LD_PRELOAD", FAKETIME)
        .env("FAKETIME", skew)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata {args:?} at {skew}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_day_of_clock_skew_never_makes_retention_delete_referenced_data() {
    let template = Env::new();
    template.init(&["--chunker-params", "64K,256K,1M", "--pack-size", "1M"]);
    let src = template.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("stable"), random("stable", 1 << 20)).unwrap();
    // clients whose clocks are days behind, a day behind, right, a day ahead
    let archives = [
        ("old-3d", "-3d"),
        ("old-2d", "-2d"),
        ("past", "-1d"),
        ("now", "+0"),
        ("future", "+1d"),
    ];
    for (name, skew) in archives {
        std::fs::write(src.join("changing"), random(name, 500_000)).unwrap();
        skewed(
            &template,
            skew,
            &[
                "create",
                &format!("{}::{name}", template.repo()),
                src.to_str().unwrap(),
            ],
        );
        let held = template.path(&format!("held-{name}"));
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&held)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let listed = template.ok(&["list", "--short", &template.repo()]);
    assert_eq!(listed.lines().count(), archives.len(), "{listed}");
    // the Pi's clock a day behind, then a day ahead
    for pi in ["-1d", "+1d"] {
        let env = Env::new();
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", template.dir.path().display()))
            .arg(env.dir.path())
            .status()
            .unwrap();
        assert!(ok.success());
        let repo = env.repo();
        skewed(&env, pi, &["prune", "--keep-daily", "2", &repo]);
        skewed(
            &env,
            pi,
            &["compact", "--grace-period", "0", "--threshold", "0", &repo],
        );
        env.ok(&["check", "--verify-data", &repo]);
        let kept = env.ok(&["list", "--short", &repo]);
        assert!(
            kept.lines().any(|l| l == "future"),
            "Pi at {pi}: the newest archive was pruned: {kept}"
        );
        assert!(
            kept.lines().count() < archives.len(),
            "Pi at {pi}: prune kept everything: {kept}"
        );
        for name in kept.lines() {
            let dest = env.path(&format!("out-{name}"));
            std::fs::create_dir(&dest).unwrap();
            env.ok(&[
                "extract",
                "--target",
                dest.to_str().unwrap(),
                &format!("{repo}::{name}"),
            ]);
            // archives restore what their (template) source held then
            assert_same_tree(
                &template.path(&format!("held-{name}")),
                &restored(&dest, &src),
            );
        }
    }
}
