//! Crash safety: `create` killed (abort, like kill -9 or a power cut) before
//! each of its file writes in turn leaves a repository whose archives all
//! restore, and the next `create` succeeds.

use crate::util::*;

#[test]
fn create_crashing_at_every_write_leaves_a_valid_repository() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..2 {
        std::fs::write(src.join(format!("f{i}")), random(&format!("f{i}"), 1 << 20)).unwrap();
    }
    env.init(&["--chunker-params", "64K,256K,1M"]);
    env.ok(&[
        "create",
        &format!("{}::base", env.repo()),
        src.to_str().unwrap(),
    ]);
    let mut good = vec!["base".to_string()];
    let mut crashed = 0;
    for at in 1.. {
        // 17 MiB of new data each round: two packs (16 MiB each at most),
        // an index file, the archive's pack, its index and a manifest, so
        // every kind of write is a crash point.
        std::fs::write(
            src.join("changing"),
            random(&format!("round{at}"), 17 << 20),
        )
        .unwrap();
        let name = format!("try{at}");
        let out = env
            .cmd()
            .env("STRATA_FAULT_CRASH_AT", at.to_string())
            .args([
                "create",
                &format!("{}::{name}", env.repo()),
                src.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        if out.status.success() {
            good.push(name);
            break; // `at` is beyond the last write: every point was covered
        }
        assert_eq!(
            out.status.code(),
            None,
            "expected an abort at write {at}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        crashed += 1;
        // the repository lists exactly the committed archives (the new one
        // too if the crash came after its manifest was written: deleting
        // old manifest generations is housekeeping after the commit)...
        let listed: Vec<String> = env
            .ok(&["list", "--short", &env.repo()])
            .lines()
            .map(String::from)
            .collect();
        if listed.last() == Some(&name) {
            good.push(name);
        }
        assert_eq!(listed, good, "after a crash at write {at}");
        // ...and every one of them is complete: check follows every
        // archive to every chunk, and --verify-data reads and authenticates
        // every blob (cheaper than extracting each archive every round)
        env.ok(&["check", "--verify-data", &env.repo()]);
        env.ok(&[
            "extract",
            "--dry-run",
            &format!("{}::{}", env.repo(), good.last().unwrap()),
        ]);
        // the next backup works (the dead process's lock is stale)
        let next = format!("after{at}");
        env.ok(&[
            "create",
            &format!("{}::{next}", env.repo()),
            src.to_str().unwrap(),
        ]);
        good.push(next);
    }
    assert!(
        crashed >= 5,
        "only {crashed} crash points: the test data is too small"
    );
    let dest = env.path("final");
    std::fs::create_dir(&dest).unwrap();
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::{}", env.repo(), good.last().unwrap()),
    ]);
    assert_same_tree(&src, &restored(&dest, &src));
}
