//! A repository on another machine, reached through `strata serve` over SSH
//! (the system `ssh`, or whatever `STRATA_RSH` names).
//!
//! Requests from any number of threads are in flight at once: each gets an
//! id, a reader thread hands every response to its caller, so a slow link
//! is not bound by round trips.

pub mod proto;
pub mod server;
pub mod ssh;

use super::{Backend, FileInfo, FileKind, Space, Traffic};
use crate::error::{Error, Result};
use crossbeam_channel::{Sender, bounded};
use proto::*;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// `ssh://[user@]host[:port]/path` or `[user@]host:path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteUrl {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

impl RemoteUrl {
    pub fn parse(s: &str) -> Option<Self> {
        let split_user = |hp: &str| match hp.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h.to_string()),
            None => (None, hp.to_string()),
        };
        if let Some(rest) = s.strip_prefix("ssh://") {
            let (authority, path) = rest.split_once('/')?;
            let (user, hostport) = split_user(authority);
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse().ok()?)),
                None => (hostport, None),
            };
            let path = format!("/{path}");
            return (!host.is_empty()).then_some(Self {
                user,
                host,
                port,
                path,
            });
        }
        // scp-like: no slash before the first colon, and not a local path
        // nor another scheme's URL (`s3://…`)
        if s.contains("://") {
            return None;
        }
        let (hostpart, path) = s.split_once(':')?;
        if hostpart.is_empty() || hostpart.contains('/') || path.is_empty() {
            return None;
        }
        let (user, host) = split_user(hostpart);
        Some(Self {
            user,
            host,
            port: None,
            path: path.to_string(),
        })
    }

    pub fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    pub fn identity(&self) -> String {
        format!(
            "ssh://{}:{}{}{}",
            self.destination(),
            self.port.unwrap_or(22),
            if self.path.starts_with('/') {
                ""
            } else {
                "/~/"
            },
            self.path
        )
    }
}

/// The byte stream to `strata serve`: a child process (the system ssh, or
/// STRATA_RSH) or the built-in SSH client.
struct Link {
    writer: Box<dyn Write + Send>,
    reader: Box<dyn Read + Send>,
    child: Option<Child>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    /// Runs `<rsh> [-p port] destination command`.
    fn spawn(
        rsh: &str,
        url: &RemoteUrl,
        command: &str,
        tail: Arc<Mutex<VecDeque<String>>>,
    ) -> Result<Self> {
        let mut words = rsh.split_whitespace();
        let program = words.next().unwrap_or("ssh");
        let mut cmd = Command::new(program);
        cmd.args(words);
        if let Some(p) = url.port {
            cmd.args(["-p", &p.to_string()]);
        }
        cmd.arg(url.destination()).arg(command);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            Error::Remote(format!(
                "cannot run `{program}` to reach {}: {e} (check STRATA_RSH)",
                url.host
            ))
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::invalid("ssh pipes were not created"));
        };
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Ok(mut t) = tail.lock() {
                    if t.len() == 8 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        });
        Ok(Self {
            writer: Box::new(stdin),
            reader: Box::new(stdout),
            child: Some(child),
            stderr_reader: Some(stderr_reader),
        })
    }
}

type Pending = Arc<Mutex<HashMap<u64, Sender<std::result::Result<Payload, RemoteError>>>>>;

/// Connections opened to one server (each its own SSH connection and
/// `strata serve`): pack reads and writes are spread over them, because one
/// TCP connection on a long link is bound by its window (Linux's default
/// send buffer of 4 MiB carries at most 84 MB/s over 50 ms).
pub const DEFAULT_CONNECTIONS: usize = 3;
pub const MAX_CONNECTIONS: usize = 8;

/// One connection: the pipe to a `strata serve` and its pending calls.
struct Lane {
    child: Mutex<Option<Child>>,
    stdin: Mutex<Option<Box<dyn Write + Send>>>,
    pending: Pending,
    /// Why the connection ended, once it has.
    dead: Arc<Mutex<Option<String>>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
}

pub struct RemoteBackend {
    display: String,
    identity: String,
    /// The connection everything but pack transfers uses.
    first: Lane,
    /// More connections for pack transfers, opened in the background at
    /// the first pack transfer (a command that moves no packs opens none).
    extra: Arc<Mutex<Vec<Arc<Lane>>>>,
    to_open: Mutex<Option<LaneRecipe>>,
    next_id: AtomicU64,
    next_lane: std::sync::atomic::AtomicUsize,
    pub welcome: Welcome,
    traffic: Arc<TrafficCounters>,
}

/// How to open the extra connections.
struct LaneRecipe {
    url: RemoteUrl,
    display: String,
    remote_path: String,
    ssh: ssh::SshOptions,
    count: usize,
}

/// Bytes of protocol frames in each direction (what goes into the SSH
/// channel; SSH adds its own few percent of framing and MACs).
#[derive(Default)]
struct TrafficCounters {
    sent: AtomicU64,
    received: AtomicU64,
}

struct Counting<T> {
    inner: T,
    count: Arc<TrafficCounters>,
    outgoing: bool,
}

impl<T> Counting<T> {
    fn add(&self, n: usize) {
        let c = if self.outgoing {
            &self.count.sent
        } else {
            &self.count.received
        };
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl<T: Write> Write for Counting<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.add(n);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<T: std::io::Read> std::io::Read for Counting<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.add(n);
        Ok(n)
    }
}

impl RemoteBackend {
    /// Starts `<rsh> [-p port] destination <remote_path> serve` and shakes hands.
    pub fn connect(
        url: &RemoteUrl,
        display: &str,
        create: bool,
        remote_path: &str,
    ) -> Result<Self> {
        Self::connect_with(
            url,
            display,
            create,
            remote_path,
            ssh::SshOptions::from_env(),
        )
    }

    /// `connect` with explicit SSH options (the daemon's per-repository key).
    /// Opens `STRATA_SSH_CONNECTIONS` connections (default 3, 1 to 8): the
    /// first carries everything but pack transfers; extra ones that fail to
    /// open are done without.
    pub fn connect_with(
        url: &RemoteUrl,
        display: &str,
        create: bool,
        remote_path: &str,
        ssh_options: ssh::SshOptions,
    ) -> Result<Self> {
        let traffic = Arc::new(TrafficCounters::default());
        let (first, welcome) =
            Lane::open(url, display, create, remote_path, &ssh_options, &traffic)?;
        let wanted = std::env::var("STRATA_SSH_CONNECTIONS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_CONNECTIONS)
            .clamp(1, MAX_CONNECTIONS);
        // A quota is counted per server session: one connection keeps it exact.
        let wanted = if create || welcome.quota.is_some() {
            1
        } else {
            wanted
        };
        Ok(Self {
            display: display.to_string(),
            identity: url.identity(),
            first,
            extra: Arc::default(),
            to_open: Mutex::new((wanted > 1).then(|| LaneRecipe {
                url: url.clone(),
                display: display.to_string(),
                remote_path: remote_path.to_string(),
                ssh: ssh_options,
                count: wanted - 1,
            })),
            next_id: AtomicU64::new(1),
            next_lane: std::sync::atomic::AtomicUsize::new(0),
            welcome,
            traffic,
        })
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        1 + self.extra.lock().map(|e| e.len()).unwrap_or(0)
    }

    fn call(&self, op: Op) -> Result<Payload> {
        self.call_on(&self.first, op)
    }

    /// Pack transfers: round robin over the connections open so far; the
    /// first one starts opening the others (those that fail to open are
    /// done without).
    fn call_spread(&self, op: Op) -> Result<Payload> {
        if let Some(recipe) = self.to_open.lock().ok().and_then(|mut r| r.take()) {
            for _ in 0..recipe.count {
                let (extra, traffic) = (self.extra.clone(), self.traffic.clone());
                let r = LaneRecipe {
                    url: recipe.url.clone(),
                    display: recipe.display.clone(),
                    remote_path: recipe.remote_path.clone(),
                    ssh: recipe.ssh.clone(),
                    count: 1,
                };
                std::thread::spawn(move || {
                    if let Ok((lane, _)) =
                        Lane::open(&r.url, &r.display, false, &r.remote_path, &r.ssh, &traffic)
                        && let Ok(mut e) = extra.lock()
                    {
                        e.push(Arc::new(lane));
                    }
                });
            }
        }
        let lane = {
            let extra = match self.extra.lock() {
                Ok(mut e) => {
                    // A connection that died leaves the rotation; the first
                    // one carries on (and fails the call if it is gone too).
                    e.retain(|l| l.dead.lock().map(|d| d.is_none()).unwrap_or(false));
                    e.clone()
                }
                Err(_) => Vec::new(),
            };
            let i = self.next_lane.fetch_add(1, Ordering::Relaxed) % (extra.len() + 1);
            if i == 0 {
                None
            } else {
                Some(extra[i - 1].clone())
            }
        };
        match lane {
            Some(l) => self.call_on(&l, op),
            None => self.call_on(&self.first, op),
        }
    }

    fn call_on(&self, lane: &Lane, op: Op) -> Result<Payload> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lost = || lane.lost(&self.display);
        let (tx, rx) = bounded(1);
        lane.pending.lock().map_err(|_| lost())?.insert(id, tx);
        // The reader marks the connection dead before it drops the waiting
        // calls: a call registered after that would wait forever.
        if lane.dead.lock().map(|d| d.is_some()).unwrap_or(true) {
            if let Ok(mut p) = lane.pending.lock() {
                p.remove(&id);
            }
            return Err(lost());
        }
        let started = std::time::Instant::now();
        {
            let mut guard = lane.stdin.lock().map_err(|_| lost())?;
            let w = guard.as_mut().ok_or_else(lost)?;
            if write_frame(w, &Request { id, op }).is_err() {
                return Err(lost());
            }
        }
        let reply = rx.recv();
        record_latency(started.elapsed());
        match reply {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(from_remote(e, &self.display)),
            Err(_) => Err(lost()),
        }
    }
}

/// With `STRATA_RPC_LATENCY_LOG=FILE`, every call's round trip (request
/// written to reply received, in microseconds) is appended to FILE, one per
/// line: the load benchmark's p99 (docs/reliability.md). Off otherwise.
fn record_latency(d: std::time::Duration) {
    static LOG: std::sync::OnceLock<Option<Mutex<std::fs::File>>> = std::sync::OnceLock::new();
    let log = LOG.get_or_init(|| {
        let path = std::env::var_os("STRATA_RPC_LATENCY_LOG")?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()?;
        Some(Mutex::new(f))
    });
    if let Some(f) = log
        && let Ok(mut f) = f.lock()
    {
        use std::io::Write;
        let _ = writeln!(f, "{}", d.as_micros());
    }
}

impl Lane {
    /// One connection: ssh (built in, or STRATA_RSH), `serve`, handshake.
    fn open(
        url: &RemoteUrl,
        display: &str,
        create: bool,
        remote_path: &str,
        ssh_options: &ssh::SshOptions,
        traffic: &Arc<TrafficCounters>,
    ) -> Result<(Self, Welcome)> {
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let command = format!("{remote_path} serve");
        let mut link = match std::env::var("STRATA_RSH") {
            Ok(rsh) => Link::spawn(&rsh, url, &command, stderr_tail.clone())?,
            Err(_) => {
                let t = ssh::connect(url, &command, ssh_options, stderr_tail.clone())?;
                Link {
                    writer: Box::new(t.writer),
                    reader: Box::new(t.reader),
                    child: None,
                    stderr_reader: None,
                }
            }
        };
        let hello = Hello {
            magic: PROTOCOL_MAGIC.into(),
            version: PROTOCOL_VERSION,
            path: url.path.clone(),
            create,
        };
        let sent = write_frame(&mut link.writer, &hello);
        let answer = read_frame::<std::result::Result<Welcome, RemoteError>>(&mut link.reader);
        let welcome = match (sent, answer) {
            (Ok(()), Ok(Some(Ok(w)))) => w,
            (_, Ok(Some(Err(e)))) => return Err(from_remote(e, display)),
            _ => {
                let status = link.child.as_mut().and_then(|c| c.wait().ok());
                // ssh has exited: its stderr is complete once the reader ends.
                if let Some(r) = link.stderr_reader.take() {
                    let _ = r.join();
                }
                let why = last_line(&stderr_tail).unwrap_or_else(|| match status {
                    Some(s) => format!("ssh ended with {s}"),
                    None => "the server closed the connection".into(),
                });
                return Err(Error::Remote(format!(
                    "cannot reach strata on {}: {why} (check the host, your SSH key and known_hosts, and that strata is installed there or given with --remote-path)",
                    url.host
                )));
            }
        };
        let Link {
            writer,
            reader: stdout,
            child,
            ..
        } = link;
        let writer: Box<dyn Write + Send> = Box::new(Counting {
            inner: writer,
            count: traffic.clone(),
            outgoing: true,
        });
        let stdout = Counting {
            inner: stdout,
            count: traffic.clone(),
            outgoing: false,
        };
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let dead = Arc::new(Mutex::new(None));
        let reader = {
            let (pending, dead, tail) = (pending.clone(), dead.clone(), stderr_tail.clone());
            std::thread::spawn(move || read_responses(stdout, pending, dead, tail))
        };
        Ok((
            Self {
                child: Mutex::new(child),
                stdin: Mutex::new(Some(writer)),
                pending,
                dead,
                stderr_tail,
                reader: Mutex::new(Some(reader)),
            },
            welcome,
        ))
    }

    fn lost(&self, display: &str) -> Error {
        // ssh's own last words ("Timeout, server … not responding.") say
        // more than our end-of-stream, and may have arrived since.
        let why = last_line(&self.stderr_tail)
            .or_else(|| self.dead.lock().ok().and_then(|d| d.clone()))
            .unwrap_or_else(|| "connection closed".into());
        Error::Remote(format!(
            "connection to {display} lost: {why}; nothing partial was committed, run the command again"
        ))
    }
}

fn last_line(tail: &Mutex<VecDeque<String>>) -> Option<String> {
    tail.lock()
        .ok()?
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .cloned()
}

fn read_responses(
    mut stdout: impl std::io::Read,
    pending: Pending,
    dead: Arc<Mutex<Option<String>>>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let why = loop {
        match read_frame::<Response>(&mut stdout) {
            Ok(Some(resp)) => {
                let waiter = pending.lock().ok().and_then(|mut p| p.remove(&resp.id));
                if let Some(tx) = waiter {
                    let _ = tx.send(resp.result);
                }
            }
            Ok(None) => {
                break last_line(&tail)
                    .unwrap_or_else(|| "the server closed the connection".into());
            }
            Err(e) => break e.to_string(),
        }
    };
    if let Ok(mut d) = dead.lock() {
        *d = Some(why);
    }
    // Wake every caller still waiting: their senders are dropped.
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}

/// Rebuilds a local error from a server error.
fn from_remote(e: RemoteError, display: &str) -> Error {
    let io = |kind: std::io::ErrorKind| Error::Io {
        context: format!("{display}: {}", e.message),
        source: std::io::Error::new(kind, e.message.clone()),
    };
    match e.code {
        ErrorCode::NotFound => io(std::io::ErrorKind::NotFound),
        ErrorCode::AlreadyExists => io(std::io::ErrorKind::AlreadyExists),
        // The server's message is the same sentence about its own path.
        ErrorCode::DiskFull => Error::DiskFull(format!("writing to {display}")),
        ErrorCode::NotARepository => Error::NotARepository(display.to_string()),
        ErrorCode::RepositoryExists => Error::RepositoryExists(display.to_string()),
        ErrorCode::Denied | ErrorCode::QuotaExceeded => {
            Error::Denied(format!("{display}: {}", e.message))
        }
        ErrorCode::Invalid | ErrorCode::Io => Error::invalid(format!("{display}: {}", e.message)),
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // Closing stdin ends the server's loop; then ssh exits.
        if let Ok(mut s) = self.stdin.lock() {
            s.take();
        }
        if let Some(mut c) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = c.wait();
        }
        if let Some(r) = self.reader.lock().ok().and_then(|mut r| r.take()) {
            let _ = r.join();
        }
    }
}

impl Backend for RemoteBackend {
    fn append_only(&self) -> bool {
        self.welcome.append_only || self.welcome.read_only
    }

    fn traffic(&self) -> Option<Traffic> {
        Some(Traffic {
            sent: self.traffic.sent.load(Ordering::Relaxed),
            received: self.traffic.received.load(Ordering::Relaxed),
        })
    }

    fn location(&self) -> &str {
        &self.display
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn high_latency(&self) -> bool {
        true
    }

    fn create(&self) -> Result<()> {
        self.call(Op::Create).map(|_| ())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        match self.call(Op::List { kind: kind.into() })? {
            Payload::Files { files } => Ok(files.into_iter().map(FileInfo::from).collect()),
            other => Err(unexpected(&other)),
        }
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let op = Op::Read {
            kind: kind.into(),
            name: name.into(),
        };
        let reply = if kind == FileKind::Pack {
            self.call_spread(op)
        } else {
            self.call(op)
        };
        match reply? {
            Payload::Bytes { data } => Ok(data),
            other => Err(unexpected(&other)),
        }
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let op = Op::ReadRange {
            kind: kind.into(),
            name: name.into(),
            offset,
            len,
        };
        let reply = if kind == FileKind::Pack {
            self.call_spread(op)
        } else {
            self.call(op)
        };
        match reply? {
            Payload::Bytes { data } if data.len() == len as usize => Ok(data),
            other => Err(unexpected(&other)),
        }
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.write_owned(kind, name, data.to_vec())
    }

    fn write_owned(&self, kind: FileKind, name: &str, data: Vec<u8>) -> Result<()> {
        if data.len() > MAX_REMOTE_PACK as usize {
            return Err(Error::invalid(format!(
                "{} bytes is more than a remote repository accepts in one file",
                data.len()
            )));
        }
        let op = Op::Write {
            kind: kind.into(),
            name: name.into(),
            data,
        };
        if kind == FileKind::Pack {
            self.call_spread(op).map(|_| ())
        } else {
            self.call(op).map(|_| ())
        }
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.call(Op::Delete {
            kind: kind.into(),
            name: name.into(),
        })
        .map(|_| ())
    }

    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        match self.call(Op::Exists {
            kind: kind.into(),
            name: name.into(),
        })? {
            Payload::Flag { value } => Ok(value),
            other => Err(unexpected(&other)),
        }
    }

    fn remove_stale_temporaries(&self, older_than_secs: u64) -> Result<u64> {
        match self.call(Op::RemoveStaleTemporaries { older_than_secs })? {
            Payload::Count { n } => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    fn space(&self) -> Result<Space> {
        match self.call(Op::Space)? {
            Payload::Space { total, free } => Ok(Space { total, free }),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(p: &Payload) -> Error {
    Error::invalid(format!("the server answered with an unexpected {p:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = RemoteUrl::parse("ssh://backup@central:2222/srv/strata/knode01").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.host.as_str(), u.port, u.path.as_str()),
            (Some("backup"), "central", Some(2222), "/srv/strata/knode01")
        );
        let u = RemoteUrl::parse("backup@central:repos/knode01").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.host.as_str(), u.port, u.path.as_str()),
            (Some("backup"), "central", None, "repos/knode01")
        );
        assert_eq!(RemoteUrl::parse("/local/path"), None);
        assert_eq!(RemoteUrl::parse("./dir:with:colons"), None);
        assert_eq!(RemoteUrl::parse("relative/dir"), None);
        assert_eq!(RemoteUrl::parse("ssh://host:notaport/x"), None);
        assert_eq!(RemoteUrl::parse("s3://bucket/prefix"), None);
    }
}
