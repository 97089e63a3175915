//! The HTML pages: login, overview, repository, node, jobs, one run; and
//! the form actions (run now, cancel, log out). Every action answers with
//! a redirect to a page that says what happened (post/redirect/get).

use super::html::{self, action, age, bytes, esc, page, url_segment};
use super::model::{Snapshot, free_series, stored_series};
use super::{Principal, SESSION_COOKIE, WebState, auth, svg};
use crate::config::JobKind;
use crate::daemon::control::{LiveView, RunAnswer};
use crate::daemon::history::Run;
use axum::Extension;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Local;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

type St = State<Arc<WebState>>;

/// Runs blocking work (repositories, SQLite, Argon2) off the async thread.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn error_page(st: &WebState, p: Option<&Principal>, status: StatusCode, msg: &str) -> Response {
    let body = format!(r#"<p class="error">{}</p>"#, esc(msg));
    (
        status,
        Html(page(
            "Error",
            &st.cfg.node.name,
            p.map(|p| (p.user.as_str(), p.csrf())),
            &body,
        )),
    )
        .into_response()
}

/// Where to go after logging in: a path on this site only.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

pub async fn login_form(State(st): St, Query(q): Query<HashMap<String, String>>) -> Response {
    login_page(&st, q.get("next").map(String::as_str), None, StatusCode::OK)
}

fn login_page(
    st: &WebState,
    next: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let err = error
        .map(|e| format!(r#"<p class="error" id="login-error">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Log in</h1>{err}<form method="post" action="/login" class="login">
<label>User <input name="user" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<input type="hidden" name="next" value="{next}"><button id="login">Log in</button></form>"#,
        next = esc(&safe_next(next))
    );
    (status, Html(page("Log in", &st.cfg.node.name, None, &body))).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    next: Option<String>,
}

pub async fn login(State(st): St, req: Request) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let Ok(body) = axum::body::to_bytes(req.into_body(), 16 * 1024).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request too large\n").into_response();
    };
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return login_page(
            &st,
            None,
            Some("fill in user and password"),
            StatusCode::BAD_REQUEST,
        );
    };
    if let Err(wait) = st.limiter.check(client) {
        return login_page(
            &st,
            form.next.as_deref(),
            Some(&format!(
                "too many failed logins: try again in {} s",
                wait.as_secs().max(1)
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let st2 = st.clone();
    let (user, password) = (form.user.clone(), form.password);
    let ok = blocking(move || {
        auth::read_entries(&st2.users_file)
            .ok()
            .and_then(|u| u.get(&user).cloned())
            .is_some_and(|phc| auth::verify_password(&phc, &password))
    })
    .await;
    if !ok {
        st.limiter.failed(client);
        return login_page(
            &st,
            form.next.as_deref(),
            Some("wrong user or password"),
            StatusCode::UNAUTHORIZED,
        );
    }
    st.limiter.succeeded(client);
    let (id, _) = match st.sessions.create(&form.user) {
        Ok(s) => s,
        Err(e) => return error_page(&st, None, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/"),
            ),
            (header::LOCATION, safe_next(form.next.as_deref())),
        ],
    )
        .into_response()
}

pub async fn logout(State(st): St, req: Request) -> Response {
    if let Some(id) = super::cookie(req.headers(), SESSION_COOKIE) {
        st.sessions.remove(&id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
            ),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response()
}

/// The running jobs, as the live panel shows them; the script keeps them
/// moving.
pub fn live_panel(live: &[LiveView], csrf: &str) -> String {
    let mut s = String::from(r#"<section id="live"><h2>Running</h2>"#);
    if live.is_empty() {
        s.push_str(r#"<p class="muted" id="live-empty">Nothing runs now.</p>"#);
    }
    for j in live {
        s.push_str(&live_row(j, csrf));
    }
    s.push_str("</section>");
    s
}

fn live_row(j: &LiveView, csrf: &str) -> String {
    let bar = match j.total.and_then(|t| (j.bytes.min(t) * 1000).checked_div(t)) {
        Some(v) => format!(r#"<progress max="1000" value="{v}"></progress>"#),
        None => "<progress></progress>".to_string(),
    };
    let figures = live_figures(j);
    format!(
        r#"<div class="live-job" id="live-{id}" data-job="{name}" data-run="{run}" data-state="running"><div><b>{name}</b> <span class="phase">{phase}</span> <span class="state">running</span></div>{bar} <span class="figures">{figures}</span><div class="path">{path}</div>{cancel}</div>"#,
        id = esc(&url_segment(&j.name)),
        name = esc(&j.name),
        run = j.id,
        phase = esc(&j.phase),
        path = esc(&j.path),
        cancel = action(
            &format!("/jobs/{}/cancel", url_segment(&j.name)),
            if j.cancelling {
                "Stopping…"
            } else {
                "Cancel"
            },
            csrf,
            &[],
            "cancel"
        ),
    )
}

/// "1.2 GB of 3.4 GB · 45 MB/s · ETA 0:32 · 120 files" (the script
/// writes the same).
fn live_figures(j: &LiveView) -> String {
    let mut s = bytes(j.bytes);
    if let Some(t) = j.total {
        let _ = write!(s, " of {}", bytes(t));
    }
    let _ = write!(s, " · {}/s", bytes(j.rate as u64));
    if let Some(e) = j.eta_seconds {
        let _ = write!(s, " · ETA {}", html::duration(e));
    }
    let _ = write!(
        s,
        " · {} files · {}",
        j.files,
        html::duration(j.elapsed_seconds)
    );
    s
}

fn tier_link(name: &str) -> String {
    format!(r#"<a href="/node/{}">{}</a>"#, url_segment(name), esc(name))
}

fn outcome_badge(outcome: &str) -> String {
    format!(r#"<span class="outcome {o}">{o}</span>"#, o = esc(outcome))
}

fn overview_body(
    snap: &Snapshot,
    st: &WebState,
    p: &Principal,
    runs: &[Run],
    note: &str,
) -> String {
    let now = Local::now();
    let csrf = p.csrf();
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<h1>Overview</h1>{note}<p class="muted">Read {taken}; a copy is recent for {fresh} h.</p>"#,
        taken = esc(&html::time(Some(&snap.taken))),
        fresh = snap.fresh_seconds / 3600,
    );
    b.push_str(&live_panel(&st.control.live(), csrf));
    // Hosts and their copies.
    b.push_str(
        r#"<section><h2>Hosts</h2><table id="hosts"><thead><tr><th>Host</th><th>Backup</th>"#,
    );
    for t in &snap.tiers {
        let _ = write!(b, "<th>{}</th>", tier_link(t));
    }
    b.push_str("<th>3-2-1</th></tr></thead><tbody>");
    if snap.hosts.is_empty() {
        let _ = write!(
            b,
            r#"<tr><td colspan="{}" class="muted">No host repositories configured.</td></tr>"#,
            snap.tiers.len() + 3
        );
    }
    for h in &snap.hosts {
        let cell = |time: Option<&str>, recent: bool| {
            format!(
                r#"<td class="{}" title="{}">{}</td>"#,
                if recent { "recent" } else { "stale" },
                esc(&html::time(time)),
                esc(&age(time, now))
            )
        };
        let _ = write!(
            b,
            r#"<tr data-host="{n}"><td><a href="/repo/{r}">{n}</a></td>{c}"#,
            n = esc(&h.name),
            r = url_segment(&h.repo),
            c = cell(h.last_backup.as_deref(), h.last_backup_recent)
        );
        for c in &h.copies {
            b.push_str(&cell(c.time.as_deref(), c.recent));
        }
        let badge = if h.ok {
            r#"<span class="badge ok">3-2-1 ✓</span>"#.to_string()
        } else if !h.offsite_recent {
            r#"<span class="badge bad">no recent off-site copy</span>"#.to_string()
        } else {
            format!(
                r#"<span class="badge bad">{} recent copies</span>"#,
                h.recent_copies
            )
        };
        let _ = write!(b, "<td>{badge}</td></tr>");
    }
    b.push_str("</tbody></table></section>");
    // Actions.
    let jobs: Vec<_> = st.cfg.jobs.iter().map(|j| j.get_ref()).collect();
    b.push_str(r#"<section><h2>Actions</h2><div class="actions">"#);
    for (kind, label) in [
        (JobKind::Replicate, "Sync all"),
        (JobKind::Backup, "Back up all"),
        (JobKind::Check, "Check all"),
    ] {
        if jobs.iter().any(|j| j.kind == kind) {
            b.push_str(&action(
                &format!("/run/{}", kind.name()),
                label,
                csrf,
                &[],
                "primary",
            ));
        }
    }
    b.push_str("</div>");
    for j in jobs.iter().filter(|j| j.kind == JobKind::Replicate) {
        let _ = write!(
            b,
            r#"<div class="sync" data-job="{n}"><b>{n}</b> "#,
            n = esc(&j.name)
        );
        b.push_str(&action(
            &format!("/jobs/{}/run", url_segment(&j.name)),
            "Sync now",
            csrf,
            &[],
            "sync",
        ));
        for t in &j.targets {
            b.push_str(&action(
                &format!("/jobs/{}/run", url_segment(&j.name)),
                &format!("Sync to {}", t.get_ref()),
                csrf,
                &[("target", t.get_ref())],
                "sync-target",
            ));
        }
        b.push_str("</div>");
    }
    b.push_str("</section>");
    // Space.
    b.push_str(r#"<section><h2>Nodes and drives</h2><table id="spaces"><thead><tr><th>File system</th><th>Used</th><th>Free</th><th>Full in</th><th>Repositories</th></tr></thead><tbody>"#);
    for s in &snap.spaces {
        let full = match s.days_until_full {
            Some(d) if d < 3650.0 => format!("{d:.0} days"),
            Some(_) => "years".into(),
            None => "—".into(),
        };
        let repos: Vec<String> = s
            .repos
            .iter()
            .map(|r| match snap.repo(r) {
                Some(rs) if rs.role == "target" => tier_link(r),
                _ => format!(r#"<a href="/repo/{}">{}</a>"#, url_segment(r), esc(r)),
            })
            .collect();
        let _ = write!(
            b,
            "<tr><td>{k}</td><td>{bar}</td><td>{f} of {t}</td><td>{full}</td><td>{r}</td></tr>",
            k = esc(&s.key),
            bar = svg::usage_bar(s.total.saturating_sub(s.free), s.total),
            f = bytes(s.free),
            t = bytes(s.total),
            r = repos.join(", ")
        );
    }
    for r in snap.repos.iter().filter(|r| !r.reachable) {
        let _ = write!(
            b,
            r#"<tr class="unreachable"><td>{n}</td><td colspan="4" class="error">unreachable: {e}</td></tr>"#,
            n = esc(&r.name),
            e = esc(r.error.as_deref().unwrap_or("unknown"))
        );
    }
    b.push_str("</tbody></table></section>");
    b.push_str(&jobs_table(st, runs, csrf));
    b
}

/// Every configured job: last run, outcome, next run, actions.
fn jobs_table(st: &WebState, runs: &[Run], csrf: &str) -> String {
    let now = Local::now();
    let next = st.control.next_runs();
    let mut b = String::from(
        r#"<section><h2>Jobs</h2><table id="jobs"><thead><tr><th>Job</th><th>Kind</th><th>Last run</th><th>Outcome</th><th>Next run</th><th></th></tr></thead><tbody>"#,
    );
    for j in st.cfg.jobs.iter().map(|j| j.get_ref()) {
        let last = runs.iter().find(|r| r.job == j.name);
        let running = st.control.is_running(&j.name);
        let button = if running {
            action(
                &format!("/jobs/{}/cancel", url_segment(&j.name)),
                "Cancel",
                csrf,
                &[],
                "cancel",
            )
        } else {
            action(
                &format!("/jobs/{}/run", url_segment(&j.name)),
                "Run now",
                csrf,
                &[],
                "run",
            )
        };
        let _ = write!(
            b,
            r#"<tr data-job="{n}"><td><a href="/jobs?job={u}">{n}</a></td><td>{k}</td><td>{l}</td><td>{o}</td><td>{nx}</td><td>{button}</td></tr>"#,
            n = esc(&j.name),
            u = url_segment(&j.name),
            k = j.kind.name(),
            l = match last {
                Some(r) => format!(
                    r#"<a href="/jobs/{}">{}</a>"#,
                    r.id,
                    esc(&age(Some(&r.started), now))
                ),
                None => "never".into(),
            },
            o = if running {
                outcome_badge("running")
            } else {
                last.map(|r| outcome_badge(&r.outcome)).unwrap_or_default()
            },
            nx = esc(&html::time(
                next.get(&j.name)
                    .and_then(|t| t.as_ref())
                    .map(|t| t.to_rfc3339())
                    .as_deref()
            )),
        );
    }
    b.push_str("</tbody></table></section>");
    b
}

/// The one-line message a redirect after an action carries (`note` is a
/// fixed code; the job name is looked up, never echoed raw).
fn note_html(st: &WebState, q: &HashMap<String, String>) -> String {
    let job = q
        .get("job")
        .filter(|j| st.cfg.job(j).is_some())
        .map(String::as_str)
        .unwrap_or("");
    let text = match q.get("note").map(String::as_str) {
        Some("started") => RunAnswer::Started.message(job),
        Some("already_running") => RunAnswer::AlreadyRunning.message(job),
        Some("no_such_target") => RunAnswer::NoSuchTarget.message(job),
        Some("stopping") => RunAnswer::Stopping.message(job),
        Some("no_answer") => RunAnswer::NoAnswer.message(job),
        Some("cancelled") => format!("{job}: stopping; it commits nothing"),
        Some("not_running") => format!("{job}: not running"),
        Some("started_all") => format!(
            "started {} jobs",
            q.get("n").and_then(|n| n.parse::<u32>().ok()).unwrap_or(0)
        ),
        _ => return String::new(),
    };
    format!(r#"<p class="note" id="note">{}</p>"#, esc(&text))
}

pub async fn overview(
    State(st): St,
    Extension(p): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st2 = st.clone();
    let (snap, runs) = blocking(move || {
        let runs = st2
            .history()
            .and_then(|h| h.recent(None, 500))
            .unwrap_or_default();
        (st2.snapshot(), runs)
    })
    .await;
    let body = overview_body(&snap, &st, &p, &runs, &note_html(&st, &q));
    Html(page(
        "Overview",
        &st.cfg.node.name,
        Some((&p.user, p.csrf())),
        &body,
    ))
    .into_response()
}

pub async fn repo(
    State(st): St,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    let st2 = st.clone();
    let n2 = name.clone();
    let (snap, samples, checks) = blocking(move || {
        let h = st2.history().ok();
        let since = Local::now().timestamp() - 90 * 86400;
        let samples = h
            .as_ref()
            .and_then(|h| h.samples(&stored_series(&n2), since).ok())
            .unwrap_or_default();
        let check_jobs: Vec<String> = st2
            .cfg
            .jobs
            .iter()
            .map(|j| j.get_ref())
            .filter(|j| {
                j.kind == JobKind::Check
                    && j.repository.as_ref().is_some_and(|r| *r.get_ref() == n2)
            })
            .map(|j| j.name.clone())
            .collect();
        let checks: Vec<Run> = check_jobs
            .iter()
            .filter_map(|j| {
                h.as_ref()?
                    .recent(Some(j), 20)
                    .ok()?
                    .into_iter()
                    .find(|r| r.outcome != "running")
            })
            .collect();
        (st2.snapshot(), samples, checks)
    })
    .await;
    let Some(r) = snap.repo(&name) else {
        return error_page(
            &st,
            Some(&p),
            StatusCode::NOT_FOUND,
            &format!("no repository `{name}`"),
        );
    };
    let now = Local::now();
    let mut b = format!(
        r#"<h1>Repository {n}</h1><table class="facts"><tr><th>Location</th><td>{l}</td></tr><tr><th>Role</th><td>{role}</td></tr><tr><th>State</th><td>{state}</td></tr><tr><th>Stored</th><td>{s}</td></tr><tr><th>Last commit</th><td>{c} ({ca})</td></tr></table>"#,
        n = esc(&r.name),
        l = esc(&r.location),
        role = if r.role == "target" {
            "off-site tier"
        } else {
            "host backups"
        },
        state = match (&r.error, r.reachable) {
            (None, true) => "readable".to_string(),
            (Some(e), true) => format!(r#"<span class="muted">{}</span>"#, esc(e)),
            (e, false) => format!(
                r#"<span class="error">unreachable: {}</span>"#,
                esc(e.as_deref().unwrap_or("unknown"))
            ),
        },
        s = r.stored.map(bytes).unwrap_or_else(|| "—".into()),
        c = esc(&html::time(r.last_commit.as_deref())),
        ca = esc(&age(r.last_commit.as_deref(), now)),
    );
    b.push_str(&svg::line_chart("Stored bytes", &samples, &|v| {
        bytes(v as u64)
    }));
    b.push_str("<h2>Checks and drills</h2><ul>");
    if checks.is_empty() {
        b.push_str(r#"<li class="muted">No check job for this repository.</li>"#);
    }
    for c in &checks {
        let _ = write!(
            b,
            r#"<li>check <a href="/jobs/{id}">{a}</a>: {o} — {s}</li>"#,
            id = c.id,
            a = esc(&age(c.ended.as_deref(), now)),
            o = outcome_badge(&c.outcome),
            s = esc(&c.summary)
        );
    }
    let host = crate::ops::replicate::name_of(&r.location);
    let record = std::fs::read(crate::ops::drill::record_path(&st.dirs.cache, &host))
        .ok()
        .and_then(|d| serde_json::from_slice::<crate::ops::drill::DrillRecord>(&d).ok());
    match record {
        Some(rec) => {
            for (tier, t) in &rec.tiers {
                let _ = write!(
                    b,
                    "<li>drill on {tier}: {o} {a} ({f} files); last passed {ok}</li>",
                    tier = esc(tier),
                    o = outcome_badge(t.outcome.name()),
                    a = esc(&age(Some(&t.last_run), now)),
                    f = t.files,
                    ok = esc(&age(t.last_ok.as_deref(), now)),
                );
            }
        }
        None => b.push_str(r#"<li class="muted">No restore drill recorded for this host.</li>"#),
    }
    b.push_str("</ul><h2>Archives</h2>");
    match &r.archives {
        None => b.push_str(
            r#"<p class="muted">The archive list is encrypted; its key stays on the host.</p>"#,
        ),
        Some(a) => {
            let _ = write!(
                b,
                r#"<table id="archives"><thead><tr><th>Archive</th><th>Time</th><th>Files</th><th>Original</th><th>Added (dedup)</th></tr></thead><tbody>"#
            );
            for x in a.iter().rev() {
                let _ = write!(
                    b,
                    "<tr><td>{n}</td><td>{t}</td><td>{f}</td><td>{o}</td><td>{d}</td></tr>",
                    n = esc(&x.name),
                    t = esc(&html::time(Some(&x.time))),
                    f = x.files,
                    o = bytes(x.original),
                    d = bytes(x.deduplicated)
                );
            }
            b.push_str("</tbody></table>");
        }
    }
    Html(page(
        &format!("Repository {name}"),
        &st.cfg.node.name,
        Some((&p.user, p.csrf())),
        &b,
    ))
    .into_response()
}

pub async fn node(
    State(st): St,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    let st2 = st.clone();
    let snap = blocking(move || st2.snapshot()).await;
    let Some(r) = snap.repo(&name).filter(|r| r.role == "target") else {
        return error_page(
            &st,
            Some(&p),
            StatusCode::NOT_FOUND,
            &format!("no off-site node `{name}`"),
        );
    };
    let key = r.space_key.clone();
    let st3 = st.clone();
    let samples = blocking(move || {
        st3.history()
            .and_then(|h| h.samples(&free_series(&key), Local::now().timestamp() - 90 * 86400))
            .unwrap_or_default()
    })
    .await;
    let now = Local::now();
    let csrf = p.csrf();
    let space = match (r.space_total, r.space_free) {
        (Some(t), Some(f)) => format!(
            "{} {} free of {}",
            svg::usage_bar(t.saturating_sub(f), t),
            bytes(f),
            bytes(t)
        ),
        _ => "—".into(),
    };
    let mut b = format!(
        r#"<h1>Node {n}</h1><table class="facts"><tr><th>Location</th><td>{l}</td></tr><tr><th>Reachable</th><td id="reachable">{reach}</td></tr><tr><th>Drive</th><td>{space}</td></tr><tr><th>Stored</th><td>{s}</td></tr><tr><th>Last write</th><td>{c}</td></tr></table>"#,
        n = esc(&r.name),
        l = esc(&r.location),
        reach = if r.reachable {
            "yes".to_string()
        } else {
            format!(
                r#"<span class="error">no: {}</span>"#,
                esc(r.error.as_deref().unwrap_or("unknown"))
            )
        },
        s = r.stored.map(bytes).unwrap_or_else(|| "—".into()),
        c = esc(&age(r.last_commit.as_deref(), now)),
    );
    b.push_str(&svg::line_chart("Free space", &samples, &|v| {
        bytes(v as u64)
    }));
    b.push_str(r#"<h2>Last sync per host</h2><table id="node-hosts"><thead><tr><th>Host</th><th>Newest copy</th></tr></thead><tbody>"#);
    for h in &snap.hosts {
        if let Some(c) = h.copies.iter().find(|c| c.tier == name) {
            let _ = write!(
                b,
                r#"<tr><td>{h}</td><td class="{cl}">{a}</td></tr>"#,
                h = esc(&h.name),
                cl = if c.recent { "recent" } else { "stale" },
                a = esc(&age(c.time.as_deref(), now))
            );
        }
    }
    b.push_str("</tbody></table><h2>Sync</h2>");
    for j in
        st.cfg.jobs.iter().map(|j| j.get_ref()).filter(|j| {
            j.kind == JobKind::Replicate && j.targets.iter().any(|t| *t.get_ref() == name)
        })
    {
        b.push_str(&action(
            &format!("/jobs/{}/run", url_segment(&j.name)),
            &format!("Sync {} now", j.name),
            csrf,
            &[("target", &name)],
            "sync-target",
        ));
    }
    Html(page(
        &format!("Node {name}"),
        &st.cfg.node.name,
        Some((&p.user, csrf)),
        &b,
    ))
    .into_response()
}

pub async fn jobs(
    State(st): St,
    Extension(p): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let job = q.get("job").filter(|j| !j.is_empty()).cloned();
    let outcome = q.get("outcome").filter(|o| !o.is_empty()).cloned();
    let st2 = st.clone();
    let (j2, o2) = (job.clone(), outcome.clone());
    let runs = blocking(move || {
        st2.history()
            .and_then(|h| h.recent(j2.as_deref(), 500))
            .unwrap_or_default()
            .into_iter()
            .filter(|r| o2.as_ref().is_none_or(|o| r.outcome == *o))
            .take(200)
            .collect::<Vec<_>>()
    })
    .await;
    let csrf = p.csrf();
    let mut b = format!("<h1>Jobs</h1>{}", note_html(&st, &q));
    b.push_str(&live_panel(&st.control.live(), csrf));
    b.push_str(&jobs_table(&st, &runs, csrf));
    // Filters: a GET form, so a filtered view is a link.
    b.push_str(r#"<section><h2>History</h2><form method="get" action="/jobs" class="filters"><select name="job"><option value="">all jobs</option>"#);
    for j in st.cfg.jobs.iter().map(|j| j.get_ref()) {
        let _ = write!(
            b,
            r#"<option value="{n}"{s}>{n}</option>"#,
            n = esc(&j.name),
            s = if job.as_deref() == Some(&j.name) {
                " selected"
            } else {
                ""
            }
        );
    }
    b.push_str(r#"</select><select name="outcome"><option value="">any outcome</option>"#);
    for o in ["running", "ok", "warning", "failed", "interrupted"] {
        let _ = write!(
            b,
            r#"<option{s}>{o}</option>"#,
            s = if outcome.as_deref() == Some(o) {
                " selected"
            } else {
                ""
            }
        );
    }
    b.push_str(r#"</select><button>Filter</button></form><table id="history"><thead><tr><th>#</th><th>Job</th><th>Trigger</th><th>Started</th><th>Took</th><th>Outcome</th><th>Summary</th></tr></thead><tbody>"#);
    for r in &runs {
        let took = match (r.ended.as_deref(), r.started.as_str()) {
            (Some(e), s) => match (
                chrono::DateTime::parse_from_rfc3339(e),
                chrono::DateTime::parse_from_rfc3339(s),
            ) {
                (Ok(e), Ok(s)) => html::duration((e - s).num_milliseconds() as f64 / 1000.0),
                _ => "—".into(),
            },
            _ => "—".into(),
        };
        let _ = write!(
            b,
            r#"<tr data-run="{id}"><td><a href="/jobs/{id}">{id}</a></td><td>{j}</td><td>{t}</td><td>{s}</td><td>{took}</td><td>{o}</td><td>{sum}</td></tr>"#,
            id = r.id,
            j = esc(&r.job),
            t = esc(&r.trigger),
            s = esc(&html::time(Some(&r.started))),
            o = outcome_badge(&r.outcome),
            sum = esc(&r.summary)
        );
    }
    b.push_str("</tbody></table></section>");
    Html(page("Jobs", &st.cfg.node.name, Some((&p.user, csrf)), &b)).into_response()
}

pub async fn run(
    State(st): St,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error_page(&st, Some(&p), StatusCode::NOT_FOUND, "no such run");
    };
    let st2 = st.clone();
    let Some(r) = blocking(move || st2.history().and_then(|h| h.get(id)).ok().flatten()).await
    else {
        return error_page(
            &st,
            Some(&p),
            StatusCode::NOT_FOUND,
            &format!("no run #{id}"),
        );
    };
    let stats = serde_json::from_str::<serde_json::Value>(&r.stats)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_default();
    let b = format!(
        r#"<h1>Run #{id} of {j}</h1><table class="facts"><tr><th>Outcome</th><td id="outcome">{o}</td></tr><tr><th>Summary</th><td>{s}</td></tr><tr><th>Trigger</th><td>{t}</td></tr><tr><th>Started</th><td>{st}</td></tr><tr><th>Ended</th><td>{en}</td></tr></table><h2>Log</h2><pre id="log">{log}</pre><h2>Figures</h2><pre>{stats}</pre>"#,
        j = esc(&r.job),
        o = outcome_badge(&r.outcome),
        s = esc(&r.summary),
        t = esc(&r.trigger),
        st = esc(&html::time(Some(&r.started))),
        en = esc(&html::time(r.ended.as_deref())),
        log = esc(&r.log),
        stats = esc(&stats),
    );
    Html(page(
        &format!("Run #{id}"),
        &st.cfg.node.name,
        Some((&p.user, p.csrf())),
        &b,
    ))
    .into_response()
}

#[derive(serde::Deserialize)]
struct RunForm {
    target: Option<String>,
}

fn answer_code(a: RunAnswer) -> &'static str {
    match a {
        RunAnswer::Started => "started",
        RunAnswer::AlreadyRunning => "already_running",
        RunAnswer::NoSuchJob => "no_such_job",
        RunAnswer::NoSuchTarget => "no_such_target",
        RunAnswer::Stopping => "stopping",
        RunAnswer::NoAnswer => "no_answer",
    }
}

pub async fn run_job(State(st): St, Path(name): Path<String>, req: Request) -> Response {
    let body = axum::body::to_bytes(req.into_body(), 16 * 1024)
        .await
        .unwrap_or_default();
    let target = serde_urlencoded::from_bytes::<RunForm>(&body)
        .ok()
        .and_then(|f| f.target)
        .filter(|t| !t.is_empty());
    if st.cfg.job(&name).is_none() {
        return (StatusCode::NOT_FOUND, "no such job\n").into_response();
    }
    let st2 = st.clone();
    let n2 = name.clone();
    let a = blocking(move || st2.control.run(&n2, target.as_deref())).await;
    Redirect::to(&format!(
        "/jobs?note={}&job={}",
        answer_code(a),
        url_segment(&name)
    ))
    .into_response()
}

pub async fn cancel_job(State(st): St, Path(name): Path<String>) -> Response {
    if st.cfg.job(&name).is_none() {
        return (StatusCode::NOT_FOUND, "no such job\n").into_response();
    }
    let note = if st.control.cancel(&name) {
        "cancelled"
    } else {
        "not_running"
    };
    Redirect::to(&format!("/jobs?note={note}&job={}", url_segment(&name))).into_response()
}

/// "Sync all", "Back up all", "Check all": every job of the kind.
pub async fn run_kind(State(st): St, Path(kind): Path<String>) -> Response {
    let kind = match kind.as_str() {
        "replicate" => JobKind::Replicate,
        "backup" => JobKind::Backup,
        "check" => JobKind::Check,
        _ => return (StatusCode::NOT_FOUND, "no such kind of job\n").into_response(),
    };
    let names: Vec<String> = st
        .cfg
        .jobs
        .iter()
        .map(|j| j.get_ref())
        .filter(|j| j.kind == kind)
        .map(|j| j.name.clone())
        .collect();
    let st2 = st.clone();
    let n = blocking(move || {
        names
            .iter()
            .filter(|j| st2.control.run(j, None) == RunAnswer::Started)
            .count()
    })
    .await;
    Redirect::to(&format!("/jobs?note=started_all&n={n}")).into_response()
}
