//! Repositories on a real S3 store: a three-node Garage cluster on loopback
//! (garage.rs). The backend contract, the command suite, two writers, a
//! node killed mid-backup, replication to and from a bucket, and the errors.

use crate::garage::Garage;
use crate::util::*;

fn with_env(env: &Env, vars: Vec<(String, String)>) -> impl Fn(&[&str]) -> String + '_ {
    move |args: &[&str]| {
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.ok_with(&pairs, args)
    }
}

fn cmd(env: &Env, g: &Garage) -> assert_cmd::Command {
    let mut c = env.cmd();
    for (k, v) in g.env() {
        c.env(k, v);
    }
    c
}

fn std_cmd(env: &Env, g: &Garage) -> std::process::Command {
    let mut c = env.std_cmd();
    for (k, v) in g.env() {
        c.env(k, v);
    }
    c
}

#[test]
fn garage_keeps_the_backend_contract() {
    let g = Garage::start();
    for (k, v) in g.env() {
        // SAFETY: set before any thread of this test reads the environment;
        // every S3 test runs in its own process under nextest.
        unsafe { std::env::set_var(k, v) };
    }
    let b = strata::backend::open_location("s3://strata/contract", true, "strata", None).unwrap();
    assert!(b.high_latency());
    // 1100 files: more than one page (1000 keys) of a listing
    crate::conformance::check_backend(b.clone(), 1100);
    let t = b.traffic().unwrap();
    assert!(
        t.sent > 20 * 1024 * 1024 && t.received > 20 * 1024 * 1024,
        "{t:?}"
    );
    // a second repository under a sibling prefix is independent
    let other =
        strata::backend::open_location("s3://strata/contract-2", true, "strata", None).unwrap();
    other.create().unwrap();
    assert!(
        other
            .list(strata::backend::FileKind::Index)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_command_suite_runs_against_garage() {
    let env = Env::new();
    let g = Garage::start();
    let ok = with_env(&env, g.env());
    let src = env.path("src");
    make_tree(&src);
    let url = "s3://strata/hosts/alpha";
    ok(&["init", url]);
    // Every other test signs each body's SHA-256; this one sends CRC64
    // checksums instead (what a Garage cluster over WireGuard may use).
    let ok = {
        let mut vars = g.env();
        vars.push(("STRATA_S3_SIGNED_PAYLOAD".into(), "false".into()));
        with_env(&env, vars)
    };
    ok(&["create", &format!("{url}::one"), src.to_str().unwrap()]);
    std::fs::write(src.join("dir/added"), b"later\n").unwrap();
    std::fs::write(src.join("big"), random("s3-big", 40_000_000)).unwrap();
    ok(&[
        "create",
        "--stats",
        &format!("{url}::two"),
        src.to_str().unwrap(),
    ]);
    assert_eq!(ok(&["list", "--short", url]), "one\ntwo\n");
    ok(&["check", "--verify-data", url]);
    assert_restores(
        &ok,
        &env.path("out"),
        &src,
        &["--sparse", &format!("{url}::two")],
    );
    let diff = ok(&["diff", &format!("{url}::one"), "two"]);
    assert!(diff.contains("dir/added"), "{diff}");
    let info = ok(&["info", url]);
    assert!(info.contains("Location: s3://strata/hosts/alpha"), "{info}");
    ok(&["prune", "--keep-last", "1", url]);
    ok(&["compact", "--grace-period", "0", url]);
    ok(&["check", "--verify-data", url]);
    assert_eq!(ok(&["list", "--short", url]), "two\n");

    // The objects in the bucket are the repository's files under the same
    // names as on disk: a copy into a directory is a repository.
    let copy = env.path("copy");
    let b = {
        for (k, v) in g.env() {
            // SAFETY: single-threaded at this point of the test.
            unsafe { std::env::set_var(k, v) };
        }
        strata::backend::open_location(url, false, "strata", None).unwrap()
    };
    use strata::backend::FileKind::*;
    for kind in [Config, Key, Pack, Index, Manifest] {
        for f in b.list(kind).unwrap() {
            let dir = match kind {
                Config => copy.clone(),
                Pack => copy.join("data").join(&f.name[..2]),
                _ => copy.join(kind.dir()),
            };
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(&f.name), b.read(kind, &f.name).unwrap()).unwrap();
        }
    }
    std::fs::create_dir_all(copy.join("locks")).unwrap();
    env.ok(&["check", "--verify-data", copy.to_str().unwrap()]);
}

#[test]
fn two_writers_on_one_bucket_take_turns() {
    let env = Env::new();
    let g = Garage::start();
    let ok = with_env(&env, g.env());
    let url = "s3://strata/shared";
    ok(&["init", url]);
    // One writer holds the lock (waiting on its standard input): a second
    // one that will not wait is refused, naming the holder.
    let mut first = std_cmd(&env, &g)
        .args(["create", &format!("{url}::first"), "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b = {
        for (k, v) in g.env() {
            // SAFETY: no other thread of this test reads the environment.
            unsafe { std::env::set_var(k, v) };
        }
        strata::backend::open_location(url, false, "strata", None).unwrap()
    };
    wait_for("the first writer's lock object", || {
        !b.list(strata::backend::FileKind::Lock).unwrap().is_empty()
    });
    let out = cmd(&env, &g)
        .args(["--lock-wait", "0", "create", &format!("{url}::second"), "-"])
        .write_stdin("second")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is locked by an exclusive lock"), "{err}");
    use std::io::Write;
    first.stdin.take().unwrap().write_all(b"first").unwrap();
    assert!(first.wait().unwrap().success());

    // Many writers at once, each waiting its turn: every archive lands,
    // none is lost, the repository checks.
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let src = env.path(&format!("w{i}"));
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join("f"), random(&format!("writer {i}"), 3_000_000)).unwrap();
            std_cmd(&env, &g)
                .args([
                    "--lock-wait",
                    "120",
                    "create",
                    &format!("{url}::w{i}"),
                    src.to_str().unwrap(),
                ])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut names: Vec<String> = ok(&["list", "--short", url])
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    assert_eq!(names, ["first", "w0", "w1", "w2", "w3"]);
    ok(&["check", "--verify-data", url]);
    // Every process has ended: no lock may be left. If one is, say whose
    // (this failed once under a loaded CI run, not reproduced alone).
    let left: Vec<String> = b
        .list(strata::backend::FileKind::Lock)
        .unwrap()
        .iter()
        .map(|f| {
            let body = b.read(strata::backend::FileKind::Lock, &f.name);
            let body = body.map(|d| String::from_utf8_lossy(&d).into_owned());
            format!("{}: {body:?}", f.name)
        })
        .collect();
    assert!(left.is_empty(), "locks left behind: {left:#?}");
}

#[test]
fn a_garage_node_lost_mid_backup_does_not_lose_the_backup() {
    let env = Env::new();
    let mut g = Garage::start();
    let ok = with_env(&env, g.env());
    let url = "s3://strata/hosts/beta";
    ok(&["init", url]);
    let src = env.path("src");
    make_tree(&src);
    add_files(&src, "part", 6);
    // Power cut of the third node once some packs reached it.
    let backup = backup_under_way(&env, &g, &format!("{url}::during"), &src, 2, 16_000_000);
    g.kill(2);
    let out = backup.wait_with_output().unwrap();
    // Two of three nodes are a quorum: the backup completes.
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&["check", "--verify-data", url]);
    assert_restores(&ok, &env.path("out"), &src, &[&format!("{url}::during")]);
    // The node comes back and the cluster takes writes with all three.
    g.restart(2);
    std::fs::write(src.join("after"), b"after the outage").unwrap();
    ok(&["create", &format!("{url}::after"), src.to_str().unwrap()]);
    ok(&["check", url]);

    // The node the client talks to goes down mid-backup and comes back:
    // the failed requests are retried with back-off and the backup
    // completes.
    add_files(&src, "more", 4);
    let backup = backup_under_way(&env, &g, &format!("{url}::blip"), &src, 0, 8_000_000);
    let t = std::time::Instant::now();
    g.kill(0);
    g.restart(0);
    eprintln!("endpoint node back after {:?}", t.elapsed());
    let out = backup.wait_with_output().unwrap();
    eprintln!("backup done after {:?}", t.elapsed());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&["check", "--verify-data", url]);
    assert_restores(&ok, &env.path("out-blip"), &src, &[&format!("{url}::blip")]);
}

/// `count` files of 12 MB of random data named `PREFIXi` in `src`.
fn add_files(src: &std::path::Path, prefix: &str, count: usize) {
    for i in 0..count {
        let name = format!("{prefix}{i}");
        std::fs::write(src.join(&name), random(&name, 12_000_000)).unwrap();
    }
}

/// Starts `create ARCHIVE SRC` and returns once `grown` more bytes of it
/// reached Garage node `node` (the moment to cut that node's power).
fn backup_under_way(
    env: &Env,
    g: &Garage,
    archive: &str,
    src: &std::path::Path,
    node: usize,
    grown: u64,
) -> std::process::Child {
    let before = g.data_bytes(node);
    let backup = std_cmd(env, g)
        .args(["create", archive, src.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&format!("packs on node {node}"), || {
        g.data_bytes(node) > before + grown
    });
    backup
}

#[test]
fn replication_goes_to_and_comes_from_a_bucket() {
    let env = Env::new();
    let g = Garage::start();
    let ok = with_env(&env, g.env());
    let src = env.path("src");
    make_tree(&src);
    // A host repository on disk, replicated into a bucket (an off-site tier
    // on a Garage cluster instead of one drive per Pi).
    let host = env.path("central/host1").display().to_string();
    ok(&["init", &host]);
    ok(&["create", &format!("{host}::one"), src.to_str().unwrap()]);
    let tier = "s3://strata/offsite";
    ok(&["init", "-e", "none", tier]);
    ok(&["replicate", "--to", tier, &host]);
    std::fs::write(src.join("new-file"), random("s3-replicate", 3_000_000)).unwrap();
    ok(&["create", &format!("{host}::two"), src.to_str().unwrap()]);
    let second: serde_json::Value =
        serde_json::from_str(&ok(&["replicate", "--json", "--to", tier, &host])).unwrap();
    let r = &second["replicas"][0];
    assert!(r["unchanged_files"].as_u64().unwrap() > 0, "{second}");
    ok(&["check", "--verify-data", tier]);
    // Restore from the tier alone.
    assert_restores(
        &ok,
        &env.path("from-tier"),
        &src,
        &["--replica", tier, "host1::two"],
    );

    // And the other way: a host repository in the bucket, replicated to a
    // directory (a Pi's drive).
    let central = "s3://strata/central/host2";
    ok(&["init", central]);
    ok(&["create", &format!("{central}::one"), src.to_str().unwrap()]);
    let pi = env.path("pi").display().to_string();
    ok(&["init", "-e", "none", &pi]);
    ok(&["replicate", "--to", &pi, central]);
    assert_restores(
        |a: &[&str]| env.ok(a),
        &env.path("from-pi"),
        &src,
        &["--replica", &pi, "host2::one"],
    );
}

fn one_line_error(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

#[test]
fn s3_failures_are_one_clear_line() {
    let env = Env::new();
    let g = Garage::start();
    let ok = with_env(&env, g.env());
    ok(&["init", "s3://strata/errs"]);
    let run = |vars: &[(&str, &str)], args: &[&str]| {
        let mut c = cmd(&env, &g);
        for (k, v) in vars {
            c.env(k, v);
        }
        c.args(args).output().unwrap()
    };
    let err = one_line_error(&run(
        &[("AWS_SECRET_ACCESS_KEY", "wrong")],
        &["list", "s3://strata/errs"],
    ));
    assert!(
        err.contains("access denied: check the S3 credentials"),
        "{err}"
    );
    let err = one_line_error(&run(
        &[("AWS_REGION", "us-east-1")],
        &["list", "s3://strata/errs"],
    ));
    assert!(err.contains("set AWS_REGION"), "{err}");
    let err = one_line_error(&run(&[], &["list", "s3://nobucket/x"]));
    assert!(
        err.contains("the bucket does not exist: create it first"),
        "{err}"
    );
    let err = one_line_error(&run(&[], &["list", "s3://strata/nothing-here"]));
    assert!(err.contains("is not a strata repository"), "{err}");
    let dead = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    // (retried for 3 s here instead of the default 2 minutes)
    let err = one_line_error(&run(
        &[
            ("STRATA_S3_ENDPOINT", &dead),
            ("STRATA_S3_RETRY_SECONDS", "3"),
        ],
        &["list", "s3://strata/errs"],
    ));
    assert!(err.contains("cannot reach the S3 endpoint"), "{err}");
    let err = one_line_error(&run(&[], &["init", "s3://strata/errs"]));
    assert!(err.contains("already exists"), "{err}");
    let err = one_line_error(&run(&[], &["init", "s3://strata/a/../b"]));
    assert!(err.contains("bad prefix"), "{err}");
    // A bucket over its quota is a full disk: the backup fails, names the
    // quota, commits nothing; with room again the next run succeeds.
    g.cli(&["bucket", "create", "small"]);
    g.cli(&[
        "bucket", "allow", "--read", "--write", "small", "--key", "strata",
    ]);
    g.cli(&["bucket", "set-quotas", "--max-size", "4MiB", "small"]);
    ok(&["init", "s3://small/repo"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), random("s3-quota", 30_000_000)).unwrap();
    let err = one_line_error(&run(
        &[],
        &["create", "s3://small/repo::big", src.to_str().unwrap()],
    ));
    assert!(err.contains("quota"), "{err}");
    assert_eq!(ok(&["list", "--short", "s3://small/repo"]), "");
    ok(&["check", "s3://small/repo"]);
    g.cli(&["bucket", "set-quotas", "--max-size", "none", "small"]);
    ok(&["create", "s3://small/repo::big", src.to_str().unwrap()]);
    ok(&["check", "--verify-data", "s3://small/repo"]);

    // no credentials anywhere
    let out = env
        .cmd()
        .env("STRATA_S3_ENDPOINT", g.endpoint(0))
        .env("AWS_REGION", "garage")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", env.path("empty-home"))
        .args(["list", "s3://strata/errs"])
        .output()
        .unwrap();
    let err = one_line_error(&out);
    assert!(err.contains("no S3 credentials"), "{err}");
    // credentials from an AWS-style file, section chosen by AWS_PROFILE
    std::fs::create_dir_all(env.path("home/.aws")).unwrap();
    std::fs::write(
        env.path("home/.aws/credentials"),
        format!(
            "[default]\naws_access_key_id = GK000000000000000000000000\naws_secret_access_key = nope\n\n[garage]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            g.key_id, g.secret
        ),
    )
    .unwrap();
    let out = env
        .cmd()
        .env("STRATA_S3_ENDPOINT", g.endpoint(0))
        .env("AWS_REGION", "garage")
        .env("AWS_PROFILE", "garage")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", env.path("home"))
        .args(["list", "s3://strata/errs"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_daemons_jobs_back_up_and_replicate_to_buckets_named_in_the_config() {
    let env = Env::new();
    let g = Garage::start();
    let src = env.path("src");
    make_tree(&src);
    // Secrets in a credentials file named by strata.toml; nothing in the
    // environment.
    let creds = env.path("s3.credentials");
    std::fs::write(
        &creds,
        format!(
            "[offsite]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            g.key_id, g.secret
        ),
    )
    .unwrap();
    std::fs::write(env.path("pass"), "test passphrase\n").unwrap();
    let s3 = |prefix: &str| {
        format!(
            "location = \"s3://strata/{prefix}\"\n[repository.s3]\nendpoint = \"{}\"\nregion = \"garage\"\ncredentials_file = \"{}\"\nprofile = \"offsite\"\n",
            g.endpoint(1),
            creds.display()
        )
    };
    let cfg = env.path("strata.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"state_dir = "{state}"

[node]
name = "central"

[[repository]]
name = "host1"
passphrase_file = "{pass}"
{host}
[[repository]]
name = "garage"
{tier}
[[job]]
name = "nightly"
kind = "backup"
repository = "host1"
schedule = "0 3 1 1 *"
sources = ["{src}"]
archive = "night-{{now:%Y%m%d%H%M%S%f}}"

[[job]]
name = "offsite"
kind = "replicate"
sources = ["s3://strata/hosts/host1"]
targets = ["garage"]
after = "nightly"
"#,
            state = env.path("state").display(),
            pass = env.path("pass").display(),
            host = s3("hosts/host1"),
            tier = s3("offsite"),
            src = src.display(),
        ),
    )
    .unwrap();
    let no_aws = |c: &mut assert_cmd::Command| {
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "STRATA_S3_ENDPOINT",
            "AWS_REGION",
        ] {
            c.env_remove(k);
        }
        c.env("HOME", env.path("empty-home"));
    };
    // The repositories are created with the environment's settings.
    let ok = with_env(&env, g.env());
    ok(&["init", "s3://strata/hosts/host1"]);
    ok(&["init", "-e", "none", "s3://strata/offsite"]);
    let mut c = env.cmd();
    no_aws(&mut c);
    let out = c
        .args(["backup", "-c", cfg.to_str().unwrap(), "nightly"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archives = ok(&["list", "--short", "s3://strata/hosts/host1"]);
    assert_eq!(archives.lines().count(), 1, "{archives}");
    let night = archives.trim();
    // The replica in the bucket restores the host's files.
    assert_restores(
        &ok,
        &env.path("restored"),
        &src,
        &[
            "--replica",
            "s3://strata/offsite",
            &format!("host1::{night}"),
        ],
    );
}
