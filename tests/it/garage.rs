//! A real Garage cluster for the S3 tests: three nodes on loopback ports,
//! replication factor 3 (writes need two of three), one bucket and one key.
//!
//! The binary is `$STRATA_GARAGE_BIN`, else the one scripts/test.sh caches
//! with `scripts/garage.sh` in /var/cache/strata-ci/garage/bin. A missing
//! binary fails the test with the command that installs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "strata";
pub const REGION: &str = "garage";

pub fn garage_bin() -> PathBuf {
    let bin = std::env::var_os("STRATA_GARAGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/strata-ci/garage/bin/garage"));
    assert!(
        bin.is_file(),
        "no Garage binary at {}: run scripts/garage.sh (or set STRATA_GARAGE_BIN)",
        bin.display()
    );
    bin
}

struct Node {
    config: PathBuf,
    s3_port: u16,
    admin_port: u16,
    child: Option<Child>,
}

pub struct Garage {
    /// Held for its lifetime: the nodes' configs, metadata and data.
    _dir: tempfile::TempDir,
    bin: PathBuf,
    nodes: Vec<Node>,
    ip: String,
    pub key_id: String,
    pub secret: String,
}

/// A loopback address of its own for each cluster (all of 127/8 is
/// loopback): clusters of tests running in parallel cannot take each
/// other's ports, which picking free ports one by one could not promise.
fn own_loopback() -> String {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).unwrap();
    format!("127.{}.{}.{}", b[0].max(1), b[1], b[2].clamp(2, 254))
}

fn hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Polls `cond` every 100 ms for up to `secs` (a condition wait).
fn wait(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Garage {
    /// Starts the cluster and waits until it serves S3 requests.
    pub fn start() -> Self {
        let bin = garage_bin();
        let dir = tempfile::Builder::new()
            .prefix("strata-garage-")
            .tempdir()
            .unwrap();
        let rpc_secret = hex(32);
        let ip = own_loopback();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let root = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&root).unwrap();
            let base = 3900 + 10 * i as u16;
            let (rpc, s3, admin) = (base + 1, base, base + 3);
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{root}/meta\"\n\
                     data_dir = \"{root}/data\"\n\
                     db_engine = \"sqlite\"\n\
                     replication_factor = 3\n\
                     rpc_bind_addr = \"{ip}:{rpc}\"\n\
                     rpc_public_addr = \"{ip}:{rpc}\"\n\
                     rpc_secret = \"{rpc_secret}\"\n\
                     [s3_api]\n\
                     s3_region = \"{REGION}\"\n\
                     api_bind_addr = \"{ip}:{s3}\"\n\
                     [admin]\n\
                     api_bind_addr = \"{ip}:{admin}\"\n",
                    root = root.display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
            nodes.push(Node {
                config,
                s3_port: s3,
                admin_port: admin,
                child: None,
            });
        }
        let mut g = Self {
            _dir: dir,
            bin,
            nodes,
            ip,
            key_id: format!("GK{}", hex(12)),
            secret: hex(32),
        };
        for i in 0..3 {
            g.spawn(i);
        }
        let ids: Vec<String> = (0..3)
            .map(|i| {
                let mut id = String::new();
                wait("a Garage node's RPC", 60, || {
                    match g.cli_at(i, &["node", "id", "-q"]) {
                        Ok(out) => {
                            id = out.trim().to_string();
                            true
                        }
                        Err(_) => false,
                    }
                });
                id
            })
            .collect();
        for id in &ids[1..] {
            // The peer may not listen yet: `node id` reads its key file.
            wait("a Garage node to accept connections", 60, || {
                g.cli_at(0, &["node", "connect", id]).is_ok()
            });
        }
        for (i, id) in ids.iter().enumerate() {
            let node = id.split('@').next().unwrap();
            g.cli(&[
                "layout",
                "assign",
                "-z",
                &format!("dc{i}"),
                "-c",
                "1G",
                node,
            ]);
        }
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&[
            "key", "import", "-n", "strata", "--yes", &g.key_id, &g.secret,
        ]);
        g.cli(&["bucket", "create", BUCKET]);
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "strata",
        ]);
        for i in 0..3 {
            g.wait_healthy(i);
        }
        g
    }

    fn spawn(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let log = std::fs::File::create(n.config.with_file_name("log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&n.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        n.child = Some(child);
    }

    /// The admin API's /health answers 200 once the node sees a quorum for
    /// every partition.
    fn wait_healthy(&self, i: usize) {
        let url = format!("http://{}:{}/health", self.ip, self.nodes[i].admin_port);
        wait("a healthy Garage cluster", 60, || {
            ureq::get(&url)
                .call()
                .is_ok_and(|r| r.status().as_u16() == 200)
        });
    }

    fn cli_at(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `garage ARGS` against the first node; must succeed.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_at(0, args)
            .unwrap_or_else(|e| panic!("garage {args:?} failed: {e}"))
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}:{}", self.ip, self.nodes[i].s3_port)
    }

    /// The environment a strata command needs to reach the bucket through
    /// node `i`.
    pub fn env_via(&self, i: usize) -> Vec<(String, String)> {
        vec![
            ("STRATA_S3_ENDPOINT".into(), self.endpoint(i)),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
        ]
    }

    pub fn env(&self) -> Vec<(String, String)> {
        self.env_via(0)
    }

    /// SIGKILLs node `i` (a power cut of one machine).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Bytes of object data node `i` holds on disk.
    pub fn data_bytes(&self, i: usize) -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| match e.metadata() {
                            Ok(m) if m.is_dir() => walk(&e.path()),
                            Ok(m) => m.len(),
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.nodes[i].config.with_file_name("data"))
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
