//! Network cuts at random byte offsets of the SSH transport, in either
//! direction: the connection is cut exactly after N bytes client→server or
//! server→client (a relay around ssh, through STRATA_RSH, that passes N
//! bytes, then kills ssh and exits, as a dropped link would). The backup
//! fails with one line and commits nothing; once the lock of the dead
//! session is broken, the next run succeeds, `check` passes and the archive
//! restores. `STRATA_NETCUT_TRIALS` (default 4) and `STRATA_NETCUT_SEED`.

use crate::sshd::Sshd;
use crate::util::*;

/// `cut.py UP DOWN ssh ARGS...`: relays stdin to ssh and ssh's output to
/// stdout until UP bytes went up or DOWN came down, then drops everything.
const CUTTER: &str = r#"#!/usr/bin/env python3
import os, subprocess, sys, threading
up, down = int(sys.argv[1]), int(sys.argv[2])
p = subprocess.Popen(sys.argv[3:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
def cut():
    p.kill()
    os._exit(255)
def pump(src, dst, left, at_end):
    while True:
        data = os.read(src, 65536)
        if not data:
            return at_end()
        if len(data) >= left:
            os.write(dst, data[:left])
            cut()
        os.write(dst, data)
        left -= len(data)
threading.Thread(target=pump, args=(0, p.stdin.fileno(), up, p.stdin.close), daemon=True).start()
pump(p.stdout.fileno(), 1, down, lambda: os._exit(p.wait()))
"#;

#[test]
fn cuts_at_random_byte_offsets_commit_nothing_and_the_next_run_succeeds() {
    let trials: u64 = std::env::var("STRATA_NETCUT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut seed: u64 = std::env::var("STRATA_NETCUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    eprintln!("netcut seed {seed}");
    let mut next = move || {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        std::fs::write(
            src.join(format!("f{i}")),
            random(&format!("cut{i}"), 2 << 20),
        )
        .unwrap();
    }
    let cutter = env.path("cut.py");
    std::fs::write(&cutter, CUTTER).unwrap();
    let forced = format!(
        "{} serve --restrict-to-path {}",
        assert_cmd::cargo::cargo_bin("strata").display(),
        env.dir.path().display()
    );
    let sshd = Sshd::start(Some(&forced));
    let rsh = sshd.rsh();
    let never = u64::MAX / 2;
    for t in 0..trials {
        let url = format!(
            "ssh://{}@127.0.0.1{}",
            sshd.user(),
            env.path(&format!("repo{t}")).display()
        );
        let ok = |args: &[&str]| env.ok_with(&[("STRATA_RSH", &rsh)], args);
        ok(&[
            "init",
            "--pack-size",
            "1M",
            "--chunker-params",
            "64K,256K,1M",
            &url,
        ]);
        // upload: about 6 MiB of packs; replies: small
        let (up, down) = if t % 2 == 0 {
            (next() % (6 << 20), never)
        } else {
            (never, next() % (32 << 10))
        };
        let cut_rsh = format!("python3 {} {up} {down} {rsh}", cutter.display());
        let out = env
            .cmd()
            .env("STRATA_RSH", &cut_rsh)
            .args(["create", &format!("{url}::a"), src.to_str().unwrap()])
            .timeout(std::time::Duration::from_secs(120))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let what = format!("cut after {up} bytes up / {down} down");
        if out.status.success() {
            // the cut came after the last byte the backup needed
            assert_eq!(ok(&["list", "--short", &url]), "a\n", "{what}");
        } else if out.status.code() == Some(1) {
            // the cut came after the commit, while old manifest generations
            // were removed: the backup is there, the leftovers are a warning
            assert!(err.contains("warning"), "{what}: {err}");
            assert_eq!(ok(&["list", "--short", &url]), "a\n", "{what}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{what}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
            assert_eq!(ok(&["list", "--short", &url]), "", "{what}: committed");
            ok(&["break-lock", &url]);
            ok(&["create", &format!("{url}::a"), src.to_str().unwrap()]);
        }
        ok(&["check", "--verify-data", &url]);
        let dest = env.path(&format!("out{t}"));
        std::fs::create_dir(&dest).unwrap();
        ok(&[
            "extract",
            "--target",
            dest.to_str().unwrap(),
            &format!("{url}::a"),
        ]);
        assert_same_tree(&src, &restored(&dest, &src));
    }
}
