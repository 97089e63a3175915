//! `strata import-borg`.

use super::common::{self, Location, size};
use super::progress::Terminal;
use anyhow::Result;
use clap::Args;
use strata::archive::builder::BuildOptions;
use strata::compress::Compression;
use strata::ops::borg::{Borg, Plan, import_one, plan};
use strata::repo::LockMode;

#[derive(Args, Debug)]
pub struct ImportBorgArgs {
    /// Only borg archives whose names match this glob (borg's -a).
    #[arg(short = 'a', long = "glob-archives", value_name = "GLOB")]
    pub glob: Option<String>,
    /// Repository compression, as for `create`.
    #[arg(short = 'C', long, value_name = "SPEC", default_value = strata::compress::DEFAULT_SPEC)]
    pub compression: String,
    /// Show what would be imported and skipped; write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Show a live progress line for each archive.
    #[arg(short, long)]
    pub progress: bool,
    /// Print each member as it is imported.
    #[arg(long)]
    pub list: bool,
    /// Print borg's statistics table after each archive.
    #[arg(short, long)]
    pub stats: bool,
    /// Print a JSON array on standard output: one object per imported
    /// archive, as `import-tar --json` prints it.
    #[arg(long)]
    pub json: bool,
    /// The borg program.
    #[arg(long, value_name = "PATH", default_value = "borg", env = "STRATA_BORG")]
    pub borg: String,
    /// The borg repository (as borg names it; BORG_PASSPHRASE,
    /// BORG_PASSCOMMAND, BORG_RSH... are passed to borg).
    pub borg_repo: String,
    /// The strata repository to import into.
    pub repo: String,
}

pub fn run(a: ImportBorgArgs, lock_wait: u64) -> Result<i32> {
    let borg = Borg {
        program: a.borg.clone(),
        repo: a.borg_repo.clone(),
    };
    let archives = borg.list(a.glob.as_deref())?;
    let loc = Location::parse(&a.repo)?;
    let lock = if a.dry_run {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    let mut repo = common::open(&loc, lock, lock_wait, true)?;
    let plans = plan(&repo, &archives)?;
    let todo = plans.iter().filter(|(_, p)| *p == Plan::Import).count();
    let mut warnings = 0u64;
    for (b, p) in &plans {
        match p {
            Plan::Import if a.dry_run => eprintln!("would import {}", b.name),
            Plan::Import => {}
            Plan::AlreadyImported => eprintln!("{}: already imported, skipped", b.name),
            Plan::NameTaken => {
                warnings += 1;
                eprintln!(
                    "strata: warning: {}: an archive of that name exists and was not imported from borg archive {}; skipped (rename one of them to import it)",
                    b.name,
                    &b.id[..b.id.len().min(12)]
                );
            }
            Plan::BadName(why) => {
                warnings += 1;
                eprintln!("strata: warning: borg archive skipped: {why}");
            }
        }
    }
    if a.dry_run {
        eprintln!(
            "{todo} of {} borg archives would be imported (dry run: nothing written)",
            plans.len()
        );
        return Ok(code(warnings));
    }
    if todo > 0 {
        eprintln!(
            "note: borg's export-tar writes GNU tar: modification times in whole seconds, no xattrs or ACLs (docs/migrating-from-borg.md)"
        );
    }
    let mut json = Vec::new();
    let base = BuildOptions {
        compression: Compression::parse(&a.compression)?,
        threads: common::threads(),
        ..BuildOptions::default()
    };
    let started = std::time::Instant::now();
    let (mut done, mut bytes) = (0usize, 0u64);
    for (b, _) in plans.iter().filter(|(_, p)| *p == Plan::Import) {
        let info = borg.info(&b.name)?;
        eprintln!("[{}/{todo}] importing {}", done + 1, b.name);
        let mut term = Terminal::new(a.list, a.progress, "imported");
        let r = import_one(&mut repo, &borg, &info, &base, &mut term);
        term.finish();
        let (r, borg_warning) = r?;
        if let Some(w) = borg_warning {
            warnings += 1;
            eprintln!("strata: warning: {w}");
        }
        warnings += r.warnings;
        bytes += r.result.archive.stats.original_size;
        done += 1;
        if a.json {
            json.push(super::cmd_tar::json_of(&repo, &r));
        }
        super::cmd_tar::report(&repo, &r, false, a.stats)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "imported {done} archive{} ({}) in {secs:.1} s",
        if done == 1 { "" } else { "s" },
        size(bytes)
    );
    Ok(code(warnings))
}

fn code(warnings: u64) -> i32 {
    if warnings > 0 {
        super::EXIT_WARNING
    } else {
        super::EXIT_OK
    }
}
