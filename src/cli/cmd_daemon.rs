//! `strata daemon`, `strata backup`, `strata status`, `strata config check`:
//! the commands that work from the configuration file.

use super::common;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use strata::config::{Config, DEFAULT_PATH};
use strata::daemon::history::History;
use strata::daemon::runner::Outcome;

#[derive(Args, Debug)]
pub struct ConfigPath {
    /// The configuration file.
    #[arg(short, long, value_name = "FILE", env = "STRATA_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Runs the jobs of the configuration on their schedules (cron expressions, \
`after` chains), records every run in <state_dir>/history.sqlite, and sends \
the configured notifications on failure and recovery. SIGTERM or SIGINT \
stops it: a running job stops at the next file, commits nothing, releases \
its lock, and is recorded as interrupted. See docs/config.md.")]
pub struct DaemonArgs {
    #[command(flatten)]
    pub path: ConfigPath,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Without JOB: every backup job, then the jobs chained after each (`after = \
...`), as the daemon would run them tonight. Exit status: 0 all ok, 1 \
warnings, 2 a job failed.")]
pub struct BackupArgs {
    #[command(flatten)]
    pub path: ConfigPath,
    /// Jobs to run (with the jobs chained after them).
    pub jobs: Vec<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "\
With --remote URL: the overview of another node's daemon, read from its web \
API with the token in STRATA_WEB_TOKEN (`strata web token NAME` there): \
every host's last backup and copies per tier. Exit status 1 when a host \
lacks three recent copies with one off-site.")]
pub struct StatusArgs {
    #[command(flatten)]
    pub path: ConfigPath,
    /// Print JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Read the status from a daemon's web page, e.g. http://10.8.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "\
For node_exporter's textfile collector (strata run from timers, without the \
daemon): `strata metrics --textfile /var/lib/prometheus/node-exporter` after \
each run. The daemon serves the same at [metrics] listen (docs/config.md).")]
pub struct MetricsArgs {
    #[command(flatten)]
    pub path: ConfigPath,
    /// Write DIR/strata.prom (atomically) instead of printing.
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check the configuration file; errors name the line.
    Check(ConfigPath),
}

fn load(p: &ConfigPath) -> Result<Config> {
    Ok(Config::load(&p.config)?)
}

fn say(s: &str) {
    eprintln!(
        "{} strata: {s}",
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
    );
}

pub fn daemon(a: DaemonArgs) -> Result<i32> {
    let cfg = load(&a.path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    strata::daemon::run(cfg, stop, &say)?;
    Ok(super::EXIT_OK)
}

pub fn backup(a: BackupArgs) -> Result<i32> {
    let cfg = load(&a.path)?;
    let runs = strata::daemon::run_once(&cfg, &a.jobs, &say)?;
    let worst = runs
        .iter()
        .map(|(_, r)| match r.outcome {
            Outcome::Ok => super::EXIT_OK,
            Outcome::Warning => super::EXIT_WARNING,
            _ => super::EXIT_ERROR,
        })
        .max()
        .unwrap_or(super::EXIT_OK);
    Ok(worst)
}

pub fn status(a: StatusArgs) -> Result<i32> {
    if let Some(url) = &a.remote {
        return super::cmd_web::remote_status(url, a.json);
    }
    let cfg = load(&a.path)?;
    let history = History::open(&strata::daemon::history_path(&cfg))?;
    let now = chrono::Local::now();
    let sched = strata::daemon::schedule::Scheduler::new(&cfg, now, &Default::default());
    let mut rows = Vec::new();
    for j in cfg.jobs.iter().map(|j| j.get_ref()) {
        let last = history.recent(Some(&j.name), 1)?.into_iter().next();
        rows.push(serde_json::json!({
            "job": j.name,
            "kind": j.kind.name(),
            "next": sched.next_of(&j.name).map(|t| t.to_rfc3339()),
            "after": j.after.as_ref().map(|a| a.get_ref().clone()),
            "last": last,
        }));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"node": cfg.node.name, "jobs": rows})
            )?
        );
        return Ok(super::EXIT_OK);
    }
    println!("node {}", cfg.node.name);
    println!(
        "{:<20} {:<10} {:<12} {:<26} {:<26} summary",
        "job", "kind", "last", "last started", "next"
    );
    for r in &rows {
        let next = match (r["next"].as_str(), r["after"].as_str()) {
            (Some(t), _) => common::time(t),
            (None, Some(a)) => format!("after {a}"),
            (None, None) => "on request".into(),
        };
        println!(
            "{:<20} {:<10} {:<12} {:<26} {:<26} {}",
            r["job"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
            r["last"]["outcome"].as_str().unwrap_or("never"),
            r["last"]["started"]
                .as_str()
                .map(common::time)
                .unwrap_or_default(),
            next,
            r["last"]["summary"].as_str().unwrap_or("")
        );
    }
    Ok(super::EXIT_OK)
}

pub fn metrics(a: MetricsArgs) -> Result<i32> {
    let cfg = load(&a.path)?;
    let history = History::open(&strata::daemon::history_path(&cfg))?;
    let text = strata::daemon::metrics::render(
        &cfg,
        &history,
        &[],
        &strata::repo::client::ClientDirs::from_env(),
    );
    match &a.textfile {
        Some(dir) => {
            let p = strata::daemon::metrics::write_textfile(dir, &text)?;
            eprintln!("wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    Ok(super::EXIT_OK)
}

pub fn config(a: ConfigArgs) -> Result<i32> {
    match a.command {
        ConfigCommand::Check(p) => {
            let cfg = load(&p)?;
            println!(
                "{}: ok ({} repositories, {} jobs)",
                p.config.display(),
                cfg.repositories.len(),
                cfg.jobs.len()
            );
            Ok(super::EXIT_OK)
        }
    }
}
