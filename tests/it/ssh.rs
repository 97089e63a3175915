//! strata over a real OpenSSH sshd on loopback: the same commands as for a
//! local repository, the server's forced command, and every kind of
//! connection failure with its message.

use crate::sshd::Sshd;
use crate::util::*;

pub fn strata_bin() -> String {
    assert_cmd::cargo::cargo_bin("strata").display().to_string()
}

#[test]
fn the_command_suite_runs_over_real_ssh() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let forced = format!(
        "{} serve --restrict-to-path {}",
        strata_bin(),
        env.dir.path().display()
    );
    let sshd = Sshd::start(Some(&forced));
    let url = format!(
        "ssh://{}@127.0.0.1{}",
        sshd.user(),
        env.path("repo").display()
    );
    let rsh = sshd.rsh();
    let ok = |args: &[&str]| env.ok_with(&[("STRATA_RSH", &rsh)], args);
    ok(&["init", &url]);
    ok(&["create", &format!("{url}::one"), src.to_str().unwrap()]);
    std::fs::write(src.join("dir/added"), b"later\n").unwrap();
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
    let diff = ok(&["diff", &format!("{url}::one"), "two"]);
    assert!(diff.contains("dir/added"), "{diff}");
    ok(&["prune", "--keep-last", "1", &url]);
    ok(&["compact", "--grace-period", "0", &url]);
    ok(&["check", "--verify-data", &url]);
    // the files on the server are ciphertext: the same checks work locally
    env.ok(&[
        "check",
        "--verify-data",
        &env.path("repo").display().to_string(),
    ]);
}

fn fails_with(env: &Env, rsh: &str, args: &[&str], needle: &str) {
    let out = env
        .cmd()
        .env("STRATA_RSH", rsh)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?} should fail: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected `{needle}` in: {err}"
    );
}

#[test]
fn connection_failures_are_one_clear_line() {
    let env = Env::new();
    let sshd = Sshd::start(None);
    let url = format!(
        "ssh://{}@127.0.0.1{}",
        sshd.user(),
        env.path("repo").display()
    );
    // strata missing on the server (wrong --remote-path)
    fails_with(
        &env,
        &sshd.rsh(),
        &["--remote-path", "/nonexistent/strata", "list", &url],
        "No such file",
    );
    // the server's host key changed
    std::fs::write(sshd.known_hosts(), format!("[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC8Tfu4Jw0vb1y1wXzgxyd6c6/J8mHOc5ybNXu03DiBz\n", sshd.port())).unwrap();
    fails_with(
        &env,
        &sshd.rsh(),
        &["list", &url],
        "Host key verification failed",
    );
    // nothing listening
    let closed = sshd.rsh().replace(&format!("-p {}", sshd.port()), "-p 1");
    fails_with(
        &env,
        &closed,
        &["list", &url],
        "cannot reach strata on 127.0.0.1",
    );
    // a key the server does not know
    let other = Sshd::start(None);
    let wrong_key = sshd.rsh().replace(
        &sshd.key_path().display().to_string(),
        &other.key_path().display().to_string(),
    );
    std::fs::write(
        sshd.known_hosts(),
        format!("[127.0.0.1]:{} {}\n", sshd.port(), sshd.host_pubkey()),
    )
    .unwrap();
    fails_with(&env, &wrong_key, &["list", &url], "Permission denied");
    // with the right key but no repository there
    fails_with(
        &env,
        &sshd.rsh(),
        &["--remote-path", &strata_bin(), "list", &url],
        "is not a strata repository",
    );
}

#[test]
fn the_forced_command_wins_over_what_the_client_asks() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("allowed")).unwrap();
    let forced = format!(
        "{} serve --restrict-to-path {} --append-only",
        strata_bin(),
        env.path("allowed").display()
    );
    let sshd = Sshd::start(Some(&forced));
    // the client asks for an unrestricted server: ignored
    let url = format!(
        "ssh://{}@127.0.0.1{}",
        sshd.user(),
        env.path("elsewhere").display()
    );
    fails_with(
        &env,
        &sshd.rsh(),
        &[
            "--remote-path",
            &format!(
                "{} serve; touch {}/pwned; true",
                strata_bin(),
                env.dir.path().display()
            ),
            "init",
            &url,
        ],
        "outside the paths",
    );
    assert!(!env.path("pwned").exists(), "the client's command ran");
    let inside = format!(
        "ssh://{}@127.0.0.1{}/repo",
        sshd.user(),
        env.path("allowed").display()
    );
    let out = env
        .cmd()
        .env("STRATA_RSH", sshd.rsh())
        .args(["init", &inside])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env
        .cmd()
        .env("STRATA_RSH", sshd.rsh())
        .args([
            "create",
            &format!("{inside}::a"),
            env.path("allowed").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env
        .cmd()
        .env("STRATA_RSH", sshd.rsh())
        .args(["delete", &format!("{inside}::a")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fails_with(
        &env,
        &sshd.rsh(),
        &["compact", "--grace-period", "0", &inside],
        "refused by the server",
    );
}

/// Pids of processes whose command line contains every needle.
fn pids_with(needles: &[&str]) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if needles.iter().all(|n| cmd.contains(n)) {
            out.push(pid);
        }
    }
    out
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        // The server renames its temporary files while this walks: one
        // gone between readdir and stat counts as nothing yet.
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn a_connection_cut_mid_backup_commits_nothing_and_the_next_run_resends_little() {
    // cut early, in the middle, and late in the backup
    for cut_at in [1u64 << 20, 6 << 20, 14 << 20] {
        connection_cut_at(cut_at);
    }
}

fn connection_cut_at(cut_at: u64) {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(
            src.join(format!("f{i}")),
            random(&format!("cut{i}"), 4 << 20),
        )
        .unwrap();
    }
    let marker = env.dir.path().display().to_string();
    let forced = format!("{} serve --restrict-to-path {marker}", strata_bin());
    let sshd = Sshd::start(Some(&forced));
    let url = format!(
        "ssh://{}@127.0.0.1{}",
        sshd.user(),
        env.path("repo").display()
    );
    let status = env
        .cmd()
        .env("STRATA_RSH", sshd.rsh())
        .args([
            "init",
            "--pack-size",
            "1M",
            "--chunker-params",
            "64K,256K,1M",
            &url,
        ])
        .output()
        .unwrap();
    assert!(status.status.success());
    let backup = env
        .std_cmd()
        .env("STRATA_RSH", sshd.rsh())
        .args(["create", &format!("{url}::a"), src.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // condition wait: some packs have landed on the server
    let data = env.path("repo/data");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while dir_bytes(&data) < cut_at {
        assert!(std::time::Instant::now() < deadline, "no data arrived");
        std::thread::yield_now();
    }
    // cut the connection: the server side of the session dies
    for pid in pids_with(&["serve", "--restrict-to-path", &marker]) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    let out = backup.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("connection to") && err.contains("lost"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let landed = dir_bytes(&data);
    let rsh = sshd.rsh();
    let ok = |args: &[&str]| env.ok_with(&[("STRATA_RSH", &rsh)], args);
    assert_eq!(
        ok(&["list", "--short", &url]),
        "",
        "nothing may be committed"
    );
    // the stale lock of the dead session: broken by the operator
    ok(&["break-lock", &url]);
    ok(&["create", &format!("{url}::a"), src.to_str().unwrap()]);
    // up to 3 packs were in flight when the link was cut (their temporary
    // files are counted in `landed` but must be sent again), hence 4 MiB
    // of slack
    let resent = dir_bytes(&data) - landed;
    let total = 24u64 << 20;
    assert!(
        resent < total - landed + (4 << 20),
        "resent {resent} bytes of {total} after {landed} had landed"
    );
    ok(&["check", "--verify-data", &url]);
    let dest = env.path("out");
    std::fs::create_dir(&dest).unwrap();
    ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{url}::a"),
    ]);
    assert_same_tree(&src, &restored(&dest, &src));
}

/// The built-in client (russh): no system ssh involved.
pub fn builtin(env: &Env, sshd: &Sshd, args: &[&str]) -> std::process::Output {
    env.cmd()
        .env_remove("STRATA_RSH")
        .env("STRATA_SSH_KEY", sshd.key_path())
        .env("STRATA_KNOWN_HOSTS", sshd.known_hosts())
        .env("STRATA_REMOTE_PATH", strata_bin())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_builtin_ssh_client_backs_up_restores_and_checks_host_keys() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let forced = format!(
        "{} serve --restrict-to-path {}",
        strata_bin(),
        env.dir.path().display()
    );
    let sshd = Sshd::start(Some(&forced));
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user(),
        sshd.port(),
        env.path("repo").display()
    );
    let ok = |args: &[&str]| {
        let out = builtin(&env, &sshd, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["init", &url]);
    ok(&["create", &format!("{url}::a"), src.to_str().unwrap()]);
    ok(&["check", "--verify-data", &url]);
    let dest = env.path("out");
    std::fs::create_dir(&dest).unwrap();
    ok(&[
        "extract",
        "--sparse",
        "--target",
        dest.to_str().unwrap(),
        &format!("{url}::a"),
    ]);
    assert_same_tree(&src, &restored(&dest, &src));
    let fail = |args: &[&str], needle: &str| {
        let out = builtin(&env, &sshd, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "expected `{needle}`: {err}");
    };
    // an unknown host is refused, then accepted once with --accept-new
    std::fs::write(sshd.known_hosts(), "").unwrap();
    fail(&["list", &url], "is not in");
    let out = env
        .cmd()
        .env_remove("STRATA_RSH")
        .env("STRATA_SSH_KEY", sshd.key_path())
        .env("STRATA_KNOWN_HOSTS", sshd.known_hosts())
        .args(["--accept-new", "list", "--short", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(sshd.known_hosts())
            .unwrap()
            .contains("ssh-ed25519")
    );
    // a changed host key is refused even with accept-new
    let other = Sshd::start(None);
    std::fs::write(
        sshd.known_hosts(),
        format!("[127.0.0.1]:{} {}\n", sshd.port(), other.host_pubkey()),
    )
    .unwrap();
    fail(&["list", &url], "CHANGED");
    // a key the server does not know
    std::fs::write(
        sshd.known_hosts(),
        format!("[127.0.0.1]:{} {}\n", sshd.port(), sshd.host_pubkey()),
    )
    .unwrap();
    let out = env
        .cmd()
        .env_remove("STRATA_RSH")
        .env("STRATA_SSH_KEY", other.key_path())
        .env("STRATA_KNOWN_HOSTS", sshd.known_hosts())
        .args(["list", &url])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // nothing listening
    let closed = format!(
        "ssh://{}@127.0.0.1:1{}",
        sshd.user(),
        env.path("repo").display()
    );
    fail(&["list", &closed], "cannot reach 127.0.0.1:1");
    // the key held by an ssh-agent instead of a key file
    let sock = env.path("agent.sock");
    let agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(agent);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "ssh-agent did not start"
        );
        std::thread::yield_now();
    }
    let added = std::process::Command::new("ssh-add")
        .arg(sshd.key_path())
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let out = env
        .cmd()
        .env_remove("STRATA_RSH")
        .env("STRATA_SSH_KEY", env.path("no-such-key"))
        .env("STRATA_KNOWN_HOSTS", sshd.known_hosts())
        .env("SSH_AUTH_SOCK", &sock)
        .args(["list", "--short", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "agent auth: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\n");
}
