//! A small network of hosts for tests: one network namespace per host, each
//! with its own hostname (UTS namespace), joined by veth pairs to a bridge
//! that lives in a private "switch" namespace. Each host can run its own
//! OpenSSH sshd on its own address (port 22: every namespace has its own
//! ports), and a host can get a small loop-mounted ext4 file system.
//!
//! Everything is named after the test process's pid and a counter, so
//! parallel tests never meet; the network is not reachable from the machine's
//! own namespace. `Lab`'s Drop kills every process in its namespaces (sshd,
//! sessions, `strata serve`, commands still running), deletes the
//! namespaces and unmounts the file systems, also when the test panics.
//!
//! Requires root, iproute2 (`ip`, `tc`), util-linux (`unshare`, `mount`),
//! e2fsprogs (`mkfs.ext4`) and openssh-server.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";
const START_DEADLINE: Duration = Duration::from_secs(20);
static LABS: AtomicUsize = AtomicUsize::new(0);

/// Runs a setup command; panics with its output if it fails.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Host {
    name: String,
    ns: String,
    /// The host's end of its veth pair, in the switch namespace.
    port: String,
    ip: String,
}

struct SshdState {
    child: Child,
    config: PathBuf,
    log: PathBuf,
}

pub struct Lab {
    pub id: String,
    switch: String,
    hosts: Vec<Host>,
    mounts: Mutex<Vec<PathBuf>>,
    sshds: Mutex<HashMap<String, SshdState>>,
    /// Removed after Drop::drop has killed everything and unmounted.
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// Creates the switch and one namespace per host name, with addresses
    /// 10.<a>.<b>.<1..> /24 on one segment.
    pub fn new(host_names: &[&str]) -> Lab {
        assert!(
            rustix::process::geteuid().is_root(),
            "the network namespace tests need root"
        );
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let id = format!("so{pid}x{n}");
        let dir = tempfile::Builder::new()
            .prefix(&format!("strata-lab-{id}-"))
            .tempdir()
            .unwrap();
        // Drop cleans up whatever part of the set-up happened.
        let mut lab = Lab {
            switch: format!("{id}-switch"),
            id: id.clone(),
            hosts: Vec::new(),
            mounts: Mutex::new(Vec::new()),
            sshds: Mutex::new(HashMap::new()),
            dir,
        };
        sh("ip", &["netns", "add", &lab.switch]);
        sh(
            "ip",
            &["-n", &lab.switch, "link", "add", "br0", "type", "bridge"],
        );
        sh("ip", &["-n", &lab.switch, "link", "set", "br0", "up"]);
        // Isolated segments, so the address only has to be unique to be
        // readable in logs.
        let a = 16 + (pid % 200) as u8;
        let b = (n % 250) as u8;
        for (i, name) in host_names.iter().enumerate() {
            let host = Host {
                name: name.to_string(),
                ns: format!("{id}-{name}"),
                port: format!("v{i}"),
                ip: format!("10.{a}.{b}.{}", i + 1),
            };
            sh("ip", &["netns", "add", &host.ns]);
            lab.hosts.push(host);
            let host = lab.hosts.last().unwrap();
            sh(
                "ip",
                &[
                    "link",
                    "add",
                    "eth0",
                    "netns",
                    &host.ns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &host.port,
                    "netns",
                    &lab.switch,
                ],
            );
            sh(
                "ip",
                &[
                    "-n",
                    &lab.switch,
                    "link",
                    "set",
                    &host.port,
                    "master",
                    "br0",
                ],
            );
            sh("ip", &["-n", &lab.switch, "link", "set", &host.port, "up"]);
            sh(
                "ip",
                &[
                    "-n",
                    &host.ns,
                    "addr",
                    "add",
                    &format!("{}/24", host.ip),
                    "dev",
                    "eth0",
                ],
            );
            sh("ip", &["-n", &host.ns, "link", "set", "eth0", "up"]);
            sh("ip", &["-n", &host.ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    pub fn ip(&self, host: &str) -> String {
        self.host(host).ip.clone()
    }

    pub fn ns(&self, host: &str) -> String {
        self.host(host).ns.clone()
    }

    /// A directory of the lab's temp dir (created).
    pub fn path(&self, p: &str) -> PathBuf {
        let p = self.dir.path().join(p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// `program` to be run on `host`: in its network namespace, under its
    /// own hostname. The child's pid is the program's (everything execs).
    pub fn cmd(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let h = self.host(host);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &h.ns, "unshare", "--uts", "--", "sh", "-c"])
            .arg("hostname \"$0\" && exec \"$@\"")
            .arg(&h.name)
            .arg(program);
        c
    }

    /// Cuts (`up == false`) or restores the host's cable: its port on the
    /// switch goes down, so packets to and from it vanish without a reset.
    pub fn set_link(&self, host: &str, up: bool) {
        let port = self.host(host).port.clone();
        sh(
            "ip",
            &[
                "-n",
                &self.switch,
                "link",
                "set",
                &port,
                if up { "up" } else { "down" },
            ],
        );
    }

    /// Limits what the switch sends to `host` (e.g. "24mbit"), or lifts the
    /// limit (`None`).
    pub fn shape(&self, host: &str, rate: Option<&str>) {
        let port = self.host(host).port.clone();
        match rate {
            Some(r) => sh(
                "tc",
                &[
                    "-n",
                    &self.switch,
                    "qdisc",
                    "replace",
                    "dev",
                    &port,
                    "root",
                    "tbf",
                    "rate",
                    r,
                    "burst",
                    "32kbit",
                    "latency",
                    "400ms",
                ],
            ),
            None => sh(
                "tc",
                &["-n", &self.switch, "qdisc", "del", "dev", &port, "root"],
            ),
        };
    }

    /// Bytes the switch has sent out of `host`'s port (towards the host).
    pub fn bytes_to(&self, host: &str) -> u64 {
        let port = self.host(host).port.clone();
        let out = sh(
            "ip",
            &["-n", &self.switch, "-s", "-j", "link", "show", "dev", &port],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no tx counter in `ip -s -j link` output: {v}"))
    }

    /// Pids of every live process in `host`'s network namespace.
    pub fn pids_in(&self, host: &str) -> Vec<i32> {
        pids_in_ns(&self.host(host).ns)
    }

    /// SIGKILLs every process in `host`'s namespace (a power cut), until
    /// none is left. Returns how many were killed.
    pub fn kill_all_in(&self, host: &str) -> usize {
        let ns = self.host(host).ns.clone();
        let killed = kill_ns(&ns);
        // Our own sshd child was among them: reap it.
        if let Some(s) = self.sshds.lock().unwrap().get_mut(host) {
            let _ = s.child.wait();
        }
        killed
    }

    /// A fresh ext4 file system of `mib` MiB mounted at the returned path
    /// (no reserved blocks: root may fill it to the last block).
    pub fn mount_ext4(&self, name: &str, mib: u64) -> PathBuf {
        let img = self.dir.path().join(format!("{name}.img"));
        fs::create_dir_all(img.parent().unwrap()).unwrap();
        let f = fs::File::create(&img).unwrap();
        f.set_len(mib << 20).unwrap();
        drop(f);
        let img_s = img.display().to_string();
        sh("mkfs.ext4", &["-q", "-F", "-m", "0", &img_s]);
        let mnt = self.path(name);
        let mnt_s = mnt.display().to_string();
        sh("mount", &["-o", "loop", &img_s, &mnt_s]);
        self.mounts.lock().unwrap().push(mnt.clone());
        mnt
    }

    /// Starts (or restarts, with the same host key and config) sshd on
    /// `host`'s address, port 22, with `authorized_keys` as given. Returns
    /// the host's public key ("ssh-ed25519 AAAA...").
    pub fn start_sshd(&self, host: &str, authorized_keys: &str) -> String {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} not found: install openssh-server (scripts/test.sh does)"
        );
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create("/run/sshd")
            .unwrap_or_else(|e| panic!("cannot create /run/sshd (sshd privsep dir): {e}"));
        let d = self.path(&format!("{host}/sshd"));
        let host_key = d.join("host_key");
        if !host_key.exists() {
            keygen(&host_key, &format!("{host}-host"));
        }
        let ak = d.join("authorized_keys");
        write_file(&ak, authorized_keys);
        let ip = self.ip(host);
        let config = d.join("sshd_config");
        write_file(
            &config,
            &format!(
                "ListenAddress {ip}\n\
                 Port 22\n\
                 HostKey {host_key}\n\
                 PidFile {pid}\n\
                 AuthorizedKeysFile {ak}\n\
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
                 LogLevel VERBOSE\n",
                host_key = host_key.display(),
                pid = d.join("sshd.pid").display(),
                ak = ak.display(),
            ),
        );
        let log = d.join("sshd.log");
        // Appending: a restart keeps the earlier story for the panic message.
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let log_start = log_file.metadata().unwrap().len() as usize;
        let mut child = self
            .cmd(host, SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sshd on {host}: {e}"));
        // Condition wait: sshd logs this line once it listens.
        let ready = format!("Server listening on {ip} port 22");
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.get(log_start..).is_some_and(|t| t.contains(&ready)) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sshd on {host} exited ({status}); log:\n{}", tail(&text));
            }
            assert!(
                Instant::now() < deadline,
                "sshd on {host} not listening after {START_DEADLINE:?}; log:\n{}",
                tail(&text)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let old = self
            .sshds
            .lock()
            .unwrap()
            .insert(host.into(), SshdState { child, config, log });
        if let Some(mut o) = old {
            let _ = o.child.kill();
            let _ = o.child.wait();
        }
        read_pubkey(&host_key)
    }

    /// Replaces `host`'s authorized_keys (sshd reads it per connection).
    pub fn set_authorized_keys(&self, host: &str, text: &str) {
        let ak = self.path(&format!("{host}/sshd")).join("authorized_keys");
        let tmp = ak.with_extension("tmp");
        write_file(&tmp, text);
        fs::rename(&tmp, &ak).unwrap();
    }

    fn print_sshd_logs(&self) {
        if let Ok(s) = self.sshds.lock() {
            for (host, st) in s.iter() {
                eprintln!(
                    "sshd log of {host} ({}):\n{}",
                    st.config.display(),
                    tail(&fs::read_to_string(&st.log).unwrap_or_default())
                );
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_sshd_logs();
        }
        let mut nss: Vec<String> = self.hosts.iter().map(|h| h.ns.clone()).collect();
        nss.push(self.switch.clone());
        for ns in &nss {
            kill_ns(ns);
        }
        if let Ok(mut s) = self.sshds.lock() {
            for (_, st) in s.iter_mut() {
                let _ = st.child.kill();
                let _ = st.child.wait();
            }
        }
        for ns in &nss {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        if let Ok(m) = self.mounts.lock() {
            for mnt in m.iter().rev() {
                // Lazy: a file still open somewhere must not leave the
                // mount (and its loop device) behind.
                let status = Command::new("umount").arg("-l").arg(mnt).status();
                if !matches!(status, Ok(s) if s.success()) {
                    eprintln!("warning: could not unmount {}", mnt.display());
                }
            }
        }
    }
}

/// (device, inode) of a network namespace file.
fn ns_id(p: &Path) -> Option<(u64, u64)> {
    fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

fn pids_in_ns(ns: &str) -> Vec<i32> {
    let Some(want) = ns_id(&Path::new("/run/netns").join(ns)) else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid != me && ns_id(&e.path().join("ns/net")) == Some(want) {
            out.push(pid);
        }
    }
    out
}

/// SIGKILLs every process in namespace `ns` until none is left (new ones
/// may be forked while we kill). Returns how many were killed.
fn kill_ns(ns: &str) -> usize {
    let mut killed = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = pids_in_ns(ns);
        if pids.is_empty() || Instant::now() > deadline {
            return killed.len();
        }
        for p in pids {
            if let Some(pid) = rustix::process::Pid::from_raw(p) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                killed.insert(p);
            }
        }
        // A killed process leaves /proc (or becomes a zombie, whose ns link
        // is gone) within a moment; look again.
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen: {e} (install openssh-client)"));
    assert!(
        out.status.success(),
        "ssh-keygen for {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// "type base64" of a key's .pub file, without the comment.
pub fn read_pubkey(private: &Path) -> String {
    let text = fs::read_to_string(private.with_extension("pub")).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    format!("{} {}", f[0], f[1])
}

/// An authorized_keys line that lets `pubkey` run only `command`.
pub fn forced_line(command: &str, pubkey: &str) -> String {
    assert!(!command.contains('\n') && !command.contains('"'));
    format!("command=\"{command}\",restrict {pubkey}\n")
}

fn write_file(path: &Path, text: &str) {
    let mut f =
        fs::File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap();
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
