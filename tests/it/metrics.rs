//! Metrics, dashboards and alerts: every metric the dashboard and the rules
//! use is exported, the rules pass promtool's own tests, and a real
//! Prometheus (Debian's `prometheus`) scrapes a running daemon and sees the
//! values change after a backup and a replication.

use crate::util::{Env, make_tree, wait_for};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A host repository, a Pi tier, and a configuration with backup (chained
/// prune and check), replicate and drill jobs.
fn setup(env: &Env, metrics_port: Option<u16>) -> PathBuf {
    let src = env.path("src");
    make_tree(&src);
    env.init(&["-e", "repokey"]);
    let pi = env.path("pi").display().to_string();
    env.ok(&["init", "-e", "none", &pi]);
    std::fs::write(env.path("pass"), "test passphrase\n").unwrap();
    let cfg = env.path("strata.toml");
    let metrics = metrics_port
        .map(|p| format!("[metrics]\nlisten = \"127.0.0.1:{p}\"\n\n"))
        .unwrap_or_default();
    std::fs::write(
        &cfg,
        format!(
            r#"state_dir = "{state}"
{metrics}
[node]
name = "central"

[[repository]]
name = "host1"
location = "{repo}"
passphrase_file = "{pass}"

[[repository]]
name = "pi"
location = "{pi}"

[[job]]
name = "nightly"
kind = "backup"
repository = "host1"
schedule = "0 3 1 1 *"
sources = ["{src}"]
archive = "{{hostname}}-{{now:%Y%m%d%H%M%S%f}}"

[[job]]
name = "verify"
kind = "check"
repository = "host1"
after = "nightly"

[[job]]
name = "offsite"
kind = "replicate"
sources = ["{repo}"]
targets = ["pi"]

[[job]]
name = "drill"
kind = "drill"
repository = "host1"
tiers = ["pi"]
host = "repo"
sample = 5
"#,
            state = env.path("state").display(),
            repo = env.repo(),
            pass = env.path("pass").display(),
            src = src.display(),
        ),
    )
    .unwrap();
    cfg
}

/// Metric names in a text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// `strata_…` names in PromQL expressions.
fn used_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("strata_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let env = Env::new();
    let cfg = setup(&env, None);
    let cfg = cfg.to_str().unwrap();
    env.ok(&["backup", "-c", cfg, "nightly", "offsite", "drill"]);
    let text = env.ok(&["metrics", "-c", cfg]);
    let have = exported(&text);
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("dashboards/strata.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = String::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    exprs.push_str(&std::fs::read_to_string(root().join("dashboards/alerts.yml")).unwrap());
    let used = used_in(&exprs);
    assert!(used.len() >= 15, "{used:?}");
    let missing: Vec<_> = used.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\n{text}"
    );
    // The figures are the repository's.
    assert!(
        text.contains("strata_repository_archives{repo=\"host1\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("strata_job_runs_total{job_name=\"nightly\",outcome=\"ok\"} 1\n"));
    assert!(text.contains("strata_check_last_success{repo=\"host1\",job_name=\"verify\"} 1\n"));
    assert!(text.contains(
        "strata_replication_last_success_timestamp_seconds{repo=\"repo\",target=\"pi\"}"
    ));
    assert!(
        text.contains("strata_drill_last_ok{host=\"repo\",tier=\"pi\"} 1\n"),
        "{text}"
    );

    // The same for node_exporter, written atomically.
    let dir = env.path("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    env.ok(&["metrics", "-c", cfg, "--textfile", dir.to_str().unwrap()]);
    let file = std::fs::read_to_string(dir.join("strata.prom")).unwrap();
    assert_eq!(exported(&file), have);
}

#[test]
fn promtool_checks_and_tests_the_alert_rules() {
    let dir = root().join("dashboards");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect(
                "promtool is needed: install the Debian package prometheus (scripts/test.sh does)",
            );
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of an instant query with one result, if any.
fn query(port: u16, q: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let body = ureq::get(&url)
        .query("query", q)
        .call()
        .ok()?
        .into_body()
        .read_to_string()
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_sees_a_backup_and_a_replication() {
    let env = Env::new();
    let mport = free_port();
    let cfg = setup(&env, Some(mport));
    let cfg_s = cfg.to_str().unwrap().to_string();
    let _daemon = Killed(
        env.std_cmd()
            .args(["daemon", "-c", &cfg_s])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the daemon's /metrics", || {
        std::net::TcpStream::connect(("127.0.0.1", mport)).is_ok()
    });
    let pport = free_port();
    let prom_cfg = env.path("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: strata\n    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
        ),
    )
    .unwrap();
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                env.path("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is needed: install the Debian package prometheus"),
    );
    wait_for("Prometheus to scrape the daemon", || {
        query(pport, "up{job=\"strata\"}") == Some(1.0)
    });
    wait_for("an empty repository in Prometheus", || {
        query(pport, "strata_repository_archives{repo=\"host1\"}") == Some(0.0)
    });
    assert_eq!(
        query(
            pport,
            "count(strata_replication_last_success_timestamp_seconds)"
        ),
        None
    );

    env.ok(&["backup", "-c", &cfg_s]);
    wait_for("the backup in Prometheus", || {
        query(pport, "strata_repository_archives{repo=\"host1\"}") == Some(1.0)
            && query(
                pport,
                "strata_job_runs_total{job_name=\"nightly\",outcome=\"ok\"}",
            ) == Some(1.0)
    });
    env.ok(&["backup", "-c", &cfg_s, "offsite"]);
    wait_for("the replication in Prometheus", || {
        query(pport, "strata_repository_archives{repo=\"pi\"}") == Some(1.0)
            && query(
                pport,
                "time() - strata_replication_last_success_timestamp_seconds{repo=\"repo\",target=\"pi\"}",
            )
            .is_some_and(|age| (0.0..600.0).contains(&age))
    });
    let free = query(pport, "min(strata_filesystem_free_bytes)").unwrap();
    assert!(free > 0.0);
}
