//! `import-borg`: every archive of a borg repository becomes a strata
//! archive, streamed through the installed `borg export-tar` (a pipe, no
//! temporary file) into `tar::import`.
//!
//! Resuming: each imported archive records `borg:<borg archive id>` in
//! its `imported_from` field. An archive of the borg repository is
//! skipped when the strata repository has an archive of the same name
//! that records the same id; one of the same name without it is left
//! alone, with a warning. An import that fails (borg's error, a truncated
//! stream, Ctrl-C) commits nothing, so a second run starts that archive
//! over.

use super::tar::import::{ImportResult, import_tar};
use crate::archive::builder::BuildOptions;
use crate::archive::create::Observer;
use crate::archive::{Archive, validate_name};
use crate::error::{Error, Result};
use crate::repo::Repository;
use serde::Deserialize;
use std::io::{self, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

/// How borg is run: the program and the repository (borg's syntax, passed
/// through: a path or `ssh://`); the environment (BORG_PASSPHRASE,
/// BORG_PASSCOMMAND, BORG_RSH, ...) is inherited.
#[derive(Clone, Debug)]
pub struct Borg {
    pub program: String,
    pub repo: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BorgArchive {
    pub name: String,
    pub id: String,
    /// Borg 1.x prints local time without an offset.
    pub start: String,
}

#[derive(Debug, Deserialize)]
struct BorgList {
    archives: Vec<BorgArchive>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct BorgInfo {
    pub name: String,
    pub id: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub command_line: Vec<String>,
    pub start: String,
    #[serde(default)]
    pub end: String,
}

#[derive(Debug, Deserialize)]
struct BorgInfoList {
    archives: Vec<BorgInfo>,
}

/// What `import-borg` does with one borg archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Import,
    AlreadyImported,
    /// A strata archive of this name exists and did not come from it.
    NameTaken,
    /// The name is not a valid strata archive name.
    BadName(String),
}

pub fn marker(borg_id: &str) -> String {
    format!("borg:{borg_id}")
}

impl Borg {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        // borg asks before touching an unknown unencrypted repository;
        // a pipe has nobody to answer, so the question would be an error.
        c.stdin(Stdio::null());
        c
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, args: &[&str]) -> Result<T> {
        let out = self
            .command()
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        if !out.status.success() {
            return Err(Error::BadInput(format!(
                "`borg {}` failed ({}): {}",
                args.join(" "),
                out.status,
                last_line(&out.stderr)
            )));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            Error::BadInput(format!(
                "`borg {}` printed JSON strata does not understand: {e}",
                args.join(" ")
            ))
        })
    }

    fn spawn_error(&self, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::BadInput(format!(
                "`{}` not found: install borg (Debian: apt install borgbackup) or name it with --borg PATH",
                self.program
            ))
        } else {
            Error::io(format!("running {}", self.program), e)
        }
    }

    /// The repository's archives, oldest first; `glob` is borg's `-a`.
    pub fn list(&self, glob: Option<&str>) -> Result<Vec<BorgArchive>> {
        let mut args = vec!["list", "--json"];
        if let Some(g) = glob {
            args.extend(["--glob-archives", g]);
        }
        args.push(&self.repo);
        Ok(self.json::<BorgList>(&args)?.archives)
    }

    pub fn info(&self, name: &str) -> Result<BorgInfo> {
        let target = format!("{}::{name}", self.repo);
        self.json::<BorgInfoList>(&["info", "--json", &target])?
            .archives
            .into_iter()
            .next()
            .ok_or_else(|| Error::BadInput(format!("`borg info {target}` listed no archive")))
    }

    /// `borg export-tar REPO::NAME -`, its standard output as a reader
    /// that fails if borg does. borg 1.x writes GNU tar: whole-second
    /// times, no xattrs, ACLs, atime or ctime (borg 2's `--tar-format PAX`
    /// would keep them, but borg 2 has another command line and
    /// repository format).
    pub fn export_tar(&self, name: &str) -> Result<BorgStream> {
        let target = format!("{}::{name}", self.repo);
        let mut child = self
            .command()
            .args(["export-tar", target.as_str(), "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::invalid("borg's standard output was not captured"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        // Read borg's messages on a thread: a full stderr pipe would stop it.
        let collect = stderr.clone();
        let mut err_pipe = child.stderr.take();
        let errs = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = err_pipe.as_mut() {
                let _ = p.read_to_end(&mut buf);
            }
            if let Ok(mut s) = collect.lock() {
                *s = buf;
            }
        });
        Ok(BorgStream {
            child: Some(child),
            stdout: BufReader::with_capacity(1 << 20, stdout),
            stderr,
            errs: Some(errs),
            what: target,
            warning: None,
        })
    }
}

fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_string()
}

/// borg's standard output. At its end, borg's exit status is checked: an
/// error (rc ≥ 2, or a signal) becomes a read error, so the import fails
/// and commits nothing; a warning (rc 1) is kept in `warning`.
pub struct BorgStream {
    child: Option<Child>,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
    errs: Option<std::thread::JoinHandle<()>>,
    what: String,
    pub warning: Option<String>,
}

impl BorgStream {
    fn finish(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait()?;
        if let Some(h) = self.errs.take() {
            let _ = h.join();
        }
        let msg = self
            .stderr
            .lock()
            .map(|s| last_line(&s))
            .unwrap_or_default();
        match status.code() {
            Some(0) => Ok(()),
            Some(1) => {
                self.warning = Some(format!("borg export-tar {}: {msg}", self.what));
                Ok(())
            }
            _ => Err(io::Error::other(format!(
                "borg export-tar {} failed ({status}): {msg}",
                self.what
            ))),
        }
    }
}

impl Read for BorgStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish()?;
        }
        Ok(n)
    }
}

impl Drop for BorgStream {
    /// An import that stopped early: borg gets a closed pipe and ends.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What to do with each borg archive, given what `repo` holds.
pub fn plan(repo: &Repository, archives: &[BorgArchive]) -> Result<Vec<(BorgArchive, Plan)>> {
    let mut out = Vec::new();
    for a in archives {
        let p = if let Err(e) = validate_name(&a.name) {
            Plan::BadName(e.to_string())
        } else {
            match repo.manifest().find(&a.name) {
                None => Plan::Import,
                Some(r) => {
                    let existing = Archive::load(repo, r)?;
                    if existing.imported_from.as_deref() == Some(marker(&a.id).as_str()) {
                        Plan::AlreadyImported
                    } else {
                        Plan::NameTaken
                    }
                }
            }
        };
        out.push((a.clone(), p));
    }
    Ok(out)
}

/// borg 1.x times are local and without an offset; strata stores RFC 3339.
pub fn borg_time(s: &str) -> Option<String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc).to_rfc3339());
    }
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    let local = naive.and_local_timezone(chrono::Local).earliest()?;
    Some(local.with_timezone(&chrono::Utc).to_rfc3339())
}

/// Imports one borg archive under its own name, with borg's host, user,
/// comment, command line and times.
pub fn import_one(
    repo: &mut Repository,
    borg: &Borg,
    info: &BorgInfo,
    base: &BuildOptions,
    obs: &mut dyn Observer,
) -> Result<(ImportResult, Option<String>)> {
    let opts = BuildOptions {
        name: info.name.clone(),
        comment: info.comment.clone(),
        hostname: Some(info.hostname.clone()),
        username: Some(info.username.clone()),
        time_start: borg_time(&info.start),
        time_end: borg_time(&info.end),
        command_line: info.command_line.clone(),
        imported_from: Some(marker(&info.id)),
        ..base.clone()
    };
    let mut stream = borg.export_tar(&info.name)?;
    let r = import_tar(repo, &mut stream, &opts, obs)?;
    Ok((r, stream.warning.take()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borg_times_become_rfc3339() {
        let t = borg_time("2026-12-07T09:07:24.000000").unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(&t).is_ok(), "{t}");
        assert_eq!(
            borg_time("2026-12-07T09:07:24+02:00").unwrap(),
            "2026-12-07T07:07:24+00:00"
        );
        assert!(borg_time("yesterday").is_none());
    }
}
