//! The command line: parses, calls a layer, prints. Exit codes: 0 ok,
//! 1 warnings, 2 error.

mod cmd_check;
mod cmd_compact;
mod cmd_create;
mod cmd_daemon;
mod cmd_delete;
mod cmd_diff;
mod cmd_drill;
mod cmd_extract;
mod cmd_import_borg;
mod cmd_info;
mod cmd_init;
mod cmd_key;
mod cmd_list;
mod cmd_mount;
mod cmd_node;
mod cmd_prune;
mod cmd_replicas;
mod cmd_replicate;
mod cmd_restore_repo;
mod cmd_selftest;
mod cmd_serve;
mod cmd_tar;
mod cmd_web;
pub mod common;
mod demo;
mod filters;
mod progress;

use clap::{Parser, Subcommand};

pub const EXIT_OK: i32 = 0;
pub const EXIT_WARNING: i32 = 1;
pub const EXIT_ERROR: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Deduplicating, compressing, encrypting backup with an off-site tier",
    long_about = "strata backs up file trees into repositories: deduplicated by content-defined \
chunks, compressed, and encrypted on the client (AES-256-GCM or ChaCha20-Poly1305, keys derived \
with Argon2id). Repository files are immutable once written, so a crash at any moment leaves a \
valid repository.\n\nRepositories are named REPO: a path, ssh://user@host[:port]/path (or \
user@host:path), or s3://bucket/prefix (endpoint, region and keys from STRATA_S3_ENDPOINT, \
AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials). Archives are \
REPO::ARCHIVE; with STRATA_REPO set, ::ARCHIVE is enough. Passphrases come from STRATA_PASSPHRASE, STRATA_PASSCOMMAND \
or a prompt.\n\nExit codes: 0 success, 1 warning (some files could not be read), 2 error.",
    after_help = "Start with `strata demo` for a guided tour, or:\n  strata init /backup/repo\n  strata create --stats /backup/repo::'{hostname}-{now}' ~/\n  strata list /backup/repo\n  strata extract /backup/repo::ARCHIVE"
)]
pub struct Cli {
    /// Wait up to SECONDS for another process's lock on the repository.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 1)]
    pub lock_wait: u64,
    /// Read an older manifest generation (see `list --generations`): the
    /// archive list as it was then, e.g. before a mistaken prune.
    #[arg(long, global = true, value_name = "N")]
    pub generation: Option<u64>,
    /// Read the repositories named on the command line from a replica:
    /// REPO is then the repository's name (the host) inside replica
    /// archives of TIER, and ARCHIVE picks the night (default: the newest
    /// replica of REPO). E.g. `strata list --replica
    /// ssh://pi-family/mnt/usb/strata/offsite knode01`.
    #[arg(long, global = true, value_name = "TIER[::ARCHIVE]")]
    pub replica: Option<String>,
    /// Like OpenSSH's StrictHostKeyChecking=accept-new for the built-in SSH
    /// client: record the host key of a server not in known_hosts yet (a
    /// changed key is still refused). Also STRATA_SSH_ACCEPT_NEW=1.
    #[arg(long, global = true)]
    pub accept_new: bool,
    /// The strata program on the server of ssh:// repositories.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "STRATA_REMOTE_PATH",
        default_value = "strata"
    )]
    pub remote_path: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new, empty repository.
    Init(cmd_init::InitArgs),
    /// Back up files into a new archive.
    Create(cmd_create::CreateArgs),
    /// Restore files from an archive into the current directory.
    Extract(cmd_extract::ExtractArgs),
    /// Import a tar file (plain, gzip, zstd, xz) as a new archive.
    ImportTar(cmd_tar::ImportTarArgs),
    /// Write an archive as a tar file (plain, gzip, zstd, xz) or to stdout.
    ExportTar(cmd_tar::ExportTarArgs),
    /// Import the archives of a borg repository (through `borg export-tar`).
    ImportBorg(cmd_import_borg::ImportBorgArgs),
    /// List archives of a repository, or the contents of an archive.
    List(cmd_list::ListArgs),
    /// Show statistics of a repository or archive.
    Info(cmd_info::InfoArgs),
    /// Browse a repository or an archive as a read-only file system.
    Mount(cmd_mount::MountArgs),
    /// Unmount what `strata mount` mounted.
    Umount(cmd_mount::UmountArgs),
    /// Verify a repository's structure, and with --verify-data every byte.
    Check(cmd_check::CheckArgs),
    /// Delete archives (their space is freed by `compact`).
    Delete(cmd_delete::DeleteArgs),
    /// Show what changed between two archives.
    Diff(cmd_diff::DiffArgs),
    /// Free the space of data no archive uses any more.
    Compact(cmd_compact::CompactArgs),
    /// Delete archives not kept by the retention rules (then `compact`).
    Prune(cmd_prune::PruneArgs),
    /// Put archives of an older manifest generation back (after a mistaken
    /// delete or prune, while their data is still there).
    Undelete(cmd_delete::UndeleteArgs),
    /// Rename an archive.
    Rename(cmd_delete::RenameArgs),
    /// Export, import, or change the passphrase of a repository key.
    Key(cmd_key::KeyArgs),
    /// Copy repositories, as ciphertext, into archives of off-site repositories.
    Replicate(cmd_replicate::ReplicateArgs),
    /// List which tiers hold which nights (replicas) of a host.
    Replicas(cmd_replicas::ReplicasArgs),
    /// Copy a repository (a replica, usually) into a new location, verified.
    RestoreRepo(cmd_restore_repo::RestoreRepoArgs),
    /// Restore a sample of a host's files from every tier and check them.
    Drill(cmd_drill::DrillArgs),
    /// Run the configured jobs on their schedules (see docs/config.md).
    Daemon(cmd_daemon::DaemonArgs),
    /// Run the configured backup jobs (or the named jobs) once, now.
    Backup(cmd_daemon::BackupArgs),
    /// Show every configured job: last run, outcome, next run.
    Status(cmd_daemon::StatusArgs),
    /// Check the configuration file.
    Config(cmd_daemon::ConfigArgs),
    /// Print (or write for node_exporter) the Prometheus metrics.
    Metrics(cmd_daemon::MetricsArgs),
    /// Manage the web page's users and API tokens.
    Web(cmd_web::WebArgs),
    /// Serve repositories to clients over SSH (an authorized_keys forced command).
    Serve(cmd_serve::ServeArgs),
    /// Remove all locks of a repository (only when no strata process uses it).
    BreakLock(cmd_init::BreakLockArgs),
    /// A guided tour: back up a sample tree, list, restore, verify, show stats.
    Demo(demo::DemoArgs),
    /// Check this build against known answers (crypto, chunker, compression,
    /// formats); --bench measures each primitive's speed.
    Selftest(cmd_selftest::SelftestArgs),
    /// Off-site nodes from the Raspberry Pi image: provision (central node)
    /// and firstboot (on the Pi).
    Node(cmd_node::NodeArgs),
}

/// Runs the command line; returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    common::set_remote_path(&cli.remote_path);
    common::set_generation(cli.generation);
    common::set_replica(cli.replica.clone());
    common::set_lock_wait(cli.lock_wait);
    if cli.accept_new {
        strata::backend::remote::ssh::force_accept_new();
    }
    let result = match cli.command {
        Command::Init(a) => cmd_init::run(a),
        Command::Create(a) => cmd_create::run(a, cli.lock_wait),
        Command::Extract(a) => cmd_extract::run(a, cli.lock_wait),
        Command::ImportTar(a) => cmd_tar::import(a, cli.lock_wait),
        Command::ExportTar(a) => cmd_tar::export(a, cli.lock_wait),
        Command::ImportBorg(a) => cmd_import_borg::run(a, cli.lock_wait),
        Command::List(a) => cmd_list::run(a, cli.lock_wait),
        Command::Info(a) => cmd_info::run(a, cli.lock_wait),
        Command::Mount(a) => cmd_mount::run(a, cli.lock_wait),
        Command::Umount(a) => cmd_mount::umount(a),
        Command::Check(a) => cmd_check::run(a, cli.lock_wait),
        Command::Delete(a) => cmd_delete::delete(a, cli.lock_wait),
        Command::Diff(a) => cmd_diff::run(a, cli.lock_wait),
        Command::Compact(a) => cmd_compact::run(a, cli.lock_wait),
        Command::Prune(a) => cmd_prune::run(a, cli.lock_wait),
        Command::Undelete(a) => cmd_delete::undelete(a, cli.lock_wait),
        Command::Rename(a) => cmd_delete::rename(a, cli.lock_wait),
        Command::Key(a) => cmd_key::run(a),
        Command::Replicate(a) => cmd_replicate::run(a, cli.lock_wait),
        Command::Replicas(a) => cmd_replicas::run(a, cli.lock_wait),
        Command::RestoreRepo(a) => cmd_restore_repo::run(a, cli.lock_wait),
        Command::Drill(a) => cmd_drill::run(a, cli.lock_wait),
        Command::Daemon(a) => cmd_daemon::daemon(a),
        Command::Backup(a) => cmd_daemon::backup(a),
        Command::Status(a) => cmd_daemon::status(a),
        Command::Config(a) => cmd_daemon::config(a),
        Command::Web(a) => cmd_web::web(a),
        Command::Metrics(a) => cmd_daemon::metrics(a),
        Command::Serve(a) => cmd_serve::run(a),
        Command::BreakLock(a) => cmd_init::break_lock(a),
        Command::Demo(a) => demo::run(a),
        Command::Node(a) => cmd_node::run(a),
        Command::Selftest(a) => cmd_selftest::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return EXIT_OK;
            }
            eprintln!("strata: error: {}", one_line(&e));
            EXIT_ERROR
        }
    }
}

/// Prints warnings; the exit code they make (0 or 1).
pub fn warn_all(warnings: &[String]) -> i32 {
    for w in warnings {
        eprintln!("strata: warning: {w}");
    }
    if warnings.is_empty() {
        EXIT_OK
    } else {
        EXIT_WARNING
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Context chain on one line, without repeating a cause already quoted.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out.replace('\n', " ")
}
