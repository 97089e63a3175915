//! `strata delete` and `strata rename`.

use super::common::{self, Location};
use anyhow::{Result, bail};
use clap::Args;
use strata::repo::LockMode;

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Show what would be deleted, change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print each deleted archive.
    #[arg(long)]
    pub list: bool,
    #[command(flatten)]
    pub filter: super::filters::ArchiveFilter,
    /// REPO::ARCHIVE, or REPO with -a/--first/--last to delete several.
    pub location: String,
    /// More archive names in the same repository.
    pub archives: Vec<String>,
}

pub fn delete(a: DeleteArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.location)?;
    let mut repo = common::open(&loc, LockMode::Exclusive, lock_wait, false)?;
    let mut names: Vec<String> = loc
        .archive
        .iter()
        .cloned()
        .chain(a.archives.iter().cloned())
        .collect();
    let filtered = a.filter.glob.is_some() || a.filter.first.is_some() || a.filter.last.is_some();
    if filtered {
        names.extend(
            a.filter
                .apply(&repo.manifest().archives)?
                .into_iter()
                .map(|r| r.name),
        );
    }
    if names.is_empty() {
        bail!(
            "no archive named: use REPO::ARCHIVE or -a GLOB (deleting a whole repository is `rm -r` of its directory)"
        );
    }
    names.sort();
    names.dedup();
    let (n, warnings) = strata::ops::delete::delete(&mut repo, &names, a.dry_run)?;
    if a.list || a.dry_run {
        for name in &names {
            println!(
                "{}{name}",
                if a.dry_run {
                    "Would delete: "
                } else {
                    "Deleted: "
                }
            );
        }
    }
    eprintln!(
        "{} {n} archive(s); run `strata compact` to free their space",
        if a.dry_run { "Would delete" } else { "Deleted" }
    );
    Ok(super::warn_all(&warnings))
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    /// REPO::OLD
    pub archive: String,
    /// NEW name
    pub new_name: String,
}

pub fn rename(a: RenameArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.archive)?;
    let from = loc.archive()?.to_string();
    let mut repo = common::open(&loc, LockMode::Exclusive, lock_wait, true)?;
    let warnings = strata::ops::delete::rename(&mut repo, &from, &a.new_name)?;
    Ok(super::warn_all(&warnings))
}

#[derive(Args, Debug)]
pub struct UndeleteArgs {
    /// The manifest generation that still lists the archives
    /// (`strata list --generations REPO`).
    #[arg(long = "from-generation", value_name = "N")]
    pub from_generation: u64,
    /// Repository path.
    pub repository: String,
    /// Archive names to bring back (default: every archive of that
    /// generation that is missing now).
    pub archives: Vec<String>,
}

pub fn undelete(a: UndeleteArgs, lock_wait: u64) -> Result<i32> {
    let loc = Location::parse(&a.repository)?;
    let mut repo = common::open(&loc, LockMode::Exclusive, lock_wait, true)?;
    let (restored, warnings) =
        strata::ops::delete::undelete(&mut repo, a.from_generation, &a.archives)?;
    for n in &restored {
        println!("Restored: {n}");
    }
    eprintln!(
        "{} archive(s) are listed again; `strata check` confirms their data is complete",
        restored.len()
    );
    Ok(super::warn_all(&warnings))
}
