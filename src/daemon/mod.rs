//! The daemon: runs the configured jobs on their schedules, keeps their
//! history, and tells people when something fails or recovers.

pub mod control;
pub mod history;
pub mod metrics;
pub mod notify;
pub mod runner;
pub mod schedule;

use crate::config::Config;
use crate::error::Result;
use crate::repo::client::ClientDirs;
use chrono::Local;
use control::{Control, LiveJob, Message, RunAnswer};
use crossbeam_channel::{RecvTimeoutError, unbounded};
use history::History;
use runner::{JobProgress, JobReport, Outcome, RunContext, run_job};
use schedule::{Scheduler, Trigger};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The daemon checks its stop flag at least this often while it waits.
const POLL: Duration = Duration::from_secs(1);

pub fn history_path(cfg: &Config) -> std::path::PathBuf {
    cfg.state_dir().join("history.sqlite")
}

/// Runs jobs until `stop` is set; then stops the running ones (they commit
/// nothing and release their locks) and records them as interrupted.
pub fn run(cfg: Config, stop: Arc<AtomicBool>, say: &(dyn Fn(&str) + Sync)) -> Result<()> {
    // A build that computes wrong answers here (an odd Pi, a miscompiled
    // dependency) must not write a single repository file.
    let st = crate::selftest::run()?;
    say(&format!(
        "selftest: {} known-answer tests passed on {}",
        st.passed, st.platform
    ));
    let cfg = Arc::new(cfg);
    let history = History::open(&history_path(&cfg))?;
    let now = Local::now();
    let n = history.mark_interrupted(now)?;
    if n > 0 {
        say(&format!(
            "{n} runs were cut short by the last stop: marked interrupted"
        ));
    }
    let mut sched = Scheduler::new(&cfg, now, &history.last_starts()?);
    let (tx, rx) = unbounded::<Message>();
    let control = Arc::new(Control::new(tx.clone()));
    if let Some(m) = &cfg.metrics {
        let (cfg2, control2) = (cfg.clone(), control.clone());
        let addr = metrics::serve(
            &m.listen,
            Arc::new(move || match History::open(&history_path(&cfg2)) {
                Ok(h) => metrics::render(
                    &cfg2,
                    &h,
                    &control2.running_names(),
                    &ClientDirs::from_env(),
                ),
                Err(e) => format!("# history unavailable: {e}\n"),
            }),
        )?;
        say(&format!("metrics on http://{addr}/metrics"));
    }
    if let Some(w) = &cfg.web {
        // Backups matter more than the page: a page that cannot start
        // (no user yet, address taken) is reported, and the jobs run.
        match crate::web::WebState::new(cfg.clone(), w, control.clone())
            .and_then(|state| crate::web::serve(state, &w.listen))
        {
            Ok(addr) => say(&format!("web page on http://{addr}/")),
            Err(e) => say(&format!("the web page is not served: {e}")),
        }
    }
    say(&format!(
        "strata daemon on {}: {} jobs, state in {}",
        cfg.node.name,
        cfg.jobs.len(),
        cfg.state_dir().display()
    ));
    let mut targets: HashMap<String, String> = HashMap::new();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            control.cancel_all();
            if control.running_names().is_empty() {
                say("stopped");
                return Ok(());
            }
        } else {
            let now = Local::now();
            let (start, skipped) = sched.due(now);
            for s in skipped {
                say(&format!(
                    "{s}: still running at its next scheduled time; that run is skipped"
                ));
            }
            for (name, trigger) in start {
                let Some(job) = cfg.job(&name) else { continue };
                let target = targets.remove(&name);
                let describe = match &target {
                    Some(t) => format!("{} (target {t})", trigger.describe()),
                    None => trigger.describe(),
                };
                let id = history.start(&name, job.kind.name(), &describe, now)?;
                say(&format!("{name}: started ({describe})"));
                let cancel = Arc::new(AtomicBool::new(false));
                let progress = Arc::new(Mutex::new(JobProgress::default()));
                control.started(
                    &name,
                    LiveJob {
                        id,
                        kind: job.kind.name().to_string(),
                        trigger: describe,
                        started: now,
                        progress: progress.clone(),
                        cancel: cancel.clone(),
                    },
                );
                let (cfg, tx) = (cfg.clone(), tx.clone());
                std::thread::spawn(move || {
                    let mut notes = notify::started(&cfg.notify);
                    let report = match cfg.job(&name) {
                        Some(job) => {
                            let ctx = RunContext {
                                cfg: &cfg,
                                cancel: &cancel,
                                progress: &progress,
                                dirs: ClientDirs::from_env(),
                                only_target: target,
                            };
                            // A bug must fail the run, not leave it running
                            // forever (and the daemon unable to stop).
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                run_job(&ctx, job)
                            }))
                            .unwrap_or_else(|_| JobReport {
                                outcome: Outcome::Failed,
                                summary: "internal error (a panic): please report it".into(),
                                stats: serde_json::json!({}),
                                log: Vec::new(),
                            })
                        }
                        None => JobReport {
                            outcome: Outcome::Failed,
                            summary: "the job vanished from the configuration".into(),
                            stats: serde_json::json!({}),
                            log: Vec::new(),
                        },
                    };
                    let mut report = report;
                    report.log.append(&mut notes);
                    let _ = tx.send(Message::Done(name, report));
                });
            }
        }
        control.set_next(
            cfg.jobs
                .iter()
                .map(|j| (j.get_ref().name.clone(), sched.next_of(&j.get_ref().name)))
                .collect(),
        );
        let wait = sched
            .next_wakeup()
            .and_then(|t| (t - Local::now()).to_std().ok())
            .unwrap_or(POLL)
            .min(POLL);
        match rx.recv_timeout(wait) {
            Ok(Message::Run {
                job,
                target,
                answer,
            }) => {
                let a = if stopping {
                    RunAnswer::Stopping
                } else if cfg.job(&job).is_none() {
                    RunAnswer::NoSuchJob
                } else if target.as_ref().is_some_and(|t| {
                    !cfg.job(&job)
                        .is_some_and(|j| j.targets.iter().any(|x| x.get_ref() == t))
                }) {
                    RunAnswer::NoSuchTarget
                } else if sched.is_running(&job) {
                    // A second click while it runs: not queued for later
                    // either, or one click would become two runs.
                    RunAnswer::AlreadyRunning
                } else {
                    sched.request(&job);
                    if let Some(t) = target {
                        targets.insert(job.clone(), t);
                    }
                    RunAnswer::Started
                };
                let _ = answer.send(a);
            }
            Ok(Message::Done(name, report)) => {
                let Some(r) = control.ended(&name) else {
                    continue;
                };
                let now = Local::now();
                history.finish(
                    r.id,
                    report.outcome.name(),
                    &report.summary,
                    &report.stats,
                    &report.log.join("\n"),
                    now,
                )?;
                say(&format!(
                    "{name}: {} — {}",
                    report.outcome.name(),
                    report.summary
                ));
                let ok = matches!(report.outcome, Outcome::Ok | Outcome::Warning);
                sched.finished(&name, ok);
                let event = notify::Event {
                    node: cfg.node.name.clone(),
                    job: name.clone(),
                    kind: cfg
                        .job(&name)
                        .map(|j| j.kind.name().to_string())
                        .unwrap_or_default(),
                    outcome: report.outcome,
                    previous: history.previous_outcome(&name, r.id)?,
                    summary: report.summary.clone(),
                    started: r.started.to_rfc3339(),
                    ended: now.to_rfc3339(),
                    log: report.log.clone(),
                };
                // Off the main loop: an unreachable mail server must not hold
                // up other jobs or a stop.
                let cfg2 = cfg.clone();
                std::thread::spawn(move || {
                    for e in notify::finished(&cfg2.notify, &event) {
                        eprintln!(
                            "{} strata: {}: could not notify: {e}",
                            Local::now().format("%Y-%m-%d %H:%M:%S"),
                            event.job
                        );
                    }
                });
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// `strata backup`: runs the given jobs (default: every backup job) once,
/// now, with the jobs chained after them, in this process. Returns each
/// run's name and report.
pub fn run_once(
    cfg: &Config,
    jobs: &[String],
    say: &(dyn Fn(&str) + Sync),
) -> Result<Vec<(String, JobReport)>> {
    let history = History::open(&history_path(cfg))?;
    let mut sched = Scheduler::new(cfg, Local::now(), &Default::default());
    let wanted: Vec<String> = if jobs.is_empty() {
        cfg.jobs
            .iter()
            .map(|j| j.get_ref())
            .filter(|j| j.kind == crate::config::JobKind::Backup)
            .map(|j| j.name.clone())
            .collect()
    } else {
        jobs.to_vec()
    };
    for j in &wanted {
        if !sched.request(j) {
            return Err(crate::error::Error::invalid(format!(
                "no job `{j}` in the configuration (see `strata status`)"
            )));
        }
    }
    let cancel = AtomicBool::new(false);
    let mut out = Vec::new();
    loop {
        // Far in the future: only requested and chained jobs are due.
        let (start, _) = sched.due(Local::now() - chrono::TimeDelta::days(365 * 100));
        if start.is_empty() {
            return Ok(out);
        }
        for (name, trigger) in start {
            let Some(job) = cfg.job(&name) else { continue };
            let now = Local::now();
            let id = history.start(
                &name,
                job.kind.name(),
                &format!("{} (strata backup)", trigger_name(&trigger)),
                now,
            )?;
            say(&format!("{name}: started"));
            let progress = Mutex::new(JobProgress::default());
            let ctx = RunContext {
                cfg,
                cancel: &cancel,
                progress: &progress,
                dirs: ClientDirs::from_env(),
                only_target: None,
            };
            let report = run_job(&ctx, job);
            let ended = Local::now();
            history.finish(
                id,
                report.outcome.name(),
                &report.summary,
                &report.stats,
                &report.log.join("\n"),
                ended,
            )?;
            say(&format!(
                "{name}: {} — {}",
                report.outcome.name(),
                report.summary
            ));
            let event = notify::Event {
                node: cfg.node.name.clone(),
                job: name.clone(),
                kind: job.kind.name().to_string(),
                outcome: report.outcome,
                previous: history.previous_outcome(&name, id)?,
                summary: report.summary.clone(),
                started: now.to_rfc3339(),
                ended: ended.to_rfc3339(),
                log: report.log.clone(),
            };
            for e in notify::finished(&cfg.notify, &event) {
                say(&format!("{name}: could not notify: {e}"));
            }
            sched.finished(
                &name,
                matches!(report.outcome, Outcome::Ok | Outcome::Warning),
            );
            out.push((name, report));
        }
    }
}

fn trigger_name(t: &Trigger) -> String {
    t.describe()
}
