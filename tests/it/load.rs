//! Load: many hosts (processes, each with its own key, passphrase, cache
//! and repository) back up at once to one central node over real SSH on
//! loopback, while the central node replicates their repositories to an
//! off-site repository. Nothing may fail, nobody may starve on a lock.
//! Reports aggregate throughput and the p99 RPC round trip
//! (`STRATA_RPC_LATENCY_LOG`).
//!
//! The suite runs 4 hosts with a little data; `scripts/load-bench.sh` runs
//! 20 hosts (`STRATA_LOAD_HOSTS`, `STRATA_LOAD_MIB`, `STRATA_LOAD_ROUNDS`).

use crate::sshd::Sshd;
use crate::util::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Host {
    name: String,
    url: String,
    src: std::path::PathBuf,
    latency_log: std::path::PathBuf,
}

impl Host {
    fn cmd(&self, env: &Env, rsh: &str) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("strata"));
        c.env("STRATA_PASSPHRASE", format!("passphrase of {}", self.name))
            .env(
                "STRATA_CACHE_DIR",
                env.path(&format!("{}/cache", self.name)),
            )
            .env("STRATA_KEYS_DIR", env.path(&format!("{}/keys", self.name)))
            .env("STRATA_INSECURE_FAST_KDF", "1")
            .env("STRATA_RSH", rsh)
            .env("STRATA_RPC_LATENCY_LOG", &self.latency_log)
            .env_remove("STRATA_REPO")
            .env_remove("STRATA_PASSCOMMAND")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }
}

fn fill(src: &Path, host: &str, round: u64, bytes: usize) {
    std::fs::create_dir_all(src).unwrap();
    // half stays, half changes each round: deduplication has work to do
    std::fs::write(src.join("stable"), random(host, bytes / 2)).unwrap();
    std::fs::write(
        src.join("changing"),
        random(&format!("{host}-{round}"), bytes / 2),
    )
    .unwrap();
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
fn many_hosts_back_up_over_ssh_while_the_central_node_replicates() {
    let hosts_n = env_u64("STRATA_LOAD_HOSTS", 4);
    let mib = env_u64("STRATA_LOAD_MIB", 4);
    let rounds = env_u64("STRATA_LOAD_ROUNDS", 2);
    let env = Env::new();
    let central = env.path("central");
    std::fs::create_dir(&central).unwrap();
    let forced = format!(
        "{} serve --restrict-to-path {}",
        assert_cmd::cargo::cargo_bin("strata").display(),
        central.display()
    );
    let sshd = Sshd::start(Some(&forced));
    let rsh = sshd.rsh();
    let hosts: Vec<Host> = (0..hosts_n)
        .map(|i| {
            let name = format!("host{i:02}");
            Host {
                url: format!(
                    "ssh://{}@127.0.0.1{}",
                    sshd.user(),
                    central.join(&name).display()
                ),
                src: env.path(&format!("{name}/src")),
                latency_log: env.path(&format!("{name}/rpc-latency")),
                name,
            }
        })
        .collect();
    // every host initialises its repository at the same moment
    let inits: Vec<_> = hosts
        .iter()
        .map(|h| {
            std::fs::create_dir_all(env.path(&h.name)).unwrap();
            h.cmd(&env, &rsh).args(["init", &h.url]).spawn().unwrap()
        })
        .collect();
    for (h, c) in hosts.iter().zip(inits) {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "init {}: {}",
            h.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let offsite = env.path("offsite");
    env.ok(&["init", "-e", "none", offsite.to_str().unwrap()]);
    let repos: Vec<String> = hosts
        .iter()
        .map(|h| central.join(&h.name).display().to_string())
        .collect();

    let backing_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    // the central node replicates, again and again, while hosts back up
    let replicator = {
        let (backing_up, offsite, repos) = (backing_up.clone(), offsite.clone(), repos.clone());
        let cmd = env.std_cmd();
        let program = cmd.get_program().to_owned();
        let envs: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
            .collect();
        std::thread::spawn(move || {
            let mut runs = 0u32;
            loop {
                let last = !backing_up.load(std::sync::atomic::Ordering::SeqCst);
                let mut c = Command::new(&program);
                for (k, v) in &envs {
                    match v {
                        Some(v) => c.env(k, v),
                        None => c.env_remove(k),
                    };
                }
                let out = c
                    .args(["--lock-wait", "600", "replicate", "--to"])
                    .arg(&offsite)
                    .args(&repos)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "replicate run {runs}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
                if last {
                    return runs;
                }
            }
        })
    };

    let bytes = (mib << 20) as usize;
    let start = Instant::now();
    let mut total = 0u64;
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        for h in &hosts {
            fill(&h.src, &h.name, round, bytes);
        }
        let t = Instant::now();
        let children: Vec<_> = hosts
            .iter()
            .map(|h| {
                h.cmd(&env, &rsh)
                    .args([
                        "--lock-wait",
                        "600",
                        "create",
                        &format!("{}::r{round}", h.url),
                        h.src.to_str().unwrap(),
                    ])
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (h, c) in hosts.iter().zip(children) {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "create {} round {round}: {}",
                h.name,
                String::from_utf8_lossy(&out.stderr)
            );
            total += bytes as u64;
        }
        slowest = slowest.max(t.elapsed());
    }
    let backup_time = start.elapsed();
    backing_up.store(false, std::sync::atomic::Ordering::SeqCst);
    let replications = replicator.join().unwrap();

    // every host's repository is whole, and its archives are all there
    for h in &hosts {
        let list = h
            .cmd(&env, &rsh)
            .args(["list", "--short", &h.url])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let names = String::from_utf8_lossy(&list.stdout);
        assert_eq!(names.lines().count() as u64, rounds, "{}: {names}", h.name);
    }
    let check = env.run(&["check", "--verify-data", offsite.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let mut lat: Vec<u64> = hosts
        .iter()
        .flat_map(|h| {
            std::fs::read_to_string(&h.latency_log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect();
    lat.sort_unstable();
    assert!(!lat.is_empty(), "no RPC latencies were recorded");
    let mibps = total as f64 / (1 << 20) as f64 / backup_time.as_secs_f64();
    let line = format!(
        "load: {hosts_n} hosts x {rounds} rounds x {mib} MiB over ssh in {:.1} s ({mibps:.1} MiB/s aggregate, slowest round {:.1} s), {replications} replication runs meanwhile; {} RPCs, p50 {} us, p99 {} us, max {} us",
        backup_time.as_secs_f64(),
        slowest.as_secs_f64(),
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
    );
    eprintln!("{line}");
    if let Ok(p) = std::env::var("STRATA_LOAD_REPORT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
    assert!(replications >= 1);
}
