//! Job history in SQLite (WAL mode): one row per run, kept across restarts.
//! A run still marked `running` when the daemon starts was cut short (a
//! crash, a power cut): it becomes `interrupted`.

use crate::error::{Error, Result};
use chrono::{DateTime, Local};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::Path;

/// Rows kept per job; older ones are deleted as new runs finish.
pub const KEEP_PER_JOB: i64 = 500;
/// Days of size and free-space samples kept.
pub const SAMPLE_DAYS: i64 = 400;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    pub id: i64,
    pub job: String,
    pub kind: String,
    pub trigger: String,
    pub started: String,
    pub ended: Option<String>,
    /// running, ok, warning, failed, interrupted.
    pub outcome: String,
    pub summary: String,
    /// JSON figures (files, bytes, …) of the run.
    pub stats: String,
    pub log: String,
}

pub struct History {
    db: Connection,
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::invalid(format!("job history: {e}"))
}

impl History {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        }
        let db = Connection::open(path).map_err(db_err)?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (
                id INTEGER PRIMARY KEY,
                job TEXT NOT NULL,
                kind TEXT NOT NULL,
                trigger TEXT NOT NULL,
                started TEXT NOT NULL,
                ended TEXT,
                outcome TEXT NOT NULL,
                summary TEXT NOT NULL DEFAULT '',
                stats TEXT NOT NULL DEFAULT '{}',
                log TEXT NOT NULL DEFAULT ''
            );
            CREATE INDEX IF NOT EXISTS runs_by_job ON runs(job, id);
            CREATE TABLE IF NOT EXISTS samples (
                series TEXT NOT NULL,
                time INTEGER NOT NULL,
                value REAL NOT NULL
            );
            CREATE INDEX IF NOT EXISTS samples_by_series ON samples(series, time);",
        )
        .map_err(db_err)?;
        Ok(Self { db })
    }

    /// Runs left `running` by a daemon that died: now `interrupted`.
    pub fn mark_interrupted(&self, now: DateTime<Local>) -> Result<usize> {
        self.db
            .execute(
                "UPDATE runs SET outcome = 'interrupted', ended = ?1,
                 summary = 'the daemon stopped during this run' WHERE outcome = 'running'",
                params![now.to_rfc3339()],
            )
            .map_err(db_err)
    }

    pub fn start(&self, job: &str, kind: &str, trigger: &str, now: DateTime<Local>) -> Result<i64> {
        self.db
            .execute(
                "INSERT INTO runs (job, kind, trigger, started, outcome) VALUES (?1, ?2, ?3, ?4, 'running')",
                params![job, kind, trigger, now.to_rfc3339()],
            )
            .map_err(db_err)?;
        Ok(self.db.last_insert_rowid())
    }

    pub fn finish(
        &self,
        id: i64,
        outcome: &str,
        summary: &str,
        stats: &serde_json::Value,
        log: &str,
        now: DateTime<Local>,
    ) -> Result<()> {
        self.db
            .execute(
                "UPDATE runs SET outcome = ?2, summary = ?3, stats = ?4, log = ?5, ended = ?6 WHERE id = ?1",
                params![id, outcome, summary, stats.to_string(), log, now.to_rfc3339()],
            )
            .map_err(db_err)?;
        let job: Option<String> = self
            .db
            .query_row("SELECT job FROM runs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)?;
        if let Some(job) = job {
            self.db
                .execute(
                    "DELETE FROM runs WHERE job = ?1 AND id NOT IN
                     (SELECT id FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT ?2)",
                    params![job, KEEP_PER_JOB],
                )
                .map_err(db_err)?;
        }
        Ok(())
    }

    /// When each job last started (for catch-up).
    pub fn last_starts(&self) -> Result<BTreeMap<String, DateTime<Local>>> {
        let mut st = self
            .db
            // The newest row, not the greatest string: local times with
            // offsets do not sort across a daylight-saving change.
            .prepare(
                "SELECT job, started FROM runs WHERE id IN (SELECT MAX(id) FROM runs GROUP BY job)",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db_err)?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (job, t) = row.map_err(db_err)?;
            if let Ok(t) = DateTime::parse_from_rfc3339(&t) {
                out.insert(job, t.with_timezone(&Local));
            }
        }
        Ok(out)
    }

    /// The newest runs, newest first; of one job if given.
    pub fn recent(&self, job: Option<&str>, limit: i64) -> Result<Vec<Run>> {
        let mut st = self
            .db
            .prepare(
                "SELECT id, job, kind, trigger, started, ended, outcome, summary, stats, log
                 FROM runs WHERE (?1 IS NULL OR job = ?1) ORDER BY id DESC LIMIT ?2",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map(params![job, limit], |r| {
                Ok(Run {
                    id: r.get(0)?,
                    job: r.get(1)?,
                    kind: r.get(2)?,
                    trigger: r.get(3)?,
                    started: r.get(4)?,
                    ended: r.get(5)?,
                    outcome: r.get(6)?,
                    summary: r.get(7)?,
                    stats: r.get(8)?,
                    log: r.get(9)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(db_err)
    }

    /// One run by its id.
    pub fn get(&self, id: i64) -> Result<Option<Run>> {
        self.db
            .query_row(
                "SELECT id, job, kind, trigger, started, ended, outcome, summary, stats, log
                 FROM runs WHERE id = ?1",
                params![id],
                |r| {
                    Ok(Run {
                        id: r.get(0)?,
                        job: r.get(1)?,
                        kind: r.get(2)?,
                        trigger: r.get(3)?,
                        started: r.get(4)?,
                        ended: r.get(5)?,
                        outcome: r.get(6)?,
                        summary: r.get(7)?,
                        stats: r.get(8)?,
                        log: r.get(9)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)
    }

    /// Records a measurement (a repository's size, a drive's free space)
    /// at `time` (Unix seconds), for growth charts and days-until-full.
    /// Samples older than `SAMPLE_DAYS` are dropped.
    pub fn add_sample(&self, series: &str, time: i64, value: f64) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO samples (series, time, value) VALUES (?1, ?2, ?3)",
                params![series, time, value],
            )
            .map_err(db_err)?;
        self.db
            .execute(
                "DELETE FROM samples WHERE series = ?1 AND time < ?2",
                params![series, time - SAMPLE_DAYS * 86400],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// A series' samples since `since` (Unix seconds), oldest first.
    pub fn samples(&self, series: &str, since: i64) -> Result<Vec<(i64, f64)>> {
        let mut st = self
            .db
            .prepare(
                "SELECT time, value FROM samples WHERE series = ?1 AND time >= ?2 ORDER BY time",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map(params![series, since], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(db_err)
    }

    /// When a series was last sampled.
    pub fn last_sample_time(&self, series: &str) -> Result<Option<i64>> {
        self.db
            .query_row(
                "SELECT MAX(time) FROM samples WHERE series = ?1",
                params![series],
                |r| r.get(0),
            )
            .map_err(db_err)
    }

    /// The outcome of the last finished run of `job` before run `id`.
    pub fn previous_outcome(&self, job: &str, id: i64) -> Result<Option<String>> {
        self.db
            .query_row(
                "SELECT outcome FROM runs WHERE job = ?1 AND id < ?2 AND outcome != 'running'
                 ORDER BY id DESC LIMIT 1",
                params![job, id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_survive_a_restart_and_unfinished_ones_become_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        let now = Local::now();
        {
            let h = History::open(&path).unwrap();
            let a = h.start("nightly", "backup", "schedule", now).unwrap();
            h.finish(
                a,
                "ok",
                "3 files",
                &serde_json::json!({"files": 3}),
                "",
                now,
            )
            .unwrap();
            h.start("nightly", "backup", "manual", now).unwrap();
        }
        let h = History::open(&path).unwrap();
        assert_eq!(h.mark_interrupted(now).unwrap(), 1);
        let runs = h.recent(Some("nightly"), 10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].outcome, "interrupted");
        assert_eq!(runs[1].outcome, "ok");
        assert_eq!(runs[1].stats, r#"{"files":3}"#);
        assert_eq!(
            h.previous_outcome("nightly", runs[0].id)
                .unwrap()
                .as_deref(),
            Some("ok")
        );
        assert!(h.last_starts().unwrap().contains_key("nightly"));
    }
}
