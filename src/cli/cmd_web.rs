//! `strata web passwd` and `strata web token`: the page's users and API
//! tokens; and `strata status --remote`, which reads a daemon's page API.

use super::cmd_daemon::ConfigPath;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use strata::config::Config;
use strata::web::auth;

/// Shortest password the page accepts.
const MIN_PASSWORD: usize = 10;

#[derive(Args, Debug)]
#[command(after_help = "\
The page ([web] in the configuration, docs/web.md) needs a login: add a user \
with `strata web passwd NAME`, which stores an Argon2id hash in [web] \
users_file (mode 0600). Scripts and `strata status --remote` use an API \
token instead: `strata web token NAME` prints a new one once and keeps only \
its hash in [web] tokens_file. Changes apply at the next login or request; \
no restart is needed.")]
pub struct WebArgs {
    #[command(subcommand)]
    pub command: WebCommand,
}

#[derive(Subcommand, Debug)]
pub enum WebCommand {
    /// Set (or with --remove delete) a user's password for the page.
    Passwd(PasswdArgs),
    /// Create (or with --remove revoke) an API token.
    Token(TokenArgs),
}

#[derive(Args, Debug)]
pub struct PasswdArgs {
    #[command(flatten)]
    pub path: ConfigPath,
    /// The user name.
    pub name: String,
    /// The users file (default: [web] users_file of the configuration).
    #[arg(long, value_name = "FILE")]
    pub users_file: Option<PathBuf>,
    /// Remove the user instead.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    pub path: ConfigPath,
    /// A name for the token (who or what uses it).
    pub name: String,
    /// The tokens file (default: [web] tokens_file of the configuration).
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Revoke the token of that name instead.
    #[arg(long)]
    pub remove: bool,
}

fn web_file(
    path: &ConfigPath,
    given: Option<PathBuf>,
    pick: fn(&strata::config::Web) -> Option<PathBuf>,
    what: &str,
) -> Result<PathBuf> {
    if let Some(f) = given {
        return Ok(f);
    }
    let cfg = Config::load(&path.config)?;
    let web = cfg.web.as_ref().with_context(|| {
        format!(
            "{} has no [web] section: add one, or pass --{what}",
            path.config.display()
        )
    })?;
    pick(web).with_context(|| {
        format!(
            "[web] has no {}: add it, or pass --{what}",
            what.replace('-', "_")
        )
    })
}

fn read_password() -> Result<String> {
    if let Ok(p) = std::env::var("STRATA_WEB_PASSWORD") {
        return Ok(p);
    }
    let a = rpassword::prompt_password("New password for the page: ")?;
    let b = rpassword::prompt_password("Again: ")?;
    if a != b {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(a)
}

pub fn web(a: WebArgs) -> Result<i32> {
    match a.command {
        WebCommand::Passwd(p) => {
            let file = web_file(
                &p.path,
                p.users_file,
                |w| Some(w.users_file.clone()),
                "users-file",
            )?;
            if p.remove {
                auth::write_entry(&file, &p.name, None)?;
                eprintln!("removed user {} from {}", p.name, file.display());
                return Ok(super::EXIT_OK);
            }
            let pw = read_password()?;
            if pw.chars().count() < MIN_PASSWORD {
                bail!("the password is too short: use at least {MIN_PASSWORD} characters");
            }
            auth::write_entry(&file, &p.name, Some(&auth::hash_password(&pw)?))?;
            eprintln!("password of {} set in {}", p.name, file.display());
        }
        WebCommand::Token(t) => {
            let file = web_file(
                &t.path,
                t.tokens_file,
                |w| w.tokens_file.clone(),
                "tokens-file",
            )?;
            if t.remove {
                auth::write_entry(&file, &t.name, None)?;
                eprintln!("revoked token {} in {}", t.name, file.display());
                return Ok(super::EXIT_OK);
            }
            let (token, hash) = auth::new_token()?;
            auth::write_entry(&file, &t.name, Some(&hash))?;
            eprintln!(
                "token {} added to {}; it is shown only now (send it as `Authorization: Bearer TOKEN`, or set STRATA_WEB_TOKEN for `strata status --remote`):",
                t.name,
                file.display()
            );
            println!("{token}");
        }
    }
    Ok(super::EXIT_OK)
}

/// `strata status --remote URL`: the overview of a daemon's page.
pub fn remote_status(url: &str, json: bool) -> Result<i32> {
    let token = std::env::var("STRATA_WEB_TOKEN")
        .context("set STRATA_WEB_TOKEN to an API token (`strata web token NAME` on that node)")?;
    let endpoint = format!("{}/api/status", url.trim_end_matches('/'));
    let mut resp = ureq::get(&endpoint)
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the answer of {endpoint}"))?;
    if status == 401 {
        bail!("{endpoint} refused the token: check STRATA_WEB_TOKEN");
    }
    if !status.is_success() {
        bail!(
            "{endpoint} answered {status}: {}",
            body.lines().next().unwrap_or("")
        );
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{endpoint} did not answer JSON"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(super::EXIT_OK);
    }
    let o = &v["overview"];
    println!("node {}", o["node"].as_str().unwrap_or("?"));
    let tiers: Vec<&str> = o["tiers"]
        .as_array()
        .map(|t| t.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    print!("{:<20} {:<18}", "host", "backup");
    for t in &tiers {
        print!(" {t:<18}");
    }
    println!(" 3-2-1");
    let mut bad = false;
    for h in o["hosts"].as_array().into_iter().flatten() {
        let ok = h["ok"].as_bool().unwrap_or(false);
        bad |= !ok;
        print!(
            "{:<20} {:<18}",
            h["name"].as_str().unwrap_or(""),
            h["last_backup"]
                .as_str()
                .map(super::common::time)
                .unwrap_or_else(|| "never".into())
        );
        for c in h["copies"].as_array().into_iter().flatten() {
            print!(
                " {:<18}",
                c["time"]
                    .as_str()
                    .map(super::common::time)
                    .unwrap_or_else(|| "never".into())
            );
        }
        println!(" {}", if ok { "ok" } else { "NOT OK" });
    }
    println!();
    println!(
        "{:<20} {:<10} {:<12} {:<26} summary",
        "job", "kind", "last", "last started"
    );
    for j in v["jobs"].as_array().into_iter().flatten() {
        let outcome = if j["running"].as_bool().unwrap_or(false) {
            "running"
        } else {
            j["last"]["outcome"].as_str().unwrap_or("never")
        };
        println!(
            "{:<20} {:<10} {:<12} {:<26} {}",
            j["name"].as_str().unwrap_or(""),
            j["kind"].as_str().unwrap_or(""),
            outcome,
            j["last"]["started"]
                .as_str()
                .map(super::common::time)
                .unwrap_or_default(),
            j["last"]["summary"].as_str().unwrap_or("")
        );
    }
    Ok(if bad {
        super::EXIT_WARNING
    } else {
        super::EXIT_OK
    })
}
