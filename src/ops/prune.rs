//! `prune`: borg's retention rules, computed as a pure plan.
//!
//! Rules are applied in order within, secondly (= last), minutely, hourly,
//! daily, weekly, monthly, yearly. Each rule walks the archives newest first
//! and keeps the newest archive of each period it has not kept already,
//! until it has kept N (`-1`: no limit). If a rule cannot reach N, it also
//! keeps the oldest archive ("[oldest]"), as borg 1.2 does.

use crate::error::{Error, Result};
use chrono::{NaiveDateTime, TimeDelta};
use std::collections::HashMap;

/// How many archives each rule keeps; 0 = rule unused, -1 = all periods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub within: Option<TimeDelta>,
    pub secondly: i64,
    pub minutely: i64,
    pub hourly: i64,
    pub daily: i64,
    pub weekly: i64,
    pub monthly: i64,
    pub yearly: i64,
}

impl Retention {
    pub fn is_empty(&self) -> bool {
        self.within.is_none() && self.rules().iter().all(|(_, n, _)| *n == 0)
    }

    fn rules(&self) -> [(&'static str, i64, &'static str); 7] {
        [
            ("secondly", self.secondly, "%Y-%m-%d %H:%M:%S"),
            ("minutely", self.minutely, "%Y-%m-%d %H:%M"),
            ("hourly", self.hourly, "%Y-%m-%d %H"),
            ("daily", self.daily, "%Y-%m-%d"),
            ("weekly", self.weekly, "%G-%V"),
            ("monthly", self.monthly, "%Y-%m"),
            ("yearly", self.yearly, "%Y"),
        ]
    }
}

/// Parses `--keep-within`: a number and a unit S M H d w m y (m = 31 days,
/// y = 365 days, as borg).
pub fn parse_within(s: &str) -> Result<TimeDelta> {
    let bad = || {
        Error::invalid(format!(
            "--keep-within `{s}`: use a number and one of S M H d w m y, e.g. 2d"
        ))
    };
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    let secs = match unit {
        'S' => 1,
        'M' => 60,
        'H' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'm' => 31 * 86_400,
        'y' => 365 * 86_400,
        _ => return Err(bad()),
    };
    Ok(TimeDelta::seconds(n * secs))
}

/// For each archive (in the given order, oldest first), the rule that
/// keeps it, or None: prune it. Archive times are judged in local time.
pub fn decide(
    archives: &[crate::repo::manifest::ArchiveRef],
    r: &Retention,
    now: NaiveDateTime,
) -> crate::error::Result<Vec<Option<String>>> {
    let candidates = archives
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let time = chrono::DateTime::parse_from_rfc3339(&a.time)
                .map(|t| t.with_timezone(&chrono::Local).naive_local())
                .map_err(|_| {
                    crate::error::Error::corrupt(format!(
                        "archive {} has a bad time `{}`",
                        a.name, a.time
                    ))
                })?;
            Ok(Candidate { index, time })
        })
        .collect::<crate::error::Result<Vec<_>>>()?;
    Ok(plan(&candidates, r, now))
}

/// One archive to decide on: its index in the caller's list and local time.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub index: usize,
    pub time: NaiveDateTime,
}

/// Decides which archives to keep. Returns, per index, the rule that kept
/// it with its rank (`"daily #3"`), or None for an archive to prune.
pub fn plan(archives: &[Candidate], r: &Retention, now: NaiveDateTime) -> Vec<Option<String>> {
    let mut kept: HashMap<usize, String> = HashMap::new();
    let mut newest_first: Vec<Candidate> = archives.to_vec();
    newest_first.sort_by(|a, b| b.time.cmp(&a.time).then(b.index.cmp(&a.index)));
    if let Some(w) = r.within {
        for a in newest_first.iter().filter(|a| a.time > now - w) {
            kept.insert(a.index, "within".into());
        }
    }
    for (rule, n, pattern) in r.rules() {
        split(&newest_first, rule, n, pattern, &mut kept);
    }
    let mut out = vec![None; archives.iter().map(|a| a.index + 1).max().unwrap_or(0)];
    for (i, why) in kept {
        out[i] = Some(why);
    }
    out
}

fn split(
    newest_first: &[Candidate],
    rule: &str,
    n: i64,
    pattern: &str,
    kept: &mut HashMap<usize, String>,
) {
    if n == 0 {
        return;
    }
    let mut count = 0i64;
    let mut last: Option<String> = None;
    for a in newest_first {
        let period = a.time.format(pattern).to_string();
        if last.as_ref() == Some(&period) {
            continue;
        }
        last = Some(period);
        if let std::collections::hash_map::Entry::Vacant(v) = kept.entry(a.index) {
            count += 1;
            v.insert(format!("{rule} #{count}"));
            if count == n {
                return;
            }
        }
    }
    if let Some(oldest) = newest_first.last()
        && n > 0
        && count < n
        && !kept.contains_key(&oldest.index)
    {
        kept.insert(oldest.index, format!("{rule}[oldest] #{}", count + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|x| x.and_hms_opt(h, mi, s))
            .unwrap()
    }

    /// borg's own test table (src/borg/testsuite/helpers.py, test_prune_split).
    fn borg_archives() -> Vec<Candidate> {
        [
            t(2015, 1, 1, 10, 0, 0),
            t(2016, 1, 1, 10, 0, 0),
            t(2017, 1, 1, 10, 0, 0),
            t(2017, 2, 1, 10, 0, 0),
            t(2017, 3, 1, 10, 0, 0),
            t(2017, 3, 2, 10, 0, 0),
            t(2017, 3, 3, 10, 0, 0),
            t(2017, 3, 4, 10, 0, 0),
            t(2017, 10, 1, 9, 45, 0),
            t(2017, 10, 1, 9, 55, 0),
            t(2017, 10, 1, 10, 0, 1),
            t(2017, 10, 1, 10, 0, 3),
            t(2017, 10, 1, 10, 0, 5),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, time)| Candidate { index: i + 1, time })
        .collect()
    }

    fn kept_ids(archives: &[Candidate], r: Retention) -> Vec<usize> {
        let p = plan(archives, &r, t(2030, 1, 1, 0, 0, 0));
        let mut ids: Vec<usize> = p
            .iter()
            .enumerate()
            .filter(|(_, k)| k.is_some())
            .map(|(i, _)| i)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    #[test]
    fn golden_borg_prune_split_table() {
        let a = borg_archives();
        let r = Retention::default;
        assert_eq!(kept_ids(&a, Retention { yearly: 3, ..r() }), vec![13, 2, 1]);
        assert_eq!(
            kept_ids(&a, Retention { monthly: 3, ..r() }),
            vec![13, 8, 4]
        );
        assert_eq!(kept_ids(&a, Retention { weekly: 2, ..r() }), vec![13, 8]);
        assert_eq!(kept_ids(&a, Retention { daily: 3, ..r() }), vec![13, 8, 7]);
        assert_eq!(
            kept_ids(&a, Retention { hourly: 3, ..r() }),
            vec![13, 10, 8]
        );
        assert_eq!(
            kept_ids(&a, Retention { minutely: 3, ..r() }),
            vec![13, 10, 9]
        );
        assert_eq!(
            kept_ids(&a, Retention { secondly: 4, ..r() }),
            vec![13, 12, 11, 10]
        );
        assert!(kept_ids(&a, Retention { daily: 0, ..r() }).is_empty());
    }

    #[test]
    fn golden_keep_oldest() {
        let a: Vec<Candidate> = [
            t(2018, 1, 1, 10, 0, 0),
            t(2018, 12, 30, 10, 0, 0),
            t(2018, 12, 31, 10, 0, 0),
            t(2019, 12, 31, 10, 0, 0),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, time)| Candidate { index: i + 1, time })
        .collect();
        let p = plan(
            &a,
            &Retention {
                yearly: 3,
                ..Default::default()
            },
            t(2030, 1, 1, 0, 0, 0),
        );
        assert_eq!(p[1].as_deref(), Some("yearly[oldest] #3"));
        assert_eq!(p[3].as_deref(), Some("yearly #2"));
        assert_eq!(p[4].as_deref(), Some("yearly #1"));
        assert_eq!(p[2], None);
        assert_eq!(
            kept_ids(
                &a,
                Retention {
                    yearly: 2,
                    ..Default::default()
                }
            ),
            vec![4, 3]
        );
    }

    #[test]
    fn rules_combine_and_within_and_all() {
        let a = borg_archives();
        // daily keeps 13, 8, 7; monthly then walks Oct (13, taken), Mar (8,
        // taken), Feb (4), Jan 2017 (3), Jan 2016 (2): taken ones do not count
        let both = kept_ids(
            &a,
            Retention {
                daily: 3,
                monthly: 3,
                ..Default::default()
            },
        );
        assert_eq!(both, vec![13, 8, 7, 4, 3, 2]);
        let within = plan(
            &a,
            &Retention {
                within: Some(parse_within("1H").unwrap()),
                ..Default::default()
            },
            t(2017, 10, 1, 10, 30, 0),
        );
        let ids: Vec<usize> = within
            .iter()
            .enumerate()
            .filter(|(_, k)| k.is_some())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ids, vec![9, 10, 11, 12, 13]);
        assert_eq!(
            kept_ids(
                &a,
                Retention {
                    secondly: -1,
                    ..Default::default()
                }
            )
            .len(),
            13
        );
        assert!(
            parse_within("2x").is_err()
                && parse_within("d").is_err()
                && parse_within("-1d").is_err()
        );
    }

    #[test]
    fn thousand_archives_plan_quickly() {
        let a: Vec<Candidate> = (0..1000)
            .map(|i| Candidate {
                index: i,
                time: t(2020, 1, 1, 0, 0, 0) + TimeDelta::hours(i as i64 * 7),
            })
            .collect();
        let p = plan(
            &a,
            &Retention {
                daily: 7,
                weekly: 4,
                monthly: 12,
                yearly: -1,
                ..Default::default()
            },
            t(2021, 1, 1, 0, 0, 0),
        );
        let kept = p.iter().filter(|k| k.is_some()).count();
        assert!((20..40).contains(&kept), "{kept}");
    }
}
