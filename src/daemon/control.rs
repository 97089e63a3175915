//! What the daemon is doing now, shared with its web page: the running
//! jobs with their live progress, the next scheduled starts, and the way
//! in for "run now" and "cancel". The daemon's main loop owns the
//! scheduler; requests reach it as messages, so the page never starts a
//! job behind the scheduler's back (and a second click never starts a
//! second run).

use super::runner::{JobProgress, JobReport};
use chrono::{DateTime, Local};
use crossbeam_channel::{Sender, bounded};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a request waits for the main loop to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// A job that runs now.
pub struct LiveJob {
    pub id: i64,
    pub kind: String,
    pub trigger: String,
    pub started: DateTime<Local>,
    pub progress: Arc<Mutex<JobProgress>>,
    pub cancel: Arc<AtomicBool>,
}

/// A running job as the page and the API show it.
#[derive(Clone, Debug, Serialize)]
pub struct LiveView {
    pub name: String,
    pub id: i64,
    pub kind: String,
    pub trigger: String,
    pub started: String,
    pub elapsed_seconds: f64,
    pub phase: String,
    pub files: u64,
    pub bytes: u64,
    pub total: Option<u64>,
    /// Bytes per second since the step started.
    pub rate: f64,
    pub eta_seconds: Option<f64>,
    pub path: String,
    pub cancelling: bool,
}

/// The answer to "run this job now".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunAnswer {
    Started,
    AlreadyRunning,
    NoSuchJob,
    NoSuchTarget,
    Stopping,
    /// The main loop did not answer in time (it is busy or gone).
    NoAnswer,
}

impl RunAnswer {
    pub fn message(self, job: &str) -> String {
        match self {
            RunAnswer::Started => format!("{job}: started"),
            RunAnswer::AlreadyRunning => {
                format!("{job}: already running; it was not started a second time")
            }
            RunAnswer::NoSuchJob => format!("no job `{job}` in the configuration"),
            RunAnswer::NoSuchTarget => format!("{job}: no such target"),
            RunAnswer::Stopping => "the daemon is stopping; nothing new starts".into(),
            RunAnswer::NoAnswer => "the daemon did not answer; try again".into(),
        }
    }
}

/// Messages to the daemon's main loop.
pub enum Message {
    Done(String, JobReport),
    Run {
        job: String,
        target: Option<String>,
        answer: Sender<RunAnswer>,
    },
}

pub struct Control {
    running: Mutex<BTreeMap<String, LiveJob>>,
    next: Mutex<BTreeMap<String, Option<DateTime<Local>>>>,
    to_loop: Sender<Message>,
    /// Bumped whenever a run ends, so watchers know to look again.
    finished: AtomicU64,
}

impl Control {
    pub fn new(to_loop: Sender<Message>) -> Self {
        Control {
            running: Mutex::default(),
            next: Mutex::default(),
            to_loop,
            finished: AtomicU64::new(0),
        }
    }

    /// Asks the main loop to start `job` (for one of its targets only, if
    /// `target`); waits for its answer.
    pub fn run(&self, job: &str, target: Option<&str>) -> RunAnswer {
        let (tx, rx) = bounded(1);
        let msg = Message::Run {
            job: job.to_string(),
            target: target.map(str::to_string),
            answer: tx,
        };
        if self.to_loop.send(msg).is_err() {
            return RunAnswer::Stopping;
        }
        rx.recv_timeout(ANSWER_WAIT).unwrap_or(RunAnswer::NoAnswer)
    }

    /// Stops a running job (it commits nothing); false if it was not
    /// running.
    pub fn cancel(&self, job: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.get(job) {
            Some(j) => {
                j.cancel.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    pub fn is_running(&self, job: &str) -> bool {
        self.running
            .lock()
            .map(|r| r.contains_key(job))
            .unwrap_or(false)
    }

    pub fn running_names(&self) -> Vec<String> {
        self.running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn started(&self, name: &str, job: LiveJob) {
        if let Ok(mut r) = self.running.lock() {
            r.insert(name.to_string(), job);
        }
    }

    pub(super) fn ended(&self, name: &str) -> Option<LiveJob> {
        let j = self.running.lock().ok()?.remove(name);
        self.finished.fetch_add(1, Ordering::Relaxed);
        j
    }

    pub(super) fn cancel_all(&self) {
        if let Ok(r) = self.running.lock() {
            for j in r.values() {
                j.cancel.store(true, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn set_next(&self, next: BTreeMap<String, Option<DateTime<Local>>>) {
        if let Ok(mut n) = self.next.lock() {
            *n = next;
        }
    }

    /// The next scheduled start of every job (None: no schedule).
    pub fn next_runs(&self) -> BTreeMap<String, Option<DateTime<Local>>> {
        self.next.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// How many runs have ended since the daemon started.
    pub fn finished_count(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// The running jobs, with rates and ETAs worked out.
    pub fn live(&self) -> Vec<LiveView> {
        let now = Local::now();
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .iter()
            .map(|(name, j)| {
                let p = j.progress.lock().map(|p| p.clone()).unwrap_or_default();
                let elapsed = (now - j.started).num_milliseconds().max(0) as f64 / 1000.0;
                let step = p
                    .step_started
                    .map(|t| t.elapsed().as_secs_f64())
                    .unwrap_or(elapsed);
                let rate = if step > 0.0 {
                    p.bytes as f64 / step
                } else {
                    0.0
                };
                let eta_seconds = match p.total {
                    Some(t) if rate > 0.0 => Some(t.saturating_sub(p.bytes) as f64 / rate),
                    _ => None,
                };
                LiveView {
                    name: name.clone(),
                    id: j.id,
                    kind: j.kind.clone(),
                    trigger: j.trigger.clone(),
                    started: j.started.to_rfc3339(),
                    elapsed_seconds: elapsed,
                    phase: p.phase,
                    files: p.files,
                    bytes: p.bytes,
                    total: p.total,
                    rate,
                    eta_seconds,
                    path: p.path,
                    cancelling: j.cancel.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}
