//! Archive-name placeholders: {hostname} {fqdn} {user} {now[:FMT]} {utcnow[:FMT]}.

use crate::error::{Error, Result};

/// borg's default timestamp format for `{now}`.
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

pub fn expand(name: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = name;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            return Err(Error::invalid(format!(
                "archive name `{name}`: unclosed `{{`"
            )));
        };
        let token = &rest[open + 1..open + close];
        let (key, fmt) = token
            .split_once(':')
            .unwrap_or((token, DEFAULT_TIME_FORMAT));
        out.push_str(&match key {
            "hostname" => short_hostname(),
            "fqdn" => crate::repo::lock::hostname(),
            "user" => user(),
            "now" => chrono::Local::now().format(fmt).to_string(),
            "utcnow" => chrono::Utc::now().format(fmt).to_string(),
            other => {
                return Err(Error::invalid(format!(
                    "archive name `{name}`: unknown placeholder {{{other}}} (use hostname, fqdn, user, now, utcnow)"
                )));
            }
        });
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn short_hostname() -> String {
    let h = crate::repo::lock::hostname();
    h.split('.').next().unwrap_or(&h).to_string()
}

fn user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_and_rejects() {
        let n = expand("{hostname}-{utcnow:%Y}").unwrap();
        assert!(n.ends_with(&chrono::Utc::now().format("-%Y").to_string()));
        assert!(expand("x-{nope}").is_err());
        assert!(expand("x-{now").is_err());
        assert_eq!(expand("plain").unwrap(), "plain");
    }
}
