//! Prometheus metrics, in the text exposition format: the node's file
//! systems, each configured repository, the job history, replication and
//! drills. One function renders them from the configuration, the history
//! and the repositories, for the daemon's `/metrics` and for
//! `strata metrics --textfile` (node_exporter's textfile collector).
//! Names follow docs (`strata_` prefix, base units); labels are bounded by
//! the configuration (jobs, repositories, targets, tiers), never by data.

use super::history::{History, Run};
use crate::config::{Config, JobKind};
use crate::error::Result;
use crate::repo::Passphrase;
use crate::repo::client::ClientDirs;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Upper bounds (seconds) of the job duration histogram.
pub const DURATION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

/// A metric family being written: HELP and TYPE once, then samples.
struct Out {
    text: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(l: &[(&str, &str)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.text, "{name}{} {v}", labels(l));
    }
}

fn ts(rfc3339: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

/// The mount point holding `path` (longest matching prefix in mountinfo).
pub(crate) fn mount_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut best = PathBuf::from("/");
    for m in crate::mountinfo::read() {
        if path.starts_with(&m.point) && m.point.components().count() > best.components().count() {
            best = m.point;
        }
    }
    best.display().to_string()
}

/// What a repository looks like now (read with a shared lock).
#[derive(Default)]
struct RepoFigures {
    stored: u64,
    deduplicated: u64,
    original: u64,
    archives: u64,
    last_archive: Option<f64>,
}

struct NoPassphrase;
impl Passphrase for NoPassphrase {
    fn get(&self, _: bool) -> Result<Vec<u8>> {
        Err(crate::error::Error::invalid("no passphrase configured"))
    }
}

fn repo_figures(r: &crate::config::Repository, dirs: &ClientDirs) -> Result<RepoFigures> {
    let backend = super::runner::backend_of(r)?;
    let stored = backend
        .list(crate::backend::FileKind::Pack)?
        .iter()
        .map(|f| f.size)
        .sum();
    let secret = super::runner::secret(r);
    let passphrase: &dyn Passphrase = if r.passphrase_file.is_some() || r.passcommand.is_some() {
        &secret
    } else {
        &NoPassphrase
    };
    // No lock: a scrape must not wait for (or disturb) a running backup.
    let (_, manifest) = crate::repo::peek_manifest(backend.as_ref(), passphrase, dirs)?;
    let a = &manifest.archives;
    Ok(RepoFigures {
        stored,
        deduplicated: a.iter().map(|x| x.stats.deduplicated_size).sum(),
        original: a.iter().map(|x| x.stats.original_size).sum(),
        archives: a.len() as u64,
        last_archive: a
            .iter()
            .filter_map(|x| ts(&x.time))
            .fold(None, |m, t| Some(m.map_or(t, |m: f64| m.max(t)))),
    })
}

fn duration_of(r: &Run) -> Option<f64> {
    Some(ts(r.ended.as_deref()?)? - ts(&r.started)?)
}

/// Renders every metric. `running`: jobs running now (the daemon knows;
/// the textfile writer passes none).
pub fn render(cfg: &Config, history: &History, running: &[String], dirs: &ClientDirs) -> String {
    let mut o = Out {
        text: String::new(),
    };
    let node = cfg.node.name.as_str();
    o.family("strata_build_info", "gauge", "strata's version, always 1.");
    o.sample(
        "strata_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("node", node)],
        1.0,
    );

    // File systems holding local repositories and the state directory.
    let mut paths: Vec<PathBuf> = vec![cfg.state_dir()];
    for r in cfg.repositories.iter().map(|r| r.get_ref()) {
        if !crate::backend::is_url(&r.location) {
            paths.push(PathBuf::from(&r.location));
        }
    }
    let mut mounts = BTreeMap::new();
    for p in &paths {
        let probe = p.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
        if let Ok(st) = rustix::fs::statvfs(probe) {
            mounts.insert(
                mount_of(probe),
                (st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize),
            );
        }
    }
    o.family(
        "strata_filesystem_size_bytes",
        "gauge",
        "Size of a file system holding repositories or state.",
    );
    for (m, (size, _)) in &mounts {
        o.sample(
            "strata_filesystem_size_bytes",
            &[("node", node), ("mount", m)],
            *size as f64,
        );
    }
    o.family(
        "strata_filesystem_free_bytes",
        "gauge",
        "Bytes available to strata on that file system.",
    );
    for (m, (_, free)) in &mounts {
        o.sample(
            "strata_filesystem_free_bytes",
            &[("node", node), ("mount", m)],
            *free as f64,
        );
    }
    // A local repository whose directory sits on the root file system is
    // usually a USB drive that is not mounted: writes would fill the SD card.
    o.family(
        "strata_repository_on_root_filesystem",
        "gauge",
        "1 if a local repository lies on the root file system (its drive may be unmounted).",
    );
    for r in cfg.repositories.iter().map(|r| r.get_ref()) {
        if !crate::backend::is_url(&r.location) {
            let p = Path::new(&r.location);
            let probe = p.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
            o.sample(
                "strata_repository_on_root_filesystem",
                &[("repo", &r.name)],
                (mount_of(probe) == "/") as u8 as f64,
            );
        }
    }

    // Repositories.
    let figures: Vec<(String, Option<RepoFigures>)> = cfg
        .repositories
        .iter()
        .map(|r| {
            let r = r.get_ref();
            (r.name.clone(), repo_figures(r, dirs).ok())
        })
        .collect();
    o.family(
        "strata_repository_up",
        "gauge",
        "1 if the repository could be read for these metrics.",
    );
    for (name, f) in &figures {
        o.sample(
            "strata_repository_up",
            &[("repo", name)],
            f.is_some() as u8 as f64,
        );
    }
    let repo_family =
        |o: &mut Out, metric: &str, help: &str, get: &dyn Fn(&RepoFigures) -> Option<f64>| {
            o.family(metric, "gauge", help);
            for (name, f) in &figures {
                if let Some(v) = f.as_ref().and_then(get) {
                    o.sample(metric, &[("repo", name)], v);
                }
            }
        };
    repo_family(
        &mut o,
        "strata_repository_stored_bytes",
        "Bytes of pack files in the repository.",
        &|f| Some(f.stored as f64),
    );
    repo_family(
        &mut o,
        "strata_repository_deduplicated_bytes",
        "Compressed, deduplicated bytes the archives added.",
        &|f| Some(f.deduplicated as f64),
    );
    repo_family(
        &mut o,
        "strata_repository_original_bytes",
        "Bytes of the archives' files before deduplication.",
        &|f| Some(f.original as f64),
    );
    repo_family(
        &mut o,
        "strata_repository_archives",
        "Archives in the repository.",
        &|f| Some(f.archives as f64),
    );
    repo_family(
        &mut o,
        "strata_repository_last_archive_timestamp_seconds",
        "When the newest archive was made (a host's last backup, on the central node).",
        &|f| f.last_archive,
    );

    // Jobs, from the history.
    let mut by_job: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for j in cfg.jobs.iter().map(|j| j.get_ref()) {
        let mut runs = history
            .recent(Some(&j.name), super::history::KEEP_PER_JOB)
            .unwrap_or_default();
        runs.reverse();
        by_job.insert(j.name.clone(), runs);
    }
    o.family(
        "strata_job_runs_total",
        "counter",
        "Finished runs of a job by outcome (from the kept history).",
    );
    for (job, runs) in &by_job {
        for outcome in ["ok", "warning", "failed", "interrupted"] {
            let n = runs.iter().filter(|r| r.outcome == outcome).count();
            o.sample(
                "strata_job_runs_total",
                &[("job_name", job), ("outcome", outcome)],
                n as f64,
            );
        }
    }
    o.family("strata_job_running", "gauge", "1 while the job runs.");
    for job in by_job.keys() {
        o.sample(
            "strata_job_running",
            &[("job_name", job)],
            running.contains(job) as u8 as f64,
        );
    }
    o.family(
        "strata_job_last_run_timestamp_seconds",
        "gauge",
        "When the job last finished.",
    );
    for (job, runs) in &by_job {
        if let Some(t) = runs
            .iter()
            .rev()
            .find_map(|r| r.ended.as_deref().and_then(ts))
        {
            o.sample(
                "strata_job_last_run_timestamp_seconds",
                &[("job_name", job)],
                t,
            );
        }
    }
    o.family(
        "strata_job_last_success_timestamp_seconds",
        "gauge",
        "When the job last finished ok (or with warnings).",
    );
    for (job, runs) in &by_job {
        if let Some(t) = runs
            .iter()
            .rev()
            .filter(|r| r.outcome == "ok" || r.outcome == "warning")
            .find_map(|r| r.ended.as_deref().and_then(ts))
        {
            o.sample(
                "strata_job_last_success_timestamp_seconds",
                &[("job_name", job)],
                t,
            );
        }
    }
    o.family(
        "strata_job_last_failed",
        "gauge",
        "1 if the job's last finished run failed or was interrupted.",
    );
    for (job, runs) in &by_job {
        if let Some(r) = runs.iter().rev().find(|r| r.outcome != "running") {
            let failed = r.outcome == "failed" || r.outcome == "interrupted";
            o.sample(
                "strata_job_last_failed",
                &[("job_name", job)],
                failed as u8 as f64,
            );
        }
    }
    o.family(
        "strata_job_duration_seconds",
        "histogram",
        "How long the job's finished runs took.",
    );
    for (job, runs) in &by_job {
        let d: Vec<f64> = runs.iter().filter_map(duration_of).collect();
        for b in DURATION_BUCKETS {
            let n = d.iter().filter(|x| **x <= b).count();
            o.sample(
                "strata_job_duration_seconds_bucket",
                &[("job_name", job), ("le", &b.to_string())],
                n as f64,
            );
        }
        o.sample(
            "strata_job_duration_seconds_bucket",
            &[("job_name", job), ("le", "+Inf")],
            d.len() as f64,
        );
        o.sample(
            "strata_job_duration_seconds_sum",
            &[("job_name", job)],
            d.iter().sum(),
        );
        o.sample(
            "strata_job_duration_seconds_count",
            &[("job_name", job)],
            d.len() as f64,
        );
    }

    // Backups of this node (a host), checks, replication.
    let jobs_of = |kind: JobKind| {
        cfg.jobs
            .iter()
            .map(|j| j.get_ref())
            .filter(move |j| j.kind == kind)
    };
    o.family(
        "strata_backup_last_success_timestamp_seconds",
        "gauge",
        "When a backup job of this host last succeeded.",
    );
    let last_backup = jobs_of(JobKind::Backup)
        .filter_map(|j| {
            by_job[&j.name]
                .iter()
                .rev()
                .filter(|r| r.outcome == "ok" || r.outcome == "warning")
                .find_map(|r| r.ended.as_deref().and_then(ts))
        })
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    if let Some(t) = last_backup {
        o.sample(
            "strata_backup_last_success_timestamp_seconds",
            &[("host", node)],
            t,
        );
    }
    o.family(
        "strata_check_last_timestamp_seconds",
        "gauge",
        "When a check of the repository last finished.",
    );
    o.family(
        "strata_check_last_success",
        "gauge",
        "1 if the repository's last check passed.",
    );
    for j in jobs_of(JobKind::Check) {
        let repo = j
            .repository
            .as_ref()
            .map(|r| r.get_ref().as_str())
            .unwrap_or("");
        if let Some(r) = by_job[&j.name]
            .iter()
            .rev()
            .find(|r| r.outcome != "running")
        {
            if let Some(t) = r.ended.as_deref().and_then(ts) {
                o.sample(
                    "strata_check_last_timestamp_seconds",
                    &[("repo", repo), ("job_name", &j.name)],
                    t,
                );
            }
            o.sample(
                "strata_check_last_success",
                &[("repo", repo), ("job_name", &j.name)],
                (r.outcome == "ok" || r.outcome == "warning") as u8 as f64,
            );
        }
    }
    let mut replicas: BTreeMap<(String, String), (f64, Option<f64>)> = BTreeMap::new();
    let mut sent_by_target: BTreeMap<String, f64> = BTreeMap::new();
    for j in jobs_of(JobKind::Replicate) {
        for run in &by_job[&j.name] {
            let Ok(stats) = serde_json::from_str::<serde_json::Value>(&run.stats) else {
                continue;
            };
            for rep in stats["replicas"].as_array().into_iter().flatten() {
                let (Some(repo), Some(target)) = (rep["repo"].as_str(), rep["target"].as_str())
                else {
                    continue;
                };
                let t = rep["time"].as_str().and_then(ts).unwrap_or(0.0);
                let sent = rep["sent_bytes"].as_f64();
                *sent_by_target.entry(target.to_string()).or_default() += sent.unwrap_or(0.0);
                let e = replicas
                    .entry((repo.to_string(), target.to_string()))
                    .or_insert((0.0, None));
                if t >= e.0 {
                    *e = (t, sent);
                }
            }
        }
    }
    o.family(
        "strata_replication_last_success_timestamp_seconds",
        "gauge",
        "When the repository was last replicated to the target.",
    );
    for ((repo, target), (t, _)) in &replicas {
        o.sample(
            "strata_replication_last_success_timestamp_seconds",
            &[("repo", repo), ("target", target)],
            *t,
        );
    }
    o.family(
        "strata_replication_last_sent_bytes",
        "gauge",
        "Bytes the last replication of the repository sent to the target.",
    );
    for ((repo, target), (_, sent)) in &replicas {
        if let Some(s) = sent {
            o.sample(
                "strata_replication_last_sent_bytes",
                &[("repo", repo), ("target", target)],
                *s,
            );
        }
    }
    o.family(
        "strata_replication_sent_bytes_total",
        "counter",
        "Bytes sent to the target by replication (from the kept history).",
    );
    for (target, s) in &sent_by_target {
        o.sample(
            "strata_replication_sent_bytes_total",
            &[("target", target)],
            *s,
        );
    }

    // Drills, from their records.
    o.family(
        "strata_drill_last_timestamp_seconds",
        "gauge",
        "When a restore drill of the host last ran on the tier.",
    );
    o.family(
        "strata_drill_last_success_timestamp_seconds",
        "gauge",
        "When a restore drill of the host last passed on the tier.",
    );
    o.family(
        "strata_drill_last_ok",
        "gauge",
        "1 if the last drill of the host on the tier passed.",
    );
    if let Ok(rd) = std::fs::read_dir(dirs.cache.join("drills")) {
        let mut files: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let Ok(rec) = std::fs::read(&f).map_err(|_| ()).and_then(|d| {
                serde_json::from_slice::<crate::ops::drill::DrillRecord>(&d).map_err(|_| ())
            }) else {
                continue;
            };
            for (tier, t) in &rec.tiers {
                let l = [("host", rec.host.as_str()), ("tier", tier.as_str())];
                if let Some(x) = ts(&t.last_run) {
                    o.sample("strata_drill_last_timestamp_seconds", &l, x);
                }
                if let Some(x) = t.last_ok.as_deref().and_then(ts) {
                    o.sample("strata_drill_last_success_timestamp_seconds", &l, x);
                }
                o.sample(
                    "strata_drill_last_ok",
                    &l,
                    (t.outcome == crate::ops::drill::Outcome::Ok) as u8 as f64,
                );
            }
        }
    }
    o.text
}

/// Writes `DIR/strata.prom` atomically (node_exporter reads it any time).
pub fn write_textfile(dir: &Path, text: &str) -> Result<PathBuf> {
    let path = dir.join("strata.prom");
    crate::repo::client::replace_file(&path, text.as_bytes())?;
    Ok(path)
}

/// Serves `GET /metrics` on `listen` until the process ends; `render` is
/// called per scrape.
pub fn serve(
    listen: &str,
    render: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
) -> Result<std::net::SocketAddr> {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind(listen)
        .map_err(|e| crate::error::Error::io(format!("listening for /metrics on {listen}"), e))?;
    let addr = l
        .local_addr()
        .map_err(|e| crate::error::Error::io("metrics listener", e))?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let render = render.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut r = BufReader::new(match s.try_clone() {
                    Ok(c) => c,
                    Err(_) => return,
                });
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
                        break;
                    }
                }
                let path = first.split(' ').nth(1).unwrap_or("");
                let (status, ctype, body) = if first.starts_with("GET ")
                    && (path == "/metrics" || path.starts_with("/metrics?"))
                {
                    (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        render(),
                    )
                } else {
                    (
                        "404 Not Found",
                        "text/plain",
                        "only /metrics here\n".to_string(),
                    )
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Ok(addr)
}
