//! Who may use the page: users with Argon2id password hashes, API tokens
//! (stored as BLAKE3 hashes: they are long and random, so a fast hash is
//! enough), sessions, and login rate limits. Files are read on use, so
//! `strata web passwd` takes effect without a restart.

use crate::error::{Error, Result};
use argon2::{PasswordHasher, PasswordVerifier};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A session unused this long is over.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Failed logins allowed per client address in `LOGIN_WINDOW`.
pub const LOGIN_FAILURES_PER_CLIENT: usize = 5;
/// Failed logins allowed from everyone together in `LOGIN_WINDOW` (a
/// guesser with many addresses).
pub const LOGIN_FAILURES_TOTAL: usize = 50;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(300);
/// Sessions kept at most; the oldest go first.
const MAX_SESSIONS: usize = 1000;

fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| Error::invalid(format!("random source: {e}")))?;
    Ok(hex::encode(b))
}

/// A user or token name: what a `NAME:HASH` line can hold.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// Reads `NAME:VALUE` lines (blank lines and `#` comments allowed).
pub fn read_entries(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Error::invalid(format!(
                "{}:{}: expected NAME:HASH",
                path.display(),
                n + 1
            )));
        };
        out.insert(name.to_string(), value.to_string());
    }
    Ok(out)
}

/// Sets (or with `None` removes) one entry, rewriting the file atomically
/// with mode 0600.
pub fn write_entry(path: &Path, name: &str, value: Option<&str>) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !valid_name(name) {
        return Err(Error::invalid(format!(
            "`{name}`: names are 1–64 letters, digits, '.', '_', '-', '@'"
        )));
    }
    let mut entries = match read_entries(path) {
        Ok(e) => e,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            BTreeMap::new()
        }
        Err(e) => return Err(e),
    };
    match value {
        Some(v) => entries.insert(name.to_string(), v.to_string()),
        None => entries.remove(name),
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(tmp.display().to_string(), e))?;
    for (n, v) in &entries {
        writeln!(f, "{n}:{v}").map_err(|e| Error::io(tmp.display().to_string(), e))?;
    }
    f.sync_all()
        .map_err(|e| Error::io(tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display().to_string(), e))
}

/// An Argon2id hash of `password` in the PHC string format.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::invalid(format!("random source: {e}")))?;
    argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::invalid(format!("hashing the password: {e}")))
}

pub fn verify_password(phc: &str, password: &str) -> bool {
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// A new API token (shown once) and the hash kept of it.
pub fn new_token() -> Result<(String, String)> {
    let token = format!("strata_{}", random_hex(32)?);
    let hash = token_hash(&token);
    Ok((token, hash))
}

pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// The name of the token `presented`, if it is in the tokens file.
pub fn check_token(tokens_file: &Path, presented: &str) -> Option<String> {
    let want = token_hash(presented);
    read_entries(tokens_file)
        .ok()?
        .into_iter()
        .find(|(_, h)| constant_time_eq(h.as_bytes(), want.as_bytes()))
        .map(|(n, _)| n)
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone)]
pub struct Session {
    pub user: String,
    /// Every POST made with this session's cookie must carry it.
    pub csrf: String,
    last_seen: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `user`: its id (the cookie) and CSRF token.
    pub fn create(&self, user: &str) -> Result<(String, String)> {
        let id = random_hex(32)?;
        let csrf = random_hex(32)?;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.last_seen.elapsed() < SESSION_IDLE);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                user: user.to_string(),
                csrf: csrf.clone(),
                last_seen: Instant::now(),
            },
        );
        Ok((id, csrf))
    }

    /// The live session with this id (and marks it used).
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get_mut(id)?;
        if s.last_seen.elapsed() >= SESSION_IDLE {
            map.remove(id);
            return None;
        }
        s.last_seen = Instant::now();
        Some(s.clone())
    }

    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// Times of recent failed logins.
type Failures = VecDeque<Instant>;

/// Failed logins per client and in total, over a sliding window.
#[derive(Default)]
pub struct LoginLimiter {
    state: Mutex<(HashMap<IpAddr, Failures>, Failures)>,
}

impl LoginLimiter {
    /// Ok if `client` may try now; otherwise how long to wait.
    pub fn check(&self, client: IpAddr) -> std::result::Result<(), Duration> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (per, total) = &mut *st;
        let expire = |q: &mut VecDeque<Instant>| {
            while q.front().is_some_and(|t| t.elapsed() >= LOGIN_WINDOW) {
                q.pop_front();
            }
        };
        expire(total);
        let q = per.entry(client).or_default();
        expire(q);
        let wait = |q: &VecDeque<Instant>| {
            q.front()
                .map(|t| LOGIN_WINDOW.saturating_sub(t.elapsed()))
                .unwrap_or_default()
        };
        if q.len() >= LOGIN_FAILURES_PER_CLIENT {
            return Err(wait(q));
        }
        if total.len() >= LOGIN_FAILURES_TOTAL {
            return Err(wait(total));
        }
        Ok(())
    }

    pub fn failed(&self, client: IpAddr) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        st.0.entry(client).or_default().push_back(now);
        st.1.push_back(now);
        // Bounded: addresses with no recent failure are forgotten.
        if st.0.len() > 10_000 {
            st.0.retain(|_, q| q.back().is_some_and(|t| t.elapsed() < LOGIN_WINDOW));
        }
    }

    pub fn succeeded(&self, client: IpAddr) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct hors"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn entries_are_replaced_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("users");
        write_entry(&f, "alice", Some("h1")).unwrap();
        write_entry(&f, "bob", Some("h2")).unwrap();
        write_entry(&f, "alice", Some("h3")).unwrap();
        let e = read_entries(&f).unwrap();
        assert_eq!(e.get("alice").map(String::as_str), Some("h3"));
        assert_eq!(e.get("bob").map(String::as_str), Some("h2"));
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write_entry(&f, "bad:name", Some("x")).is_err());
        write_entry(&f, "bob", None).unwrap();
        assert!(!read_entries(&f).unwrap().contains_key("bob"));
    }

    #[test]
    fn tokens_are_found_by_hash() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("tokens");
        let (token, hash) = new_token().unwrap();
        write_entry(&f, "grafana", Some(&hash)).unwrap();
        assert_eq!(check_token(&f, &token).as_deref(), Some("grafana"));
        assert_eq!(check_token(&f, "strata_wrong"), None);
        assert!(!std::fs::read_to_string(&f).unwrap().contains(&token));
    }

    #[test]
    fn logins_are_limited_per_client_and_reset_by_success() {
        let l = LoginLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..LOGIN_FAILURES_PER_CLIENT {
            assert!(l.check(a).is_ok());
            l.failed(a);
        }
        let wait = l.check(a).unwrap_err();
        assert!(wait > Duration::from_secs(200) && wait <= LOGIN_WINDOW);
        assert!(l.check(b).is_ok(), "another client is not held up");
        l.succeeded(a);
        assert!(l.check(a).is_ok());
    }

    #[test]
    fn sessions_carry_their_csrf_token_and_end_on_logout() {
        let s = Sessions::default();
        let (id, csrf) = s.create("alice").unwrap();
        let got = s.get(&id).unwrap();
        assert_eq!(
            (got.user.as_str(), got.csrf.as_str()),
            ("alice", csrf.as_str())
        );
        assert!(s.get("not-a-session").is_none());
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }
}
