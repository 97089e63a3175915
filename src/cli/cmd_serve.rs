//! `strata serve`: the remote end of an SSH repository. Meant to be the
//! forced command of an authorized_keys line; every option is enforced here
//! and nothing the client sends can widen them.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use strata::backend::remote::server::{ServeOptions, serve};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Only repositories at or below PATH (repeatable). `/srv/a` does not
    /// allow `/srv/a-b`; symlinks are resolved before comparing.
    #[arg(long, value_name = "PATH")]
    pub restrict_to_path: Vec<PathBuf>,
    /// Only exactly this repository (repeatable).
    #[arg(long, value_name = "PATH")]
    pub restrict_to_repository: Vec<PathBuf>,
    /// Never delete or overwrite (lock files excepted): a stolen client
    /// key cannot destroy history.
    #[arg(long)]
    pub append_only: bool,
    /// Never write (lock files excepted).
    #[arg(long)]
    pub read_only: bool,
    /// Refuse writes that would grow the repository beyond SIZE (e.g. 500G).
    #[arg(long, value_name = "SIZE")]
    pub storage_quota: Option<String>,
}

pub fn run(a: ServeArgs) -> Result<i32> {
    let opts = ServeOptions {
        restrict_to_paths: a.restrict_to_path,
        restrict_to_repositories: a.restrict_to_repository,
        append_only: a.append_only,
        read_only: a.read_only,
        quota: a
            .storage_quota
            .as_deref()
            .map(strata::chunker::parse_size)
            .transpose()?,
    };
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    serve(
        &opts,
        std::io::BufReader::with_capacity(1 << 20, stdin),
        std::io::BufWriter::with_capacity(1 << 20, stdout),
    )?;
    Ok(super::EXIT_OK)
}
