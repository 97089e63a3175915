//! The built-in SSH transport (russh): a byte stream to `strata serve` on
//! the remote host, checked against known_hosts, authenticated with a key.
//! Runs its own small tokio runtime on one thread; the rest of strata sees
//! a plain `Read` and `Write`.
//!
//! Settings (environment): `STRATA_SSH_KEY` (default: ~/.ssh/id_ed25519,
//! then id_ecdsa; then the keys of the ssh-agent at SSH_AUTH_SOCK),
//! `STRATA_KNOWN_HOSTS` (default ~/.ssh/known_hosts),
//! `STRATA_SSH_ACCEPT_NEW=1` (like OpenSSH's accept-new: record an unknown
//! host, still refuse a changed one). `STRATA_RSH` bypasses all of this and
//! runs the system ssh instead.

use super::RemoteUrl;
use crate::error::{Error, Result};
use russh::ChannelMsg;
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Missed keepalives before the connection counts as lost (one minute).
pub const KEEPALIVE_MAX: usize = 4;

static ACCEPT_NEW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--accept-new` on the command line.
pub fn force_accept_new() {
    ACCEPT_NEW.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[derive(Clone, Debug)]
pub struct SshOptions {
    pub keys: Vec<PathBuf>,
    pub known_hosts: PathBuf,
    pub accept_new: bool,
}

impl SshOptions {
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        let keys = match std::env::var_os("STRATA_SSH_KEY") {
            Some(k) => vec![PathBuf::from(k)],
            None => vec![home.join(".ssh/id_ed25519"), home.join(".ssh/id_ecdsa")],
        };
        let known_hosts = std::env::var_os("STRATA_KNOWN_HOSTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".ssh/known_hosts"));
        let accept_new = ACCEPT_NEW.load(std::sync::atomic::Ordering::Relaxed)
            || std::env::var("STRATA_SSH_ACCEPT_NEW").is_ok_and(|v| v == "1" || v == "yes");
        Self {
            keys,
            known_hosts,
            accept_new,
        }
    }
}

/// Checks the server's host key against known_hosts.
struct HostCheck {
    host: String,
    port: u16,
    opts: SshOptions,
    refusal: Arc<Mutex<Option<String>>>,
}

impl HostCheck {
    fn verdict(&self, key: &PublicKey) -> std::result::Result<(), String> {
        let shown = if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let file = self.opts.known_hosts.display();
        match russh::keys::check_known_hosts_path(
            &self.host,
            self.port,
            key,
            &self.opts.known_hosts,
        ) {
            Ok(true) => Ok(()),
            Err(russh::keys::Error::KeyChanged { line }) => Err(format!(
                "the host key of {shown} CHANGED ({fingerprint}; {file} line {line} has another): someone may be intercepting the connection; if the server was reinstalled, remove that line"
            )),
            Ok(false) | Err(_) if self.opts.accept_new => {
                russh::keys::known_hosts::learn_known_hosts_path(
                    &self.host,
                    self.port,
                    key,
                    &self.opts.known_hosts,
                )
                .map_err(|e| format!("cannot record the host key of {shown} in {file}: {e}"))
            }
            _ => Err(format!(
                "the host key of {shown} ({fingerprint}) is not in {file}: check the fingerprint, then connect once with --accept-new (or `ssh`)"
            )),
        }
    }
}

impl client::Handler for HostCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            if let Ok(mut r) = self.refusal.lock() {
                *r = Some(
                    "host certificates are not supported; use a host key in known_hosts".into(),
                );
            }
            return Ok(false);
        };
        match self.verdict(key) {
            Ok(()) => Ok(true),
            Err(why) => {
                if let Ok(mut r) = self.refusal.lock() {
                    *r = Some(why);
                }
                Ok(false)
            }
        }
    }
}

/// The byte stream to the remote command.
pub struct Transport {
    pub reader: ChannelReader,
    pub writer: ChannelWriter,
}

pub struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0), // the channel ended
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.tx.blocking_send(data.to_vec()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "ssh connection closed")
        })?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Connects, authenticates, runs `command`; stderr lines go to `stderr`.
pub fn connect(
    url: &RemoteUrl,
    command: &str,
    opts: &SshOptions,
    stderr: Arc<Mutex<VecDeque<String>>>,
) -> Result<Transport> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::result::Result<(), String>>();
    let (data_tx, data_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (write_tx, write_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let (url, command, opts) = (url.clone(), command.to_string(), opts.clone());
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(format!("cannot start the ssh runtime: {e}")));
                return;
            }
        };
        rt.block_on(run(url, command, opts, ready_tx, data_tx, write_rx, stderr));
    });
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Transport {
            reader: ChannelReader {
                rx: data_rx,
                buf: Vec::new(),
                pos: 0,
            },
            writer: ChannelWriter { tx: write_tx },
        }),
        Ok(Err(why)) => Err(Error::Remote(why)),
        Err(_) => Err(Error::Remote("the ssh connection thread ended".into())),
    }
}

async fn run(
    url: RemoteUrl,
    command: String,
    opts: SshOptions,
    ready: std::sync::mpsc::Sender<std::result::Result<(), String>>,
    data: std::sync::mpsc::Sender<Vec<u8>>,
    mut writes: tokio::sync::mpsc::Receiver<Vec<u8>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
) {
    let channel = match open(&url, &command, &opts).await {
        Ok(c) => c,
        Err(why) => {
            let _ = ready.send(Err(why));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let (mut read_half, write_half) = channel.split();
    let writer = async move {
        while let Some(buf) = writes.recv().await {
            if write_half.data_bytes(buf).await.is_err() {
                return;
            }
        }
        let _ = write_half.eof().await;
    };
    let reader = async move {
        while let Some(msg) = read_half.wait().await {
            match msg {
                ChannelMsg::Data { data: d } if data.send(d.to_vec()).is_err() => {
                    break;
                }
                ChannelMsg::ExtendedData { data: d, .. } => {
                    if let Ok(mut t) = stderr.lock() {
                        for line in String::from_utf8_lossy(&d).lines() {
                            if t.len() == 8 {
                                t.pop_front();
                            }
                            t.push_back(line.to_string());
                        }
                    }
                }
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => {}
            }
        }
        drop(data); // the reader sees the end of the stream
    };
    tokio::join!(writer, reader);
}

/// The data is sealed already; the transport cipher only costs CPU, on the
/// client and again in the server's sshd. AES-GCM is several times cheaper
/// than ChaCha20 where the CPU has AES instructions (not on a Raspberry Pi
/// 3/4, where ChaCha20 stays first), and AES-128 does 10 rounds to
/// AES-256's 14 (OpenSSH's default list offers both; 128-bit keys are
/// ample for a transport around already-encrypted data).
fn cipher_order() -> Vec<russh::cipher::Name> {
    use russh::cipher::{AES_128_GCM, AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305};
    if crate::crypto::Cipher::default_for_cpu() == crate::crypto::Cipher::Aes256Gcm {
        vec![AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305, AES_256_CTR]
    } else {
        vec![CHACHA20_POLY1305, AES_128_GCM, AES_256_GCM, AES_256_CTR]
    }
}

/// Tries every key the ssh-agent at SSH_AUTH_SOCK holds.
async fn agent_auth(
    session: &mut client::Handle<HostCheck>,
    user: &str,
    tried: &mut Vec<String>,
) -> bool {
    let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await else {
        return false;
    };
    let Ok(ids) = agent.request_identities().await else {
        return false;
    };
    for id in ids {
        let russh::keys::agent::AgentIdentity::PublicKey { key, comment } = id else {
            continue;
        };
        tried.push(format!("ssh-agent key `{comment}`"));
        if let Ok(r) = session
            .authenticate_publickey_with(user, key, None, &mut agent)
            .await
            && r.success()
        {
            return true;
        }
    }
    false
}

async fn open(
    url: &RemoteUrl,
    command: &str,
    opts: &SshOptions,
) -> std::result::Result<russh::Channel<client::Msg>, String> {
    let port = url.port.unwrap_or(22);
    let refusal = Arc::new(Mutex::new(None));
    let check = HostCheck {
        host: url.host.clone(),
        port,
        opts: opts.clone(),
        refusal: refusal.clone(),
    };
    let config = Arc::new(client::Config {
        keepalive_interval: Some(KEEPALIVE),
        keepalive_max: KEEPALIVE_MAX,
        // A large window keeps a long fat pipe (a VPN to another house) full.
        window_size: 16 * 1024 * 1024,
        nodelay: true,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Owned(cipher_order()),
            ..Default::default()
        },
        ..Default::default()
    });
    let socket = tokio::net::TcpStream::connect((url.host.as_str(), port))
        .await
        .map_err(|e| format!("cannot reach {}:{port}: {e}", url.host))?;
    let _ = socket.set_nodelay(true);
    // Keepalives go unanswered and unnoticed while a write is stuck on a cut
    // link (the kernel retransmits for 15 minutes): a TCP user timeout fails
    // the connection after the same minute of silence instead.
    let _ = rustix::net::sockopt::set_tcp_user_timeout(
        &socket,
        (KEEPALIVE * KEEPALIVE_MAX as u32).as_millis() as u32,
    );
    let mut session = match client::connect_stream(config, socket, check).await {
        Ok(s) => s,
        Err(e) => {
            let refused = refusal.lock().ok().and_then(|r| r.clone());
            return Err(refused.unwrap_or_else(|| format!("cannot reach {}:{port}: {e}", url.host)));
        }
    };
    let user = url
        .user
        .clone()
        .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "root".into()));
    let mut tried = Vec::new();
    let mut authenticated = false;
    for path in &opts.keys {
        let Ok(key) = russh::keys::load_secret_key(path, None) else {
            continue;
        };
        tried.push(path.display().to_string());
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), None);
        match session.authenticate_publickey(&user, key).await {
            Ok(r) if r.success() => {
                authenticated = true;
                break;
            }
            Ok(_) => {}
            Err(e) => return Err(format!("authentication with {} failed: {e}", url.host)),
        }
    }
    if !authenticated && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        authenticated = agent_auth(&mut session, &user, &mut tried).await;
    }
    if !authenticated {
        return Err(if tried.is_empty() {
            format!(
                "no usable SSH key (tried {}, and no ssh-agent key): set STRATA_SSH_KEY, or STRATA_RSH=ssh to use the system ssh",
                opts.keys
                    .iter()
                    .map(|k| k.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!(
                "Permission denied by {user}@{}: the server refused {}",
                url.host,
                tried.join(", ")
            )
        });
    }
    let channel = session
        .channel_open_session()
        .await
        .map_err(|e| format!("cannot open a session on {}: {e}", url.host))?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| format!("cannot run `{command}` on {}: {e}", url.host))?;
    // The session handle must live as long as the channel: keep it in a task.
    tokio::spawn(async move {
        let _keep = session;
        std::future::pending::<()>().await;
    });
    Ok(channel)
}
