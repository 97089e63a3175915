//! What the page shows, gathered from the repositories themselves: each
//! host's last backup and its copies per tier, each node's space, each
//! repository's archives. Reading needs no key: pack sizes, manifest times
//! and free space are visible to the central node, and the off-site tiers
//! are unencrypted repositories whose archive names say which host and
//! night they hold. Archives of an encrypted repository are listed only
//! where its passphrase is configured (a host's own daemon).

use crate::backend::{Backend, FileKind};
use crate::config::Config;
use crate::daemon::history::History;
use crate::daemon::runner;
use crate::error::{Error, Result};
use crate::ops::replicate::{is_replica_of, name_of};
use crate::repo::Passphrase;
use crate::repo::client::ClientDirs;
use chrono::{DateTime, Local};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Samples of sizes and free space are taken at most this often.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(600);
/// Growth is measured over this window for days-until-full.
pub const GROWTH_WINDOW_DAYS: i64 = 14;

#[derive(Clone, Debug, Serialize)]
pub struct ArchiveRow {
    pub name: String,
    pub time: String,
    pub hostname: String,
    pub files: u64,
    pub original: u64,
    pub deduplicated: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RepoState {
    pub name: String,
    pub location: String,
    /// "host" (a host's backups) or "target" (an off-site tier).
    pub role: &'static str,
    pub reachable: bool,
    pub error: Option<String>,
    /// Bytes of pack files.
    pub stored: Option<u64>,
    /// When the newest manifest was written (RFC 3339).
    pub last_commit: Option<String>,
    /// None: not readable here (encrypted, no passphrase configured).
    pub archives: Option<Vec<ArchiveRow>>,
    pub space_total: Option<u64>,
    pub space_free: Option<u64>,
    /// The file system (node and mount) the repository lives on.
    pub space_key: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Copy {
    pub tier: String,
    /// RFC 3339 time of the newest copy, if any.
    pub time: Option<String>,
    pub recent: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostRow {
    pub name: String,
    pub repo: String,
    /// The host's newest backup on this node (RFC 3339).
    pub last_backup: Option<String>,
    pub last_backup_recent: bool,
    /// Its replicas per tier, in tier order.
    pub copies: Vec<Copy>,
    /// Copies counted for 3-2-1: the host's own data, plus each recent
    /// backup copy.
    pub recent_copies: usize,
    pub offsite_recent: bool,
    /// Three recent copies, one off-site.
    pub ok: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct SpaceRow {
    pub key: String,
    pub total: u64,
    pub free: u64,
    pub days_until_full: Option<f64>,
    pub repos: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub node: String,
    pub taken: String,
    pub fresh_seconds: u64,
    pub tiers: Vec<String>,
    pub hosts: Vec<HostRow>,
    pub repos: Vec<RepoState>,
    pub spaces: Vec<SpaceRow>,
}

impl Snapshot {
    pub fn repo(&self, name: &str) -> Option<&RepoState> {
        self.repos.iter().find(|r| r.name == name)
    }
}

struct NoPassphrase;
impl Passphrase for NoPassphrase {
    fn get(&self, _: bool) -> Result<Vec<u8>> {
        Err(Error::invalid("no passphrase configured"))
    }
}

/// A repository to look at: its name, location and configuration entry.
struct Wanted<'a> {
    name: String,
    location: String,
    role: &'static str,
    cfg: Option<&'a crate::config::Repository>,
}

fn wanted(cfg: &Config) -> (Vec<Wanted<'_>>, Vec<String>) {
    use crate::config::JobKind;
    let mut tiers: Vec<String> = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    for j in cfg.jobs.iter().map(|j| j.get_ref()) {
        if j.kind == JobKind::Replicate {
            for t in &j.targets {
                if !tiers.contains(t.get_ref()) {
                    tiers.push(t.get_ref().clone());
                }
            }
            for s in runner::expand_sources(&j.sources) {
                if !sources.contains(&s) {
                    sources.push(s);
                }
            }
        }
    }
    let mut out: Vec<Wanted> = Vec::new();
    for r in cfg.repositories.iter().map(|r| r.get_ref()) {
        if !tiers.contains(&r.name) {
            out.push(Wanted {
                name: r.name.clone(),
                location: r.location.clone(),
                role: "host",
                cfg: Some(r),
            });
        }
    }
    for s in sources {
        if !out.iter().any(|w| w.location == s) {
            out.push(Wanted {
                name: name_of(&s),
                location: s,
                role: "host",
                cfg: None,
            });
        }
    }
    for t in &tiers {
        if let Some(r) = cfg.repository(t) {
            out.push(Wanted {
                name: r.name.clone(),
                location: r.location.clone(),
                role: "target",
                cfg: Some(r),
            });
        }
    }
    (out, tiers)
}

fn rfc3339(unix: i64) -> Option<String> {
    DateTime::from_timestamp(unix, 0).map(|t| t.with_timezone(&Local).to_rfc3339())
}

fn space_key(node: &str, location: &str) -> String {
    if let Some(Ok(u)) = crate::backend::s3::S3Url::parse(location) {
        return format!("s3:{}", u.bucket);
    }
    match crate::backend::remote::RemoteUrl::parse(location) {
        Some(_) => location
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(location)
            .split(['/', ':'])
            .next()
            .unwrap_or(location)
            .to_string(),
        None => format!(
            "{node}:{}",
            crate::daemon::metrics::mount_of(std::path::Path::new(location))
        ),
    }
}

fn read_repo(node: &str, w: &Wanted, dirs: &ClientDirs) -> RepoState {
    let mut st = RepoState {
        name: w.name.clone(),
        location: w.location.clone(),
        role: w.role,
        reachable: false,
        error: None,
        stored: None,
        last_commit: None,
        archives: None,
        space_total: None,
        space_free: None,
        space_key: space_key(node, &w.location),
    };
    let backend: Result<Arc<dyn Backend>> = match w.cfg {
        Some(r) => runner::backend_of(r),
        None => crate::backend::open_location(&w.location, false, "strata", None),
    };
    let backend = match backend {
        Ok(b) => b,
        Err(e) => {
            st.error = Some(e.to_string());
            return st;
        }
    };
    let mut facts = || -> Result<()> {
        let config = backend.read(FileKind::Config, "config")?;
        let config = crate::repo::config::RepoConfig::parse(&config, backend.location())?;
        st.reachable = true;
        st.stored = Some(backend.list(FileKind::Pack)?.iter().map(|f| f.size).sum());
        st.last_commit = backend
            .list(FileKind::Manifest)?
            .iter()
            .map(|f| f.modified)
            .max()
            .filter(|m| *m > 0)
            .and_then(rfc3339);
        if let Ok(s) = backend.space() {
            st.space_total = Some(s.total);
            st.space_free = Some(s.free);
        }
        let secret = w.cfg.map(runner::secret);
        let has_secret = w
            .cfg
            .is_some_and(|r| r.passphrase_file.is_some() || r.passcommand.is_some());
        if config.encryption.has_key() && !has_secret {
            return Ok(());
        }
        let pass: &dyn Passphrase = match (&secret, has_secret) {
            (Some(s), true) => s,
            _ => &NoPassphrase,
        };
        let (_, manifest) = crate::repo::peek_manifest(backend.as_ref(), pass, dirs)?;
        let mut rows: Vec<ArchiveRow> = manifest
            .archives
            .iter()
            .map(|a| ArchiveRow {
                name: a.name.clone(),
                time: a.time.clone(),
                hostname: a.hostname.clone(),
                files: a.stats.files,
                original: a.stats.original_size,
                deduplicated: a.stats.deduplicated_size,
            })
            .collect();
        rows.sort_by(|a, b| a.time.cmp(&b.time));
        st.archives = Some(rows);
        Ok(())
    };
    if let Err(e) = facts() {
        st.error = Some(e.to_string());
    }
    st
}

fn parse_time(t: &str) -> Option<DateTime<Local>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Local))
}

/// Days until `free` reaches zero at the pace free space fell over the
/// samples (least squares), if it is falling.
pub fn days_until_full(samples: &[(i64, f64)], free: u64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let span = samples.last()?.0 - samples.first()?.0;
    if span < 3600 {
        return None;
    }
    let n = samples.len() as f64;
    let mx = samples.iter().map(|s| s.0 as f64).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in samples {
        let dx = *x as f64 - mx;
        sxy += dx * (y - my);
        sxx += dx * dx;
    }
    if sxx == 0.0 {
        return None;
    }
    let per_second = sxy / sxx;
    if per_second >= 0.0 {
        return None;
    }
    Some(free as f64 / (-per_second * 86400.0))
}

pub fn free_series(key: &str) -> String {
    format!("free:{key}")
}

pub fn stored_series(repo: &str) -> String {
    format!("stored:{repo}")
}

/// Reads every repository (in parallel: one unreachable node must not
/// hold up the others) and works out the overview.
pub fn gather(cfg: &Config, history: &History, fresh: Duration, dirs: &ClientDirs) -> Snapshot {
    let now = Local::now();
    let node = cfg.node.name.clone();
    let (wanted, tiers) = wanted(cfg);
    let repos: Vec<RepoState> = std::thread::scope(|s| {
        let handles: Vec<_> = wanted
            .iter()
            .map(|w| s.spawn(|| read_repo(&node, w, dirs)))
            .collect();
        handles
            .into_iter()
            .zip(&wanted)
            .map(|(h, w)| {
                h.join().unwrap_or_else(|_| RepoState {
                    name: w.name.clone(),
                    location: w.location.clone(),
                    role: w.role,
                    reachable: false,
                    error: Some("internal error while reading it".into()),
                    stored: None,
                    last_commit: None,
                    archives: None,
                    space_total: None,
                    space_free: None,
                    space_key: String::new(),
                })
            })
            .collect()
    });
    let fresh_delta = chrono::TimeDelta::from_std(fresh).unwrap_or(chrono::TimeDelta::days(2));
    let is_recent = |t: &Option<String>| {
        t.as_deref()
            .and_then(parse_time)
            .is_some_and(|t| now - t <= fresh_delta)
    };
    let hosts = repos
        .iter()
        .filter(|r| r.role == "host")
        .map(|h| {
            let last_backup = match &h.archives {
                Some(a) => a.last().map(|a| a.time.clone()),
                None => h.last_commit.clone(),
            };
            let replica_name = name_of(&h.location);
            let copies: Vec<Copy> = tiers
                .iter()
                .map(|t| {
                    let time = repos
                        .iter()
                        .find(|r| r.role == "target" && &r.name == t)
                        .and_then(|r| r.archives.as_ref())
                        .and_then(|a| {
                            a.iter()
                                .filter(|a| is_replica_of(&a.name, &replica_name))
                                .map(|a| a.time.clone())
                                .max()
                        });
                    Copy {
                        tier: t.clone(),
                        recent: is_recent(&time),
                        time,
                    }
                })
                .collect();
            let last_backup_recent = is_recent(&last_backup);
            let offsite_recent = copies.iter().any(|c| c.recent);
            let recent_copies =
                1 + last_backup_recent as usize + copies.iter().filter(|c| c.recent).count();
            HostRow {
                name: replica_name.clone(),
                repo: h.name.clone(),
                last_backup,
                last_backup_recent,
                ok: recent_copies >= 3 && offsite_recent,
                copies,
                recent_copies,
                offsite_recent,
            }
        })
        .collect();
    let mut spaces: BTreeMap<String, SpaceRow> = BTreeMap::new();
    for r in &repos {
        if let (Some(total), Some(free)) = (r.space_total, r.space_free) {
            let row = spaces.entry(r.space_key.clone()).or_insert(SpaceRow {
                key: r.space_key.clone(),
                total,
                free,
                days_until_full: None,
                repos: Vec::new(),
            });
            row.repos.push(r.name.clone());
        }
    }
    let since = now.timestamp() - GROWTH_WINDOW_DAYS * 86400;
    for row in spaces.values_mut() {
        let samples = history
            .samples(&free_series(&row.key), since)
            .unwrap_or_default();
        row.days_until_full = days_until_full(&samples, row.free);
    }
    Snapshot {
        node,
        taken: now.to_rfc3339(),
        fresh_seconds: fresh.as_secs(),
        tiers,
        hosts,
        repos,
        spaces: spaces.into_values().collect(),
    }
}

/// Stores this snapshot's sizes and free space as samples, unless a series
/// was sampled less than `SAMPLE_EVERY` ago.
pub fn record_samples(history: &History, snap: &Snapshot) -> Result<()> {
    let now = parse_time(&snap.taken)
        .map(|t| t.timestamp())
        .unwrap_or_else(|| Local::now().timestamp());
    let due = |series: &str| -> Result<bool> {
        Ok(history
            .last_sample_time(series)?
            .is_none_or(|t| now - t >= SAMPLE_EVERY.as_secs() as i64))
    };
    for r in &snap.repos {
        if let Some(s) = r.stored {
            let series = stored_series(&r.name);
            if due(&series)? {
                history.add_sample(&series, now, s as f64)?;
            }
        }
    }
    for s in &snap.spaces {
        let series = free_series(&s.key);
        if due(&series)? {
            history.add_sample(&series, now, s.free as f64)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_until_full_follows_the_trend() {
        let day = 86400;
        // 10 GB free, falling 1 GB a day: 10 days left.
        let s: Vec<(i64, f64)> = (0..5).map(|d| (d * day, 14e9 - d as f64 * 1e9)).collect();
        let d = days_until_full(&s, 10_000_000_000).unwrap();
        assert!((d - 10.0).abs() < 1e-6, "{d}");
        // Growing free space, or too short a span: no estimate.
        let up: Vec<(i64, f64)> = (0..5).map(|d| (d * day, d as f64 * 1e9)).collect();
        assert_eq!(days_until_full(&up, 1), None);
        assert_eq!(days_until_full(&[(0, 5.0), (60, 4.0)], 4), None);
        assert_eq!(days_until_full(&[(0, 5.0)], 4), None);
    }
}
