//! `strata diff`.

use super::common::{self, Location, size};
use anyhow::Result;
use clap::Args;
use std::io::Write;
use strata::archive::Archive;
use strata::ops::diff::{Change, diff};
use strata::repo::LockMode;

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// One JSON object per changed item.
    #[arg(long)]
    pub json_lines: bool,
    /// Only content changes, additions and removals (no metadata).
    #[arg(long)]
    pub content_only: bool,
    /// REPO::ARCHIVE1
    pub archive: String,
    /// ARCHIVE2 (in the same repository)
    pub other: String,
}

pub fn run(a: DiffArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.archive)?;
    let repo = common::open(&loc, LockMode::Shared, lock_wait, true)?;
    let first = Archive::find(&repo, loc.archive()?)?;
    let second = Archive::find(&repo, &a.other)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for d in diff(&repo, &first, &second)? {
        let changes: Vec<&Change> = d
            .changes
            .iter()
            .filter(|c| !a.content_only || is_content(c))
            .collect();
        if changes.is_empty() {
            continue;
        }
        if a.json_lines {
            let v: Vec<serde_json::Value> = changes.iter().map(|c| json(c)).collect();
            writeln!(out, "{}", serde_json::json!({"path": d.path, "changes": v}))?;
        } else {
            let text: Vec<String> = changes.iter().map(|c| text(c)).collect();
            writeln!(out, "{:<28} {}", text.join(" "), d.path)?;
        }
    }
    out.flush()?;
    Ok(super::EXIT_OK)
}

fn is_content(c: &Change) -> bool {
    matches!(
        c,
        Change::Added { .. }
            | Change::Removed { .. }
            | Change::Modified { .. }
            | Change::Type { .. }
            | Change::Target { .. }
    )
}

fn text(c: &Change) -> String {
    match c {
        Change::Added { size: s } => format!("added {:>10}", size(*s)),
        Change::Removed { size: s } => format!("removed {:>8}", size(*s)),
        Change::Modified { added, removed } => format!(
            "{:>10} {:>10}",
            format!("+{}", size(*added)),
            format!("-{}", size(*removed))
        ),
        Change::Type { from, to } => format!("[{from} -> {to}]"),
        Change::Mode { from, to } => format!("[{from} -> {to}]"),
        Change::Owner { from, to } => format!("[{from} -> {to}]"),
        Change::Mtime { from, to } => format!(
            "[mtime: {} -> {}]",
            common::time_ns(*from),
            common::time_ns(*to)
        ),
        Change::Target { from, to } => format!("[link: {from} -> {to}]"),
    }
}

fn json(c: &Change) -> serde_json::Value {
    match c {
        Change::Added { size } => serde_json::json!({"type": "added", "size": size}),
        Change::Removed { size } => serde_json::json!({"type": "removed", "size": size}),
        Change::Modified { added, removed } => {
            serde_json::json!({"type": "modified", "added": added, "removed": removed})
        }
        Change::Type { from, to } => {
            serde_json::json!({"type": "type", "old": from.to_string(), "new": to.to_string()})
        }
        Change::Mode { from, to } => {
            serde_json::json!({"type": "mode", "old_mode": from, "new_mode": to})
        }
        Change::Owner { from, to } => serde_json::json!({"type": "owner", "old": from, "new": to}),
        Change::Mtime { from, to } => serde_json::json!({"type": "mtime", "old": from, "new": to}),
        Change::Target { from, to } => {
            serde_json::json!({"type": "target", "old": from, "new": to})
        }
    }
}
