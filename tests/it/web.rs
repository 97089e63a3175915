//! The web page. Router tests drive the real router without a socket: every
//! route needs a login, CSRF and cross-site requests are refused, a wrong
//! Host is refused, logins are rate limited, API tokens work. In those, a
//! small thread stands in for the daemon's main loop (it answers "started"
//! and records what it was asked); the browser test below runs the real
//! daemon, with real repositories, and clicks through headless Chromium.

use crate::util::{Env, make_tree, wait_for};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use strata::daemon::control::{Control, Message, RunAnswer};
use strata::web::{WebState, auth, router};
use tower::ServiceExt;

const HOST: &str = "127.0.0.1:8080";
const PASSWORD: &str = "correct horse battery";

struct Fixture {
    _env: Env,
    state: Arc<WebState>,
    /// Jobs the stand-in main loop was asked to run.
    asked: Arc<Mutex<Vec<String>>>,
    token: String,
    rt: tokio::runtime::Runtime,
}

fn fixture() -> Fixture {
    let env = Env::new();
    let users = env.path("users");
    auth::write_entry(
        &users,
        "admin",
        Some(&auth::hash_password(PASSWORD).unwrap()),
    )
    .unwrap();
    let tokens = env.path("tokens");
    let (token, hash) = auth::new_token().unwrap();
    auth::write_entry(&tokens, "script", Some(&hash)).unwrap();
    let cfg_path = env.path("strata.toml");
    let src = format!(
        r#"state_dir = "{state}"
[node]
name = "central"

[web]
listen = "{HOST}"
users_file = "{users}"
tokens_file = "{tokens}"

[[repository]]
name = "host1"
location = "{dir}/host1"

[[repository]]
name = "pi"
location = "{dir}/pi"

[[job]]
name = "offsite"
kind = "replicate"
sources = ["{dir}/host1"]
targets = ["pi"]
"#,
        state = env.path("state").display(),
        users = users.display(),
        tokens = tokens.display(),
        dir = env.dir.path().display(),
    );
    std::fs::write(&cfg_path, &src).unwrap();
    let cfg = Arc::new(strata::config::Config::parse(&src, &cfg_path).unwrap());
    let (tx, rx) = crossbeam_channel::unbounded::<Message>();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let a2 = asked.clone();
    std::thread::spawn(move || {
        for m in rx {
            if let Message::Run { job, answer, .. } = m {
                a2.lock().unwrap().push(job);
                let _ = answer.send(RunAnswer::Started);
            }
        }
    });
    let control = Arc::new(Control::new(tx));
    let state = WebState::new(cfg.clone(), cfg.web.as_ref().unwrap(), control).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Fixture {
        _env: env,
        state,
        asked,
        token,
        rt,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Fixture {
    fn send(&self, req: Request<Body>) -> Answer {
        let app = router(self.state.clone());
        self.rt.block_on(async move {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = if headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|c| c.to_str().unwrap().starts_with("text/event-stream"))
            {
                String::new() // endless
            } else {
                let b = resp.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8_lossy(&b).into_owned()
            };
            Answer {
                status,
                headers,
                body,
            }
        })
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut r = Request::get(path).header(header::HOST, HOST);
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        self.send(r.body(Body::empty()).unwrap())
    }

    fn post(&self, path: &str, cookie: Option<&str>, form: &str, extra: &[(&str, &str)]) -> Answer {
        let mut r = Request::post(path)
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        self.send(r.body(Body::from(form.to_string())).unwrap())
    }

    fn login(&self, password: &str) -> Answer {
        self.post(
            "/login",
            None,
            &format!(
                "user=admin&password={}&next=%2Fjobs",
                password.replace(' ', "+")
            ),
            &[],
        )
    }

    /// Logs in; returns the cookie and the session's CSRF token.
    fn session(&self) -> (String, String) {
        let a = self.login(PASSWORD);
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        let set = a.headers[header::SET_COOKIE].to_str().unwrap().to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        let page = self.get("/", Some(&cookie));
        assert_eq!(page.status, StatusCode::OK);
        let csrf = page
            .body
            .split(r#"<meta name="csrf" content=""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(csrf.len(), 64);
        (cookie, csrf)
    }
}

const PAGES: [&str; 5] = ["/", "/repo/host1", "/node/pi", "/jobs", "/jobs/1"];
const API_GETS: [&str; 4] = ["/api/status", "/api/jobs", "/api/jobs/1", "/api/events"];
const POSTS: [&str; 6] = [
    "/jobs/offsite/run",
    "/jobs/offsite/cancel",
    "/run/replicate",
    "/logout",
    "/api/jobs/offsite/run",
    "/api/jobs/offsite/cancel",
];

#[test]
fn every_route_but_login_and_static_files_needs_a_login() {
    let f = fixture();
    for p in PAGES {
        let a = f.get(p, None);
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{p}");
        let to = a.headers[header::LOCATION].to_str().unwrap();
        assert!(to.starts_with("/login?next="), "{p} → {to}");
        assert!(!a.body.contains("host1"), "{p} leaked content");
    }
    for p in API_GETS {
        assert_eq!(f.get(p, None).status, StatusCode::UNAUTHORIZED, "{p}");
    }
    for p in POSTS {
        assert_eq!(
            f.post(p, None, "", &[]).status,
            StatusCode::UNAUTHORIZED,
            "{p}"
        );
    }
    // A made-up session id is no login either.
    assert_eq!(
        f.get("/api/status", Some("strata_session=00ff")).status,
        StatusCode::UNAUTHORIZED
    );
    assert!(f.asked.lock().unwrap().is_empty());
    for p in ["/login", "/static/app.js", "/static/style.css"] {
        assert_eq!(f.get(p, None).status, StatusCode::OK, "{p}");
    }
    let csp = f.get("/login", None).headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
}

#[test]
fn logged_in_pages_render_and_a_wrong_host_is_refused_everywhere() {
    let f = fixture();
    let (cookie, _) = f.session();
    for p in PAGES.iter().chain(&API_GETS) {
        let a = f.get(p, Some(&cookie));
        // Run #1 does not exist yet: a clean 404, not an error.
        let want = if p.ends_with("/1") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(a.status, want, "{p}: {}", a.body);
    }
    let status: serde_json::Value =
        serde_json::from_str(&f.get("/api/status", Some(&cookie)).body).unwrap();
    assert_eq!(status["overview"]["tiers"][0], "pi");
    assert_eq!(status["overview"]["hosts"][0]["name"], "host1");
    assert_eq!(status["overview"]["hosts"][0]["ok"], false);
    for p in PAGES.iter().chain(&API_GETS).chain(&["/login"]) {
        let r = Request::get(*p)
            .header(header::HOST, "evil.example:8080")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap();
        assert_eq!(f.send(r).status, StatusCode::MISDIRECTED_REQUEST, "{p}");
    }
    let r = Request::get("/").body(Body::empty()).unwrap();
    assert_eq!(f.send(r).status, StatusCode::MISDIRECTED_REQUEST, "no Host");
}

#[test]
fn posts_without_the_csrf_token_or_from_another_site_are_refused() {
    let f = fixture();
    let (cookie, csrf) = f.session();
    for p in POSTS {
        for form in [String::new(), "csrf=0000".to_string()] {
            let a = f.post(p, Some(&cookie), &form, &[]);
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{p} with {form:?}");
        }
        let good = format!("csrf={csrf}");
        for extra in [
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ] {
            let a = f.post(p, Some(&cookie), &good, &[extra]);
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{p} with {extra:?}");
        }
    }
    assert!(
        f.asked.lock().unwrap().is_empty(),
        "a refused request reached the daemon"
    );
    // The token in the form or in a header, from this page: accepted.
    let a = f.post(
        "/jobs/offsite/run",
        Some(&cookie),
        &format!("csrf={csrf}"),
        &[
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ],
    );
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(
        a.headers[header::LOCATION],
        "/jobs?note=started&job=offsite"
    );
    let a = f.post(
        "/api/jobs/offsite/run",
        Some(&cookie),
        "",
        &[("x-csrf-token", &csrf)],
    );
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    assert_eq!(*f.asked.lock().unwrap(), ["offsite", "offsite"]);
    // Names come from the configuration, never from the request.
    let a = f.post(
        "/jobs/rm%20-rf/run",
        Some(&cookie),
        &format!("csrf={csrf}"),
        &[],
    );
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(f.asked.lock().unwrap().len(), 2);
    // Logging out ends the session.
    let a = f.post("/logout", Some(&cookie), &format!("csrf={csrf}"), &[]);
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(
        f.get("/api/status", Some(&cookie)).status,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn logins_set_a_strict_cookie_and_guessing_is_rate_limited() {
    let f = fixture();
    let a = f.login(PASSWORD);
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers[header::LOCATION], "/jobs");
    let set = a.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    // An open redirect after login is not possible.
    let a = f.post(
        "/login",
        None,
        &format!(
            "user=admin&password={}&next=%2F%2Fevil.example",
            PASSWORD.replace(' ', "+")
        ),
        &[],
    );
    assert_eq!(a.headers[header::LOCATION], "/");
    for _ in 0..auth::LOGIN_FAILURES_PER_CLIENT {
        let a = f.login("wrong password");
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(a.body.contains("wrong user or password"));
        assert!(a.headers.get(header::SET_COOKIE).is_none());
    }
    // Now even the right password waits.
    let a = f.login(PASSWORD);
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.body.contains("too many failed logins"), "{}", a.body);
    assert!(a.headers.get(header::SET_COOKIE).is_none());
}

#[test]
fn api_tokens_work_without_cookies_and_unknown_ones_are_refused() {
    let f = fixture();
    let bearer = format!("Bearer {}", f.token);
    let r = Request::get("/api/status")
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, &bearer)
        .body(Body::empty())
        .unwrap();
    let a = f.send(r);
    assert_eq!(a.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["user"], "script");
    let r = Request::post("/api/jobs/offsite/run")
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, &bearer)
        .body(Body::from(r#"{"target":"pi"}"#))
        .unwrap();
    assert_eq!(f.send(r).status, StatusCode::ACCEPTED);
    assert_eq!(*f.asked.lock().unwrap(), ["offsite"]);
    let r = Request::get("/api/status")
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, "Bearer strata_0000")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.send(r).status, StatusCode::UNAUTHORIZED);
    // The page itself answers a token too (for scripts), but a token never
    // gets a CSRF token or a cookie.
    let r = Request::get("/")
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, &bearer)
        .body(Body::empty())
        .unwrap();
    let a = f.send(r);
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers.get(header::SET_COOKIE).is_none());
}

#[test]
fn without_a_user_the_daemon_runs_its_jobs_but_serves_no_page() {
    let env = Env::new();
    std::fs::write(env.path("users"), "# nobody yet\n").unwrap();
    let cfg = env.path("strata.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n[node]\nname = \"n\"\n[web]\nusers_file = \"{}\"\n",
            env.path("state").display(),
            env.path("users").display()
        ),
    )
    .unwrap();
    let log = env.path("daemon.log");
    let mut daemon = Daemon(
        env.std_cmd()
            .args(["daemon", "-c", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("the daemon to start", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("strata daemon on n"))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("the web page is not served"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("no user in") && line.contains("strata web passwd"),
        "{line}"
    );
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "the daemon must keep running"
    );
}

#[test]
fn pages_show_real_repositories_tiers_drives_and_an_unreachable_node() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init(&["-e", "repokey"]);
    env.ok(&[
        "create",
        &format!("{}::first", env.repo()),
        src.to_str().unwrap(),
    ]);
    let pi = env.path("pi").display().to_string();
    env.ok(&["init", "-e", "none", &pi]);
    env.ok(&["replicate", "--to", &pi, &env.repo()]);
    let users = env.path("users");
    auth::write_entry(
        &users,
        "admin",
        Some(&auth::hash_password(PASSWORD).unwrap()),
    )
    .unwrap();
    let cfg_path = env.path("strata.toml");
    // A closed port: the far node is down.
    let down = free_port();
    let src_cfg = format!(
        r#"state_dir = "{state}"
[node]
name = "central"

[web]
listen = "{HOST}"
users_file = "{users}"

[[repository]]
name = "pi"
location = "{pi}"

[[repository]]
name = "pi-far"
location = "ssh://strata@127.0.0.1:{down}/srv/offsite"

[[job]]
name = "offsite"
kind = "replicate"
sources = ["{repo}"]
targets = ["pi", "pi-far"]
"#,
        state = env.path("state").display(),
        users = users.display(),
        repo = env.repo(),
    );
    std::fs::write(&cfg_path, &src_cfg).unwrap();
    let cfg = Arc::new(strata::config::Config::parse(&src_cfg, &cfg_path).unwrap());
    // Free space falling 1 GB a day over a week, on the file system the
    // repositories live on: the page must predict when it fills.
    let snap = {
        let (tx, _rx) = crossbeam_channel::unbounded::<Message>();
        let st = WebState::new(
            cfg.clone(),
            cfg.web.as_ref().unwrap(),
            Arc::new(Control::new(tx)),
        )
        .unwrap();
        st.refresh()
    };
    let key = snap.spaces[0].key.clone();
    let free = snap.spaces[0].free as f64;
    let h = strata::daemon::history::History::open(&env.path("state/history.sqlite")).unwrap();
    let now = chrono::Local::now().timestamp();
    for d in 1..=7 {
        h.add_sample(
            &format!("free:{key}"),
            now - d * 86400,
            free + d as f64 * 1e9,
        )
        .unwrap();
    }
    let (tx, _rx) = crossbeam_channel::unbounded::<Message>();
    let f = Fixture {
        state: WebState::new(
            cfg.clone(),
            cfg.web.as_ref().unwrap(),
            Arc::new(Control::new(tx)),
        )
        .unwrap(),
        _env: env,
        asked: Arc::default(),
        token: String::new(),
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    };
    let (cookie, _) = f.session();
    let v: serde_json::Value =
        serde_json::from_str(&f.get("/api/status", Some(&cookie)).body).unwrap();
    let host = &v["overview"]["hosts"][0];
    assert_eq!(host["name"], "repo", "{v}");
    assert_eq!(host["copies"][0]["tier"], "pi");
    assert_eq!(host["copies"][0]["recent"], true);
    assert_eq!(host["copies"][1]["time"], serde_json::Value::Null);
    assert_eq!(
        host["ok"], true,
        "host, central and pi: three recent copies"
    );
    let spaces = v["overview"]["spaces"].as_array().unwrap();
    let days = spaces[0]["days_until_full"].as_f64().unwrap();
    assert!(
        (days - free / 1e9).abs() < 1.0,
        "{days} days for {free} bytes"
    );
    let overview = f.get("/", Some(&cookie)).body;
    assert!(overview.contains("3-2-1 ✓"), "{overview}");
    assert!(
        overview.contains(&format!("{:.0} days", days)),
        "{overview}"
    );
    // The unencrypted tier lists its replica archives; the host's
    // encrypted repository does not (no key here).
    let pi_page = f.get("/repo/pi", Some(&cookie)).body;
    assert!(pi_page.contains(">repo-20"), "{pi_page}");
    let host_page = f.get("/repo/repo", Some(&cookie)).body;
    assert!(
        host_page.contains("its key stays on the host"),
        "{host_page}"
    );
    // Node pages: reachable with its last sync; the far one down, saying why.
    let node = f.get("/node/pi", Some(&cookie)).body;
    assert!(node.contains(r#"<td id="reachable">yes</td>"#), "{node}");
    assert!(node.contains("Sync offsite now"));
    let far = f.get("/node/pi-far", Some(&cookie)).body;
    assert!(
        far.contains(r#"<td id="reachable"><span class="error">no: "#),
        "{far}"
    );
    assert_eq!(
        f.get("/node/repo", Some(&cookie)).status,
        StatusCode::NOT_FOUND
    );
}

// ---- The real thing: daemon, repositories, Chromium. ----

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon(Child);

/// A FIFO a job's hook waits on; opened on drop so a failed test leaves no
/// hook waiting forever.
struct Gate(PathBuf);

impl Drop for Gate {
    fn drop(&mut self) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&self.0)
        {
            let _ = f.write_all(b"stop\n");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Where the screenshot is kept after the test (the temp dir is not).
fn artifacts() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn chromium_logs_in_clicks_sync_now_and_watches_the_job_finish() {
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is missing: apt-get install chromium (scripts/test.sh does)"
    );
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    // Enough data that the copy takes a moment.
    std::fs::write(src.join("big.bin"), crate::util::random("web", 24 << 20)).unwrap();
    env.init(&["-e", "repokey"]);
    env.ok(&[
        "create",
        &format!("{}::first", env.repo()),
        src.to_str().unwrap(),
    ]);
    let pi = env.path("pi").display().to_string();
    env.ok(&["init", "-e", "none", &pi]);
    let gate = env.path("gate");
    let st = Command::new("mkfifo").arg(&gate).status().unwrap();
    assert!(st.success());
    let _gate = Gate(gate.clone());
    let port = free_port();
    let cfg = env.path("strata.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"state_dir = "{state}"
[node]
name = "central"

[web]
listen = "127.0.0.1:{port}"
users_file = "{dir}/users"
tokens_file = "{dir}/tokens"

[[repository]]
name = "pi"
location = "{pi}"

[[job]]
name = "offsite"
kind = "replicate"
sources = ["{repo}"]
targets = ["pi"]
# Holds the run in its first step until the test opens the gate: the
# page must show it running, and refuse a second run, meanwhile.
before = [["sh", "-c", "cat {gate} >/dev/null"]]
"#,
            state = env.path("state").display(),
            dir = env.dir.path().display(),
            repo = env.repo(),
            gate = gate.display(),
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    env.ok_with(
        &[("STRATA_WEB_PASSWORD", PASSWORD)],
        &["web", "passwd", "-c", c, "admin"],
    );
    let token = env.ok(&["web", "token", "-c", c, "cli"]).trim().to_string();
    let log = std::fs::File::create(env.path("daemon.log")).unwrap();
    let _daemon = Daemon(
        env.std_cmd()
            .args(["daemon", "-c", c])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_for("the web page to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let shot = artifacts().join("web-sync-now.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("node")
        .arg(browser_dir().join("sync_now.js"))
        .env("STRATA_URL", format!("http://127.0.0.1:{port}"))
        .env("STRATA_USER", "admin")
        .env("STRATA_PASSWORD", PASSWORD)
        .env("STRATA_GATE", &gate)
        .env("STRATA_SCREENSHOT", &shot)
        .env("NODE_PATH", browser_dir().join("node_modules"))
        .output()
        .unwrap();
    let daemon_log = std::fs::read_to_string(env.path("daemon.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "browser script failed:\n{}\n{}\ndaemon:\n{daemon_log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The page showed the run in its hook, refused a second click, then
    // followed the copy to the end.
    assert_eq!(seen["phase_while_held"], "before hook", "{seen}");
    assert!(
        seen["second_click"]
            .as_str()
            .unwrap()
            .contains("already running"),
        "{seen}"
    );
    assert_eq!(seen["final_state"], "ok", "{seen}");
    assert_eq!(seen["final_value"], 1000, "{seen}");
    assert!(
        seen["badge_before"]
            .as_str()
            .unwrap()
            .contains("no recent off-site copy"),
        "{seen}"
    );
    assert!(
        seen["badge_after"].as_str().unwrap().contains("3-2-1"),
        "{seen}"
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot"
    );
    // One run only, started by hand, and it made the replica.
    let h = strata::daemon::history::History::open(&env.path("state/history.sqlite")).unwrap();
    let runs = h.recent(Some("offsite"), 10).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].outcome, "ok", "{}", runs[0].log);
    assert_eq!(runs[0].trigger, "manual");
    let list = env.ok(&["list", &pi]);
    assert!(list.contains("repo-"), "{list}");
    // `strata status --remote` reads the same overview with a token.
    let out = env
        .cmd()
        .env("STRATA_WEB_TOKEN", &token)
        .args([
            "status",
            "--remote",
            &format!("http://127.0.0.1:{port}"),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["overview"]["hosts"][0]["name"], "repo");
    assert_eq!(v["overview"]["hosts"][0]["ok"], true);
    let out = env
        .cmd()
        .env("STRATA_WEB_TOKEN", "strata_wrong")
        .args(["status", "--remote", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the token"));
}
