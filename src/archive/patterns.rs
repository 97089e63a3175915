//! Exclude patterns, borg style: `fm:` (default; `*` also matches `/`) and
//! `sh:` (`*` stops at `/`, `**` crosses directories). Patterns match the
//! path without its leading `/`; excluding a directory excludes its tree.

use crate::error::{Error, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::Path;

#[derive(Default)]
pub struct Excludes {
    set: Option<GlobSet>,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self> {
        if patterns.is_empty() {
            return Ok(Self::default());
        }
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let (literal_sep, body) = match p.split_once(':') {
                Some(("sh", rest)) => (true, rest),
                Some(("fm", rest)) => (false, rest),
                _ => (false, p.as_str()),
            };
            let body = body.trim_start_matches('/').trim_end_matches('/');
            let glob = GlobBuilder::new(body)
                .literal_separator(literal_sep)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::invalid(format!("exclude pattern `{p}`: {e}")))?;
            b.add(glob);
        }
        let set = b
            .build()
            .map_err(|e| Error::invalid(format!("exclude patterns: {e}")))?;
        Ok(Self { set: Some(set) })
    }

    /// Reads patterns from a file: one per line, `#` comments, blanks ignored.
    pub fn read_file(path: &Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading exclude file {}", path.display()), e))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect())
    }

    /// `path` is absolute or relative as walked; the leading `/` is ignored.
    pub fn is_excluded(&self, path: &Path) -> bool {
        let Some(set) = &self.set else { return false };
        let rel = path.strip_prefix("/").unwrap_or(path);
        set.is_match(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borg_like_matching() {
        let e =
            Excludes::new(&["*.tmp".into(), "sh:home/*/cache".into(), "/var/log".into()]).unwrap();
        assert!(e.is_excluded(Path::new("/a/b/c.tmp")));
        assert!(e.is_excluded(Path::new("/home/u/cache")));
        assert!(!e.is_excluded(Path::new("/home/u/x/cache")));
        assert!(e.is_excluded(Path::new("/var/log")));
        assert!(!e.is_excluded(Path::new("/var/logs")));
        assert!(!e.is_excluded(Path::new("/a/b.txt")));
    }
}
