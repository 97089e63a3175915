//! The daemon's web page and JSON API (docs/web.md): every host, repository,
//! node and job; "sync now", "back up now", "check now", "cancel"; live
//! progress over Server-Sent Events.
//!
//! Security, because the page starts jobs: a login on every route but the
//! login form and the static files; Argon2id password hashes; sessions in
//! memory behind an HttpOnly, SameSite=Strict cookie; a CSRF token on every
//! cookie-authenticated POST, plus Origin and Fetch-Metadata checks; the
//! Host header must name this node (DNS rebinding); failed logins are rate
//! limited; loopback by default; no secret ever goes to the browser; job
//! names and targets from a request are looked up in the configuration and
//! never reach a shell.

pub mod api;
pub mod auth;
pub mod html;
pub mod model;
pub mod pages;
pub mod svg;

use crate::config::{Config, Web};
use crate::daemon::control::Control;
use crate::daemon::history::History;
use crate::error::{Error, Result};
use crate::repo::client::ClientDirs;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cookie holding the session id.
pub const SESSION_COOKIE: &str = "strata_session";
/// Bodies of POST requests are small forms; anything bigger is refused.
const MAX_FORM: usize = 16 * 1024;
/// The overview is read again at least this often (and after every run):
/// each read opens a connection to every off-site node.
const REFRESH_EVERY: Duration = Duration::from_secs(300);

/// Who made a request, once logged in.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: String,
    /// The session's CSRF token (none for API tokens, which carry no
    /// ambient authority).
    pub csrf: Option<String>,
}

impl Principal {
    pub fn csrf(&self) -> &str {
        self.csrf.as_deref().unwrap_or("")
    }
}

pub struct WebState {
    pub cfg: Arc<Config>,
    pub control: Arc<Control>,
    pub users_file: PathBuf,
    pub tokens_file: Option<PathBuf>,
    /// Host names (lower case, no port) requests may be addressed to.
    hosts: Vec<String>,
    pub fresh: Duration,
    pub sessions: auth::Sessions,
    pub limiter: auth::LoginLimiter,
    pub dirs: ClientDirs,
    snapshot: Mutex<Option<(Instant, u64, Arc<model::Snapshot>)>>,
}

/// The host part of a `Host` header or `host:port` string, lower case.
fn host_name(h: &str) -> String {
    let h = h.trim().to_ascii_lowercase();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => h,
    }
}

impl WebState {
    pub fn new(cfg: Arc<Config>, web: &Web, control: Arc<Control>) -> Result<Arc<Self>> {
        let users = auth::read_entries(&web.users_file).map_err(|e| {
            Error::invalid(format!(
                "web: cannot read the users file ({e}); create it with `strata web passwd -c CONFIG NAME`"
            ))
        })?;
        if users.is_empty() {
            return Err(Error::invalid(format!(
                "web: no user in {}; add one with `strata web passwd -c CONFIG NAME`",
                web.users_file.display()
            )));
        }
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        hosts.push(host_name(&web.listen));
        hosts.extend(web.allowed_hosts.iter().map(|h| host_name(h)));
        hosts.retain(|h| h != "0.0.0.0" && h != "::" && !h.is_empty());
        Ok(Arc::new(WebState {
            cfg,
            control,
            users_file: web.users_file.clone(),
            tokens_file: web.tokens_file.clone(),
            hosts,
            fresh: web.fresh(),
            sessions: auth::Sessions::default(),
            limiter: auth::LoginLimiter::default(),
            dirs: ClientDirs::from_env(),
            snapshot: Mutex::new(None),
        }))
    }

    pub fn history(&self) -> Result<History> {
        History::open(&crate::daemon::history_path(&self.cfg))
    }

    /// Reads every repository now and keeps the result.
    pub fn refresh(&self) -> Arc<model::Snapshot> {
        let finished = self.control.finished_count();
        let snap = match self.history() {
            Ok(h) => {
                let s = model::gather(&self.cfg, &h, self.fresh, &self.dirs);
                if let Err(e) = model::record_samples(&h, &s) {
                    eprintln!("strata web: could not record samples: {e}");
                }
                s
            }
            Err(e) => {
                eprintln!("strata web: {e}");
                model::Snapshot {
                    node: self.cfg.node.name.clone(),
                    taken: chrono::Local::now().to_rfc3339(),
                    fresh_seconds: self.fresh.as_secs(),
                    tiers: Vec::new(),
                    hosts: Vec::new(),
                    repos: Vec::new(),
                    spaces: Vec::new(),
                }
            }
        };
        let snap = Arc::new(snap);
        if let Ok(mut s) = self.snapshot.lock() {
            *s = Some((Instant::now(), finished, snap.clone()));
        }
        snap
    }

    /// The newest overview; read afresh when none is kept yet or when a
    /// run ended since (what it shows has changed). Age alone is left to
    /// the background refresh, so a page never waits on a slow node for it.
    pub fn snapshot(&self) -> Arc<model::Snapshot> {
        if let Ok(s) = self.snapshot.lock()
            && let Some((_, finished, snap)) = s.as_ref()
            && *finished == self.control.finished_count()
        {
            return snap.clone();
        }
        self.refresh()
    }

    /// When the kept overview was read.
    pub fn snapshot_age(&self) -> Option<Duration> {
        self.snapshot
            .lock()
            .ok()?
            .as_ref()
            .map(|(at, _, _)| at.elapsed())
    }

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| self.hosts.contains(&host_name(h)))
    }
}

/// The routes, without a socket (tests drive it with `oneshot`).
pub fn router(state: Arc<WebState>) -> Router {
    let protected = Router::new()
        .route("/", get(pages::overview))
        .route("/repo/{name}", get(pages::repo))
        .route("/node/{name}", get(pages::node))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(pages::run))
        .route("/jobs/{name}/run", post(pages::run_job))
        .route("/jobs/{name}/cancel", post(pages::cancel_job))
        .route("/run/{kind}", post(pages::run_kind))
        .route("/logout", post(pages::logout))
        .route("/api/status", get(api::status))
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{id}", get(api::run))
        .route("/api/jobs/{name}/run", post(api::run_job))
        .route("/api/jobs/{name}/cancel", post(api::cancel_job))
        .route("/api/events", get(api::events))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_login));
    Router::new()
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/static/style.css", get(static_css))
        .route("/static/app.js", get(static_js))
        .merge(protected)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn static_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/style.css"),
    )
        .into_response()
}

async fn static_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/app.js"),
    )
        .into_response()
}

/// Every request: the Host must name this node; POSTs must come from this
/// page (Origin and Fetch-Metadata); responses carry the security headers.
async fn guard(State(st): State<Arc<WebState>>, req: Request, next: Next) -> Response {
    if !st.host_allowed(req.headers()) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "unknown Host: add it to [web] allowed_hosts to reach the page by this name\n",
        )
            .into_response();
    }
    if req.method() != Method::GET
        && req.method() != Method::HEAD
        && let Err(why) = same_origin(req.headers())
    {
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// A state-changing request must not come from another site: a browser
/// says where it comes from in `Sec-Fetch-Site` and `Origin`; clients that
/// send neither (curl, scripts) still need a CSRF token or an API token.
fn same_origin(headers: &HeaderMap) -> std::result::Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Err("refused: the request came from another site");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin_host = origin
            .split_once("://")
            .map(|(_, h)| h)
            .unwrap_or("")
            .trim_end_matches('/');
        if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err("refused: the request's Origin is not this page");
        }
    }
    Ok(())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// The routes behind the login: a session cookie or an API token; and for
/// a cookie-authenticated POST, the session's CSRF token (form field
/// `csrf` or header `X-CSRF-Token`).
async fn require_login(State(st): State<Arc<WebState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    if let Some(token) = bearer {
        let name = st
            .tokens_file
            .as_deref()
            .and_then(|f| auth::check_token(f, token.trim()));
        return match name {
            Some(user) => {
                let mut req = req;
                req.extensions_mut().insert(Principal { user, csrf: None });
                next.run(req).await
            }
            None => (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"error": "unknown API token"})),
            )
                .into_response(),
        };
    }
    let session = cookie(req.headers(), SESSION_COOKIE).and_then(|id| st.sessions.get(&id));
    let Some(session) = session else {
        if is_api(&path) || req.method() != Method::GET {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"error": "log in first (or send an API token)"})),
            )
                .into_response();
        }
        let next_path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        return Redirect::to(&format!("/login?next={}", html::url_segment(&next_path)))
            .into_response();
    };
    let mut req = req;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let from_header = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => b,
            Err(_) => {
                return (StatusCode::PAYLOAD_TOO_LARGE, "request too large\n").into_response();
            }
        };
        let from_form = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .ok()
            .and_then(|kv| kv.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v));
        let presented = from_header.or(from_form).unwrap_or_default();
        if !auth::constant_time_eq(presented.as_bytes(), session.csrf.as_bytes()) {
            return (
                StatusCode::FORBIDDEN,
                "refused: missing or wrong CSRF token (reload the page)\n",
            )
                .into_response();
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(Principal {
        user: session.user,
        csrf: Some(session.csrf),
    });
    next.run(req).await
}

/// Listens on `listen` and serves the page from a thread of its own;
/// returns the bound address. Also keeps the overview fresh in the
/// background, so a page never waits for a slow node.
pub fn serve(state: Arc<WebState>, listen: &str) -> Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind(listen)
        .map_err(|e| Error::io(format!("listening for the web page on {listen}"), e))?;
    l.set_nonblocking(true)
        .map_err(|e| Error::io("web listener", e))?;
    let addr = l.local_addr().map_err(|e| Error::io("web listener", e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the web server", e))?;
    let app = router(state.clone());
    std::thread::spawn(move || {
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(l) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("strata web: {e}");
                    return;
                }
            };
            let svc = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            if let Err(e) = axum::serve(listener, svc).await {
                eprintln!("strata web: {e}");
            }
        });
    });
    std::thread::spawn(move || {
        let mut seen = u64::MAX;
        let mut at = Instant::now();
        loop {
            let finished = state.control.finished_count();
            if finished != seen || at.elapsed() >= REFRESH_EVERY {
                state.refresh();
                seen = finished;
                at = Instant::now();
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("10.8.0.1"), "10.8.0.1");
        assert_eq!(host_name("backup.vpn:443"), "backup.vpn");
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(same_origin(&h).is_err());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&h).is_err());
    }
}
