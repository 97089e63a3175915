//! `strata demo`: the whole round trip on an embedded sample, in a temp dir.

use super::common::size;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use strata::archive::Archive;
use strata::archive::compare::compare_trees;
use strata::archive::create::{CreateOptions, NoObserver, create};
use strata::archive::extract::{ExtractOptions, extract};
use strata::archive::patterns::Excludes;
use strata::backend::local::LocalBackend;
use strata::chunker::ChunkerParams;
use strata::compress::Compression;
use strata::crypto::keyfile::KdfParams;
use strata::crypto::{Cipher, Mode};
use strata::repo::client::ClientDirs;
use strata::repo::{InitOptions, OpenOptions, Passphrase, Repository, init};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the demo directory instead of deleting it at the end.
    #[arg(long)]
    pub keep: bool,
}

struct DemoPass;
impl Passphrase for DemoPass {
    fn get(&self, _new: bool) -> strata::Result<Vec<u8>> {
        Ok(b"correct horse battery staple".to_vec())
    }
}

pub fn run(a: DemoArgs) -> Result<i32> {
    let tmp = tempfile::Builder::new().prefix("strata-demo-").tempdir()?;
    let root = tmp.path();
    let (src, repo_dir, restore) = (root.join("data"), root.join("repo"), root.join("restore"));
    println!("strata demo in {}\n", root.display());
    make_sample(&src)?;
    let dirs = ClientDirs {
        cache: root.join("cache"),
        keys: root.join("keys"),
    };
    let backend: Arc<dyn strata::backend::Backend> = Arc::new(LocalBackend::new(&repo_dir));
    let opts = InitOptions {
        mode: Mode::Repokey,
        cipher: Cipher::default_for_cpu(),
        chunker: ChunkerParams::default(),
        kdf_cost: KdfParams::default_cost(),
        pack_size: strata::repo::config::DEFAULT_PACK_SIZE,
        append_only: false,
    };
    let cfg = init(backend.as_ref(), &opts, &DemoPass, &dirs)?;
    println!(
        "1. init      repokey repository, {} ({})",
        cfg.cipher.map(|c| c.name()).unwrap_or("-"),
        repo_dir.display()
    );
    let open = || {
        Repository::open(
            backend.clone(),
            &OpenOptions {
                lock: strata::repo::LockMode::Exclusive,
                lock_wait: Duration::from_secs(1),
                passphrase: &DemoPass,
                dirs: dirs.clone(),
                load_index: true,
                repair: false,
                lock_notice: None,
            },
        )
    };
    let mut repo = open()?;
    let first = create(&mut repo, &create_opts("monday", &src), &mut NoObserver)?;
    let s = first.archive.stats;
    println!(
        "2. create    monday: {} files, {} original, {} stored after dedup+compression, {:.2} s",
        s.files,
        size(s.original_size),
        size(s.deduplicated_size),
        first.seconds
    );
    std::fs::write(src.join("notes/today.txt"), "a new note for tuesday\n")?;
    let second = create(&mut repo, &create_opts("tuesday", &src), &mut NoObserver)?;
    let s = second.archive.stats;
    println!(
        "3. create    tuesday after one new file: {} original, only {} new in the repository",
        size(s.original_size),
        size(s.deduplicated_size)
    );
    for r in &repo.manifest().archives {
        println!(
            "4. list      {:<10} {} files  {}",
            r.name,
            r.stats.files,
            super::common::time(&r.time)
        );
    }
    drop(repo);
    let repo = open()?;
    let archive = Archive::find(&repo, "tuesday")?;
    let xo = ExtractOptions {
        dest: restore.clone(),
        paths: vec![],
        strip_components: 0,
        sparse: false,
        numeric_ids: false,
        dry_run: false,
        threads: super::common::threads(),
    };
    let r = extract(&repo, &archive, &xo, &mut NoObserver)?;
    println!(
        "5. extract   tuesday: {} items, {} into {}",
        r.files,
        size(r.bytes),
        restore.display()
    );
    let restored = restore.join(
        strata::archive::create::archive_path(&src)
            .iter()
            .map(|&b| b as char)
            .collect::<String>(),
    );
    let diffs = compare_trees(&src, &restored)?;
    if !diffs.is_empty() {
        bail!("restore differs from the source: {}", diffs.join("; "));
    }
    println!(
        "6. verify    restore is identical to the source: contents, modes, owners, times (ns), links, xattrs"
    );
    drop(repo);
    replica_tour(root, &backend, &dirs, &src)?;
    let repo = open()?;
    println!("\n{}", super::cmd_info::sizes_table(&repo, None));
    if a.keep {
        let kept = tmp.keep();
        println!(
            "kept {} (passphrase: correct horse battery staple)",
            kept.display()
        );
    }
    Ok(super::EXIT_OK)
}

/// Steps 7 and 8: the off-site tier. The repository is replicated, as
/// ciphertext, into an unencrypted "Pi" repository, then restored straight
/// out of that replica with nothing but the passphrase.
fn replica_tour(
    root: &Path,
    source: &Arc<dyn strata::backend::Backend>,
    dirs: &ClientDirs,
    src: &Path,
) -> Result<()> {
    let pi_backend: Arc<dyn strata::backend::Backend> =
        Arc::new(LocalBackend::new(root.join("pi")));
    let none = InitOptions {
        mode: Mode::None,
        cipher: Cipher::default_for_cpu(),
        chunker: ChunkerParams::default(),
        kdf_cost: KdfParams::default_cost(),
        pack_size: strata::repo::config::DEFAULT_PACK_SIZE,
        append_only: false,
    };
    init(pi_backend.as_ref(), &none, &DemoPass, dirs)?;
    let open_pi = |lock| {
        Repository::open(
            pi_backend.clone(),
            &OpenOptions {
                lock,
                lock_wait: Duration::from_secs(1),
                passphrase: &DemoPass,
                dirs: dirs.clone(),
                load_index: true,
                repair: false,
                lock_notice: None,
            },
        )
    };
    let mut pi = open_pi(strata::repo::LockMode::Exclusive)?;
    let r = strata::ops::replicate::replicate(
        source.clone(),
        &mut pi,
        &strata::ops::replicate::ReplicateOptions {
            repo_name: "repo".into(),
            archive_name: None,
            compression: Compression::parse("auto,lz4")?,
            dry_run: false,
            verify: true,
            threads: super::common::threads(),
            lock_wait: Duration::from_secs(1),
            lock_notice: &|_| {},
            command_line: vec!["strata".into(), "demo".into()],
        },
        &mut NoObserver,
    )?;
    println!(
        "7. replicate repo → pi: archive {} holds the repository's {} files as ciphertext (no key on the pi), verified",
        r.archive_name, r.files
    );
    drop(pi);
    let pi = open_pi(strata::repo::LockMode::Shared)?;
    let nested = strata::ops::replicate::open_replica(pi, "repo", None)?;
    let fresh = ClientDirs {
        cache: root.join("new-machine-cache"),
        keys: dirs.keys.clone(),
    };
    let from_pi = Repository::open(
        Arc::new(nested),
        &OpenOptions {
            lock: strata::repo::LockMode::Shared,
            lock_wait: Duration::from_secs(1),
            passphrase: &DemoPass,
            dirs: fresh,
            load_index: true,
            repair: false,
            lock_notice: None,
        },
    )?;
    let dest = root.join("restore-from-pi");
    let archive = Archive::find(&from_pi, "tuesday")?;
    extract(
        &from_pi,
        &archive,
        &ExtractOptions {
            dest: dest.clone(),
            paths: vec![],
            strip_components: 0,
            sparse: false,
            numeric_ids: false,
            dry_run: false,
            threads: super::common::threads(),
        },
        &mut NoObserver,
    )?;
    let restored = dest.join(
        strata::archive::create::archive_path(src)
            .iter()
            .map(|&b| b as char)
            .collect::<String>(),
    );
    let diffs = compare_trees(src, &restored)?;
    if !diffs.is_empty() {
        bail!("the restore from the replica differs: {}", diffs.join("; "));
    }
    println!(
        "8. restore   tuesday straight out of the pi's replica, with only the passphrase: identical to the source\n            (the same from the command line: strata extract --replica PI repo::tuesday)"
    );
    Ok(())
}

fn create_opts(name: &str, src: &Path) -> CreateOptions {
    CreateOptions {
        name: name.into(),
        paths: vec![src.to_path_buf()],
        stdin_name: "stdin".into(),
        streams: Vec::new(),
        compression: Compression::default(),
        comment: "strata demo".into(),
        excludes: Excludes::default(),
        exclude_caches: false,
        exclude_if_present: vec![],
        one_file_system: false,
        dry_run: false,
        numeric_ids: false,
        threads: super::common::threads(),
        command_line: vec!["strata".into(), "demo".into()],
    }
}

/// A small tree with the awkward cases: links, empty things, a big file.
fn make_sample(src: &Path) -> Result<()> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    std::fs::create_dir_all(src.join("notes")).context("creating the sample tree")?;
    std::fs::create_dir_all(src.join("empty-dir"))?;
    std::fs::create_dir_all(src.join("photos/2026"))?;
    for i in 0..20 {
        std::fs::write(
            src.join(format!("notes/note-{i:02}.txt")),
            format!("note {i}\n").repeat(200 + i * 50),
        )?;
    }
    let mut big = vec![0u8; 6 * 1024 * 1024];
    blake3::Hasher::new()
        .update(b"demo")
        .finalize_xof()
        .fill(&mut big);
    std::fs::write(src.join("photos/2026/holiday.raw"), &big)?;
    std::fs::write(src.join("photos/2026/holiday-copy.raw"), &big)?;
    std::fs::write(src.join("empty.txt"), b"")?;
    symlink("notes/note-01.txt", src.join("latest-note"))?;
    symlink("does-not-exist", src.join("dangling"))?;
    std::fs::hard_link(
        src.join("notes/note-02.txt"),
        src.join("hardlink-to-note-02"),
    )?;
    let script = src.join("backup.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nstrata create --stats repo::'{hostname}-{now}' ~\n",
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750))?;
    Ok(())
}
