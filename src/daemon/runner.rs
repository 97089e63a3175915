//! Runs one configured job through the library (never a subprocess of
//! strata itself): hooks, database dumps, backup, prune, compact, check,
//! replicate, drill. Progress goes to a shared slot for the status page and
//! metrics; cancellation is polled between files and chunks, so a stopped
//! job commits nothing and leaves no lock.

use crate::archive::create::{CreateOptions, Observer, Progress, Stream, create};
use crate::archive::patterns::Excludes;
use crate::backend::remote::ssh::SshOptions;
use crate::config::{self, Config, Job, JobKind};
use crate::error::{Error, Result};
use crate::repo::client::ClientDirs;
use crate::repo::{LockMode, OpenOptions, Passphrase, Repository};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a job waits for another process's lock on its repository.
pub const LOCK_WAIT: Duration = Duration::from_secs(600);
/// Lines of a job's log kept in the history.
pub const LOG_LINES: usize = 200;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Warning,
    Failed,
    Interrupted,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warning => "warning",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// Live figures of a running job.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobProgress {
    /// What the job is doing now ("before hook", "knode01 → pi-home").
    pub phase: String,
    pub files: u64,
    pub bytes: u64,
    /// Bytes the current step will handle when done, if known: a replica's
    /// source size, or a backup's previous archive (a fair guess at night).
    pub total: Option<u64>,
    pub path: String,
    /// When the current step began (rates are per step).
    #[serde(skip)]
    pub step_started: Option<std::time::Instant>,
}

pub struct JobReport {
    pub outcome: Outcome,
    pub summary: String,
    pub stats: serde_json::Value,
    pub log: Vec<String>,
}

pub struct RunContext<'a> {
    pub cfg: &'a Config,
    pub cancel: &'a AtomicBool,
    pub progress: &'a Mutex<JobProgress>,
    pub dirs: ClientDirs,
    /// A replicate job run for one of its targets only (the web page's
    /// "sync now" on one node).
    pub only_target: Option<String>,
}

/// A repository's passphrase, from its file or command (never stored).
pub(crate) struct Secret<'a>(&'a config::Repository);

pub(crate) fn secret(r: &config::Repository) -> Secret<'_> {
    Secret(r)
}

impl Passphrase for Secret<'_> {
    fn get(&self, _new_key: bool) -> Result<Vec<u8>> {
        let r = self.0;
        let text = if let Some(f) = &r.passphrase_file {
            std::fs::read_to_string(f)
                .map_err(|e| Error::io(format!("passphrase_file {}", f.display()), e))?
        } else if let Some(cmd) = &r.passcommand {
            let out = Command::new(&cmd[0])
                .args(&cmd[1..])
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| Error::io(format!("passcommand {}", cmd[0]), e))?;
            if !out.status.success() {
                return Err(Error::invalid(format!(
                    "passcommand of repository {} failed with {}",
                    r.name, out.status
                )));
            }
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            return Err(Error::invalid(format!(
                "repository {} is encrypted: give it passphrase_file or passcommand in the configuration",
                r.name
            )));
        };
        Ok(text.lines().next().unwrap_or("").as_bytes().to_vec())
    }
}

fn ssh_options(r: &config::Repository) -> Option<SshOptions> {
    if r.ssh_key.is_none() && r.known_hosts.is_none() {
        return None;
    }
    let mut o = SshOptions::from_env();
    if let Some(k) = &r.ssh_key {
        o.keys = vec![k.clone()];
    }
    if let Some(k) = &r.known_hosts {
        o.known_hosts = k.clone();
    }
    Some(o)
}

pub(crate) fn backend_of(r: &config::Repository) -> Result<Arc<dyn crate::backend::Backend>> {
    crate::backend::open_location_with(
        &r.location,
        false,
        r.remote_path.as_deref().unwrap_or("strata"),
        ssh_options(r),
        r.s3.as_ref(),
    )
}

fn open_repo(
    r: &config::Repository,
    backend: Arc<dyn crate::backend::Backend>,
    lock: LockMode,
    load_index: bool,
    dirs: &ClientDirs,
) -> Result<Repository> {
    Repository::open(
        backend,
        &OpenOptions {
            lock,
            lock_wait: LOCK_WAIT,
            passphrase: &Secret(r),
            dirs: dirs.clone(),
            load_index,
            repair: false,
            lock_notice: None,
        },
    )
}

/// Collects a job's log and feeds the progress slot.
struct Log<'a> {
    lines: Vec<String>,
    warnings: u64,
    ctx: &'a RunContext<'a>,
    /// The size the current step is expected to reach, when the library
    /// does not say (a backup: its previous archive's size).
    expected_total: Option<u64>,
}

impl Log<'_> {
    /// A new step: its name, figures from zero.
    fn phase(&mut self, phase: impl Into<String>, expected_total: Option<u64>) {
        self.expected_total = expected_total;
        if let Ok(mut slot) = self.ctx.progress.lock() {
            *slot = JobProgress {
                phase: phase.into(),
                total: expected_total,
                step_started: Some(std::time::Instant::now()),
                ..JobProgress::default()
            };
        }
    }

    fn line(&mut self, s: impl Into<String>) {
        let s = format!("{} {}", chrono::Local::now().format("%H:%M:%S"), s.into());
        self.lines.push(s);
        if self.lines.len() > LOG_LINES {
            self.lines.remove(0);
        }
    }
}

impl Observer for Log<'_> {
    fn warning(&mut self, message: &str) {
        self.warnings += 1;
        self.line(format!("warning: {message}"));
    }
    fn progress(&mut self, p: &Progress) {
        if let Ok(mut slot) = self.ctx.progress.lock() {
            slot.files = p.files;
            slot.bytes = p.original;
            slot.total = p.total.or(self.expected_total);
            slot.path.clone_from(&p.path);
        }
    }
    fn cancelled(&self) -> bool {
        self.ctx.cancel.load(Ordering::Relaxed)
    }
}

/// How often a running hook is checked for a cancelled job.
const HOOK_POLL: Duration = Duration::from_millis(100);

/// Runs a hook (argv, no shell); its output goes to the log. A cancelled
/// job kills its hook rather than waiting for it.
fn hook(argv: &[String], job: &str, log: &mut Log) -> Result<()> {
    let Some((prog, args)) = argv.split_first() else {
        return Ok(());
    };
    log.line(format!("hook: {}", argv.join(" ")));
    let scratch = tempfile::tempdir().map_err(|e| Error::io("a scratch directory", e))?;
    let (out_path, err_path) = (scratch.path().join("out"), scratch.path().join("err"));
    let file =
        |p: &Path| std::fs::File::create(p).map_err(|e| Error::io(p.display().to_string(), e));
    let mut child = Command::new(prog)
        .args(args)
        .env("STRATA_JOB", job)
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?)
        .spawn()
        .map_err(|e| Error::io(format!("hook `{prog}`"), e))?;
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| Error::io(format!("hook `{prog}`"), e))?
        {
            break s;
        }
        if log.cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Interrupted);
        }
        std::thread::sleep(HOOK_POLL);
    };
    let out = std::process::Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    };
    for l in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        log.line(format!("  {l}"));
    }
    if !out.status.success() {
        let last = String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        return Err(Error::invalid(format!(
            "hook `{}` failed with {}{}",
            argv.join(" "),
            out.status,
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        )));
    }
    Ok(())
}

/// A dump command's standard output; at its end the command's exit status
/// is checked, so a failed dump fails the read (and the backup commits
/// nothing) instead of storing a truncated file.
struct DumpReader {
    child: Child,
    stdout: ChildStdout,
    argv0: String,
    stderr: PathBuf,
}

impl Drop for DumpReader {
    /// A backup that stopped early must not leave the dump running (holding
    /// a database transaction) or a zombie.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Read for DumpReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let status = self.child.wait()?;
            if !status.success() {
                let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
                let last = err
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                return Err(std::io::Error::other(format!(
                    "{} failed with {status}: {last}",
                    self.argv0
                )));
            }
        }
        Ok(n)
    }
}

fn start_dump(d: &config::Dump, scratch: &Path, n: usize) -> Result<Stream> {
    let argv = d.command();
    let stderr = scratch.join(format!("dump-{n}.stderr"));
    let errf =
        std::fs::File::create(&stderr).map_err(|e| Error::io(stderr.display().to_string(), e))?;
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(errf))
        .spawn()
        .map_err(|e| Error::io(format!("starting {} (is it installed?)", argv[0]), e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::invalid("dump command has no output"))?;
    Ok(Stream::new(
        format!("dumps/{}", d.archive_name()),
        DumpReader {
            child,
            stdout,
            argv0: argv[0].clone(),
            stderr,
        },
    ))
}

/// Runs `job`; never panics on bad input: every failure is a report.
pub fn run_job(ctx: &RunContext, job: &Job) -> JobReport {
    let mut log = Log {
        lines: Vec::new(),
        warnings: 0,
        ctx,
        expected_total: None,
    };
    log.line(format!("{} job {} started", job.kind.name(), job.name));
    // Hooks wrap every kind of job, as borgmatic's do: `before` may
    // prepare (mount a snapshot, wake a drive), `after_hooks` run on
    // success, `on_error` on failure (not when the job was stopped).
    let body = |log: &mut Log| -> Result<std::result::Result<(String, serde_json::Value), PartialFailure>> {
        if !job.before.is_empty() {
            log.phase("before hook", None);
        }
        for h in &job.before {
            hook(h, &job.name, log)?;
        }
        let done = match job.kind {
            JobKind::Backup => backup(ctx, job, log).map(Ok),
            JobKind::Prune => prune(ctx, job, log).map(Ok),
            JobKind::Compact => compact(ctx, job, log).map(Ok),
            JobKind::Check => check(ctx, job, log).map(Ok),
            JobKind::Replicate => replicate(ctx, job, log),
            JobKind::Drill => drill(ctx, job, log).map(Ok),
        }?;
        if done.is_ok() {
            if !job.after_hooks.is_empty() {
                log.phase("after hook", None);
            }
            for h in &job.after_hooks {
                hook(h, &job.name, log)?;
            }
        }
        Ok(done)
    };
    let result = body(&mut log);
    let failure = match &result {
        Err(Error::Interrupted) => None,
        Err(e) => Some(e.to_string()),
        Ok(Err(p)) => Some(p.error.to_string()),
        Ok(Ok(_)) => None,
    };
    if let Some(e) = failure {
        log.line(format!("error: {e}"));
        for h in &job.on_error {
            if let Err(he) = hook(h, &job.name, &mut log) {
                log.line(format!("on_error hook: {he}"));
            }
        }
    }
    let result = match result {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(p)) => {
            let summary = format!("{}; {}", p.error, p.summary);
            log.line(format!("failed: {summary}"));
            return JobReport {
                outcome: Outcome::Failed,
                summary,
                stats: p.stats,
                log: log.lines,
            };
        }
        Err(e) => Err(e),
    };
    let (outcome, summary, stats) = match result {
        Ok((summary, stats)) => {
            let outcome = if log.warnings > 0 {
                Outcome::Warning
            } else {
                Outcome::Ok
            };
            (outcome, summary, stats)
        }
        Err(Error::Interrupted) => (
            Outcome::Interrupted,
            "stopped before it finished: nothing was committed".to_string(),
            serde_json::json!({}),
        ),
        Err(e) => (Outcome::Failed, e.to_string(), serde_json::json!({})),
    };
    log.line(format!("{}: {summary}", outcome.name()));
    JobReport {
        outcome,
        summary,
        stats,
        log: log.lines,
    }
}

type Done = Result<(String, serde_json::Value)>;

/// A job that did part of its work fails, but keeps the figures of what
/// worked (metrics show the last success of each replica).
struct PartialFailure {
    error: Error,
    summary: String,
    stats: serde_json::Value,
}

fn repo_of<'c>(ctx: &'c RunContext, job: &Job) -> Result<&'c config::Repository> {
    let name = job
        .repository
        .as_ref()
        .map(|r| r.get_ref().as_str())
        .unwrap_or_default();
    ctx.cfg
        .repository(name)
        .ok_or_else(|| Error::invalid(format!("job {}: no repository `{name}`", job.name)))
}

fn backup(ctx: &RunContext, job: &Job, log: &mut Log) -> Done {
    let r = repo_of(ctx, job)?;
    let mut repo = open_repo(r, backend_of(r)?, LockMode::Exclusive, true, &ctx.dirs)?;
    let previous = repo
        .manifest()
        .archives
        .iter()
        .max_by(|a, b| a.time.cmp(&b.time))
        .map(|a| a.stats.original_size);
    log.phase(format!("backup to {}", r.name), previous);
    let scratch = tempfile::tempdir().map_err(|e| Error::io("a scratch directory", e))?;
    let streams = job
        .dumps
        .iter()
        .enumerate()
        .map(|(n, d)| start_dump(d.get_ref(), scratch.path(), n))
        .collect::<Result<Vec<_>>>()?;
    let template = job
        .archive
        .clone()
        .unwrap_or_else(|| "{hostname}-{now}".into());
    let opts = CreateOptions {
        name: crate::archive::placeholders::expand(&template)?,
        paths: job.sources.iter().map(PathBuf::from).collect(),
        stdin_name: "stdin".into(),
        compression: match &job.compression {
            Some(c) => crate::compress::Compression::parse(c.get_ref())?,
            None => crate::compress::Compression::default(),
        },
        comment: format!("job {}", job.name),
        excludes: Excludes::new(&job.exclude)?,
        exclude_caches: job.exclude_caches,
        exclude_if_present: Vec::new(),
        one_file_system: job.one_file_system,
        dry_run: false,
        numeric_ids: false,
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        command_line: vec!["strata daemon".into(), job.name.clone()],
        streams,
    };
    let res = create(&mut repo, &opts, log)?;
    let s = &res.archive.stats;
    Ok((
        format!(
            "archive {}: {} files, {} original, {} new",
            res.archive.name, s.files, s.original_size, s.deduplicated_size
        ),
        serde_json::json!({
            "archive": res.archive.name,
            "files": s.files,
            "original_size": s.original_size,
            "deduplicated_size": s.deduplicated_size,
            "seconds": res.seconds,
        }),
    ))
}

fn prune(ctx: &RunContext, job: &Job, log: &mut Log) -> Done {
    let r = repo_of(ctx, job)?;
    let retention = ctx.cfg.retention(job)?;
    let mut repo = open_repo(r, backend_of(r)?, LockMode::Exclusive, false, &ctx.dirs)?;
    let glob = match &job.match_archives {
        Some(g) => Some(
            globset::Glob::new(g)
                .map_err(|e| Error::invalid(format!("match_archives `{g}`: {e}")))?
                .compile_matcher(),
        ),
        None => None,
    };
    let mut considered: Vec<_> = repo
        .manifest()
        .archives
        .iter()
        .filter(|a| glob.as_ref().is_none_or(|g| g.is_match(&a.name)))
        .cloned()
        .collect();
    considered.sort_by(|a, b| a.time.cmp(&b.time));
    let keep =
        crate::ops::prune::decide(&considered, &retention, chrono::Local::now().naive_local())?;
    let doomed: Vec<String> = considered
        .iter()
        .zip(&keep)
        .filter(|(_, k)| k.is_none())
        .map(|(a, _)| a.name.clone())
        .collect();
    for d in &doomed {
        log.line(format!("pruning {d}"));
    }
    let (n, warnings) = crate::ops::delete::delete(&mut repo, &doomed, false)?;
    for w in warnings {
        log.warning(&w);
    }
    Ok((
        format!("pruned {n} of {} archives", considered.len()),
        serde_json::json!({"pruned": n, "kept": considered.len() - n}),
    ))
}

fn compact(ctx: &RunContext, job: &Job, log: &mut Log) -> Done {
    let r = repo_of(ctx, job)?;
    let mut repo = open_repo(r, backend_of(r)?, LockMode::Destructive, true, &ctx.dirs)?;
    let rep =
        crate::ops::compact::compact(&mut repo, &crate::ops::compact::CompactOptions::default())?;
    log.line(format!("freed {} bytes", rep.plan.bytes_freed));
    Ok((
        format!("freed {} bytes", rep.plan.bytes_freed),
        serde_json::json!({"bytes_freed": rep.plan.bytes_freed, "packs_deleted": rep.plan.delete.len(), "packs_rewritten": rep.plan.rewrite.len()}),
    ))
}

fn check(ctx: &RunContext, job: &Job, log: &mut Log) -> Done {
    let r = repo_of(ctx, job)?;
    let repo = open_repo(r, backend_of(r)?, LockMode::Shared, true, &ctx.dirs)?;
    let rep = crate::ops::check::check(
        &repo,
        &crate::ops::check::CheckOptions {
            verify_data: job.verify_data,
            threads: 2,
            max_duration: None,
        },
        &|_, _, _| {},
    )?;
    for e in &rep.errors {
        log.line(format!("error: {e}"));
    }
    if !rep.ok() {
        return Err(Error::corrupt(format!(
            "{} problems, first: {}",
            rep.errors.len(),
            rep.errors[0]
        )));
    }
    Ok((
        format!(
            "{} archives, {} packs, {} bytes verified",
            rep.archives, rep.packs, rep.bytes_verified
        ),
        serde_json::json!({"archives": rep.archives, "packs": rep.packs, "bytes_verified": rep.bytes_verified}),
    ))
}

/// Replication sources: paths, or `DIR/*` for every repository in DIR.
pub(crate) fn expand_sources(sources: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for s in sources {
        match s.strip_suffix("/*") {
            Some(dir) if !crate::backend::is_url(s) => {
                let mut found: Vec<String> = std::fs::read_dir(dir)
                    .map(|rd| {
                        rd.filter_map(|e| e.ok())
                            .map(|e| e.path())
                            .filter(|p| p.join("config").is_file())
                            .map(|p| p.display().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                found.sort();
                out.extend(found);
            }
            _ => out.push(s.clone()),
        }
    }
    out
}

fn replicate(
    ctx: &RunContext,
    job: &Job,
    log: &mut Log,
) -> Result<std::result::Result<(String, serde_json::Value), PartialFailure>> {
    let sources = expand_sources(&job.sources);
    if sources.is_empty() {
        return Err(Error::invalid(format!(
            "job {}: no source repository found",
            job.name
        )));
    }
    let mut failures = Vec::new();
    let mut made = 0;
    let mut replicas = Vec::new();
    if let Some(only) = &ctx.only_target
        && !job.targets.iter().any(|t| t.get_ref() == only)
    {
        return Err(Error::invalid(format!(
            "job {}: `{only}` is not one of its targets",
            job.name
        )));
    }
    for t in job
        .targets
        .iter()
        .filter(|t| ctx.only_target.as_ref().is_none_or(|o| o == t.get_ref()))
    {
        let tr = ctx
            .cfg
            .repository(t.get_ref())
            .ok_or_else(|| Error::invalid(format!("no repository `{}`", t.get_ref())))?;
        let mut target = match backend_of(tr)
            .and_then(|b| open_repo(tr, b, LockMode::Exclusive, true, &ctx.dirs))
        {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", tr.name));
                continue;
            }
        };
        for src in &sources {
            if ctx.cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let before = target.backend().traffic().map(|t| t.sent);
            let name = crate::ops::replicate::name_of(src);
            log.phase(format!("{name} → {}", tr.name), None);
            let opts = crate::ops::replicate::ReplicateOptions {
                repo_name: name.clone(),
                archive_name: None,
                compression: crate::compress::Compression::parse("auto,lz4")?,
                dry_run: false,
                verify: false,
                threads: 2,
                lock_wait: LOCK_WAIT,
                lock_notice: &|_| {},
                command_line: vec!["strata daemon".into(), job.name.clone()],
            };
            // A source configured as a repository brings its settings (SSH
            // key, S3 endpoint); a bare path or URL uses the environment's.
            let source = match ctx
                .cfg
                .repositories
                .iter()
                .find(|r| r.get_ref().location == *src)
            {
                Some(r) => backend_of(r.get_ref()),
                None => crate::backend::open_location(src, false, "strata", None),
            };
            let res =
                source.and_then(|b| crate::ops::replicate::replicate(b, &mut target, &opts, log));
            match res {
                Ok(r) => {
                    made += 1;
                    let sent = target
                        .backend()
                        .traffic()
                        .map(|t| t.sent)
                        .zip(before)
                        .map(|(a, b)| a - b);
                    replicas.push(serde_json::json!({
                        "repo": name,
                        "target": tr.name,
                        "archive": r.archive_name,
                        "read_bytes": r.read_bytes,
                        "stored_bytes": r.stored_bytes,
                        "sent_bytes": sent,
                        "time": chrono::Local::now().to_rfc3339(),
                    }));
                    log.line(format!(
                        "{name} → {}: {} ({} files read)",
                        tr.name, r.archive_name, r.read_files
                    ));
                    for w in &r.warnings {
                        log.warning(w);
                    }
                }
                Err(e) => failures.push(format!("{name} → {}: {e}", tr.name)),
            }
        }
    }
    for f in &failures {
        log.line(format!("failed: {f}"));
    }
    let stats = serde_json::json!({"made": made, "replicas": replicas});
    if !failures.is_empty() {
        return Ok(Err(PartialFailure {
            error: Error::invalid(format!(
                "{} of {} replicas failed: {}",
                failures.len(),
                failures.len() + made,
                failures.join("; ")
            )),
            summary: format!("{made} replicas made"),
            stats,
        }));
    }
    Ok(Ok((format!("{made} replicas made"), stats)))
}

fn drill(ctx: &RunContext, job: &Job, log: &mut Log) -> Done {
    use crate::ops::drill::{DrillOptions, Outcome as D, TierReport, drill_with_key};
    let r = repo_of(ctx, job)?;
    let host = job
        .host
        .clone()
        .unwrap_or_else(|| crate::ops::replicate::name_of(&r.location));
    let scratch = tempfile::tempdir().map_err(|e| Error::io("a scratch directory", e))?;
    let opts = DrillOptions {
        sample: job.sample,
        every: 7,
        scratch: scratch.path().to_path_buf(),
        threads: 2,
    };
    let mut reports = Vec::new();
    let mut report = TierReport::new(&r.name);
    match backend_of(r).and_then(|b| open_repo(r, b, LockMode::Shared, true, &ctx.dirs)) {
        Ok(repo) => drill_with_key(&repo, &opts, &mut report),
        Err(e) => report.fail(D::of_error(&e), e.to_string()),
    }
    reports.push(report);
    for t in &job.tiers {
        let Some(tr) = ctx.cfg.repository(t.get_ref()) else {
            continue;
        };
        let mut report = TierReport::new(&tr.name);
        let nested = backend_of(tr)
            .and_then(|b| open_repo(tr, b, LockMode::Shared, true, &ctx.dirs))
            .and_then(|outer| crate::ops::replicate::open_replica(outer, &host, None))
            .and_then(|n| open_repo(r, Arc::new(n), LockMode::Shared, true, &ctx.dirs));
        match nested {
            Ok(repo) => drill_with_key(&repo, &opts, &mut report),
            Err(e) => report.fail(D::of_error(&e), e.to_string()),
        }
        reports.push(report);
    }
    if let Err(e) = crate::ops::drill::record(&ctx.dirs.cache, &host, &reports) {
        log.warning(&format!("could not record the drill: {e}"));
    }
    let mut bad = Vec::new();
    for rep in &reports {
        log.line(format!(
            "{}: {} ({} files)",
            rep.tier,
            rep.outcome.name(),
            rep.files
        ));
        for p in &rep.problems {
            log.line(format!("  {p}"));
        }
        if rep.outcome != D::Ok {
            bad.push(format!("{} {}", rep.tier, rep.outcome.name()));
        }
    }
    let stats = serde_json::to_value(&reports).unwrap_or_default();
    if !bad.is_empty() {
        return Err(Error::Mismatch(format!(
            "drill of {host}: {}",
            bad.join(", ")
        )));
    }
    Ok((format!("drill of {host}: every tier ok"), stats))
}
