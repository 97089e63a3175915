//! Archive filters shared by list/info: --glob-archives, --sort-by, --first, --last.

use anyhow::{Context, Result, bail};
use clap::Args;
use strata::repo::manifest::ArchiveRef;

#[derive(Args, Debug, Clone, Default)]
pub struct ArchiveFilter {
    /// Only archives whose names match this shell glob (`web-*`).
    #[arg(short = 'a', long = "glob-archives", value_name = "GLOB")]
    pub glob: Option<String>,
    /// Sort by: timestamp (default), name; comma-separated.
    #[arg(long, value_name = "KEYS", default_value = "timestamp")]
    pub sort_by: String,
    /// Only the first N archives (after sorting).
    #[arg(long, value_name = "N")]
    pub first: Option<usize>,
    /// Only the last N archives (after sorting).
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

impl ArchiveFilter {
    pub fn apply(&self, archives: &[ArchiveRef]) -> Result<Vec<ArchiveRef>> {
        let mut out: Vec<ArchiveRef> = match &self.glob {
            Some(g) => {
                let m = globset::Glob::new(g)
                    .with_context(|| format!("bad glob `{g}`"))?
                    .compile_matcher();
                archives
                    .iter()
                    .filter(|a| m.is_match(&a.name))
                    .cloned()
                    .collect()
            }
            None => archives.to_vec(),
        };
        for key in self.sort_by.split(',').rev() {
            match key {
                "timestamp" => out.sort_by(|a, b| a.time.cmp(&b.time)),
                "name" => out.sort_by(|a, b| a.name.cmp(&b.name)),
                "id" => out.sort_by_key(|a| a.id),
                other => bail!("--sort-by {other}: use timestamp, name or id"),
            }
        }
        if let Some(n) = self.first {
            out.truncate(n);
        }
        if let Some(n) = self.last {
            let skip = out.len().saturating_sub(n);
            out.drain(..skip);
        }
        Ok(out)
    }
}
