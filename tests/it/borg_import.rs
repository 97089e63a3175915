//! import-borg against a real borg (Debian's borgbackup): every archive
//! restores as borg restores it; a second run imports nothing; --dry-run
//! writes nothing.

use crate::util::*;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use strata::archive::compare::{Fidelity, compare_trees_with};

const BORG_PASSPHRASE: &str = "borg passphrase";

fn borg(env: &Env) -> Command {
    assert!(
        Path::new("/usr/bin/borg").exists(),
        "borg is missing: apt-get install borgbackup (scripts/test.sh does)"
    );
    let mut c = Command::new("borg");
    c.env("BORG_BASE_DIR", env.path("borg-base"))
        .env("BORG_PASSPHRASE", BORG_PASSPHRASE)
        .env_remove("BORG_REPO")
        .current_dir(env.dir.path());
    c
}

fn borg_ok(env: &Env, args: &[&str]) -> String {
    let out = borg(env).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "borg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// strata import-borg with borg's environment.
fn import(env: &Env, extra: &[&str]) -> std::process::Output {
    let borg_repo = env.path("borg-repo");
    let mut c = env.cmd();
    c.env("BORG_BASE_DIR", env.path("borg-base"))
        .env("BORG_PASSPHRASE", BORG_PASSPHRASE)
        .arg("import-borg")
        .args(extra)
        .arg(&borg_repo)
        .arg(env.repo());
    c.output().unwrap()
}

/// Odd names, links, xattrs, a FIFO, empty directories, a mostly-zero
/// file and varied modification times.
fn make_borg_tree(root: &Path) {
    let raw = |b: &[u8]| root.join(std::ffi::OsStr::from_bytes(b));
    std::fs::create_dir_all(root.join("empty/nested-empty")).unwrap();
    std::fs::create_dir_all(root.join("dir with spaces")).unwrap();
    std::fs::write(raw(b"caf\xe9-latin1"), b"not utf-8\n").unwrap();
    std::fs::write(raw(b"line\nbreak"), b"newline in the name\n").unwrap();
    std::fs::write(root.join("-leading-dash"), b"dash\n").unwrap();
    std::fs::write(
        root.join("dir with spaces/file with spaces"),
        random("s", 70_000),
    )
    .unwrap();
    std::fs::write(root.join("data.bin"), random("data", 2 << 20)).unwrap();
    std::fs::hard_link(
        root.join("data.bin"),
        root.join("dir with spaces/data-link"),
    )
    .unwrap();
    std::os::unix::fs::symlink("data.bin", root.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/abs", root.join("abs-dangling")).unwrap();
    xattr::set(root.join("data.bin"), "user.origin", b"borg test").unwrap();
    mkfifo(&root.join("fifo"), 0o620);
    // mostly zeros: a 4 MiB hole between two small runs of data
    let f = std::fs::File::create(root.join("sparse-ish")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"end", 4 << 20).unwrap();
    drop(f);
    std::fs::write(root.join("owned"), b"owner 1234:5678\n").unwrap();
    rustix::fs::chownat(
        rustix::fs::CWD,
        root.join("owned"),
        Some(rustix::fs::Uid::from_raw(1234)),
        Some(rustix::fs::Gid::from_raw(5678)),
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    for (i, p) in ["data.bin", "-leading-dash", "rel-link", "empty", "owned"]
        .iter()
        .enumerate()
    {
        set_mtime(
            &root.join(p),
            1_000_000_000 + 86_400 * 365 * i as i64,
            (234_567_891 * i as i64) % 1_000_000_000,
        );
    }
}

/// What survives borg 1.x's export-tar (GNU tar): whole seconds, no
/// xattrs (docs/migrating-from-borg.md, "What carries over").
const BORG_TAR: Fidelity = Fidelity {
    whole_second_mtimes: true,
    xattrs: false,
};

fn list_json(env: &Env) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--json", &env.repo()])).unwrap();
    v["archives"].as_array().unwrap().clone()
}

fn repo_files(env: &Env) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = walkdir::WalkDir::new(env.path("repo"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().display().to_string(), e.metadata().unwrap().len()))
        .collect();
    out.sort();
    out
}

#[test]
fn borg_archives_import_exactly_resume_and_dry_run() {
    let env = Env::new();
    let src = env.path("src");
    make_borg_tree(&src);
    let borg_repo = env.path("borg-repo");
    borg_ok(
        &env,
        &["init", "-e", "repokey", borg_repo.to_str().unwrap()],
    );
    let target = |n: &str| format!("{}::{n}", borg_repo.display());
    borg_ok(
        &env,
        &[
            "create",
            "--comment",
            "first one",
            &target("host-2026-01-01"),
            "src",
        ],
    );
    std::fs::write(src.join("added later"), b"second archive\n").unwrap();
    std::fs::remove_file(src.join("-leading-dash")).unwrap();
    borg_ok(&env, &["create", &target("host-2026-01-02"), "src"]);
    std::fs::write(src.join("data.bin"), random("data2", 1 << 20)).unwrap();
    borg_ok(
        &env,
        &[
            "create",
            "--comment",
            "third",
            &target("other-2026-01-03"),
            "src",
        ],
    );
    env.init(&[]);

    // --dry-run: names what it would do, writes nothing
    let before = repo_files(&env);
    let out = import(&env, &["--dry-run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("would import").count(), 3, "{err}");
    assert_eq!(repo_files(&env), before);
    assert!(list_json(&env).is_empty());

    // -a: only the matching archive
    let out = import(&env, &["-a", "other-*"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<_> = list_json(&env)
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["other-2026-01-03"]);

    // the rest; the one already there is recognised
    let out = import(&env, &["--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("other-2026-01-03: already imported"), "{err}");
    let imported: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(imported.as_array().unwrap().len(), 2, "{imported}");

    // names, times, hosts and comments are borg's
    let borg_list: serde_json::Value = serde_json::from_str(&borg_ok(
        &env,
        &["list", "--json", borg_repo.to_str().unwrap()],
    ))
    .unwrap();
    let ours = list_json(&env);
    assert_eq!(ours.len(), 3);
    for b in borg_list["archives"].as_array().unwrap() {
        let name = b["name"].as_str().unwrap();
        let info: serde_json::Value =
            serde_json::from_str(&env.ok(&["info", "--json", &format!("{}::{name}", env.repo())]))
                .unwrap();
        let a = &info["archives"][0];
        let binfo: serde_json::Value =
            serde_json::from_str(&borg_ok(&env, &["info", "--json", &target(name)])).unwrap();
        let ba = &binfo["archives"][0];
        assert_eq!(a["comment"], ba["comment"], "{name}");
        assert_eq!(
            a["imported_from"].as_str(),
            Some(format!("borg:{}", ba["id"].as_str().unwrap()).as_str()),
            "{name}"
        );
        assert_eq!(a["hostname"], ba["hostname"], "{name}");
        assert_eq!(a["username"], ba["username"], "{name}");
        let borg_start = chrono::NaiveDateTime::parse_from_str(
            ba["start"].as_str().unwrap(),
            "%Y-%m-%dT%H:%M:%S%.f",
        )
        .unwrap()
        .and_local_timezone(chrono::Local)
        .unwrap();
        let ours_start =
            chrono::DateTime::parse_from_rfc3339(a["start"].as_str().unwrap()).unwrap();
        assert_eq!(ours_start, borg_start, "{name}");
    }

    // every archive restores as borg's own extract restores it
    for b in borg_list["archives"].as_array().unwrap() {
        let name = b["name"].as_str().unwrap();
        let bdir = env.path(&format!("borg-x/{name}"));
        std::fs::create_dir_all(&bdir).unwrap();
        let out = borg(&env)
            .args(["extract", &target(name)])
            .current_dir(&bdir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sdir = env.path(&format!("strata-x/{name}"));
        env.ok(&[
            "extract",
            "--target",
            sdir.to_str().unwrap(),
            &format!("{}::{name}", env.repo()),
        ]);
        let diffs = compare_trees_with(&bdir, &sdir, BORG_TAR).unwrap();
        assert!(diffs.is_empty(), "{name}:\n{}", diffs.join("\n"));
        assert!(
            sdir.join(std::ffi::OsStr::from_bytes(b"src/line\nbreak"))
                .exists()
        );
    }

    // resumable: nothing new, nothing written
    let before = repo_files(&env);
    let out = import(&env, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("already imported").count(), 3, "{err}");
    assert!(err.contains("imported 0 archives"), "{err}");
    assert_eq!(repo_files(&env), before);

    // a new borg archive: only it is imported
    std::fs::write(src.join("fourth"), b"4\n").unwrap();
    borg_ok(&env, &["create", &target("host-2026-01-04"), "src"]);
    let out = import(&env, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("[1/1] importing host-2026-01-04"), "{err}");
    assert_eq!(list_json(&env).len(), 4);

    // a strata archive of the same name that did not come from borg is
    // left alone, with a warning (exit code 1)
    env.ok(&[
        "create",
        &format!("{}::clash", env.repo()),
        src.to_str().unwrap(),
    ]);
    borg_ok(&env, &["create", &target("clash"), "src"]);
    let out = import(&env, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("clash: an archive of that name exists and was not imported from borg"),
        "{err}"
    );
    env.ok(&["check", &env.repo()]);
}

#[test]
fn a_failing_borg_commits_nothing() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x\n").unwrap();
    let borg_repo = env.path("borg-repo");
    borg_ok(
        &env,
        &["init", "-e", "repokey", borg_repo.to_str().unwrap()],
    );
    borg_ok(
        &env,
        &["create", &format!("{}::a", borg_repo.display()), "src"],
    );
    env.init(&[]);
    // the wrong passphrase: borg fails, strata says so in one line
    let out = env
        .cmd()
        .env("BORG_BASE_DIR", env.path("borg-base"))
        .env("BORG_PASSPHRASE", "wrong")
        .args(["import-borg", borg_repo.to_str().unwrap(), &env.repo()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("strata: error: `borg list --json"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // borg dies in the middle of export-tar: a stand-in borg that lists
    // and informs like borg, then writes half a tar and fails
    let fake = env.path("fake-borg");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \"$1\" in export-tar) head -c 700 {tar}; echo 'Connection closed by remote host' >&2; exit 2;; *) exec borg \"$@\";; esac\n",
            tar = env.path("half.tar").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tarf = env.path("half.tar");
    env.ok(&[
        "create",
        &format!("{}::seed", env.repo()),
        src.to_str().unwrap(),
    ]);
    env.ok(&[
        "export-tar",
        &format!("{}::seed", env.repo()),
        tarf.to_str().unwrap(),
    ]);
    let out = env
        .cmd()
        .env("BORG_BASE_DIR", env.path("borg-base"))
        .env("BORG_PASSPHRASE", BORG_PASSPHRASE)
        .args([
            "import-borg",
            "--borg",
            fake.to_str().unwrap(),
            borg_repo.to_str().unwrap(),
            &env.repo(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("Connection closed by remote host") || err.contains("truncated"),
        "{err}"
    );
    let names = env.ok(&["list", "--short", &env.repo()]);
    assert_eq!(names, "seed\n");
}
