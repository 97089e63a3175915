//! Finding, unlocking, exporting, importing and re-sealing key files.
//!
//! repokey repositories keep key files in `keys/` (normally one; during a
//! passphrase change a new file is written before the old one is removed,
//! so a crash leaves two valid keys, never none). keyfile repositories keep
//! one file per repository on the client.

use super::client::ClientDirs;
use super::config::RepoConfig;
use crate::backend::{Backend, FileKind};
use crate::crypto::Mode;
use crate::crypto::keyfile::{KeyFile, KeyPayload};
use crate::error::{Error, Result};

/// A key file and where it lives (a repository file name, or a client path).
pub struct FoundKey {
    pub name: String,
    pub key: KeyFile,
}

pub fn find(
    backend: &dyn Backend,
    config: &RepoConfig,
    dirs: &ClientDirs,
) -> Result<Vec<FoundKey>> {
    let location = backend.location();
    let found = match config.encryption {
        Mode::None => vec![],
        Mode::Keyfile => {
            let path = dirs.key_file(&config.id);
            let data = std::fs::read(&path).map_err(|_| Error::KeyMissing {
                repo: location.into(),
                hint: format!("this is a keyfile repository and {} is missing: import it with `strata key import`", path.display()),
            })?;
            vec![FoundKey {
                name: path.display().to_string(),
                key: KeyFile::from_json(&data, &path.display().to_string())?,
            }]
        }
        _ => {
            let mut v = Vec::new();
            for f in backend.list(FileKind::Key)? {
                let data = backend.read(FileKind::Key, &f.name)?;
                if let Ok(key) = KeyFile::from_json(&data, &f.name) {
                    v.push(FoundKey { name: f.name, key });
                }
            }
            if v.is_empty() {
                return Err(Error::KeyMissing {
                    repo: location.into(),
                    hint: "the repository's keys/ holds no readable key: restore it with `strata key import`".into(),
                });
            }
            v
        }
    };
    if found.iter().any(|k| k.key.repository_id != config.id) {
        return Err(Error::corrupt("a key file belongs to another repository"));
    }
    Ok(found)
}

/// Unlocks the repository's key with a passphrase; checks it against config.
pub fn unlock(
    backend: &dyn Backend,
    config: &RepoConfig,
    dirs: &ClientDirs,
    passphrase: &[u8],
) -> Result<(FoundKey, KeyPayload)> {
    let mut last = Error::WrongPassphrase(backend.location().into());
    for k in find(backend, config, dirs)? {
        match k.key.unlock(passphrase, backend.location()) {
            Ok(p) => {
                if p.mode != config.encryption || p.cipher != config.cipher {
                    return Err(Error::corrupt(
                        "config does not match the mode and cipher sealed in the key",
                    ));
                }
                return Ok((k, p));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Re-seals the key under a new passphrase: new file first, then the old
/// one is removed.
pub fn change_passphrase(
    backend: &dyn Backend,
    config: &RepoConfig,
    dirs: &ClientDirs,
    old: &[u8],
    new: &[u8],
    cost: (u32, u32, u32),
) -> Result<()> {
    let (found, payload) = unlock(backend, config, dirs, old)?;
    let sealed = KeyFile::seal(&payload, new, cost)?;
    store(backend, config, dirs, &sealed)?;
    if config.encryption != Mode::Keyfile {
        backend.delete(FileKind::Key, &found.name)?;
    }
    Ok(())
}

/// Stores a key file: a new name in `keys/`, or the client key path.
pub fn store(
    backend: &dyn Backend,
    config: &RepoConfig,
    dirs: &ClientDirs,
    key: &KeyFile,
) -> Result<()> {
    if key.repository_id != config.id {
        return Err(Error::invalid(format!(
            "this key belongs to repository {}, not {}",
            key.repository_id, config.id
        )));
    }
    if config.encryption == Mode::Keyfile {
        std::fs::create_dir_all(&dirs.keys)
            .map_err(|e| Error::io(format!("creating {}", dirs.keys.display()), e))?;
        // The one mutable client file: replaced atomically.
        return super::client::replace_file(&dirs.key_file(&config.id), &key.to_json());
    }
    let mut r = [0u8; 4];
    crate::crypto::random_bytes(&mut r)?;
    backend.write(
        FileKind::Key,
        &format!("repokey-{}", hex::encode(r)),
        &key.to_json(),
    )
}

/// The paper form: the key file's JSON as numbered hex lines, each with a
/// two-digit checksum so a typo is found at the line where it was made.
pub fn to_paper(key: &KeyFile) -> String {
    let data = serde_json::to_vec(key).unwrap_or_default();
    let mut out = format!("STRATA PAPER KEY v1 repository {}\n", key.repository_id);
    for (n, line) in data.chunks(16).enumerate() {
        let hexs: Vec<String> = line.chunks(2).map(hex::encode).collect();
        out.push_str(&format!(
            "{:04}: {} - {}\n",
            n + 1,
            hexs.join(" "),
            line_sum(n, line)
        ));
    }
    out
}

fn line_sum(n: usize, line: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&(n as u64).to_le_bytes());
    h.update(line);
    hex::encode(&h.finalize().as_bytes()[..1])
}

/// Parses the paper form (spaces and case are ignored).
pub fn from_paper(text: &str) -> Result<KeyFile> {
    let mut data = Vec::new();
    let mut n = 0;
    for raw in text.lines() {
        let l = raw.trim();
        if l.is_empty() || l.starts_with("STRATA PAPER KEY") {
            continue;
        }
        let bad = |why: &str| Error::invalid(format!("paper key line {}: {why}: `{l}`", n + 1));
        let (_, rest) = l.split_once(':').ok_or_else(|| bad("no `NNNN:`"))?;
        let (hexpart, sum) = rest
            .rsplit_once('-')
            .ok_or_else(|| bad("no `- CHECKSUM`"))?;
        let compact: String = hexpart
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_lowercase();
        let bytes = hex::decode(&compact).map_err(|_| bad("not hex"))?;
        if line_sum(n, &bytes) != sum.trim().to_lowercase() {
            return Err(bad("checksum mismatch (typo?)"));
        }
        data.extend_from_slice(&bytes);
        n += 1;
    }
    KeyFile::from_json(&data, "paper key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keyfile::KdfParams;

    #[test]
    fn paper_round_trip_and_typo_detected() {
        let p = KeyPayload {
            repository_id: "ab".repeat(32),
            mode: Mode::Repokey,
            cipher: None,
            master: "00".repeat(64),
        };
        let kf = KeyFile::seal(&p, b"pw", KdfParams::insecure_test_cost()).unwrap();
        let paper = to_paper(&kf);
        let back = from_paper(&paper).unwrap();
        assert_eq!(back.sealed, kf.sealed);
        let mut lines: Vec<String> = paper.lines().map(String::from).collect();
        let (num, rest) = lines[3].split_once(':').unwrap();
        let flipped = if rest.as_bytes()[1] == b'a' {
            rest.replacen('a', "b", 1)
        } else {
            format!(" a{}", &rest[2..])
        };
        let typo = format!("{num}:{flipped}");
        assert_ne!(typo, lines[3]);
        lines[3] = typo;
        let err = from_paper(&lines.join("\n")).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
    }
}
