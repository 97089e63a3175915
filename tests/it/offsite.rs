//! The off-site tier end to end, on a small network of namespaces: two
//! client hosts back up over SSH to `central`, which replicates their
//! repositories to two Raspberry Pi nodes (`pi-home`, `pi-family`), each
//! with its own sshd on its own address and its repository on a small
//! loop-mounted ext4. A host's data restored from either Pi (the nested
//! repository extracted from the Pi's replica archive, opened with the host's
//! own passphrase) equals the source. Then the faults: a cable cut mid-run,
//! a full Pi disk, a Pi power cut, compaction on central during replication,
//! and central's key trying to delete on a Pi. After each, the replicas stay
//! valid and the next run completes.

use crate::netns::{Lab, forced_line, keygen, read_pubkey};
use crate::util::{assert_same_tree, make_tree, random, restored};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HOSTS: [&str; 2] = ["host1", "host2"];
const PIS: [&str; 2] = ["pi-home", "pi-family"];
/// Size of each Pi's disk.
const PI_DISK_MIB: u64 = 96;
/// The switch's rate towards a Pi while a fault is staged mid-transfer: a
/// home uplink, slow enough that "mid-run" lasts a couple of seconds.
const SLOW: &str = "24mbit";
const DEADLINE: Duration = Duration::from_secs(60);

fn strata_bin() -> String {
    assert_cmd::cargo::cargo_bin("strata").display().to_string()
}

fn passphrase(host: &str) -> String {
    format!("{host} passphrase")
}

struct Site {
    lab: Lab,
    /// The strata binary (absolute: also the forced commands').
    bin: String,
    user: String,
}

impl Site {
    /// Everything a host keeps: cache, keys, ssh keys, sources, scratch.
    fn home(&self, host: &str) -> PathBuf {
        self.lab.path(host)
    }

    fn src(&self, host: &str) -> PathBuf {
        self.home(host).join("src")
    }

    /// Central's repository of `host`, as central sees it.
    fn central_repo(&self, host: &str) -> PathBuf {
        self.lab.path("central/srv").join(host)
    }

    /// What `host` types to reach its repository on central.
    fn host_url(&self, host: &str) -> String {
        format!(
            "ssh://{}@{}{}",
            self.user,
            self.lab.ip("central"),
            self.central_repo(host).display()
        )
    }

    fn pi_disk(&self, pi: &str) -> PathBuf {
        self.home(pi).join("disk")
    }

    /// The Pi's repository, as the Pi sees it.
    fn pi_repo(&self, pi: &str) -> PathBuf {
        self.pi_disk(pi).join("offsite")
    }

    fn pi_url(&self, pi: &str) -> String {
        format!(
            "ssh://{}@{}{}",
            self.user,
            self.lab.ip(pi),
            self.pi_repo(pi).display()
        )
    }

    /// `strata` on `host`, with that host's own cache, keys, SSH key and
    /// known_hosts; clients also get their passphrase.
    fn strata(&self, host: &str) -> Command {
        let home = self.home(host);
        let mut c = self.lab.cmd(host, &self.bin);
        for v in [
            "STRATA_REPO",
            "STRATA_PASSCOMMAND",
            "STRATA_PASSPHRASE",
            "STRATA_FAULT_CRASH_AT",
            "STRATA_RSH",
            "STRATA_SSH_ACCEPT_NEW",
            "STRATA_REMOTE_PATH",
            "SSH_AUTH_SOCK",
        ] {
            c.env_remove(v);
        }
        c.env("HOME", &home)
            .env("STRATA_CACHE_DIR", home.join("cache"))
            .env("STRATA_KEYS_DIR", home.join("keys"))
            .env("STRATA_INSECURE_FAST_KDF", "1")
            .env("STRATA_SSH_KEY", home.join("ssh/id"))
            .env("STRATA_KNOWN_HOSTS", home.join("ssh/known_hosts"))
            .current_dir(&home)
            .stdin(Stdio::null());
        if HOSTS.contains(&host) {
            c.env("STRATA_PASSPHRASE", passphrase(host));
        }
        c
    }

    fn run(&self, host: &str, args: &[&str]) -> Output {
        self.strata(host).args(args).output().unwrap()
    }

    fn ok(&self, host: &str, args: &[&str]) -> String {
        ok_output(host, args, self.run(host, args))
    }

    /// central: `strata replicate EXTRA --json --to pi-home --to pi-family
    /// srv/host1 srv/host2`, stdout and stderr piped.
    fn replicate_cmd(&self, extra: &[&str]) -> Command {
        let mut c = self.strata("central");
        c.arg("replicate")
            .args(extra)
            .args(["--json", "--to", &self.pi_url("pi-home")])
            .args(["--to", &self.pi_url("pi-family")]);
        for h in HOSTS {
            c.arg(self.central_repo(h));
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    fn replicate(&self, extra: &[&str]) -> Replication {
        Replication::of(self.replicate_cmd(extra).output().unwrap())
    }

    /// central's replication run, asserted complete: every source on every
    /// target, exit status 0.
    fn replicate_ok(&self, extra: &[&str]) -> Replication {
        let r = self.replicate(extra);
        assert_eq!(r.code, 0, "replicate failed: {}\n{}", r.stderr, r.json);
        assert_eq!(r.entries.len(), 4, "{}", r.json);
        for e in &r.entries {
            assert_eq!(e["ok"], true, "{e}");
        }
        r
    }

    /// The Pi's archives, oldest first.
    fn pi_archives(&self, pi: &str) -> Vec<String> {
        let repo = self.pi_repo(pi).display().to_string();
        self.ok(pi, &["list", "--short", &repo])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn newest_replica(&self, pi: &str, host: &str) -> String {
        self.pi_archives(pi)
            .into_iter()
            .rfind(|a| a.starts_with(&format!("{host}-")))
            .unwrap_or_else(|| panic!("{pi} has no replica of {host}"))
    }

    /// The replica is valid: `check --verify-data` passes on the Pi and every
    /// archive it lists still extracts (read back completely, dry run), and
    /// no archive of `before` was lost. Returns the archives.
    fn assert_pi_valid(&self, pi: &str, before: &[String]) -> Vec<String> {
        self.assert_valid_at(pi, &self.pi_repo(pi), before, true)
    }

    /// The same for the Pi's repository exactly as a fault left it: a copy
    /// without the lock files, since the dead session's lock would keep the
    /// Pi's own reads out (see `interrupted_lock_note`).
    fn assert_pi_valid_as_left(
        &self,
        pi: &str,
        before: &[String],
        verify_data: bool,
    ) -> Vec<String> {
        let copy = tempfile::Builder::new()
            .prefix("as-left-")
            .tempdir_in(self.home(pi))
            .unwrap();
        let repo = copy.path().join("offsite");
        crate::netns::sh(
            "cp",
            &[
                "-a",
                self.pi_repo(pi).to_str().unwrap(),
                repo.to_str().unwrap(),
            ],
        );
        for e in std::fs::read_dir(repo.join("locks")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        self.assert_valid_at(pi, &repo, before, verify_data)
    }

    /// `check` (with `verify_data`, also every pack's bytes, used or not),
    /// then every archive extracts (dry run: every chunk read back).
    fn assert_valid_at(
        &self,
        pi: &str,
        repo: &Path,
        before: &[String],
        verify_data: bool,
    ) -> Vec<String> {
        let repo = repo.display().to_string();
        if verify_data {
            self.ok(pi, &["check", "--verify-data", &repo]);
        } else {
            self.ok(pi, &["check", &repo]);
        }
        let now: Vec<String> = self
            .ok(pi, &["list", "--short", &repo])
            .lines()
            .map(str::to_string)
            .collect();
        for a in before {
            assert!(now.contains(a), "{pi} lost archive {a}: {now:?}");
        }
        for a in &now {
            self.ok(pi, &["extract", "-n", &format!("{repo}::{a}")]);
        }
        now
    }

    /// Names in the Pi's manifest/ directory: a commit adds one.
    fn pi_manifests(&self, pi: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.pi_repo(pi).join("manifest"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Restores `host` from `pi`: extracts the replica archive (giving the
    /// directory `host/`, a strata repository), opens that with the host's
    /// passphrase and extracts its newest archive, which must equal the
    /// host's source tree. Returns the nested repository's path.
    fn restore_from_pi(&self, pi: &str, host: &str, archive: &str) -> PathBuf {
        let scratch = tempfile::Builder::new()
            .prefix("restore-")
            .tempdir_in(self.home(pi))
            .unwrap()
            .keep();
        let outer = scratch.join("replica");
        std::fs::create_dir(&outer).unwrap();
        let repo = self.pi_repo(pi).display().to_string();
        self.ok(
            pi,
            &[
                "extract",
                "--target",
                outer.to_str().unwrap(),
                &format!("{repo}::{archive}"),
            ],
        );
        let nested = outer.join(host);
        assert!(
            nested.join("config").is_file(),
            "{archive} on {pi} does not hold a repository under {host}/"
        );
        // The owner's restore drill on the Pi: the host's passphrase, a cache
        // of its own.
        let drill = |args: &[&str]| {
            let out = self
                .strata(pi)
                .env("STRATA_PASSPHRASE", passphrase(host))
                .env("STRATA_CACHE_DIR", scratch.join("cache"))
                .args(args)
                .output()
                .unwrap();
            ok_output(pi, args, out)
        };
        let nested_s = nested.display().to_string();
        drill(&["check", &nested_s]);
        let last = drill(&["list", "--short", "--last", "1", &nested_s]);
        let last = last.trim();
        assert!(!last.is_empty(), "the nested repository lists no archive");
        let out = scratch.join("out");
        std::fs::create_dir(&out).unwrap();
        drill(&[
            "extract",
            "--sparse",
            "--target",
            out.to_str().unwrap(),
            &format!("{nested_s}::{last}"),
        ]);
        let src = self.src(host);
        assert_same_tree(&src, &restored(&out, &src));
        nested
    }

    /// host: a new backup of its source tree.
    fn backup(&self, host: &str, archive: &str) {
        self.ok(
            host,
            &[
                "create",
                &format!("{}::{archive}", self.host_url(host)),
                self.src(host).to_str().unwrap(),
            ],
        );
    }
}

/// After an interrupted run the dead session's lock (held by central's
/// pid) stays on the Pi: the Pi's own reads wait for it until central's next
/// run (same host, dead pid: stale) removes it, or 30 minutes pass. Printed,
/// not asserted: it is what an operator on the Pi meets.
fn interrupted_lock_note(site: &Site, pi: &str) {
    let repo = site.pi_repo(pi).display().to_string();
    let out = site.run(pi, &["list", "--short", &repo]);
    eprintln!(
        "    {pi}'s own `strata list` right after the fault: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn ok_output(host: &str, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "on {host}: strata {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One `strata replicate --json` run: exit status, stderr, the entries.
struct Replication {
    code: i32,
    stderr: String,
    json: Value,
    entries: Vec<Value>,
}

impl Replication {
    fn of(out: Output) -> Self {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "replicate --json printed no JSON ({e}, {}): {}\nstderr: {stderr}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let entries = json["replicas"].as_array().cloned().unwrap_or_default();
        Replication {
            code: out.status.code().unwrap_or(-1),
            stderr,
            json,
            entries,
        }
    }

    fn entry(&self, name: &str, target_host_ip: &str) -> &Value {
        self.entries
            .iter()
            .find(|e| e["name"] == name && e["target"].as_str().unwrap().contains(target_host_ip))
            .unwrap_or_else(|| panic!("no entry for {name} → {target_host_ip}: {}", self.json))
    }
}

/// Bytes in the regular files below `p` (files may vanish meanwhile).
fn dir_bytes(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Relative path → content of every file below `repo` but its locks.
fn repo_files(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(repo)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(repo).unwrap().display().to_string();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .filter(|(rel, _)| !rel.starts_with("locks/"))
        .collect()
}

/// Polls `cond` (a condition wait, every few ms) until it holds; panics
/// with `what` at the deadline, or if `child` ends first.
fn wait_for(what: &str, child: &mut Child, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(e) = child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the process ended ({status}) before {what}: {err}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for `child` and collects its output, for at most `limit` (polled
/// every few ms); a run that hangs is killed and the test fails saying so.
fn finish(mut child: Child, what: &str, limit: Duration) -> Output {
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} still running {limit:?} later: it hangs (killed); stderr so far:\n{}",
                String::from_utf8_lossy(&err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

/// The "strata: FAILED <name> → <target>: <why>" lines of a run; asserts
/// that stderr holds nothing else and that each names `target_ip`.
fn failure_lines(r: &Replication, target_ip: &str) -> Vec<String> {
    let lines: Vec<String> = r.stderr.lines().map(str::to_string).collect();
    assert!(!lines.is_empty(), "no error message");
    for l in &lines {
        assert!(
            l.starts_with("strata: FAILED ") && l.contains(target_ip),
            "not a one-line failure naming {target_ip}: {l:?}\nall of stderr:\n{}",
            r.stderr
        );
    }
    lines
}

fn setup() -> Site {
    let lab = Lab::new(&["host1", "host2", "central", "pi-home", "pi-family"]);
    let site = Site {
        lab,
        bin: strata_bin(),
        user: crate::netns::sh("id", &["-un"])
            .stdout
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
            .trim()
            .to_string(),
    };
    let lab = &site.lab;
    // SSH keys: each host's backup key, host1's retention key (the
    // operator's prune/compact job), central's replication key.
    for h in ["host1", "host2", "central"] {
        let d = lab.path(&format!("{h}/ssh"));
        keygen(&d.join("id"), &format!("strata {h}"));
    }
    keygen(
        &lab.path("host1/ssh").join("retention"),
        "strata host1 retention",
    );
    let key = |h: &str, k: &str| read_pubkey(&lab.path(&format!("{h}/ssh")).join(k));

    // central: one line per host, pinned to its repository, append-only;
    // host1's retention key without --append-only.
    let serve = |opts: String| format!("{} serve {opts}", site.bin);
    let mut central_keys = String::new();
    for h in HOSTS {
        let repo = site.central_repo(h).display().to_string();
        central_keys += &forced_line(
            &serve(format!("--restrict-to-repository {repo} --append-only")),
            &key(h, "id"),
        );
    }
    central_keys += &forced_line(
        &serve(format!(
            "--restrict-to-repository {}",
            site.central_repo("host1").display()
        )),
        &key("host1", "retention"),
    );
    let central_host_key = lab.start_sshd("central", &central_keys);

    // The Pis: a small disk each, the repository created by the Pi itself
    // (1 MiB packs for the slow uplink), central's key may write below it,
    // append-only.
    let mut pi_host_keys = String::new();
    for pi in PIS {
        let disk = lab.mount_ext4(&format!("{pi}/disk"), PI_DISK_MIB);
        assert_eq!(disk, site.pi_disk(pi));
        let repo = site.pi_repo(pi).display().to_string();
        site.ok(
            pi,
            &["init", "--encryption", "none", "--pack-size", "1M", &repo],
        );
        let line = forced_line(
            &serve(format!("--restrict-to-path {repo} --append-only")),
            &key("central", "id"),
        );
        let host_key = lab.start_sshd(pi, &line);
        pi_host_keys += &format!("{} {host_key}\n", lab.ip(pi));
    }
    std::fs::write(lab.path("central/ssh").join("known_hosts"), pi_host_keys).unwrap();
    for h in HOSTS {
        std::fs::write(
            lab.path(&format!("{h}/ssh")).join("known_hosts"),
            format!("{} {central_host_key}\n", lab.ip("central")),
        )
        .unwrap();
    }
    site
}

/// The lab with both hosts backed up once and a first complete replication
/// to both Pis (checked: every source on every target, a fresh replica).
fn replicated_site() -> Site {
    let site = setup();
    for h in HOSTS {
        let src = site.src(h);
        make_tree(&src);
        std::fs::write(src.join("own.bin"), random(h, 1 << 20)).unwrap();
        // 1 MiB packs, as suits hosts behind slow links: a replication then
        // lands on a Pi pack by pack.
        site.ok(
            h,
            &[
                "init",
                "--encryption",
                "repokey",
                "--pack-size",
                "1M",
                &site.host_url(h),
            ],
        );
        site.backup(h, "b1");
    }
    let r = site.replicate_ok(&[]);
    for pi in PIS {
        let ip = site.lab.ip(pi);
        for h in HOSTS {
            let e = r.entry(h, &ip);
            assert!(e["previous"].is_null(), "{e}");
            assert!(e["files"].as_u64().unwrap() > 3, "{e}");
            assert_eq!(e["unchanged_files"], 0, "{e}");
            assert!(e["stored_bytes"].as_u64().unwrap() > 1 << 20, "{e}");
            assert!(
                e["archive"].as_str().unwrap().starts_with(&format!("{h}-")),
                "{e}"
            );
        }
        let archives = site.pi_archives(pi);
        assert_eq!(archives.len(), 2, "{pi}: {archives:?}");
    }
    site
}

/// OpenSSH for central's connections to the Pis, with a keepalive that
/// notices a dead link in about three seconds (the built-in client's
/// keepalive is fixed at 15 s × 4, a minute).
fn openssh_with_keepalive(site: &Site) -> String {
    format!(
        "ssh -F /dev/null -i {} -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes \
         -o ServerAliveInterval=1 -o ServerAliveCountMax=3",
        site.home("central").join("ssh/id").display(),
        site.home("central").join("ssh/known_hosts").display()
    )
}

#[test]
fn each_pi_holds_replicas_that_restore_each_host_byte_for_byte() {
    let site = replicated_site();
    for pi in PIS {
        for h in HOSTS {
            // The copy is central's repository, file for file, byte for
            // byte; opened with the host's passphrase it restores the tree.
            let nested = site.restore_from_pi(pi, h, &site.newest_replica(pi, h));
            let copy = repo_files(&nested);
            let orig = repo_files(&site.central_repo(h));
            assert_eq!(
                copy.keys().collect::<Vec<_>>(),
                orig.keys().collect::<Vec<_>>(),
                "{pi}'s copy of {h} has other files than central's"
            );
            assert!(copy == orig, "{pi}'s copy of {h} differs from central's");
        }
    }
    // Nothing changed: the next run reads and stores next to nothing.
    let r = site.replicate_ok(&[]);
    for e in &r.entries {
        assert!(e["previous"].is_string(), "{e}");
        assert!(e["unchanged_files"].as_u64().unwrap() > 0, "{e}");
        assert!(e["read_bytes"].as_u64().unwrap() < 256 << 10, "{e}");
        assert!(e["stored_bytes"].as_u64().unwrap() < 256 << 10, "{e}");
    }
    // A new backup: only its new packs travel.
    std::fs::write(site.src("host2").join("new.bin"), random("new", 2 << 20)).unwrap();
    site.backup("host2", "b2");
    let r = site.replicate_ok(&[]);
    for pi in PIS {
        let ip = site.lab.ip(pi);
        let e = r.entry("host2", &ip);
        let read = e["read_bytes"].as_u64().unwrap();
        assert!(read > 2 << 20 && read < 3 << 20, "{e}");
        assert!(r.entry("host1", &ip)["read_bytes"].as_u64().unwrap() < 256 << 10);
        site.restore_from_pi(pi, "host2", &site.newest_replica(pi, "host2"));
        site.assert_pi_valid(pi, &[]);
    }
}

#[test]
fn a_cable_cut_mid_run_fails_that_pi_only_and_the_next_run_completes() {
    let site = replicated_site();
    let lab = &site.lab;
    let home_ip = lab.ip("pi-home");
    let family_ip = lab.ip("pi-family");
    let seen = site.pi_archives("pi-home");
    std::fs::write(site.src("host1").join("new.bin"), random("cut", 6 << 20)).unwrap();
    site.backup("host1", "b2");
    lab.shape("pi-home", Some(SLOW));
    let manifests_before = site.pi_manifests("pi-home");
    let base = lab.bytes_to("pi-home");
    let mut child = site
        .replicate_cmd(&[])
        .env("STRATA_RSH", openssh_with_keepalive(&site))
        .spawn()
        .unwrap();
    // Condition wait on the switch's counter: the copy is under way.
    wait_for("1 MiB went to pi-home", &mut child, || {
        lab.bytes_to("pi-home") > base + (1 << 20)
    });
    lab.set_link("pi-home", false);
    let t = Instant::now();
    let r = Replication::of(finish(child, "replicate after the cut", DEADLINE));
    eprintln!(
        "cut: replicate ended {:?} after the cut, status {}:\n{}",
        t.elapsed(),
        r.code,
        r.stderr.trim()
    );
    lab.set_link("pi-home", true);
    lab.shape("pi-home", None);
    // 64 + bit 0: the first --to, pi-home, failed; pi-family did not.
    assert_eq!(r.code, 64 + 1, "{}", r.stderr);
    let lines = failure_lines(&r, &home_ip);
    assert_eq!(lines.len(), 2, "{}", r.stderr);
    for h in HOSTS {
        let e = r.entry(h, &home_ip);
        assert_eq!(e["ok"], false, "{e}");
        let err = e["error"].as_str().unwrap();
        assert!(err.contains("lost") && err.contains(&home_ip), "{err}");
        assert_eq!(r.entry(h, &family_ip)["ok"], true);
    }
    // The cut run committed nothing on pi-home, and what is there is valid.
    assert_eq!(site.pi_manifests("pi-home"), manifests_before);
    site.assert_pi_valid_as_left("pi-home", &seen, true);
    interrupted_lock_note(&site, "pi-home");
    // The next run completes and copies what the cut run did not.
    let r = site.replicate_ok(&[]);
    let e = r.entry("host1", &home_ip);
    assert!(e["read_bytes"].as_u64().unwrap() > 6 << 20, "{e}");
    for pi in PIS {
        site.assert_pi_valid(pi, if pi == "pi-home" { &seen } else { &[] });
        site.restore_from_pi(pi, "host1", &site.newest_replica(pi, "host1"));
    }
}

#[test]
fn a_full_pi_disk_fails_that_pi_cleanly_and_the_next_run_completes() {
    let site = replicated_site();
    let home_ip = site.lab.ip("pi-home");
    let family_ip = site.lab.ip("pi-family");
    let seen = site.pi_archives("pi-family");
    std::fs::write(site.src("host2").join("new.bin"), random("full", 4 << 20)).unwrap();
    site.backup("host2", "b2");
    // Fill pi-family's disk up to the last MiB.
    let filler = site.pi_disk("pi-family").join("filler");
    let st = rustix::fs::statvfs(site.pi_disk("pi-family")).unwrap();
    let free = st.f_bavail * st.f_frsize;
    let f = std::fs::File::create(&filler).unwrap();
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, free - (1 << 20)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let r = site.replicate(&[]);
    eprintln!("full disk: status {}:\n{}", r.code, r.stderr.trim());
    // 64 + bit 1: the second --to, pi-family.
    assert_eq!(r.code, 64 + 2, "{}", r.stderr);
    let lines = failure_lines(&r, &family_ip);
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(
        lines[0].contains("host2") && lines[0].contains("no space left"),
        "{}",
        lines[0]
    );
    assert_eq!(r.entry("host2", &home_ip)["ok"], true);
    assert_eq!(r.entry("host1", &family_ip)["ok"], true);
    // Nothing of host2 was committed on the full disk, no temporary file
    // was left behind, and the repository is valid.
    let temporaries: Vec<_> = walkdir::WalkDir::new(site.pi_repo("pi-family"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .map(|e| e.into_path())
        .collect();
    assert!(temporaries.is_empty(), "{temporaries:?}");
    let now = site.assert_pi_valid("pi-family", &seen);
    let host2: Vec<&String> = now.iter().filter(|a| a.starts_with("host2-")).collect();
    assert_eq!(host2.len(), 1, "{now:?}");
    std::fs::remove_file(&filler).unwrap();
    site.replicate_ok(&[]);
    site.assert_pi_valid("pi-family", &now);
    site.restore_from_pi(
        "pi-family",
        "host2",
        &site.newest_replica("pi-family", "host2"),
    );
}

#[test]
fn a_pi_power_cut_leaves_a_valid_replica_and_the_next_run_completes() {
    let site = replicated_site();
    let lab = &site.lab;
    let home_ip = lab.ip("pi-home");
    let seen = site.pi_archives("pi-home");
    std::fs::write(site.src("host1").join("new.bin"), random("power", 6 << 20)).unwrap();
    site.backup("host1", "b2");
    lab.shape("pi-home", Some(SLOW));
    let data = site.pi_repo("pi-home").join("data");
    let packs = |d: &Path| -> Vec<PathBuf> {
        walkdir::WalkDir::new(d)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect()
    };
    let before = packs(&data);
    let manifests_before = site.pi_manifests("pi-home");
    let mut child = site.replicate_cmd(&[]).spawn().unwrap();
    wait_for("a pack of this run landed on pi-home", &mut child, || {
        packs(&data).iter().any(|p| {
            !before.contains(p) && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
    });
    // Power cut: sshd, the session and strata serve die at once...
    let killed = lab.kill_all_in("pi-home");
    assert!(killed >= 3, "killed {killed} processes on pi-home");
    // ...and the file written last loses its end.
    let newest = walkdir::WalkDir::new(&data)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .max_by_key(|e| e.metadata().unwrap().modified().unwrap())
        .unwrap()
        .into_path();
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let r = Replication::of(finish(
        child,
        "replicate after pi-home's power cut",
        Duration::from_secs(30),
    ));
    lab.shape("pi-home", None);
    eprintln!(
        "power cut: killed {killed} processes, truncated {} ({len} bytes); status {}:\n{}",
        newest.display(),
        r.code,
        r.stderr.trim()
    );
    assert_eq!(r.code, 64 + 1, "{}", r.stderr);
    failure_lines(&r, &home_ip);
    assert_eq!(site.pi_manifests("pi-home"), manifests_before);
    // The truncated file is in no index (nothing was committed): the
    // structure check passes and every archive restores.
    site.assert_pi_valid_as_left("pi-home", &seen, false);
    interrupted_lock_note(&site, "pi-home");
    // Power back: sshd starts again with the same configuration.
    let ak = std::fs::read_to_string(lab.path("pi-home/sshd").join("authorized_keys")).unwrap();
    lab.start_sshd("pi-home", &ak);
    let r = site.replicate(&[]);
    let repo = site.pi_repo("pi-home").display().to_string();
    let verify = site.run("pi-home", &["check", "--verify-data", &repo]);
    eprintln!(
        "after the power cut: the next run: status {}: {}\n\
         the truncated file is still there: {}; `check --verify-data` on pi-home: {}: {}{}",
        r.code,
        r.stderr.trim(),
        newest.exists(),
        verify.status,
        String::from_utf8_lossy(&verify.stdout).trim(),
        String::from_utf8_lossy(&verify.stderr).trim(),
    );
    assert_eq!(
        r.code, 0,
        "the run after the power cut failed: {}",
        r.stderr
    );
    // `check` passes and every archive restores; the damaged leftover is
    // in no index (`check --verify-data`, which reads every pack, reports
    // it until the Pi's own compact removes it: printed above).
    let now = site.assert_valid_at("pi-home", &site.pi_repo("pi-home"), &seen, false);
    assert_eq!(now.len(), seen.len() + 2, "{now:?}");
    site.restore_from_pi("pi-home", "host1", &site.newest_replica("pi-home", "host1"));
    site.ok("pi-home", &["compact", "--grace-period", "0", &repo]);
    site.assert_pi_valid("pi-home", &now);
}

#[test]
fn central_compaction_waits_for_the_replication_pin() {
    let site = replicated_site();
    let lab = &site.lab;
    std::fs::write(site.src("host1").join("new.bin"), random("pin", 6 << 20)).unwrap();
    site.backup("host1", "b2");
    // The operator's retention job for host1 (its key without
    // --append-only): drop b1, whose data compaction then frees.
    let retention = |args: &[&str]| {
        let mut c = site.strata("host1");
        c.env("STRATA_SSH_KEY", site.home("host1").join("ssh/retention"))
            .args(args);
        c
    };
    let url1 = site.host_url("host1");
    let args = ["prune", "--keep-last", "1", url1.as_str()];
    ok_output("host1", &args, retention(&args).output().unwrap());
    let locks = site.central_repo("host1").join("locks");
    let has_pin = || {
        std::fs::read_dir(&locks)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("p-"))
    };
    let central_before = dir_bytes(&site.central_repo("host1"));
    lab.shape("pi-home", Some(SLOW));
    let base = lab.bytes_to("pi-home");
    let mut child = site.replicate_cmd(&["--lock-wait", "60"]).spawn().unwrap();
    wait_for("replication of host1 under way", &mut child, || {
        has_pin() && lab.bytes_to("pi-home") > base + (256 << 10)
    });
    // Freeze the replication mid-copy: its pin stays as long as we need.
    signal(&child, rustix::process::Signal::STOP);
    let out = retention(&["compact", "--grace-period", "0", "--lock-wait", "0", &url1])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("compact beside the pin: {}", err.trim());
    assert_eq!(
        out.status.code(),
        Some(2),
        "compact ran beside a pin: {err}"
    );
    assert!(err.contains("pin (replicate or mount)"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // A compaction that waits for the pin.
    let mut compact = retention(&["compact", "--grace-period", "0", "--lock-wait", "60", &url1])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut compact_err = compact.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = compact_err.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = tx.send(String::from_utf8_lossy(&all).into_owned());
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    // Its first complete line (the reader sends all it has so far).
    let mut notice = String::new();
    while !notice.contains('\n') {
        notice = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("compact said no line while the pin was held: {notice:?}"));
    }
    assert!(
        notice.contains("waiting") && notice.contains("pin (replicate or mount)"),
        "{notice}"
    );
    let still = retention(&["list", "--short", &url1]).output().unwrap();
    assert!(
        still.status.success(),
        "reads go on beside pin and waiting compaction"
    );
    signal(&child, rustix::process::Signal::CONT);
    let r = Replication::of(finish(child, "replicate beside compaction", DEADLINE));
    lab.shape("pi-home", None);
    let out = finish(compact, "compact after the pin", DEADLINE);
    let compact_err = reader.join().unwrap();
    eprintln!(
        "compaction after the pin: {}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        compact_err.trim()
    );
    assert!(out.status.success(), "compact: {compact_err}");
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    let central_after = dir_bytes(&site.central_repo("host1"));
    assert!(
        central_after < central_before,
        "compaction freed nothing: {central_before} → {central_after}"
    );
    // Both replicas of host1 (pi-home's copied under the pin before the
    // compaction, pi-family's after it) are valid and restore.
    for pi in PIS {
        site.assert_pi_valid(pi, &[]);
        site.restore_from_pi(pi, "host1", &site.newest_replica(pi, "host1"));
    }
    site.ok("host1", &["check", &url1]);
    site.replicate_ok(&[]);
}

/// Two replicas of each host on both Pis.
fn site_with_two_replicas() -> Site {
    let site = replicated_site();
    std::fs::write(site.src("host1").join("new.bin"), random("second", 2 << 20)).unwrap();
    site.backup("host1", "b2");
    site.replicate_ok(&[]);
    for pi in PIS {
        let a = site.pi_archives(pi);
        assert_eq!(a.len(), 4, "{pi}: {a:?}");
    }
    site
}

/// The threat model (docs/replication.md): a compromised central "cannot
/// delete or overwrite replicas already on a Pi". Its key there is
/// `strata serve --append-only`; `delete`, `prune` and `compact` through it
/// must be refused, and nothing on the Pi may change.
#[test]
fn centrals_key_cannot_delete_replicas_on_a_pi() {
    let site = site_with_two_replicas();
    let home_url = site.pi_url("pi-home");
    let seen = site.pi_archives("pi-home");
    let files_before = repo_files(&site.pi_repo("pi-home"));
    let mut accepted = Vec::new();
    for args in [
        vec!["delete".to_string(), format!("{home_url}::{}", seen[0])],
        vec![
            "prune".into(),
            "--keep-last".into(),
            "1".into(),
            home_url.clone(),
        ],
        vec![
            "compact".into(),
            "--grace-period".into(),
            "0".into(),
            home_url.clone(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = site.run("central", &args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            err.trim()
        );
        eprintln!("central: strata {}: {}: {said}", args[0], out.status);
        let refused = out.status.code() == Some(2)
            && err.trim_end().lines().count() == 1
            && (err.contains("append-only") || err.contains("refused"));
        if !refused {
            accepted.push(format!(
                "`strata {}` → {}: {said}",
                args.join(" "),
                out.status
            ));
        }
    }
    let now = site.pi_archives("pi-home");
    let files_after = repo_files(&site.pi_repo("pi-home"));
    let changed: Vec<&String> = files_before
        .iter()
        .filter(|(f, b)| files_after.get(*f) != Some(*b))
        .map(|(f, _)| f)
        .collect();
    assert!(
        accepted.is_empty() && now == seen && changed.is_empty(),
        "central's append-only key changed pi-home's history:\n{}\narchives before {seen:?}\n\
         archives after {now:?}\nfiles changed or gone: {changed:?}",
        accepted.join("\n")
    );
}

#[test]
fn a_pi_prunes_and_compacts_its_own_replicas_and_replication_goes_on() {
    let site = site_with_two_replicas();
    let seen = site.pi_archives("pi-home");
    let repo = site.pi_repo("pi-home").display().to_string();
    let used_before = dir_bytes(&site.pi_repo("pi-home"));
    // The Pi's own retention: keep the newest replica of each host.
    for h in HOSTS {
        site.ok(
            "pi-home",
            &["prune", "--keep-last", "1", "-a", &format!("{h}-*"), &repo],
        );
    }
    site.ok("pi-home", &["compact", "--grace-period", "0", &repo]);
    let left = site.pi_archives("pi-home");
    assert_eq!(left, vec![seen[2].clone(), seen[3].clone()]);
    let used_after = dir_bytes(&site.pi_repo("pi-home"));
    assert!(used_after < used_before, "{used_before} → {used_after}");
    site.assert_pi_valid("pi-home", &left);
    for h in HOSTS {
        site.restore_from_pi("pi-home", h, &site.newest_replica("pi-home", h));
    }
    // Replication goes on after the Pi's prune, from the kept replicas.
    std::fs::write(
        site.src("host2").join("third.bin"),
        random("third", 1 << 20),
    )
    .unwrap();
    site.backup("host2", "b2");
    let r = site.replicate_ok(&[]);
    let ip = site.lab.ip("pi-home");
    for (h, kept) in [("host1", &seen[2]), ("host2", &seen[3])] {
        let e = r.entry(h, &ip);
        assert_eq!(e["previous"].as_str(), Some(kept.as_str()), "{e}");
        assert!(e["unchanged_files"].as_u64().unwrap() > 0, "{e}");
    }
    site.restore_from_pi("pi-home", "host2", &site.newest_replica("pi-home", "host2"));
}

/// The central node burns: from the (new) central node, with only each
/// host's passphrase and a fresh cache, every host is read, restored and
/// rebuilt straight from each Pi over SSH, and the drill says so.
#[test]
fn the_central_node_burns_and_every_host_comes_back_from_each_pi_over_ssh() {
    let site = replicated_site();
    let originals: Vec<_> = HOSTS
        .iter()
        .map(|h| repo_files(&site.central_repo(h)))
        .collect();
    std::fs::remove_dir_all(site.lab.path("central/srv")).unwrap();
    for pi in PIS {
        let url = site.pi_url(pi);
        for (h, original) in HOSTS.iter().zip(&originals) {
            let fresh = site.home("central").join(format!("fresh-{pi}-{h}"));
            let run = |args: &[&str]| {
                let out = site
                    .strata("central")
                    .env("STRATA_PASSPHRASE", passphrase(h))
                    .env("STRATA_CACHE_DIR", &fresh)
                    .args(args)
                    .output()
                    .unwrap();
                ok_output("central", args, out)
            };
            let last = run(&["list", "--short", "--last", "1", "--replica", &url, h]);
            let last = last.trim().to_string();
            assert!(!last.is_empty(), "{pi} lists no archive of {h}");
            // Urgent files straight from the Pi, without a copy.
            let out = fresh.join("files");
            std::fs::create_dir_all(&out).unwrap();
            run(&[
                "extract",
                "--target",
                out.to_str().unwrap(),
                "--replica",
                &url,
                &format!("{h}::{last}"),
            ]);
            let src = site.src(h);
            assert_same_tree(&src, &restored(&out, &src));
            // The central repository rebuilt from the Pi, verified.
            let new = site.lab.path("central/new").join(pi).join(h);
            run(&["restore-repo", "--replica", &url, h, new.to_str().unwrap()]);
            assert!(
                repo_files(&new) == *original,
                "{h} rebuilt from {pi} differs from what central held"
            );
            run(&["check", "--verify-data", new.to_str().unwrap()]);
        }
    }
    // The drill of each host on both tiers.
    for h in HOSTS {
        let out = site
            .strata("central")
            .env("STRATA_PASSPHRASE", passphrase(h))
            .args(["drill", "--json", "--sample", "10", h])
            .args([
                "--tier",
                &site.pi_url("pi-home"),
                "--tier",
                &site.pi_url("pi-family"),
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(out.status.success(), "{v}");
        for t in v["tiers"].as_array().unwrap() {
            assert_eq!(t["outcome"], "ok", "{t}");
            assert!(t["files"].as_u64().unwrap() > 0, "{t}");
        }
    }
}
