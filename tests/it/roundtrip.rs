use crate::util::*;
use std::os::unix::fs::MetadataExt;

#[test]
fn every_kind_of_entry_round_trips_exactly() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init(&["--chunker-params", "64K,256K,1M"]);
    let out = env.ok(&[
        "create",
        "--json",
        &format!("{}::a1", env.repo()),
        src.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["archive"]["name"], "a1");
    assert!(v["archive"]["stats"]["nfiles"].as_u64().unwrap() >= 20);
    let dest = env.path("restore");
    std::fs::create_dir(&dest).unwrap();
    env.cmd()
        .args(["extract", "--sparse", &format!("{}::a1", env.repo())])
        .current_dir(&dest)
        .assert()
        .success();
    let back = restored(&dest, &src);
    assert_same_tree(&src, &back);
    // hard links are links again, sparse files keep their holes
    let (a, b) = (
        std::fs::metadata(back.join("hard-a")).unwrap(),
        std::fs::metadata(back.join("dir/sub/hard-c")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 3);
    let sparse = std::fs::metadata(back.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), 10 << 20);
    assert!(
        sparse.blocks() * 512 < 4 << 20,
        "holes were filled: {} blocks",
        sparse.blocks()
    );
}

#[test]
fn extracting_over_an_earlier_restore_puts_back_every_entry() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init(&["--chunker-params", "64K,256K,1M"]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    let dest = env.path("restore");
    std::fs::create_dir(&dest).unwrap();
    let extract = || {
        env.cmd()
            .args(["extract", &format!("{}::a", env.repo())])
            .current_dir(&dest)
            .assert()
            .success();
    };
    extract();
    let back = restored(&dest, &src);
    assert_same_tree(&src, &back);
    // Whatever is in an entry's place now is replaced by the entry: a
    // changed file, a symlink where a file was (pointing outside), an
    // empty directory where a file was, a file where a symlink and a FIFO
    // were, a shorter file where a large one was.
    let outside = env.path("outside");
    std::fs::write(&outside, b"must stay\n").unwrap();
    std::fs::write(back.join("dir/small.txt"), b"changed since\n").unwrap();
    std::fs::remove_file(back.join("hard-a")).unwrap();
    std::os::unix::fs::symlink(&outside, back.join("hard-a")).unwrap();
    std::fs::remove_file(back.join("empty-file")).unwrap();
    std::fs::create_dir(back.join("empty-file")).unwrap();
    std::fs::remove_file(back.join("dangling")).unwrap();
    std::fs::write(back.join("dangling"), b"a file now\n").unwrap();
    std::fs::remove_file(back.join("fifo")).unwrap();
    std::fs::write(back.join("fifo"), b"a file now\n").unwrap();
    std::fs::write(back.join("dir/sub/big.bin"), b"short").unwrap();
    extract();
    assert_same_tree(&src, &back);
    assert_eq!(std::fs::read(&outside).unwrap(), b"must stay\n");
}

#[test]
fn unchanged_files_come_from_the_files_cache_and_dedup() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init(&[]);
    let target = |n: &str| format!("{}::{n}", env.repo());
    env.ok(&["create", &target("one"), src.to_str().unwrap()]);
    // The cache does not trust files whose timestamps are the newest of a
    // run (they may change again within the same clock tick); a marker
    // written after the first run is newer than every file of make_tree.
    std::fs::write(src.join("marker"), b"newest\n").unwrap();
    env.ok(&["create", &target("one-b"), src.to_str().unwrap()]);
    let out = env.run(&["create", "--list", &target("two"), src.to_str().unwrap()]);
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stderr);
    assert!(
        listing.contains("U ")
            && listing
                .lines()
                .any(|l| l.ends_with("dir/sub/big.bin") && l.starts_with('U')),
        "{listing}"
    );
    std::fs::write(src.join("dir/small.txt"), b"changed\n").unwrap();
    let out = env.run(&[
        "create",
        "--list",
        "--json",
        &target("three"),
        src.to_str().unwrap(),
    ]);
    let listing = String::from_utf8_lossy(&out.stderr);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("M ") && l.ends_with("dir/small.txt")),
        "{listing}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // only the changed file and metadata are new
    assert!(
        v["archive"]["stats"]["deduplicated_size"].as_u64().unwrap() < 64 * 1024,
        "{v}"
    );
    let names = env.ok(&["list", "--short", &env.repo()]);
    assert_eq!(names, "one\none-b\ntwo\nthree\n");
    let dest = env.path("r3");
    std::fs::create_dir(&dest).unwrap();
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &target("three"),
    ]);
    assert_same_tree(&src, &restored(&dest, &src));
}

#[test]
fn stdin_backup_and_placeholders() {
    let env = Env::new();
    env.init(&[]);
    let data = random("dump", 5 << 20);
    env.cmd()
        .args([
            "create",
            "--stdin-name",
            "db.sql",
            &format!("{}::db-{{utcnow:%Y}}-{{user}}", env.repo()),
            "-",
        ])
        .write_stdin(data.clone())
        .assert()
        .success();
    let name = env.ok(&["list", "--short", &env.repo()]);
    let year = chrono::Utc::now().format("%Y").to_string();
    assert_eq!(name.trim(), format!("db-{year}-root"));
    let dest = env.path("out");
    std::fs::create_dir(&dest).unwrap();
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::{}", env.repo(), name.trim()),
    ]);
    assert_eq!(std::fs::read(dest.join("db.sql")).unwrap(), data);
}

#[test]
fn excludes_and_partial_extract() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    std::fs::create_dir_all(src.join("cache-dir")).unwrap();
    std::fs::write(
        src.join("cache-dir/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    std::fs::create_dir_all(src.join("skip-me")).unwrap();
    std::fs::write(src.join("skip-me/.nobackup"), b"").unwrap();
    std::fs::write(env.path("excludes"), b"# comment\n*.img\n").unwrap();
    env.init(&[]);
    let s = src.to_str().unwrap();
    env.ok(&[
        "create",
        "-e",
        "*/dir/sub",
        "--exclude-from",
        env.path("excludes").to_str().unwrap(),
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        &format!("{}::x", env.repo()),
        s,
    ]);
    let items = env.ok(&["list", "--short", &format!("{}::x", env.repo())]);
    for gone in ["dir/sub", "sparse.img", "cache-dir", "skip-me"] {
        assert!(
            !items.lines().any(|l| l.ends_with(gone)),
            "{gone} not excluded:\n{items}"
        );
    }
    assert!(items.lines().any(|l| l.ends_with("dir/small.txt")));
    // extract one subtree with the leading components stripped
    let dest = env.path("part");
    std::fs::create_dir(&dest).unwrap();
    let rel = src.strip_prefix("/").unwrap().join("dir");
    let depth = rel.components().count().to_string();
    env.ok(&[
        "extract",
        "--strip-components",
        &depth,
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::x", env.repo()),
        rel.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(dest.join("small.txt")).unwrap(),
        b"hello strata\n"
    );
    // hard-b's first name (hard-a) was not extracted: the data still comes back
    assert_eq!(
        std::fs::read(dest.join("hard-b")).unwrap(),
        b"hard linked content\n"
    );
    assert!(!dest.join("hard-a").exists());
}

#[test]
fn list_and_info_outputs() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init(&[]);
    for n in ["web-1", "db-1", "web-2"] {
        env.ok(&[
            "create",
            &format!("{}::{n}", env.repo()),
            src.to_str().unwrap(),
        ]);
    }
    assert_eq!(
        env.ok(&["list", "--short", "-a", "web-*", &env.repo()]),
        "web-1\nweb-2\n"
    );
    assert_eq!(
        env.ok(&["list", "--short", "--last", "1", &env.repo()]),
        "web-2\n"
    );
    assert_eq!(
        env.ok(&[
            "list",
            "--short",
            "--sort-by",
            "name",
            "--first",
            "1",
            &env.repo()
        ]),
        "db-1\n"
    );
    let lines = env.ok(&["list", "--json-lines", &format!("{}::db-1", env.repo())]);
    let small = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["path"].as_str().unwrap().ends_with("dir/small.txt"))
        .unwrap();
    assert_eq!(small["size"], 13);
    assert_eq!(small["mtime_ns"], 1_600_000_000_123_456_789i64);
    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["info", "--json", &format!("{}::web-2", env.repo())]))
            .unwrap();
    assert_eq!(info["archives"][0]["name"], "web-2");
    assert_eq!(info["repository"]["archives"], 3);
    let text = env.ok(&["info", &env.repo()]);
    assert!(
        text.contains("All archives:") && text.contains("Unique chunks"),
        "{text}"
    );
    let long = env.ok(&["list", &format!("{}::db-1", env.repo())]);
    assert!(
        long.lines()
            .any(|l| l.starts_with("-rwsr-xr-x") && l.ends_with("setuid-tool")),
        "{long}"
    );
}

/// Waits until `path`'s ctime is older than the files cache's racy margin
/// (100 ms), so the next `create` caches it.
fn wait_cacheable(path: &std::path::Path) {
    wait_for("ctime older than the racy margin", || {
        let m = std::fs::symlink_metadata(path).unwrap();
        let ctime_ns = m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128;
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        now_ns - ctime_ns > 200_000_000
    });
}

/// An unchanged file cached without xattrs skips `listxattr` (issue 15,
/// 1M files); setting or removing an xattr changes ctime, so the next
/// backup still sees it. Guards the files cache's `xattrs` flag.
#[test]
fn files_cache_sees_xattrs_added_and_removed() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let f = src.join("f");
    std::fs::write(&f, b"content\n").unwrap();
    env.init(&[]);
    let target = |n: &str| format!("{}::{n}", env.repo());
    let restore = |n: &str| {
        let dest = env.path(&format!("r-{n}"));
        std::fs::create_dir(&dest).unwrap();
        env.ok(&["extract", "--target", dest.to_str().unwrap(), &target(n)]);
        restored(&dest, &src).join("f")
    };
    let listed = |n: &str| {
        let out = env.run(&["create", "--list", &target(n), src.to_str().unwrap()]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    wait_cacheable(&f);
    env.ok(&["create", &target("plain"), src.to_str().unwrap()]);
    assert!(
        listed("plain-again")
            .lines()
            .any(|l| l.starts_with("U ") && l.ends_with("/f"))
    );
    xattr::set(&f, "user.note", b"added later").unwrap();
    let l = listed("added");
    assert!(
        l.lines().any(|l| l.starts_with("M ") && l.ends_with("/f")),
        "{l}"
    );
    assert_eq!(
        xattr::get(restore("added"), "user.note")
            .unwrap()
            .as_deref(),
        Some(&b"added later"[..])
    );
    // cached with its xattr, then unchanged: still stored
    wait_cacheable(&f);
    env.ok(&["create", &target("with"), src.to_str().unwrap()]);
    let l = listed("with-again");
    assert!(
        l.lines().any(|l| l.starts_with("U ") && l.ends_with("/f")),
        "{l}"
    );
    assert_eq!(
        xattr::get(restore("with-again"), "user.note")
            .unwrap()
            .as_deref(),
        Some(&b"added later"[..])
    );
    xattr::remove(&f, "user.note").unwrap();
    env.ok(&["create", &target("removed"), src.to_str().unwrap()]);
    assert_eq!(xattr::get(restore("removed"), "user.note").unwrap(), None);
    assert_same_tree(&src, &restored(&env.path("r-removed"), &src));
}
