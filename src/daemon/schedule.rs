//! When jobs run: cron schedules with a fixed per-node jitter, "after job X"
//! chains, no overlapping runs of one job, and catch-up of a run missed
//! while the node was off. Pure logic: every method takes `now`, so tests
//! drive it with any clock.

use crate::config::{Config, parse_duration, parse_schedule};
use chrono::{DateTime, Local, TimeDelta};
use std::collections::{BTreeMap, VecDeque};

/// Why a job starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    /// A run missed while the daemon was not running.
    CatchUp,
    /// The job it runs after succeeded.
    After(String),
    /// Asked for (web page, `strata backup`).
    Manual,
}

impl Trigger {
    pub fn describe(&self) -> String {
        match self {
            Trigger::Schedule => "schedule".into(),
            Trigger::CatchUp => "catch-up".into(),
            Trigger::After(j) => format!("after {j}"),
            Trigger::Manual => "manual".into(),
        }
    }
}

struct JobPlan {
    cron: Option<croner::Cron>,
    jitter: TimeDelta,
    after: Option<String>,
    catch_up: bool,
    /// The next scheduled start (cron time + jitter).
    next: Option<DateTime<Local>>,
    running: bool,
}

pub struct Scheduler {
    jobs: BTreeMap<String, JobPlan>,
    /// Started by chains or by hand, in order.
    queue: VecDeque<(String, Trigger)>,
}

/// A fixed offset in [0, jitter) per node and job: runs spread over the
/// window, yet each job keeps its time from night to night.
fn jitter_for(node: &str, job: &str, jitter: TimeDelta) -> TimeDelta {
    let ms = jitter.num_milliseconds();
    if ms <= 0 {
        return TimeDelta::zero();
    }
    let h = blake3::hash(format!("{node}\0{job}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    TimeDelta::milliseconds((u64::from_le_bytes(b) % ms as u64) as i64)
}

impl Scheduler {
    /// `last_start`: when each job last started (from the history), for
    /// catch-up after downtime.
    pub fn new(
        cfg: &Config,
        now: DateTime<Local>,
        last_start: &BTreeMap<String, DateTime<Local>>,
    ) -> Self {
        let mut s = Scheduler {
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
        };
        for j in cfg.jobs.iter().map(|j| j.get_ref()) {
            // The configuration was validated: these parse.
            let cron = j
                .schedule
                .as_ref()
                .and_then(|c| parse_schedule(c.get_ref()).ok());
            let jitter = j
                .jitter
                .as_ref()
                .and_then(|d| parse_duration(d.get_ref()).ok())
                .and_then(|d| TimeDelta::from_std(d).ok())
                .unwrap_or_else(TimeDelta::zero);
            let mut plan = JobPlan {
                cron,
                jitter: jitter_for(&cfg.node.name, &j.name, jitter),
                after: j.after.as_ref().map(|a| a.get_ref().clone()),
                catch_up: j.catch_up,
                next: None,
                running: false,
            };
            plan.next = plan.next_after(now);
            if plan.catch_up
                && let Some(missed) = plan.previous_before(now)
            {
                // Missed: a scheduled start passed since the last start (or
                // the job never ran, and its first start is in the past of
                // a history that exists at all).
                let ran_since = last_start.get(&j.name).is_some_and(|t| *t >= missed);
                if !ran_since && last_start.contains_key(&j.name) {
                    s.queue.push_back((j.name.clone(), Trigger::CatchUp));
                }
            }
            s.jobs.insert(j.name.clone(), plan);
        }
        s
    }

    /// The next scheduled start of `job`.
    pub fn next_of(&self, job: &str) -> Option<DateTime<Local>> {
        self.jobs.get(job).and_then(|p| p.next)
    }

    /// The earliest moment something may become due (for the main loop's
    /// wait), if any job has a schedule.
    pub fn next_wakeup(&self) -> Option<DateTime<Local>> {
        self.jobs.values().filter_map(|p| p.next).min()
    }

    /// Queues a run by hand; false if the job does not exist.
    pub fn request(&mut self, job: &str) -> bool {
        if !self.jobs.contains_key(job) {
            return false;
        }
        if !self.queue.iter().any(|(j, _)| j == job) {
            self.queue.push_back((job.to_string(), Trigger::Manual));
        }
        true
    }

    pub fn is_running(&self, job: &str) -> bool {
        self.jobs.get(job).is_some_and(|p| p.running)
    }

    /// Jobs to start now, each marked running. A job still running when it
    /// is due again is not started twice: its missed slot is skipped (and
    /// reported in `skipped`).
    pub fn due(&mut self, now: DateTime<Local>) -> (Vec<(String, Trigger)>, Vec<String>) {
        let mut start = Vec::new();
        let mut skipped = Vec::new();
        for (name, plan) in self.jobs.iter_mut() {
            if let Some(next) = plan.next
                && next <= now
            {
                plan.next = plan.next_after(now);
                if plan.running {
                    skipped.push(name.clone());
                } else {
                    self.queue.push_back((name.clone(), Trigger::Schedule));
                }
            }
        }
        let mut waiting = VecDeque::new();
        while let Some((name, trigger)) = self.queue.pop_front() {
            let Some(plan) = self.jobs.get_mut(&name) else {
                continue;
            };
            if plan.running {
                // Keep a chained or manual request until the run ends.
                if !waiting.iter().any(|(j, _)| *j == name) {
                    waiting.push_back((name, trigger));
                }
                continue;
            }
            if start.iter().any(|(j, _): &(String, Trigger)| *j == name) {
                continue;
            }
            plan.running = true;
            start.push((name, trigger));
        }
        self.queue = waiting;
        (start, skipped)
    }

    /// A run ended; on success, jobs chained after it are queued.
    pub fn finished(&mut self, job: &str, ok: bool) {
        if let Some(plan) = self.jobs.get_mut(job) {
            plan.running = false;
        }
        if ok {
            for (name, plan) in &self.jobs {
                if plan.after.as_deref() == Some(job) {
                    self.queue
                        .push_back((name.clone(), Trigger::After(job.to_string())));
                }
            }
        }
    }
}

impl JobPlan {
    fn next_after(&self, now: DateTime<Local>) -> Option<DateTime<Local>> {
        let cron = self.cron.as_ref()?;
        // The cron time whose jittered start is after now.
        let base = cron
            .find_next_occurrence(&(now - self.jitter), false)
            .ok()?;
        Some(base + self.jitter)
    }

    fn previous_before(&self, now: DateTime<Local>) -> Option<DateTime<Local>> {
        let cron = self.cron.as_ref()?;
        let base = cron
            .find_previous_occurrence(&(now - self.jitter), true)
            .ok()?;
        Some(base + self.jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::Path;

    fn cfg(jobs: &str) -> Config {
        let src = format!(
            "[node]\nname = \"n1\"\n\n[[repository]]\nname = \"r\"\nlocation = \"/tmp/r\"\n\n{jobs}"
        );
        Config::parse(&src, Path::new("t.toml")).unwrap()
    }

    fn at(d: u32, h: u32, m: u32) -> DateTime<Local> {
        Local.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    const NIGHTLY: &str = "[[job]]\nname = \"backup\"\nkind = \"backup\"\nrepository = \"r\"\nschedule = \"0 3 * * *\"\nsources = [\"/etc\"]\n\n[[job]]\nname = \"prune\"\nkind = \"prune\"\nrepository = \"r\"\nafter = \"backup\"\nkeep_daily = 7\n\n[[job]]\nname = \"check\"\nkind = \"check\"\nrepository = \"r\"\nafter = \"prune\"\n";

    fn names(v: &[(String, Trigger)]) -> Vec<&str> {
        v.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn cron_runs_at_its_time_and_chains_follow_success_only() {
        let c = cfg(NIGHTLY);
        let mut s = Scheduler::new(&c, at(20, 12, 0), &BTreeMap::new());
        assert_eq!(s.next_of("backup"), Some(at(21, 3, 0)));
        assert!(s.due(at(21, 2, 59)).0.is_empty());
        let (start, _) = s.due(at(21, 3, 0));
        assert_eq!(names(&start), ["backup"]);
        assert_eq!(s.next_of("backup"), Some(at(22, 3, 0)));
        s.finished("backup", true);
        let (start, _) = s.due(at(21, 3, 20));
        assert_eq!(
            start,
            [("prune".to_string(), Trigger::After("backup".into()))]
        );
        s.finished("prune", false);
        assert!(
            s.due(at(21, 3, 30)).0.is_empty(),
            "a failed prune starts no check"
        );
    }

    #[test]
    fn a_job_never_overlaps_itself() {
        let c = cfg(
            "[[job]]\nname = \"b\"\nkind = \"backup\"\nrepository = \"r\"\nschedule = \"*/10 * * * *\"\nsources = [\"/etc\"]\n",
        );
        let mut s = Scheduler::new(&c, at(20, 12, 0), &BTreeMap::new());
        assert_eq!(names(&s.due(at(20, 12, 10)).0), ["b"]);
        let (start, skipped) = s.due(at(20, 12, 20));
        assert!(start.is_empty());
        assert_eq!(skipped, ["b"]);
        assert!(s.request("b"));
        assert!(
            s.due(at(20, 12, 21)).0.is_empty(),
            "a manual run waits for the running one"
        );
        s.finished("b", true);
        let (start, _) = s.due(at(20, 12, 22));
        assert_eq!(start, [("b".to_string(), Trigger::Manual)]);
    }

    #[test]
    fn a_run_missed_while_off_is_caught_up_once() {
        let c = cfg(NIGHTLY);
        let mut last = BTreeMap::new();
        last.insert("backup".to_string(), at(19, 3, 0));
        // Off from the 19th to the 21st at noon: the 3:00 run of the 21st
        // (and of the 20th) was missed; one catch-up run, not two.
        let mut s = Scheduler::new(&c, at(21, 12, 0), &last);
        let (start, _) = s.due(at(21, 12, 0));
        assert_eq!(start, [("backup".to_string(), Trigger::CatchUp)]);
        s.finished("backup", true);
        assert_eq!(names(&s.due(at(21, 12, 1)).0), ["prune"]);
        // Ran this morning already: nothing to catch up.
        last.insert("backup".to_string(), at(21, 3, 0));
        let mut s = Scheduler::new(&c, at(21, 12, 0), &last);
        assert!(s.due(at(21, 12, 0)).0.is_empty());
    }

    #[test]
    fn jitter_is_fixed_per_node_and_job_and_within_the_window() {
        let c = cfg(
            "[[job]]\nname = \"b\"\nkind = \"backup\"\nrepository = \"r\"\nschedule = \"0 3 * * *\"\njitter = \"30m\"\nsources = [\"/etc\"]\n",
        );
        let s = Scheduler::new(&c, at(20, 12, 0), &BTreeMap::new());
        let next = s.next_of("b").unwrap();
        assert!(next >= at(21, 3, 0) && next < at(21, 3, 30), "{next}");
        let again = Scheduler::new(&c, at(20, 13, 0), &BTreeMap::new());
        assert_eq!(again.next_of("b"), Some(next));
        let j1 = jitter_for("n1", "b", TimeDelta::minutes(30));
        let j2 = jitter_for("n2", "b", TimeDelta::minutes(30));
        assert_ne!(j1, j2, "two nodes spread out");
    }
}
