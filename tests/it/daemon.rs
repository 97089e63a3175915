//! `strata daemon` end to end: jobs on a schedule against real
//! repositories, a failing hook, an email to a real SMTP server (Python's
//! standard `smtpd`) and a webhook to a real HTTP listener, recovery, the
//! history, SIGTERM, and a kill -9 in the middle of a backup.

use crate::util::{Env, random, wait_for};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata::daemon::history::{History, Run};

const DEADLINE: Duration = Duration::from_secs(60);

/// Requests received: (request line, body).
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A real HTTP listener: records each request's first line and body.
fn webhook_listener() -> (u16, Received) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            g.lock().unwrap().push((
                first.trim().to_string(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, got)
}

/// Python's standard-library SMTP server, printing each message to a file.
struct SmtpSink {
    child: Child,
    port: u16,
    out: std::path::PathBuf,
}

impl SmtpSink {
    fn start(dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = dir.join("smtp.out");
        let child = Command::new("python3")
            .args([
                "-W",
                "ignore",
                "-u",
                "-m",
                "smtpd",
                "-n",
                "-c",
                "DebuggingServer",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed for the SMTP sink");
        wait_for("the SMTP sink to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { child, port, out }
    }

    fn mail(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runs(state: &Path, job: &str) -> Vec<Run> {
    match History::open(&state.join("history.sqlite")) {
        Ok(h) => {
            let mut r = h.recent(Some(job), 1000).unwrap_or_default();
            r.reverse();
            r
        }
        Err(_) => Vec::new(),
    }
}

fn daemon(env: &Env, config: &Path) -> Child {
    env.std_cmd()
        .args(["daemon", "-c"])
        .arg(config)
        .stderr(std::fs::File::create(env.path("daemon.log")).unwrap())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

#[test]
fn daemon_runs_jobs_on_schedule_alerts_on_failure_and_recovery_and_stops_cleanly() {
    let env = Env::new();
    env.init(&["-e", "repokey"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), random("daemon", 100_000)).unwrap();
    std::fs::write(env.path("pass"), "test passphrase\n").unwrap();
    let (hook_port, hooks) = webhook_listener();
    let smtp = SmtpSink::start(env.dir.path());
    let flag = env.path("break-the-hook");
    let state = env.path("state");
    let config = env.path("strata.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{state}"

[node]
name = "testnode"

[[repository]]
name = "local"
location = "{repo}"
passphrase_file = "{pass}"

[[job]]
name = "nightly"
kind = "backup"
repository = "local"
schedule = "* * * * * *"
sources = ["{src}"]
archive = "{{hostname}}-{{now:%Y%m%d%H%M%S%f}}"
before = [["sh", "-c", "! test -e {flag} || {{ echo database is locked >&2; exit 3; }}"]]

[[job]]
name = "retention"
kind = "prune"
repository = "local"
after = "nightly"
keep_last = 3

[notify]
email = {{ smtp = "127.0.0.1:{smtp}", from = "strata@testnode", to = ["admin@example.org"], starttls = false }}
webhook = [{{ url = "http://127.0.0.1:{hook}/alert" }}, {{ ping = "http://127.0.0.1:{hook}/ping/nightly" }}]
"#,
            state = state.display(),
            repo = env.repo(),
            pass = env.path("pass").display(),
            src = src.display(),
            flag = flag.display(),
            smtp = smtp.port,
            hook = hook_port,
        ),
    )
    .unwrap();
    env.ok(&["config", "check", "-c", config.to_str().unwrap()]);
    let mut d = daemon(&env, &config);

    // On schedule, with the prune chained after each backup.
    wait_for("two good nightly runs and their prunes", || {
        runs(&state, "nightly")
            .iter()
            .filter(|r| r.outcome == "ok")
            .count()
            >= 2
            && runs(&state, "retention").iter().any(|r| r.outcome == "ok")
    });
    // The hook fails: the job fails, and email and webhook say so.
    std::fs::write(&flag, "").unwrap();
    wait_for("a failed run", || {
        runs(&state, "nightly")
            .iter()
            .any(|r| r.outcome == "failed")
    });
    wait_for("the failure email", || {
        smtp.mail()
            .contains("Subject: [strata] testnode: nightly FAILED")
    });
    wait_for("the failure webhook", || {
        hooks
            .lock()
            .unwrap()
            .iter()
            .any(|(l, b)| l.starts_with("POST /alert") && b.contains("FAILED"))
    });
    let failed = runs(&state, "nightly")
        .into_iter()
        .find(|r| r.outcome == "failed")
        .unwrap();
    assert!(
        failed.summary.contains("database is locked"),
        "{}",
        failed.summary
    );
    assert!(smtp.mail().contains("database is locked"));
    // Recovery is announced once the hook passes again.
    std::fs::remove_file(&flag).unwrap();
    wait_for("the recovery email", || {
        smtp.mail().contains("nightly recovered")
    });
    wait_for("the recovery webhook", || {
        hooks
            .lock()
            .unwrap()
            .iter()
            .any(|(l, b)| l.starts_with("POST /alert") && b.contains("recovered"))
    });
    {
        let h = hooks.lock().unwrap();
        assert!(
            h.iter()
                .any(|(l, _)| l.starts_with("POST /ping/nightly/start"))
        );
        assert!(
            h.iter()
                .any(|(l, _)| l.starts_with("POST /ping/nightly/fail"))
        );
        assert!(h.iter().any(|(l, _)| l.starts_with("POST /ping/nightly ")));
    }

    signal(&d, rustix::process::Signal::TERM);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = d.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(
        !crate::util::has_lock(&env.path("repo/locks")),
        "a lock was left behind"
    );
    let all = runs(&state, "nightly");
    assert!(
        all.iter()
            .all(|r| r.outcome != "running" && r.ended.is_some())
    );
    // The history matches the repository: every good backup made an archive
    // (the prune keeps the last three).
    let archives = env.ok(&["list", "--short", &env.repo()]);
    let last_ok = all.iter().rev().find(|r| r.outcome == "ok").unwrap();
    let name = serde_json::from_str::<serde_json::Value>(&last_ok.stats).unwrap()["archive"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        archives.lines().any(|l| l == name),
        "{name} not in {archives}"
    );
    env.ok(&["check", &env.repo()]);
}

#[test]
fn a_daemon_killed_during_a_backup_records_it_interrupted_and_the_next_run_succeeds() {
    let env = Env::new();
    env.init(&["-e", "repokey"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        std::fs::write(
            src.join(format!("f{i}")),
            random(&format!("kill{i}"), 8 << 20),
        )
        .unwrap();
    }
    std::fs::write(env.path("pass"), "test passphrase\n").unwrap();
    let state = env.path("state");
    let config = env.path("strata.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[node]\nname = \"n\"\n[[repository]]\nname = \"local\"\nlocation = \"{}\"\npassphrase_file = \"{}\"\n[[job]]\nname = \"nightly\"\nkind = \"backup\"\nrepository = \"local\"\nschedule = \"* * * * * *\"\nsources = [\"{}\"]\narchive = \"{{hostname}}-{{now:%Y%m%d%H%M%S%f}}\"\n",
            state.display(),
            env.repo(),
            env.path("pass").display(),
            src.display()
        ),
    )
    .unwrap();
    let mut d = daemon(&env, &config);
    // Kill it as soon as a backup holds the repository's lock.
    wait_for("a backup holding its lock", || {
        crate::util::has_lock(&env.path("repo/locks"))
    });
    signal(&d, rustix::process::Signal::KILL);
    let _ = d.wait();
    let before = env.ok(&["list", "--short", &env.repo()]);
    assert!(
        runs(&state, "nightly")
            .iter()
            .any(|r| r.outcome == "running")
    );

    let mut d = daemon(&env, &config);
    wait_for("the cut run marked interrupted and a new run done", || {
        let r = runs(&state, "nightly");
        r.iter().any(|r| r.outcome == "interrupted") && r.iter().any(|r| r.outcome == "ok")
    });
    signal(&d, rustix::process::Signal::TERM);
    assert!(d.wait().unwrap().success());
    let after = env.ok(&["list", "--short", &env.repo()]);
    assert!(after.lines().count() > before.lines().count());
    env.ok(&["check", "--verify-data", &env.repo()]);
    let log = std::fs::read_to_string(env.path("daemon.log")).unwrap();
    assert!(log.contains("marked interrupted"), "{log}");
}

#[test]
fn sigterm_during_a_backup_stops_it_without_a_partial_archive_or_a_lock() {
    let env = Env::new();
    env.init(&["-e", "repokey"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // Many files, so the backup is between files when the stop comes.
    for i in 0..400 {
        std::fs::write(
            src.join(format!("f{i:03}")),
            random(&format!("term{i}"), 256 << 10),
        )
        .unwrap();
    }
    std::fs::write(env.path("pass"), "test passphrase\n").unwrap();
    let state = env.path("state");
    let config = env.path("strata.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[node]\nname = \"n\"\n[[repository]]\nname = \"local\"\nlocation = \"{}\"\npassphrase_file = \"{}\"\n[[job]]\nname = \"nightly\"\nkind = \"backup\"\nrepository = \"local\"\nschedule = \"* * * * * *\"\nsources = [\"{}\"]\n{}",
            state.display(),
            env.repo(),
            env.path("pass").display(),
            src.display(),
            // Slow on purpose: the default compression backs these 100 MB
            // up in a third of a second, before the signal arrives.
            "compression = \"xz,6\"\n",
        ),
    )
    .unwrap();
    let mut d = daemon(&env, &config);
    wait_for("a backup holding its lock", || {
        crate::util::has_lock(&env.path("repo/locks"))
    });
    signal(&d, rustix::process::Signal::TERM);
    let status = d.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !crate::util::has_lock(&env.path("repo/locks")),
        "a lock was left behind"
    );
    let r = runs(&state, "nightly");
    assert_eq!(r.last().unwrap().outcome, "interrupted", "{r:?}");
    assert!(r.last().unwrap().summary.contains("nothing was committed"));
    assert_eq!(
        env.ok(&["list", "--short", &env.repo()]),
        "",
        "no partial archive"
    );
    env.ok(&["check", &env.repo()]);
}

/// The fenced blocks of one language in a Markdown page.
fn blocks(page: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in page.lines() {
        match cur.as_mut() {
            None if line.trim_end() == open => cur = Some(String::new()),
            Some(b) if line.trim_end() == "```" => {
                out.push(std::mem::take(b));
                cur = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_configuration_in_docs_config_md_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/config.md")).unwrap();
    let examples = blocks(&page, "toml");
    assert!(examples.len() >= 3, "the host, central and Pi examples");
    let env = Env::new();
    for (i, ex) in examples.iter().enumerate() {
        let f = env.path(&format!("example-{i}.toml"));
        std::fs::write(&f, ex).unwrap();
        env.ok(&["config", "check", "-c", f.to_str().unwrap()]);
    }
    // and a mistake in one is named with its line
    let broken = examples[0].replace("keep_daily = 7", "keep_dayly = 7");
    let line = broken
        .lines()
        .position(|l| l.contains("keep_dayly"))
        .unwrap()
        + 1;
    let f = env.path("broken.toml");
    std::fs::write(&f, broken).unwrap();
    let out = env.run(&["config", "check", "-c", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("broken.toml:{line}: unknown field `keep_dayly`")),
        "{err}"
    );
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    let bin = assert_cmd::cargo::cargo_bin("strata");
    let env = Env::new();
    for unit in [
        "strata.service",
        "strata-backup.service",
        "strata-backup.timer",
    ] {
        let text = std::fs::read_to_string(root.join(unit))
            .unwrap()
            .replace("/usr/local/bin/strata", bin.to_str().unwrap());
        std::fs::write(env.path(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(
            [
                "strata.service",
                "strata-backup.service",
                "strata-backup.timer",
            ]
            .map(|u| env.path(u)),
        )
        .output()
        .expect("systemd-analyze (package systemd) is needed");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
