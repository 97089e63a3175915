//! `diff`: what changed between two archives, item by item.

use crate::archive::Archive;
use crate::archive::item::{Item, ItemsReader};
use crate::error::Result;
use crate::repo::Repository;
use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Added {
        size: u64,
    },
    Removed {
        size: u64,
    },
    /// Content changed: bytes in new chunks, bytes in dropped chunks.
    Modified {
        added: u64,
        removed: u64,
    },
    Type {
        from: char,
        to: char,
    },
    Mode {
        from: String,
        to: String,
    },
    Owner {
        from: String,
        to: String,
    },
    Mtime {
        from: i64,
        to: i64,
    },
    Target {
        from: String,
        to: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemDiff {
    pub path: String,
    pub changes: Vec<Change>,
}

pub fn diff(repo: &Repository, a: &Archive, b: &Archive) -> Result<Vec<ItemDiff>> {
    let mut old: HashMap<Vec<u8>, Item> = HashMap::new();
    for item in ItemsReader::new(repo, a.items.clone()) {
        let item = item?;
        old.insert(item.path.to_vec(), item);
    }
    let mut out = Vec::new();
    for item in ItemsReader::new(repo, b.items.clone()) {
        let item = item?;
        let changes = match old.remove(item.path.as_slice()) {
            None => vec![Change::Added { size: item.size }],
            Some(prev) => compare(&prev, &item),
        };
        if !changes.is_empty() {
            out.push(ItemDiff {
                path: item.path_lossy(),
                changes,
            });
        }
    }
    let mut removed: Vec<Item> = old.into_values().collect();
    removed.sort_by(|x, y| x.path.cmp(&y.path));
    for item in removed {
        out.push(ItemDiff {
            path: item.path_lossy(),
            changes: vec![Change::Removed { size: item.size }],
        });
    }
    Ok(out)
}

fn owner(i: &Item) -> String {
    format!(
        "{}:{}",
        i.user.clone().unwrap_or_else(|| i.uid.to_string()),
        i.group.clone().unwrap_or_else(|| i.gid.to_string())
    )
}

/// Differences between two versions of the same path.
pub fn compare(a: &Item, b: &Item) -> Vec<Change> {
    let mut c = Vec::new();
    if a.type_char() != b.type_char() {
        c.push(Change::Type {
            from: a.type_char(),
            to: b.type_char(),
        });
    }
    if a.chunks != b.chunks {
        let ids_a: HashSet<_> = a.chunks.iter().map(|x| x.0).collect();
        let ids_b: HashSet<_> = b.chunks.iter().map(|x| x.0).collect();
        let added = b
            .chunks
            .iter()
            .filter(|x| !ids_a.contains(&x.0))
            .map(|x| x.1 as u64)
            .sum();
        let removed = a
            .chunks
            .iter()
            .filter(|x| !ids_b.contains(&x.0))
            .map(|x| x.1 as u64)
            .sum();
        c.push(Change::Modified { added, removed });
    }
    if a.target != b.target {
        let t = |i: &Item| {
            i.target
                .as_ref()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_default()
        };
        c.push(Change::Target {
            from: t(a),
            to: t(b),
        });
    }
    if a.mode != b.mode {
        c.push(Change::Mode {
            from: a.mode_string(),
            to: b.mode_string(),
        });
    }
    if owner(a) != owner(b) || a.uid != b.uid || a.gid != b.gid {
        c.push(Change::Owner {
            from: owner(a),
            to: owner(b),
        });
    }
    if a.mtime != b.mtime && a.type_char() != 'd' {
        c.push(Change::Mtime {
            from: a.mtime,
            to: b.mtime,
        });
    }
    c
}
