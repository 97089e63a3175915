//! Telling people: on a failure, and on the first success after one
//! (recovery), an email and a JSON POST to each webhook; Healthchecks-style
//! ping URLs hear of every start, success and failure (they alert on
//! silence as well as on failure).

use super::runner::Outcome;
use crate::config::Notify;
use serde::Serialize;
use std::time::Duration;

const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub node: String,
    pub job: String,
    pub kind: String,
    pub outcome: Outcome,
    /// The previous run's outcome, if any.
    pub previous: Option<String>,
    pub summary: String,
    pub started: String,
    pub ended: String,
    pub log: Vec<String>,
}

impl Event {
    fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed | Outcome::Interrupted)
    }

    /// The first good run after a bad one.
    fn recovered(&self) -> bool {
        !self.failed()
            && matches!(
                self.previous.as_deref(),
                Some("failed") | Some("interrupted")
            )
    }

    fn headline(&self) -> String {
        if self.failed() {
            format!(
                "[strata] {}: {} {}",
                self.node,
                self.job,
                self.outcome.name().to_uppercase()
            )
        } else {
            format!("[strata] {}: {} recovered", self.node, self.job)
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(true)
        .build()
        .into()
}

/// A job started: ping URLs get `/start`.
pub fn started(cfg: &Notify) -> Vec<String> {
    let mut errors = Vec::new();
    for w in &cfg.webhook {
        if let Some(p) = &w.ping {
            let url = format!("{}/start", p.trim_end_matches('/'));
            if let Err(e) = agent().post(&url).send("") {
                errors.push(format!("ping {url}: {e}"));
            }
        }
    }
    errors
}

/// A job ended: returns what could not be delivered (for the log).
pub fn finished(cfg: &Notify, ev: &Event) -> Vec<String> {
    let mut errors = Vec::new();
    let alert = ev.failed() || ev.recovered();
    for w in &cfg.webhook {
        if let Some(p) = &w.ping {
            let base = p.trim_end_matches('/');
            let url = if ev.failed() {
                format!("{base}/fail")
            } else {
                base.to_string()
            };
            if let Err(e) = agent().post(&url).send(ev.summary.as_str()) {
                errors.push(format!("ping {url}: {e}"));
            }
        }
        if let Some(url) = &w.url
            && alert
        {
            let body = serde_json::json!({
                "title": ev.headline(),
                "message": ev.summary,
                "event": ev,
            });
            if let Err(e) = agent()
                .post(url)
                .header("Content-Type", "application/json")
                .header("Title", ev.headline())
                .send(body.to_string().as_str())
            {
                errors.push(format!("webhook {url}: {e}"));
            }
        }
    }
    if let Some(mail) = &cfg.email
        && alert
        && let Err(e) = email(mail, ev)
    {
        errors.push(format!("email via {}: {e}", mail.smtp));
    }
    errors
}

fn email(cfg: &crate::config::Email, ev: &Event) -> std::result::Result<(), String> {
    use lettre::message::Mailbox;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{Message, SmtpTransport, Transport};
    let (host, port) = match cfg.smtp.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| format!("bad port in `{}`", cfg.smtp))?,
        ),
        None => (cfg.smtp.clone(), 587),
    };
    let from: Mailbox = cfg
        .from
        .parse()
        .map_err(|e| format!("from `{}`: {e}", cfg.from))?;
    let mut msg = Message::builder().from(from).subject(ev.headline());
    for to in &cfg.to {
        msg = msg.to(to.parse().map_err(|e| format!("to `{to}`: {e}"))?);
    }
    let body = format!(
        "{}\n\nnode: {}\njob: {} ({})\noutcome: {}\nstarted: {}\nended: {}\n\nlast log lines:\n{}\n",
        ev.summary,
        ev.node,
        ev.job,
        ev.kind,
        ev.outcome.name(),
        ev.started,
        ev.ended,
        ev.log
            .iter()
            .rev()
            .take(20)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let msg = msg.body(body).map_err(|e| e.to_string())?;
    let mut transport = if cfg.starttls {
        SmtpTransport::starttls_relay(&host).map_err(|e| e.to_string())?
    } else {
        SmtpTransport::builder_dangerous(&host)
    }
    .port(port)
    .timeout(Some(HTTP_TIMEOUT));
    if let Some(user) = &cfg.username {
        let password = match &cfg.password_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| format!("password_file {}: {e}", f.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
            None => String::new(),
        };
        transport = transport.credentials(Credentials::new(user.clone(), password));
    }
    transport.build().send(&msg).map_err(|e| e.to_string())?;
    Ok(())
}
