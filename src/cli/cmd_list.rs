//! `strata list`.

use super::common::{self, Location};
use super::filters::ArchiveFilter;
use anyhow::Result;
use clap::Args;
use std::io::Write;
use strata::archive::Archive;
use strata::archive::item::{Item, ItemsReader};
use strata::repo::LockMode;
use strata::repo::manifest::ArchiveRef;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only names (archives) or paths (items).
    #[arg(long)]
    pub short: bool,
    /// Format each line. Archives: {archive} {name} {time} {id} {hostname}
    /// {username}; items: {mode} {type} {user} {group} {uid} {gid} {size}
    /// {mtime} {path} {target}; both: {NL} {TAB}.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// One JSON object per line (items).
    #[arg(long)]
    pub json_lines: bool,
    /// JSON on standard output (archives).
    #[arg(long)]
    pub json: bool,
    /// List the manifest generations kept (each is the archive list after
    /// one change), for `--generation N` and `undelete`.
    #[arg(long)]
    pub generations: bool,
    #[command(flatten)]
    pub filter: ArchiveFilter,
    /// REPO or REPO::ARCHIVE.
    pub location: String,
    /// Only items at or below these paths (archive paths, no leading `/`).
    pub paths: Vec<String>,
}

pub fn run(a: ListArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.location)?;
    let repo = common::open(&loc, LockMode::Shared, lock_wait, loc.archive.is_some())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if a.generations {
        for (g, m) in repo.manifest_generations()? {
            match m {
                Ok(m) => writeln!(
                    out,
                    "{g:>6}  {}  {} archives",
                    common::time(&m.timestamp),
                    m.archives.len()
                )?,
                Err(e) => writeln!(out, "{g:>6}  unreadable: {e}")?,
            }
        }
        out.flush()?;
        return Ok(super::EXIT_OK);
    }
    match &loc.archive {
        None => {
            let archives = a.filter.apply(&repo.manifest().archives)?;
            if a.json {
                let v: Vec<_> = archives.iter().map(archive_json).collect();
                let doc = serde_json::json!({"repository": {"id": repo.config().id, "location": repo.location()}, "archives": v});
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            } else if a.json_lines {
                for r in &archives {
                    writeln!(out, "{}", archive_json(r))?;
                }
            } else {
                for r in &archives {
                    write!(out, "{}", archive_line(r, &a))?;
                }
            }
        }
        Some(name) => {
            let archive = Archive::find(&repo, name)?;
            for item in ItemsReader::new(&repo, archive.items.clone()) {
                let item = item?;
                if !selected(&item, &a.paths) {
                    continue;
                }
                if a.json_lines {
                    writeln!(out, "{}", item_json(&item))?;
                } else {
                    write!(out, "{}", item_line(&item, &a))?;
                }
            }
        }
    }
    out.flush()?;
    Ok(super::EXIT_OK)
}

fn selected(item: &Item, paths: &[String]) -> bool {
    paths.is_empty()
        || paths.iter().any(|p| {
            let p = p.trim_start_matches('/').trim_end_matches('/').as_bytes();
            item.path.as_slice() == p
                || (item.path.starts_with(p) && item.path.get(p.len()) == Some(&b'/'))
        })
}

fn archive_json(r: &ArchiveRef) -> serde_json::Value {
    serde_json::json!({"name": r.name, "archive": r.name, "id": r.id.to_hex(), "start": r.time, "time": r.time, "hostname": r.hostname, "username": r.username})
}

fn archive_line(r: &ArchiveRef, a: &ListArgs) -> String {
    if a.short {
        return format!("{}\n", r.name);
    }
    let fmt = a
        .format
        .as_deref()
        .unwrap_or("{archive:<36} {time} [{id}]{NL}");
    let time = common::time(&r.time);
    let id = r.id.to_hex();
    fill(fmt, &|key| match key {
        "archive" | "name" => Some(r.name.clone()),
        "time" | "start" => Some(time.clone()),
        "id" => Some(id.clone()),
        "hostname" => Some(r.hostname.clone()),
        "username" => Some(r.username.clone()),
        _ => None,
    })
}

fn item_line(i: &Item, a: &ListArgs) -> String {
    if a.short {
        return format!("{}\n", i.path_lossy());
    }
    let default = if i.target.is_some() {
        "{mode} {user:6} {group:6} {size:>8} {mtime} {path} -> {target}{NL}"
    } else {
        "{mode} {user:6} {group:6} {size:>8} {mtime} {path}{NL}"
    };
    let fmt = a.format.as_deref().unwrap_or(default);
    fill(fmt, &|key| item_field(i, key))
}

fn item_field(i: &Item, key: &str) -> Option<String> {
    Some(match key {
        "mode" => i.mode_string(),
        "type" => i.type_char().to_string(),
        "user" => i.user.clone().unwrap_or_else(|| i.uid.to_string()),
        "group" => i.group.clone().unwrap_or_else(|| i.gid.to_string()),
        "uid" => i.uid.to_string(),
        "gid" => i.gid.to_string(),
        "size" => i.size.to_string(),
        "mtime" => common::time_ns(i.mtime),
        "path" => i.path_lossy(),
        "target" => i
            .target
            .as_ref()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default(),
        "linktarget" => i
            .link
            .as_ref()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default(),
        _ => return None,
    })
}

fn item_json(i: &Item) -> serde_json::Value {
    serde_json::json!({
        "type": i.type_char().to_string(),
        "mode": i.mode_string(),
        "user": i.user, "group": i.group, "uid": i.uid, "gid": i.gid,
        "path": i.path_lossy(),
        "target": i.target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
        "hardlink_to": i.link.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
        "size": i.size,
        "mtime_ns": i.mtime,
        "mtime": chrono::DateTime::from_timestamp(i.mtime.div_euclid(1_000_000_000), i.mtime.rem_euclid(1_000_000_000) as u32).map(|t| t.to_rfc3339()),
    })
}

/// Replaces `{key}`, `{key:<N}`, `{key:>N}`, `{key:N}` (left), `{NL}`, `{TAB}`.
fn fill(fmt: &str, field: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = fmt;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let token = &rest[open + 1..open + close];
        let (key, spec) = token.split_once(':').unwrap_or((token, ""));
        let value = match key {
            "NL" => Some("\n".to_string()),
            "TAB" => Some("\t".to_string()),
            k => field(k),
        };
        match value {
            Some(v) => out.push_str(&pad(&v, spec)),
            None => out.push_str(&rest[open..open + close + 1]),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

fn pad(v: &str, spec: &str) -> String {
    let (right, width) = match spec.strip_prefix('>') {
        Some(w) => (true, w),
        None => (false, spec.strip_prefix('<').unwrap_or(spec)),
    };
    let Ok(width) = width.parse::<usize>() else {
        return v.to_string();
    };
    if right {
        format!("{v:>width$}")
    } else {
        format!("{v:<width$}")
    }
}
