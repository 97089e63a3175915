//! `/etc/strata/strata.toml`: the node, its repositories, its jobs and
//! where it reports. Parsed strictly (unknown keys are errors: a typo must
//! not silently disable a backup), then checked as a whole; every message
//! names the line. Secrets are referenced (files, commands), never held in
//! the file. The full annotated example is docs/config.md.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use toml::Spanned;

pub const DEFAULT_PATH: &str = "/etc/strata/strata.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: Node,
    #[serde(default, rename = "repository")]
    pub repositories: Vec<Spanned<Repository>>,
    #[serde(default, rename = "job")]
    pub jobs: Vec<Spanned<Job>>,
    #[serde(default)]
    pub notify: Notify,
    /// Job history and state (default /var/lib/strata).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The daemon's Prometheus endpoint.
    pub metrics: Option<Metrics>,
    /// The daemon's status page (docs/web.md).
    pub web: Option<Web>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Where the page listens (default loopback only; a VPN address is the
    /// usual choice for reaching it from elsewhere).
    #[serde(default = "default_web_listen")]
    pub listen: String,
    /// `NAME:ARGON2-HASH` lines, written by `strata web passwd`. Required:
    /// the page can start jobs, so it never runs without a login.
    pub users_file: PathBuf,
    /// `NAME:BLAKE3-HEX` lines for API tokens, written by `strata web token`.
    pub tokens_file: Option<PathBuf>,
    /// Host names (with port) the page may be reached by, besides the
    /// listen address and localhost; anything else is refused (DNS
    /// rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// A copy older than this is not "recent" for the 3-2-1 badge
    /// (default 36h: a nightly copy plus slack).
    pub fresh: Option<Spanned<String>>,
}

impl Web {
    /// `fresh` as a duration (checked when the file was loaded).
    pub fn fresh(&self) -> std::time::Duration {
        self.fresh
            .as_ref()
            .and_then(|f| parse_duration(f.get_ref()).ok())
            .unwrap_or(std::time::Duration::from_secs(36 * 3600))
    }
}

fn default_web_listen() -> String {
    "127.0.0.1:8080".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Address of `GET /metrics` (default loopback only: put it behind a
    /// reverse proxy or a VPN address to scrape from elsewhere).
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9898".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// `host` (backs itself up), `central` (holds hosts' repositories and
    /// replicates them), `pi` (an off-site node): documentation for now,
    /// and what the status page groups by.
    #[serde(default)]
    pub roles: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub name: String,
    /// A path, an ssh:// URL or an s3://BUCKET/PREFIX URL.
    pub location: String,
    /// A file whose first line is the passphrase (mode 0600).
    pub passphrase_file: Option<PathBuf>,
    /// A command (argv, no shell) that prints the passphrase.
    pub passcommand: Option<Vec<String>>,
    /// SSH private key for ssh:// locations (default: ~/.ssh/id_ed25519).
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    /// The strata program on the server.
    pub remote_path: Option<String>,
    /// Endpoint, region, path style and credentials file of an s3:// location.
    pub s3: Option<crate::backend::s3::S3Settings>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Backup,
    Prune,
    Compact,
    Check,
    Replicate,
    Drill,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Prune => "prune",
            JobKind::Compact => "compact",
            JobKind::Check => "check",
            JobKind::Replicate => "replicate",
            JobKind::Drill => "drill",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub name: String,
    pub kind: JobKind,
    /// The repository the job works on (backup, prune, compact, check, drill).
    pub repository: Option<Spanned<String>>,
    /// Cron expression (minute hour day month weekday), local time.
    pub schedule: Option<Spanned<String>>,
    /// Run after this job finished successfully.
    pub after: Option<Spanned<String>>,
    /// Start up to this long after the scheduled time (e.g. "10m"), so a
    /// fleet does not hit the central node at the same second.
    pub jitter: Option<Spanned<String>>,
    /// Run a missed schedule (the node was off) when the daemon starts.
    #[serde(default = "yes")]
    pub catch_up: bool,

    // backup
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub exclude_caches: bool,
    #[serde(default)]
    pub one_file_system: bool,
    pub compression: Option<Spanned<String>>,
    /// Archive name template (placeholders {hostname} {now} …).
    pub archive: Option<String>,
    #[serde(default)]
    pub dumps: Vec<Spanned<Dump>>,
    /// Commands (argv lists, no shell) run before, after success, on error.
    #[serde(default)]
    pub before: Vec<Vec<String>>,
    #[serde(default, rename = "after_hooks")]
    pub after_hooks: Vec<Vec<String>>,
    #[serde(default)]
    pub on_error: Vec<Vec<String>>,

    // prune
    pub keep_within: Option<Spanned<String>>,
    #[serde(default)]
    pub keep_last: i64,
    #[serde(default)]
    pub keep_hourly: i64,
    #[serde(default)]
    pub keep_daily: i64,
    #[serde(default)]
    pub keep_weekly: i64,
    #[serde(default)]
    pub keep_monthly: i64,
    #[serde(default)]
    pub keep_yearly: i64,
    /// Only archives whose names match this glob (prune).
    pub match_archives: Option<String>,

    // check
    #[serde(default)]
    pub verify_data: bool,

    // replicate: `sources` are repository locations (globs allowed),
    // `targets` names of [[repository]] entries.
    #[serde(default)]
    pub targets: Vec<Spanned<String>>,

    // drill: tiers are names of [[repository]] entries holding replicas.
    #[serde(default)]
    pub tiers: Vec<Spanned<String>>,
    pub host: Option<String>,
    #[serde(default = "default_sample")]
    pub sample: usize,
}

fn yes() -> bool {
    true
}

fn default_sample() -> usize {
    20
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpKind {
    Postgresql,
    Mysql,
    Sqlite,
}

/// A database dump streamed into the archive as one file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dump {
    pub kind: DumpKind,
    /// Database name (postgresql, mysql) or file (sqlite).
    pub database: String,
    /// Name of the file in the archive (default `<kind>-<database>.sql`).
    pub name: Option<String>,
    /// Extra arguments for pg_dump / mysqldump (e.g. host, port, user).
    #[serde(default)]
    pub options: Vec<String>,
}

impl Dump {
    pub fn archive_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let base = Path::new(&self.database)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.database.clone());
            format!("{}-{base}.sql", self.kind_name())
        })
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            DumpKind::Postgresql => "postgresql",
            DumpKind::Mysql => "mysql",
            DumpKind::Sqlite => "sqlite",
        }
    }

    /// The dump command (argv): it writes the dump to standard output.
    pub fn command(&self) -> Vec<String> {
        let mut argv: Vec<String> = match self.kind {
            DumpKind::Postgresql => vec!["pg_dump".into(), "--no-password".into()],
            DumpKind::Mysql => vec!["mysqldump".into(), "--single-transaction".into()],
            DumpKind::Sqlite => vec!["sqlite3".into(), "-readonly".into()],
        };
        argv.extend(self.options.iter().cloned());
        match self.kind {
            DumpKind::Sqlite => {
                argv.push(self.database.clone());
                argv.push(".dump".into());
            }
            _ => argv.push(self.database.clone()),
        }
        argv
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub email: Option<Email>,
    #[serde(default)]
    pub webhook: Vec<Webhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    /// host:port of the SMTP server.
    pub smtp: String,
    pub from: String,
    pub to: Vec<String>,
    /// STARTTLS before authenticating (default true; false only for a
    /// local relay).
    #[serde(default = "yes")]
    pub starttls: bool,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Receives a JSON POST on failure and on recovery (ntfy, Slack-style).
    pub url: Option<String>,
    /// Healthchecks-style base URL: `/start`, success (the URL), `/fail`.
    pub ping: Option<String>,
}

/// A configuration problem, pointing at its line.
fn at(src: &str, path: &Path, offset: usize, msg: impl std::fmt::Display) -> Error {
    let line = src[..offset.min(src.len())].matches('\n').count() + 1;
    Error::Config(format!("{}:{line}: {msg}", path.display()))
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let src = std::fs::read_to_string(path).map_err(|e| {
            Error::io(
                format!(
                    "reading the configuration {} (create it, see docs/config.md)",
                    path.display()
                ),
                e,
            )
        })?;
        Self::parse(&src, path)
    }

    pub fn parse(src: &str, path: &Path) -> Result<Self> {
        let cfg: Config = toml::from_str(src).map_err(|e| {
            let msg = e.message().to_string();
            match e.span() {
                Some(span) => at(src, path, span.start, msg),
                None => Error::Config(format!("{}: {msg}", path.display())),
            }
        })?;
        cfg.validate(src, path)?;
        Ok(cfg)
    }

    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories
            .iter()
            .map(|r| r.get_ref())
            .find(|r| r.name == name)
    }

    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs
            .iter()
            .map(|j| j.get_ref())
            .find(|j| j.name == name)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/strata"))
    }

    fn validate(&self, src: &str, path: &Path) -> Result<()> {
        if let Some(f) = self.web.as_ref().and_then(|w| w.fresh.as_ref())
            && let Err(e) = parse_duration(f.get_ref())
        {
            return Err(at(src, path, f.span().start, format!("web.fresh: {e}")));
        }
        for role in &self.node.roles {
            if !["host", "central", "pi"].contains(&role.get_ref().as_str()) {
                return Err(at(
                    src,
                    path,
                    role.span().start,
                    format!("unknown role `{}`: use host, central or pi", role.get_ref()),
                ));
            }
        }
        let mut names = HashSet::new();
        for r in &self.repositories {
            let rr = r.get_ref();
            if !names.insert(rr.name.clone()) {
                return Err(at(
                    src,
                    path,
                    r.span().start,
                    format!("repository `{}` is defined twice", rr.name),
                ));
            }
            if rr.passphrase_file.is_some() && rr.passcommand.is_some() {
                return Err(at(
                    src,
                    path,
                    r.span().start,
                    format!(
                        "repository `{}`: give passphrase_file or passcommand, not both",
                        rr.name
                    ),
                ));
            }
            if rr.passcommand.as_ref().is_some_and(|c| c.is_empty()) {
                return Err(at(
                    src,
                    path,
                    r.span().start,
                    format!("repository `{}`: passcommand is an empty command", rr.name),
                ));
            }
        }
        let mut jobs = HashSet::new();
        for j in &self.jobs {
            if !jobs.insert(j.get_ref().name.clone()) {
                return Err(at(
                    src,
                    path,
                    j.span().start,
                    format!("job `{}` is defined twice", j.get_ref().name),
                ));
            }
        }
        for j in &self.jobs {
            self.validate_job(j, &jobs, src, path)?;
        }
        self.check_chains(src, path)
    }

    fn validate_job(
        &self,
        sj: &Spanned<Job>,
        jobs: &HashSet<String>,
        src: &str,
        path: &Path,
    ) -> Result<()> {
        let j = sj.get_ref();
        let err =
            |offset: usize, msg: String| at(src, path, offset, format!("job `{}`: {msg}", j.name));
        let repo_ref = |r: &Spanned<String>| -> Result<()> {
            if self.repository(r.get_ref()).is_none() {
                return Err(err(
                    r.span().start,
                    format!("no [[repository]] named `{}`", r.get_ref()),
                ));
            }
            Ok(())
        };
        if let Some(s) = &j.schedule {
            let cron = parse_schedule(s.get_ref()).map_err(|e| err(s.span().start, e))?;
            if cron
                .find_next_occurrence(&chrono::Local::now(), false)
                .is_err()
            {
                return Err(err(
                    s.span().start,
                    format!("schedule `{}` never comes", s.get_ref()),
                ));
            }
        }
        if let Some(a) = &j.after
            && !jobs.contains(a.get_ref())
        {
            return Err(err(
                a.span().start,
                format!("`after` names no job `{}`", a.get_ref()),
            ));
        }
        if let Some(a) = &j.jitter {
            let d = parse_duration(a.get_ref()).map_err(|e| err(a.span().start, e))?;
            if d.as_secs() > 86400 {
                return Err(err(
                    a.span().start,
                    format!("jitter `{}` is more than a day", a.get_ref()),
                ));
            }
        }
        if j.schedule.is_none() && j.after.is_none() {
            // Allowed: run only by `strata backup JOB` or the web page.
        }
        let needs_repo = !matches!(j.kind, JobKind::Replicate);
        match (&j.repository, needs_repo) {
            (Some(r), _) => repo_ref(r)?,
            (None, true) => {
                return Err(err(
                    sj.span().start,
                    format!("a {} job needs `repository = \"NAME\"`", j.kind.name()),
                ));
            }
            (None, false) => {}
        }
        if let Some(c) = &j.compression {
            crate::compress::Compression::parse(c.get_ref())
                .map_err(|e| err(c.span().start, e.to_string()))?;
        }
        match j.kind {
            JobKind::Backup => {
                if j.sources.is_empty() && j.dumps.is_empty() {
                    return Err(err(
                        sj.span().start,
                        "a backup job needs `sources` or `dumps`".into(),
                    ));
                }
            }
            JobKind::Prune => {
                if let Some(w) = &j.keep_within {
                    crate::ops::prune::parse_within(w.get_ref())
                        .map_err(|e| err(w.span().start, e.to_string()))?;
                }
                if self.retention(j)?.is_empty() {
                    return Err(err(
                        sj.span().start,
                        "a prune job needs a keep_* rule".into(),
                    ));
                }
            }
            JobKind::Replicate => {
                if j.sources.is_empty() || j.targets.is_empty() {
                    return Err(err(sj.span().start, "a replicate job needs `sources` (repository locations) and `targets` ([[repository]] names)".into()));
                }
                for t in &j.targets {
                    repo_ref(t)?;
                }
            }
            JobKind::Drill => {
                for t in &j.tiers {
                    repo_ref(t)?;
                }
                if j.sample == 0 {
                    return Err(err(
                        sj.span().start,
                        "a drill needs `sample` of at least 1".into(),
                    ));
                }
            }
            JobKind::Compact | JobKind::Check => {}
        }
        Ok(())
    }

    /// `after` chains must end: a job cannot (indirectly) wait for itself.
    fn check_chains(&self, src: &str, path: &Path) -> Result<()> {
        for sj in &self.jobs {
            let mut seen = HashSet::new();
            let mut cur = sj.get_ref();
            while let Some(a) = &cur.after {
                if !seen.insert(cur.name.clone()) {
                    return Err(at(
                        src,
                        path,
                        sj.span().start,
                        format!(
                            "job `{}`: its `after` chain loops back to itself",
                            sj.get_ref().name
                        ),
                    ));
                }
                match self.job(a.get_ref()) {
                    Some(next) => cur = next,
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// The retention rules of a prune job.
    pub fn retention(&self, j: &Job) -> Result<crate::ops::prune::Retention> {
        Ok(crate::ops::prune::Retention {
            within: match &j.keep_within {
                Some(w) => Some(crate::ops::prune::parse_within(w.get_ref())?),
                None => None,
            },
            secondly: j.keep_last,
            minutely: 0,
            hourly: j.keep_hourly,
            daily: j.keep_daily,
            weekly: j.keep_weekly,
            monthly: j.keep_monthly,
            yearly: j.keep_yearly,
        })
    }
}

/// A cron expression of five fields (minute hour day month weekday), or
/// six with seconds first.
pub fn parse_schedule(s: &str) -> std::result::Result<croner::Cron, String> {
    if !(5..=6).contains(&s.split_whitespace().count()) {
        return Err(format!(
            "schedule `{s}`: use five cron fields, minute hour day month weekday (e.g. \"0 3 * * *\")"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(s)
        .map_err(|e| format!("schedule `{s}`: {e}"))
}

/// Longest duration accepted (a year): larger values are typos, and would
/// overflow date arithmetic.
pub const MAX_DURATION_SECS: u64 = 366 * 86400;

/// `90s`, `10m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let bad = || format!("duration `{s}`: use a number and s, m, h or d (e.g. \"10m\")");
    let t = s.trim();
    let unit = t.chars().last().ok_or_else(bad)?;
    let n: u64 = t[..t.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return Err(bad()),
    };
    match n.checked_mul(per) {
        Some(secs) if secs <= MAX_DURATION_SECS => Ok(std::time::Duration::from_secs(secs)),
        _ => Err(format!("duration `{s}` is longer than a year")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
name = "knode01"
roles = ["host"]

[[repository]]
name = "central"
location = "ssh://strata@central.vpn/srv/strata/repos/knode01"
passcommand = ["cat", "/etc/strata/passphrase"]

[[job]]
name = "nightly"
kind = "backup"
repository = "central"
schedule = "0 3 * * *"
jitter = "10m"
sources = ["/etc", "/home"]

[[job]]
name = "retention"
kind = "prune"
repository = "central"
after = "nightly"
keep_daily = 7
"#;

    fn err_of(src: &str) -> String {
        Config::parse(src, Path::new("strata.toml"))
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn a_good_config_parses() {
        let c = Config::parse(GOOD, Path::new("strata.toml")).unwrap();
        assert_eq!(c.jobs.len(), 2);
        assert_eq!(
            c.job("retention")
                .unwrap()
                .after
                .as_ref()
                .unwrap()
                .get_ref(),
            "nightly"
        );
    }

    #[test]
    fn an_s3_repository_takes_its_settings_from_its_table() {
        let src = GOOD.replace(
            "passcommand = [\"cat\", \"/etc/strata/passphrase\"]",
            "passcommand = [\"cat\", \"/etc/strata/passphrase\"]\n\n[[repository]]\nname = \"garage\"\nlocation = \"s3://backups/offsite\"\n[repository.s3]\nendpoint = \"http://10.8.0.1:3900\"\nregion = \"garage\"\ncredentials_file = \"/etc/strata/s3.credentials\"\nprofile = \"offsite\"",
        );
        let c = Config::parse(&src, Path::new("strata.toml")).unwrap();
        let r = c.repository("garage").unwrap();
        let s3 = r.s3.as_ref().unwrap();
        assert_eq!(s3.endpoint.as_deref(), Some("http://10.8.0.1:3900"));
        assert_eq!(s3.region.as_deref(), Some("garage"));
        assert_eq!(s3.profile.as_deref(), Some("offsite"));
        assert_eq!(s3.path_style, None);
        let typo = src.replace("profile = ", "profil = ");
        assert!(err_of(&typo).contains("profil"), "{}", err_of(&typo));
    }

    #[test]
    fn mistakes_are_reported_at_their_line() {
        let typo = GOOD.replace("keep_daily = 7", "keep_dayly = 7");
        let e = err_of(&typo);
        assert!(
            e.contains("strata.toml:24") && e.contains("keep_dayly"),
            "{e}"
        );
        let cron = GOOD.replace("0 3 * * *", "0 25 * * *");
        let e = err_of(&cron);
        assert!(
            e.contains("strata.toml:15") && e.contains("schedule"),
            "{e}"
        );
        let repo = GOOD.replace(
            "repository = \"central\"\nafter",
            "repository = \"centrl\"\nafter",
        );
        let e = err_of(&repo);
        assert!(e.contains("strata.toml:22") && e.contains("centrl"), "{e}");
        let after = GOOD.replace("after = \"nightly\"", "after = \"nighty\"");
        let e = err_of(&after);
        assert!(e.contains("strata.toml:23") && e.contains("nighty"), "{e}");
    }

    #[test]
    fn chains_must_not_loop() {
        let looped = format!(
            "{GOOD}\n[[job]]\nname = \"a\"\nkind = \"check\"\nrepository = \"central\"\nafter = \"b\"\n\n[[job]]\nname = \"b\"\nkind = \"check\"\nrepository = \"central\"\nafter = \"a\"\n"
        );
        assert!(err_of(&looped).contains("loops back"));
    }

    #[test]
    fn durations_and_dump_commands() {
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("10é").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
        assert!(parse_duration("5000000000d").is_err());
        let never = GOOD.replace("0 3 * * *", "0 0 30 2 *");
        assert!(err_of(&never).contains("never comes"));
        let far = GOOD.replace("jitter = \"10m\"", "jitter = \"2d\"");
        assert!(err_of(&far).contains("more than a day"));
        let d = Dump {
            kind: DumpKind::Postgresql,
            database: "app".into(),
            name: None,
            options: vec!["--host=/run/postgresql".into()],
        };
        assert_eq!(
            d.command(),
            ["pg_dump", "--no-password", "--host=/run/postgresql", "app"]
        );
        assert_eq!(d.archive_name(), "postgresql-app.sql");
    }
}
