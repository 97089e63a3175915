//! A real OpenSSH `sshd` on a loopback port, for tests that drive strata
//! over ssh (`STRATA_RSH`) exactly as a user would.
//!
//! Each `Sshd` owns a temp dir with its own host key, client key,
//! authorized_keys, known_hosts and sshd_config, so tests can run in parallel
//! and never touch the machine's ssh setup. Requires the Debian packages
//! `openssh-server` and `openssh-client` (scripts/test.sh installs them) and
//! root (sshd needs it for privilege separation; the login user is us).

// Not every test file uses every accessor; the harness is a fixed API.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";
/// How long sshd may take to start listening before we give up.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Another process can grab the port between our probe bind and sshd's
/// bind; retry with a fresh port this many times in that (rare) case.
const PORT_ATTEMPTS: usize = 5;

pub struct Sshd {
    // Removed (with everything in it) when Sshd drops, after `drop` ran.
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    user: String,
    key: PathBuf,
    known_hosts: PathBuf,
    authorized_keys: PathBuf,
    host_pubkey: String,
    client_pubkey: String,
    log: PathBuf,
}

impl Sshd {
    /// Starts sshd on 127.0.0.1:<free port> with a fresh host key and a
    /// fresh ed25519 client key. With `Some(cmd)` the client key may only run
    /// `cmd` (`command="cmd",restrict`); with `None` it may run anything but
    /// gets no pty and no forwarding. Panics with a clear message (and the
    /// tail of sshd's log) if sshd cannot be started.
    pub fn start(forced_command: Option<&str>) -> Sshd {
        if !Path::new(SSHD).exists() {
            panic!("{SSHD} not found: install openssh-server (scripts/test.sh does)");
        }
        let user = current_user();
        check_account_not_locked(&user);
        // sshd refuses to start without its privilege separation directory;
        // Debian creates it from the systemd unit / init script, which never
        // ran here. It must be root-owned and not group/world-writable.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create("/run/sshd")
            .unwrap_or_else(|e| panic!("cannot create /run/sshd (sshd privsep dir): {e}"));

        let dir = tempfile::Builder::new()
            .prefix("strata-sshd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create temp dir for sshd: {e}"));
        let d = dir.path();
        let host_key = d.join("host_key");
        let key = d.join("client_key");
        keygen(&host_key, "strata-test-host");
        keygen(&key, "strata-test-client");
        let host_pubkey = read_pubkey(&host_key);
        let client_pubkey = read_pubkey(&key);

        let authorized_keys = d.join("authorized_keys");
        write_authorized_keys(&authorized_keys, &client_pubkey, forced_command);

        let log = d.join("sshd.log");
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let config = d.join("sshd_config");
            write_file(&config, &sshd_config(d, port, &host_key, &authorized_keys));
            let mut child = spawn_sshd(&config, &log);
            match wait_listening(&mut child, port, &log) {
                Ok(()) => {
                    let known_hosts = d.join("known_hosts");
                    // ssh looks non-default ports up as "[host]:port".
                    write_file(&known_hosts, &format!("[127.0.0.1]:{port} {host_pubkey}\n"));
                    return Sshd {
                        dir,
                        child,
                        port,
                        user,
                        key,
                        known_hosts,
                        authorized_keys,
                        host_pubkey,
                        client_pubkey,
                        log,
                    };
                }
                Err(log_text) if log_text.contains("Address already in use") => {
                    last_log = log_text; // lost the port race; try another one
                }
                Err(log_text) => panic!(
                    "sshd did not start on 127.0.0.1:{port}; sshd log tail:\n{}",
                    tail(&log_text)
                ),
            }
        }
        panic!(
            "sshd could not bind a free port in {PORT_ATTEMPTS} attempts; last log tail:\n{}",
            tail(&last_log)
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user: whoever runs the tests (root in CI). Use as
    /// `format!("{}@127.0.0.1", sshd.user())` for ssh's destination.
    pub fn user(&self) -> String {
        self.user.clone()
    }

    /// A command line for `STRATA_RSH` (whitespace-separated; the temp paths
    /// contain no spaces). `-F /dev/null` and the global known_hosts set to
    /// /dev/null keep the machine's and user's ssh config out of the tests;
    /// strict host key checking against our own known_hosts proves the
    /// caller really talks to this sshd.
    pub fn rsh(&self) -> String {
        format!(
            "ssh -F /dev/null -p {} -i {} -o UserKnownHostsFile={} \
             -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes \
             -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR",
            self.port,
            self.key.display(),
            self.known_hosts.display()
        )
    }

    /// The client's private key.
    pub fn key_path(&self) -> PathBuf {
        self.key.clone()
    }

    /// known_hosts holding exactly this sshd's host key for [127.0.0.1]:port.
    pub fn known_hosts(&self) -> PathBuf {
        self.known_hosts.clone()
    }

    /// The host public key as "ssh-ed25519 AAAA..." (no comment).
    pub fn host_pubkey(&self) -> String {
        self.host_pubkey.clone()
    }

    /// Rewrites authorized_keys with a new forced command. sshd reads the
    /// file afresh for every connection, so the next connection sees it.
    pub fn set_forced_command(&self, forced_command: Option<&str>) {
        write_authorized_keys(&self.authorized_keys, &self.client_pubkey, forced_command);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Per-connection sshd processes call setsid(), and so do the commands
        // they run, so killing sshd's process group alone would leak a
        // still-running session (e.g. a `strata serve` a failed test left
        // behind). Freeze the whole tree first so nothing forks while we
        // collect it, then SIGKILL everything. Errors are ignored: a process
        // may exit by itself at any moment.
        let root = self.child.id() as i32;
        let mut frozen = vec![root];
        let _ = signal(root, rustix::process::Signal::STOP);
        loop {
            let new: Vec<i32> = descendants(root)
                .into_iter()
                .filter(|p| !frozen.contains(p))
                .collect();
            if new.is_empty() {
                break;
            }
            for &p in &new {
                let _ = signal(p, rustix::process::Signal::STOP);
            }
            frozen.extend(new);
        }
        if let Some(pgid) = rustix::process::Pid::from_raw(root) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        for &p in &frozen {
            let _ = signal(p, rustix::process::Signal::KILL);
        }
        // Reap sshd itself (the others are not our children; init reaps
        // them). The temp dir is removed when `self.dir` drops after this.
        let _ = self.child.wait();
        // A failing test usually fails because of what happened over ssh;
        // sshd's side of the story is in its log, which is about to go.
        if std::thread::panicking() {
            eprintln!(
                "sshd log ({}) tail:\n{}",
                self.dir.path().display(),
                tail(&read_log(&self.log))
            );
        }
    }
}

fn signal(pid: i32, sig: rustix::process::Signal) -> rustix::io::Result<()> {
    match rustix::process::Pid::from_raw(pid) {
        Some(p) => rustix::process::kill_process(p, sig),
        None => Ok(()),
    }
}

/// All live descendants of `root`, from the parent pids in /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            // /proc/PID/stat is "pid (comm) state ppid ..."; comm may contain
            // spaces and parens, so parse after the last ')'.
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn sshd_config(d: &Path, port: u16, host_key: &Path, authorized_keys: &Path) -> String {
    // Everything explicit so the machine's /etc/ssh/sshd_config (not read:
    // we pass -f) and Debian defaults cannot change behaviour. No AcceptEnv
    // and no Subsystem lines: clients cannot inject environment variables
    // and there is no sftp. PermitUserRC/PrintMotd/PrintLastLog off so
    // nothing but the command itself writes to the session's output.
    // MaxStartups well above the default 10: the load test (load.rs)
    // connects 20 hosts at once, which sshd would otherwise drop at random.
    // SHLVL=1: bash sources ~/.bashrc when it thinks sshd started it (no
    // SHLVL yet); a .bashrc that runs slow or lock-taking tools (pyenv
    // rehash waits 60 s on a lock a killed session left) must not reach
    // the session. Starting at level 1 makes the shell level 2.
    format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {host_key}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {authorized_keys}\n\
         AuthenticationMethods publickey\n\
         PubkeyAuthentication yes\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitUserEnvironment no\n\
         PermitUserRC no\n\
         SetEnv SHLVL=1\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         MaxStartups 100:30:200\n\
         MaxSessions 100\n\
         LogLevel VERBOSE\n",
        host_key = host_key.display(),
        pid = d.join("sshd.pid").display(),
        authorized_keys = authorized_keys.display(),
    )
}

fn spawn_sshd(config: &Path, log: &Path) -> Child {
    // sshd logs to stderr with -e; keep it in a file for panic messages.
    let log_file = fs::File::create(log)
        .unwrap_or_else(|e| panic!("cannot create sshd log {}: {e}", log.display()));
    Command::new(SSHD)
        // -D: stay in the foreground so we own the process; -e: log to stderr.
        .args(["-D", "-e", "-f"])
        .arg(config)
        // Deterministic environment. sshd sets the session's PATH itself
        // (root gets /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin),
        // so the forced command always finds /usr/bin and /bin.
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        // Own process group, so Drop can signal it without hitting the tests.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {SSHD}: {e} (install openssh-server)"))
}

/// Waits until sshd accepts TCP connections on `port`. Returns the log text
/// if sshd exits or the deadline passes first.
fn wait_listening(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        // sshd calls listen() before it accepts, so a successful connect
        // means it is ready. (No ssh probe: it would run the forced command.)
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(format!("{}\n[sshd exited: {status}]", read_log(log)));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("{}\n[cannot wait for sshd: {e}]", read_log(log))),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{}\n[sshd not listening after {START_DEADLINE:?}]",
                read_log(log)
            ));
        }
        // Condition wait, not a timing assumption: retry the connect until
        // sshd listens, exits, or the deadline passes.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port that was free a moment ago (the kernel picks it for port 0).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
    l.local_addr()
        .unwrap_or_else(|e| panic!("cannot read bound address: {e}"))
        .port()
}

fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen: {e} (install openssh-client)"));
    if !out.status.success() {
        panic!(
            "ssh-keygen for {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// "type base64" from the key's .pub file, without the comment.
fn read_pubkey(private: &Path) -> String {
    let pub_path = private.with_extension("pub");
    let text = fs::read_to_string(&pub_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", pub_path.display()));
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(b64)) => format!("{kind} {b64}"),
        _ => panic!("unexpected public key in {}: {text:?}", pub_path.display()),
    }
}

fn write_authorized_keys(path: &Path, pubkey: &str, forced_command: Option<&str>) {
    let line = match forced_command {
        Some(cmd) => {
            // sshd's option parser only unescapes \" inside quotes; a newline
            // would end the line.
            assert!(
                !cmd.contains('\n'),
                "forced command must be one line: {cmd:?}"
            );
            format!(
                "command=\"{}\",restrict {pubkey}\n",
                cmd.replace('"', "\\\"")
            )
        }
        None => {
            format!("no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding {pubkey}\n")
        }
    };
    // Write-then-rename so a concurrent connection never sees a partial file.
    let tmp = path.with_extension("tmp");
    write_file(&tmp, &line);
    fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", tmp.display(), path.display()));
}

fn write_file(path: &Path, text: &str) {
    let mut f =
        fs::File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn current_user() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `id -un`: {e}"));
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || name.is_empty() {
        panic!(
            "`id -un` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    name
}

/// With UsePAM no, sshd refuses even key logins to accounts whose shadow
/// password starts with '!' (locked), which would show up only as a
/// confusing "Permission denied". Fail early and say how to fix it.
fn check_account_not_locked(user: &str) {
    let Ok(shadow) = fs::read_to_string("/etc/shadow") else {
        return; // not readable: cannot tell; sshd's log will say
    };
    for line in shadow.lines() {
        let mut f = line.split(':');
        if f.next() == Some(user) && f.next().is_some_and(|pw| pw.starts_with('!')) {
            panic!(
                "account {user} is locked in /etc/shadow; sshd (UsePAM no) refuses it. \
                 Unlock without a password: usermod -p '*' {user}"
            );
        }
    }
}

fn read_log(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_else(|e| format!("[cannot read {}: {e}]", log.display()))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
