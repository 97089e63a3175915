//! `strata serve` enforces its restrictions itself: tested by speaking the
//! protocol to a real `strata serve` process, and through a forced-command
//! stand-in for ssh (the real-sshd suite is in ssh.rs).

use crate::util::*;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use strata::backend::remote::proto::*;

struct Server {
    child: Child,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let child = Command::new(assert_cmd::cargo::cargo_bin("strata"))
            .arg("serve")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child }
    }

    fn hello(&mut self, path: &str, create: bool) -> Result<Welcome, RemoteError> {
        let hello = Hello {
            magic: PROTOCOL_MAGIC.into(),
            version: PROTOCOL_VERSION,
            path: path.into(),
            create,
        };
        write_frame(self.child.stdin.as_mut().unwrap(), &hello).unwrap();
        read_frame::<Result<Welcome, RemoteError>>(self.child.stdout.as_mut().unwrap())
            .unwrap()
            .unwrap()
    }

    fn call(&mut self, id: u64, op: Op) -> Result<Payload, RemoteError> {
        write_frame(self.child.stdin.as_mut().unwrap(), &Request { id, op }).unwrap();
        let resp: Response = read_frame(self.child.stdout.as_mut().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(resp.id, id);
        resp.result
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn paths_outside_the_restriction_are_refused() {
    let env = Env::new();
    let allowed = env.path("srv");
    std::fs::create_dir_all(allowed.join("host1")).unwrap();
    std::fs::create_dir_all(env.path("srv-evil")).unwrap();
    std::fs::create_dir_all(env.path("outside")).unwrap();
    std::os::unix::fs::symlink(env.path("outside"), allowed.join("link-out")).unwrap();
    let a = allowed.to_str().unwrap();
    let escapes = [
        format!("{a}/../outside/repo"),
        env.path("srv-evil/repo").display().to_string(),
        format!("{a}/link-out/repo"),
        env.path("outside").display().to_string(),
    ];
    for p in &escapes {
        let mut s = Server::start(&["--restrict-to-path", a]);
        let err = s.hello(p, true).unwrap_err();
        assert_eq!(err.code, ErrorCode::Denied, "{p} was admitted");
    }
    let mut s = Server::start(&["--restrict-to-path", a]);
    s.hello(&format!("{a}/host1/repo"), true)
        .expect("a path inside is allowed");
    s.call(1, Op::Create).unwrap();
    s.call(
        3,
        Op::Write {
            kind: Kind::Config,
            name: "config".into(),
            data: b"{}".to_vec(),
        },
    )
    .unwrap();
    // names that would leave the repository directory are refused
    for name in ["../x", "a/b", ".hidden", ""] {
        let r = s.call(
            2,
            Op::Write {
                kind: Kind::Lock,
                name: name.into(),
                data: vec![1],
            },
        );
        assert!(r.is_err(), "{name:?} was written");
    }
    // only exactly this repository
    let mut s = Server::start(&["--restrict-to-repository", &format!("{a}/host1/repo")]);
    assert_eq!(
        s.hello(&format!("{a}/host1"), false).unwrap_err().code,
        ErrorCode::Denied
    );
    let mut s = Server::start(&["--restrict-to-repository", &format!("{a}/host1/repo")]);
    s.hello(&format!("{a}/host1/repo"), false)
        .expect("the repository itself");
}

#[test]
fn append_only_read_only_and_quota_are_enforced() {
    let env = Env::new();
    let repo = env.path("repo");
    let r = repo.to_str().unwrap();
    // Packs are named by the BLAKE3 of their bytes; the server checks it.
    let pack = blake3::hash(&[7u8; 1000]).to_hex().to_string();
    let mut s = Server::start(&[]);
    s.hello(r, true).unwrap();
    s.call(1, Op::Create).unwrap();
    assert_eq!(
        s.call(
            9,
            Op::Write {
                kind: Kind::Pack,
                name: "aa".repeat(32),
                data: vec![7; 1000],
            },
        )
        .unwrap_err()
        .code,
        ErrorCode::Denied,
        "a pack whose bytes do not hash to its name"
    );
    s.call(
        2,
        Op::Write {
            kind: Kind::Pack,
            name: pack.clone(),
            data: vec![7; 1000],
        },
    )
    .unwrap();
    s.call(
        3,
        Op::Write {
            kind: Kind::Config,
            name: "config".into(),
            data: b"{}".to_vec(),
        },
    )
    .unwrap();
    drop(s);
    let mut s = Server::start(&["--append-only"]);
    s.hello(r, false).unwrap();
    assert_eq!(
        s.call(
            1,
            Op::Delete {
                kind: Kind::Pack,
                name: pack.clone()
            }
        )
        .unwrap_err()
        .code,
        ErrorCode::Denied
    );
    assert!(
        s.call(
            2,
            Op::Write {
                kind: Kind::Pack,
                name: pack.clone(),
                data: vec![8; 1000]
            }
        )
        .is_err(),
        "overwrite allowed"
    );
    s.call(
        3,
        Op::Write {
            kind: Kind::Lock,
            name: "x-1".into(),
            data: vec![1],
        },
    )
    .unwrap();
    s.call(
        4,
        Op::Delete {
            kind: Kind::Lock,
            name: "x-1".into(),
        },
    )
    .expect("locks may be removed");
    assert_eq!(
        std::fs::read(repo.join("data").join(&pack[..2]).join(&pack)).unwrap(),
        vec![7; 1000]
    );
    drop(s);
    let mut s = Server::start(&["--read-only"]);
    s.hello(r, false).unwrap();
    assert_eq!(
        s.call(
            1,
            Op::Write {
                kind: Kind::Index,
                name: "bb".into(),
                data: vec![1]
            }
        )
        .unwrap_err()
        .code,
        ErrorCode::Denied
    );
    assert!(
        matches!(s.call(2, Op::List { kind: Kind::Pack }).unwrap(), Payload::Files { files } if files.len() == 1)
    );
    drop(s);
    let mut s = Server::start(&["--storage-quota", "3K"]);
    s.hello(r, false).unwrap();
    let cc = blake3::hash(&[1u8; 1000]).to_hex().to_string();
    let dd = blake3::hash(&[1u8; 2000]).to_hex().to_string();
    s.call(
        1,
        Op::Write {
            kind: Kind::Index,
            name: cc.clone(),
            data: vec![1; 1000],
        },
    )
    .unwrap();
    assert_eq!(
        s.call(
            2,
            Op::Write {
                kind: Kind::Index,
                name: dd.clone(),
                data: vec![1; 2000]
            }
        )
        .unwrap_err()
        .code,
        ErrorCode::QuotaExceeded
    );
    assert!(
        !repo.join("index").join(&dd).exists(),
        "a refused write left a file"
    );
}

#[test]
fn hostile_frames_end_the_session_without_harm() {
    let env = Env::new();
    let mut s = Server::start(&[]);
    // a 4 GiB frame announced: refused before allocating
    let stdin = s.child.stdin.as_mut().unwrap();
    stdin.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let _ = stdin.write_all(&[0; 64]);
    let out = s.child.wait_with_output_ref();
    assert!(!out.0.success());
    assert!(out.1.contains("more than the limit"), "{}", out.1);
    // a wrong protocol version gets a clear answer
    let mut s = Server::start(&[]);
    let hello = Hello {
        magic: PROTOCOL_MAGIC.into(),
        version: 99,
        path: env.path("x").display().to_string(),
        create: true,
    };
    write_frame(s.child.stdin.as_mut().unwrap(), &hello).unwrap();
    let answer = read_frame::<Result<Welcome, RemoteError>>(s.child.stdout.as_mut().unwrap())
        .unwrap()
        .unwrap();
    assert!(answer.unwrap_err().message.contains("same strata version"));
    // garbage instead of MessagePack
    let mut s = Server::start(&[]);
    let stdin = s.child.stdin.as_mut().unwrap();
    stdin.write_all(&5u32.to_le_bytes()).unwrap();
    stdin.write_all(b"\xc1\xc1\xc1\xc1\xc1").unwrap();
    let out = s.child.wait_with_output_ref();
    assert!(!out.0.success());
}

trait WaitRef {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String);
}

impl WaitRef for Child {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String) {
        drop(self.stdin.take());
        let mut err = String::new();
        use std::io::Read;
        self.stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (self.wait().unwrap(), err)
    }
}

/// A stand-in for ssh that runs a fixed server command, like an
/// authorized_keys forced command: the client's requested command is ignored.
fn forced_rsh(env: &Env, server_args: &str) -> String {
    let script = env.path("forced-rsh");
    let strata = assert_cmd::cargo::cargo_bin("strata");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {} serve {server_args}\n", strata.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

#[test]
fn an_append_only_client_cannot_destroy_history() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), random("f", 2 << 20)).unwrap();
    let url = format!("backup@central:{}", env.path("repo").display());
    let full = forced_rsh(&env, "");
    env.cmd()
        .env("STRATA_RSH", &full)
        .args(["init", &url])
        .assert()
        .success();
    let append = forced_rsh(&env, "--append-only");
    let run = |args: &[&str]| {
        env.cmd()
            .env("STRATA_RSH", &append)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        run(&["create", &format!("{url}::a"), src.to_str().unwrap()])
            .status
            .success()
    );
    // Backups through an append-only server keep every manifest generation
    // without a warning about the old ones they may not delete.
    for name in ["b", "c", "d"] {
        let out = run(&["create", &format!("{url}::{name}"), src.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read_dir(env.path("repo/manifest"))
            .unwrap()
            .count(),
        4,
        "four backups: four generations"
    );
    // the compromised client "deletes" everything and tries to compact
    assert!(
        run(&["delete", "-a", "*", &url]).status.success(),
        "a new manifest generation is just a new file"
    );
    let out = run(&["compact", "--grace-period", "0", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused by the server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // every pack is still there: the history can be recovered from an
    // older manifest generation by the operator
    env.ok(&["check", "--verify-data", env.path("repo").to_str().unwrap()]);
    assert!(
        std::fs::read_dir(env.path("repo/manifest"))
            .unwrap()
            .count()
            >= 3
    );
}

#[test]
fn the_command_suite_runs_against_a_served_repository() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let url = format!("ssh://backup@central{}", env.path("repo").display());
    let rsh = forced_rsh(
        &env,
        &format!("--restrict-to-path {}", env.dir.path().display()),
    );
    let ok = |args: &[&str]| env.ok_with(&[("STRATA_RSH", &rsh)], args);
    ok(&["init", &url]);
    ok(&["create", &format!("{url}::one"), src.to_str().unwrap()]);
    ok(&["create", &format!("{url}::two"), src.to_str().unwrap()]);
    assert_eq!(ok(&["list", "--short", &url]), "one\ntwo\n");
    ok(&["check", "--verify-data", &url]);
    let dest = env.path("out");
    std::fs::create_dir(&dest).unwrap();
    ok(&[
        "extract",
        "--sparse",
        "--target",
        dest.to_str().unwrap(),
        &format!("{url}::two"),
    ]);
    assert_same_tree(&src, &restored(&dest, &src));
    ok(&["delete", &format!("{url}::one")]);
    ok(&["prune", "--keep-last", "1", &url]);
    ok(&["compact", "--grace-period", "0", &url]);
    ok(&["check", "--verify-data", &url]);
    // a path outside the server's restriction
    let out = env
        .cmd()
        .env("STRATA_RSH", &rsh)
        .args(["list", "ssh://backup@central/etc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused by the server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A forced-command stand-in that also counts the sessions it serves.
fn counting_rsh(env: &Env, server_args: &str) -> (String, std::path::PathBuf) {
    let script = env.path("counting-rsh");
    let log = env.path("sessions.log");
    let strata = assert_cmd::cargo::cargo_bin("strata");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho session >> {}\nexec {} serve {server_args}\n",
            log.display(),
            strata.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script.display().to_string(), log)
}

#[test]
fn pack_transfers_use_several_connections_unless_a_quota_is_counted() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), random("lanes", 6 << 20)).unwrap();
    let url = format!("backup@central:{}", env.path("repo").display());
    let sessions = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let (rsh, log) = counting_rsh(&env, "");
    let run = |rsh: &str, args: &[&str]| env.ok_with(&[("STRATA_RSH", rsh)], args);
    run(&rsh, &["init", "--pack-size", "1M", &url]);
    std::fs::remove_file(&log).unwrap();
    run(
        &rsh,
        &["create", &format!("{url}::a"), src.to_str().unwrap()],
    );
    assert_eq!(sessions(&log), 3, "the first connection and two for packs");
    std::fs::remove_file(&log).unwrap();
    // Listing moves no pack: no extra connection is opened.
    run(&rsh, &["list", "--short", &url]);
    assert_eq!(sessions(&log), 1);
    std::fs::remove_file(&log).unwrap();
    // A quota is counted per session: one connection keeps it exact.
    let (quota_rsh, log) = counting_rsh(&env, "--storage-quota 1G");
    run(
        &quota_rsh,
        &["create", &format!("{url}::b"), src.to_str().unwrap()],
    );
    assert_eq!(sessions(&log), 1);
    run(&rsh, &["check", "--verify-data", &url]);
}

#[test]
fn a_client_killed_mid_backup_leaves_no_lock_on_the_server() {
    let env = Env::new();
    let url = format!("backup@central:{}", env.path("repo").display());
    let rsh = forced_rsh(&env, "");
    env.ok_with(&[("STRATA_RSH", &rsh)], &["init", &url]);
    // A backup of standard input holds its lock while it waits for data.
    let mut client = env
        .std_cmd()
        .env("STRATA_RSH", &rsh)
        .args(["create", &format!("{url}::a"), "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let locks = env.path("repo/locks");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !crate::util::has_lock(&locks) {
        assert!(
            std::time::Instant::now() < deadline,
            "the client never locked"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    client.kill().unwrap();
    client.wait().unwrap();
    // The server sees its client gone and removes the lock it wrote.
    while crate::util::has_lock(&locks) {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead client's lock is still on the server"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    env.ok_with(&[("STRATA_RSH", &rsh)], &["--lock-wait", "0", "list", &url]);
}
