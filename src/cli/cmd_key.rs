//! `strata key export|import|change-passphrase`.

use super::common::{CliPassphrase, Location};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use strata::backend::FileKind;
use strata::crypto::keyfile::{KdfParams, KeyFile};
use strata::repo::Passphrase;
use strata::repo::client::ClientDirs;
use strata::repo::config::{CONFIG_FILE, RepoConfig};
use strata::repo::keys;

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write the repository's key (still sealed by the passphrase) to FILE or
    /// standard output. Keep it apart from the repository: without key and
    /// passphrase the backups cannot be read.
    Export {
        /// Numbered hex lines with checksums, to print and type back in.
        #[arg(long, conflicts_with = "qr_html")]
        paper: bool,
        /// A printable HTML page: the key as a QR code and in paper form.
        #[arg(long)]
        qr_html: bool,
        repository: String,
        file: Option<PathBuf>,
    },
    /// Put back a key exported earlier (for a keyfile repository on a new
    /// client, or a repository whose key was damaged).
    Import {
        /// FILE holds the paper form.
        #[arg(long)]
        paper: bool,
        repository: String,
        file: PathBuf,
    },
    /// Seal the key with a new passphrase (from STRATA_NEW_PASSPHRASE or
    /// asked twice). The old passphrase no longer opens the repository.
    ChangePassphrase { repository: String },
}

fn config_of(loc: &Location) -> Result<(std::sync::Arc<dyn strata::backend::Backend>, RepoConfig)> {
    let backend = loc.backend()?;
    let data = backend
        .read(FileKind::Config, CONFIG_FILE)
        .map_err(|_| strata::Error::NotARepository(loc.repo.clone()))?;
    let config = RepoConfig::parse(&data, &loc.repo)?;
    if !config.encryption.has_key() {
        bail!("{} has encryption `none`: there is no key", loc.repo);
    }
    Ok((backend, config))
}

pub fn run(a: KeyArgs) -> Result<i32> {
    let dirs = ClientDirs::from_env();
    match a.command {
        KeyCommand::Export {
            paper,
            qr_html,
            repository,
            file,
        } => {
            let loc = Location::parse(&repository)?;
            let (backend, config) = config_of(&loc)?;
            let found = keys::find(backend.as_ref(), &config, &dirs)?;
            let key = &found.first().context("no key found")?.key;
            let text = if qr_html {
                qr_page(key, &loc.repo)?
            } else if paper {
                keys::to_paper(key)
            } else {
                String::from_utf8_lossy(&key.to_json()).into_owned()
            };
            match file {
                Some(f) => {
                    std::fs::write(&f, text).with_context(|| format!("writing {}", f.display()))?
                }
                None => print!("{text}"),
            }
        }
        KeyCommand::Import {
            paper,
            repository,
            file,
        } => {
            let loc = Location::parse(&repository)?;
            let (backend, config) = config_of(&loc)?;
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let key = if paper {
                keys::from_paper(&String::from_utf8_lossy(&data))?
            } else {
                KeyFile::from_json(&data, &file.display().to_string())?
            };
            // Only a key that opens with the passphrase is worth storing.
            key.unlock(&CliPassphrase.get(false)?, &loc.repo)?;
            keys::store(backend.as_ref(), &config, &dirs, &key)?;
            eprintln!("Key imported for repository {}", config.id);
        }
        KeyCommand::ChangePassphrase { repository } => {
            let loc = Location::parse(&repository)?;
            let (backend, config) = config_of(&loc)?;
            let old = CliPassphrase.get(false)?;
            let new = match std::env::var("STRATA_NEW_PASSPHRASE") {
                Ok(p) => p.into_bytes(),
                Err(_) => NewPassphrase.get(true)?,
            };
            let cost = if std::env::var_os("STRATA_INSECURE_FAST_KDF").is_some() {
                KdfParams::insecure_test_cost()
            } else {
                KdfParams::default_cost()
            };
            keys::change_passphrase(backend.as_ref(), &config, &dirs, &old, &new, cost)?;
            eprintln!(
                "Passphrase changed. Export the key again if you keep a copy: `strata key export`."
            );
        }
    }
    Ok(super::EXIT_OK)
}

/// Prompts for a new passphrase even when STRATA_PASSPHRASE (the old one) is set.
struct NewPassphrase;
impl Passphrase for NewPassphrase {
    fn get(&self, _new: bool) -> strata::Result<Vec<u8>> {
        let ask = |q: &str| {
            rpassword::prompt_password(q).map_err(|_| {
                strata::Error::invalid(
                    "no new passphrase: set STRATA_NEW_PASSPHRASE or run on a terminal",
                )
            })
        };
        let p = ask("New passphrase: ")?;
        if p.is_empty() || ask("Repeat the new passphrase: ")? != p {
            return Err(strata::Error::invalid(
                "the new passphrases are empty or do not match",
            ));
        }
        Ok(p.into_bytes())
    }
}

/// The key's JSON as a QR code (SVG) beside its paper form, for printing.
fn qr_page(key: &KeyFile, repo: &str) -> Result<String> {
    let json = serde_json::to_vec(key)?;
    let code = qrcode::QrCode::with_error_correction_level(&json, qrcode::EcLevel::M)
        .context("the key does not fit in a QR code")?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(480, 480)
        .build();
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    Ok(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>strata key {id}</title></head><body>\n\
         <h1>strata repository key</h1>\n<p>Repository {repo} ({id}), exported {now}. The key is sealed with \
         the passphrase: keep this page and the passphrase in different places.</p>\n{svg}\n<pre>{paper}</pre>\n\
         <p>Restore: scan the code into a file and run <code>strata key import REPO FILE</code>, or type the \
         lines into a file and run <code>strata key import --paper REPO FILE</code>.</p>\n</body></html>\n",
        id = esc(&key.repository_id),
        repo = esc(repo),
        now = chrono::Local::now().format("%Y-%m-%d"),
        paper = esc(&keys::to_paper(key)),
    ))
}
