use crate::util::*;

fn round_trip(env: &Env, init: &[&str]) {
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("secret.txt"),
        b"THE-PLAINTEXT-MARKER ".repeat(1000),
    )
    .unwrap();
    env.init(init);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    let dest = env.path("out");
    std::fs::create_dir_all(&dest).unwrap();
    env.ok(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::a", env.repo()),
    ]);
    assert_same_tree(&src, &restored(&dest, &src));
}

/// True if any repository file contains `needle`.
fn repo_contains(env: &Env, needle: &[u8]) -> bool {
    walkdir::WalkDir::new(env.repo())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .any(|e| {
            let data = std::fs::read(e.path()).unwrap();
            data.windows(needle.len()).any(|w| w == needle)
        })
}

#[test]
fn repokey_aes_and_chacha_hide_content() {
    for cipher in ["aes-256-gcm", "chacha20-poly1305"] {
        let env = Env::new();
        round_trip(&env, &["--encryption", "repokey", "--cipher", cipher]);
        assert!(
            !repo_contains(&env, b"THE-PLAINTEXT-MARKER"),
            "{cipher}: plaintext in repository"
        );
        assert!(
            !repo_contains(&env, b"secret.txt"),
            "{cipher}: file name in repository"
        );
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(env.path("repo/config")).unwrap()).unwrap();
        assert_eq!(cfg["cipher"], cipher);
    }
}

#[test]
fn keyfile_keeps_the_key_on_the_client() {
    let env = Env::new();
    round_trip(&env, &["--encryption", "keyfile"]);
    assert!(
        std::fs::read_dir(env.path("repo/keys"))
            .unwrap()
            .next()
            .is_none(),
        "key stored in the repository"
    );
    assert_eq!(std::fs::read_dir(env.path("keys")).unwrap().count(), 1);
    // without the key file the repository cannot be opened
    std::fs::remove_dir_all(env.path("keys")).unwrap();
    let out = env.run(&["list", &env.repo()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("key import"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn authenticated_and_none_store_plaintext_but_detect_tampering() {
    for mode in ["authenticated", "none"] {
        let env = Env::new();
        round_trip(&env, &["--encryption", mode]);
        // compression aside, the marker is readable: these modes do not encrypt
        assert!(env.run(&["list", &env.repo()]).status.success());
        // flip one byte in every pack: extraction must fail, not return garbage
        for e in walkdir::WalkDir::new(env.path("repo/data"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
        {
            let mut d = std::fs::read(e.path()).unwrap();
            d[10] ^= 0x40;
            std::fs::write(e.path(), d).unwrap();
        }
        let dest = env.path("tampered");
        std::fs::create_dir_all(&dest).unwrap();
        let out = env.run(&[
            "extract",
            "--target",
            dest.to_str().unwrap(),
            &format!("{}::a", env.repo()),
        ]);
        assert_eq!(out.status.code(), Some(2), "{mode}: tampering not detected");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("integrity") || err.contains("corrupt"),
            "{mode}: {err}"
        );
    }
}

#[test]
fn wrong_passphrase_is_one_clear_line() {
    let env = Env::new();
    env.init(&[]);
    let out = env
        .cmd()
        .env("STRATA_PASSPHRASE", "not it")
        .args(["list", &env.repo()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("wrong passphrase") && err.contains("STRATA_PASSPHRASE"),
        "{err}"
    );
    // STRATA_PASSCOMMAND works as well
    env.cmd()
        .env_remove("STRATA_PASSPHRASE")
        .env("STRATA_PASSCOMMAND", "echo 'test passphrase'")
        .args(["list", &env.repo()])
        .assert()
        .success();
}

#[test]
fn a_pack_swapped_for_another_is_rejected_not_misread() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        std::fs::write(src.join(format!("f{i}")), random(&format!("f{i}"), 900_000)).unwrap();
    }
    env.init(&[
        "--encryption",
        "authenticated",
        "--chunker-params",
        "64K,256K,1M",
        "--pack-size",
        "1M",
    ]);
    env.ok(&[
        "create",
        &format!("{}::a", env.repo()),
        src.to_str().unwrap(),
    ]);
    // the store puts one pack's bytes under another pack's name: every blob
    // now sits under an id and offset it was not sealed for
    let mut packs: Vec<_> = walkdir::WalkDir::new(env.path("repo/data"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let (small, big) = (
        packs[packs.len() - 2].clone(),
        packs[packs.len() - 1].clone(),
    );
    std::fs::copy(&small, &big).unwrap();
    let dest = env.path("out");
    std::fs::create_dir_all(&dest).unwrap();
    let out = env.run(&[
        "extract",
        "--target",
        dest.to_str().unwrap(),
        &format!("{}::a", env.repo()),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("authentication failed") || err.contains("corrupt") || err.contains("reading"),
        "{err}"
    );
    assert_eq!(
        env.run(&["check", "--verify-data", &env.repo()])
            .status
            .code(),
        Some(2)
    );
}
