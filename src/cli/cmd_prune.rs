//! `strata prune`.

use super::common::{self, Location};
use anyhow::{Result, bail};
use clap::Args;
use strata::ops::prune::{Retention, decide, parse_within};
use strata::repo::LockMode;

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Keep every archive younger than this (e.g. 2d, 12H, 1w, 6m, 1y).
    #[arg(long, value_name = "INTERVAL")]
    pub keep_within: Option<String>,
    /// Keep the N newest archives (same as --keep-secondly).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest archive of each of the last N seconds (-1: all).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub keep_secondly: i64,
    /// Keep the newest archive of each of the last N minutes (-1: all).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub keep_minutely: i64,
    /// Keep the newest archive of each of the last N hours (-1: all).
    #[arg(
        short = 'H',
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub keep_hourly: i64,
    /// Keep the newest archive of each of the last N days (-1: all).
    #[arg(
        short = 'd',
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub keep_daily: i64,
    /// Keep the newest archive of each of the last N ISO weeks (-1: all).
    #[arg(
        short = 'w',
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub keep_weekly: i64,
    /// Keep the newest archive of each of the last N months (-1: all).
    #[arg(
        short = 'm',
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub keep_monthly: i64,
    /// Keep the newest archive of each of the last N years (-1: all).
    #[arg(
        short = 'y',
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub keep_yearly: i64,
    /// Only consider archives whose names match GLOB (one host's series).
    #[arg(short = 'a', long = "glob-archives", value_name = "GLOB")]
    pub glob: Option<String>,
    /// Show what would be pruned, change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print each archive with the rule that kept it, or that it is pruned.
    #[arg(long)]
    pub list: bool,
    /// Repository path.
    pub repository: String,
}

pub fn run(a: PruneArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.repository)?;
    let retention = Retention {
        within: a.keep_within.as_deref().map(parse_within).transpose()?,
        secondly: if a.keep_secondly != 0 {
            a.keep_secondly
        } else {
            a.keep_last.unwrap_or(0)
        },
        minutely: a.keep_minutely,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
    };
    if retention.is_empty() {
        bail!(
            "no retention rule given: use --keep-last, --keep-within or --keep-daily/weekly/… (see `strata help prune`)"
        );
    }
    let mut repo = common::open(&loc, LockMode::Exclusive, lock_wait, false)?;
    let filter = super::filters::ArchiveFilter {
        glob: a.glob.clone(),
        sort_by: "timestamp".into(),
        ..Default::default()
    };
    let considered = filter.apply(&repo.manifest().archives)?;
    let decisions = decide(&considered, &retention, chrono::Local::now().naive_local())?;
    let prune: Vec<String> = considered
        .iter()
        .enumerate()
        .filter(|(i, _)| decisions.get(*i).is_none_or(Option::is_none))
        .map(|(_, r)| r.name.clone())
        .collect();
    if a.list || a.dry_run {
        let total = prune.len();
        let mut n = 0;
        for (i, r) in considered.iter().enumerate().rev() {
            let line = format!(
                "{:<36} {} [{}]",
                r.name,
                common::time(&r.time),
                r.id.short()
            );
            match decisions.get(i).and_then(Option::as_ref) {
                Some(why) => println!("Keeping archive (rule: {why}):{:>5}{line}", ""),
                None => {
                    n += 1;
                    let verb = if a.dry_run {
                        "Would prune:"
                    } else {
                        "Pruning archive"
                    };
                    println!("{verb} ({n}/{total}):{:>6}{line}", "");
                }
            }
        }
    }
    let (_, warnings) = strata::ops::delete::delete(&mut repo, &prune, a.dry_run)?;
    Ok(super::warn_all(&warnings))
}
