//! Database dumps streamed into archives, against a real PostgreSQL server
//! (Debian's `postgresql`, started here on a temp directory and port).

use crate::util::Env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway PostgreSQL cluster run by the `postgres` user.
struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL is needed: install the Debian package postgresql (scripts/test.sh does)",
        )
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin")
}

fn as_postgres(cmd: &Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(cmd);
    c
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Postgres {
    fn start() -> Self {
        let bin = pg_bin();
        // Outside the test's private temp dir: the postgres user must reach it.
        let dir = tempfile::Builder::new()
            .prefix("strata-pg-")
            .tempdir()
            .unwrap()
            .keep();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ok(Command::new("chown").args(["postgres:postgres"]).arg(&dir));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ok(as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
            .arg(dir.join("data")));
        ok(as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-w", "-l"])
            .arg(dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=''",
                dir.display()
            ))
            .arg("start"));
        Self { dir, bin, port }
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        ok(Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql]))
    }

    fn options(&self) -> String {
        format!(
            "[\"--host={}\", \"--port={}\", \"--username=postgres\"]",
            self.dir.display(),
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(env: &Env, pg: &Postgres, database: &str) -> PathBuf {
    std::fs::write(env.path("pass"), "test passphrase\n").unwrap();
    let path = env.path(&format!("{database}.toml"));
    std::fs::write(
        &path,
        format!(
            "state_dir = \"{}\"\n[node]\nname = \"db1\"\n[[repository]]\nname = \"local\"\nlocation = \"{}\"\npassphrase_file = \"{}\"\n[[job]]\nname = \"db\"\nkind = \"backup\"\nrepository = \"local\"\narchive = \"db-{{now:%Y%m%d%H%M%S%f}}\"\n[[job.dumps]]\nkind = \"postgresql\"\ndatabase = \"{database}\"\noptions = {}\n",
            env.path("state").display(),
            env.repo(),
            env.path("pass").display(),
            pg.options()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_postgresql_dump_streams_into_the_archive_and_restores_into_a_fresh_database() {
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, name text, data bytea);
         INSERT INTO t SELECT i, 'nämé ' || i, sha256(i::text::bytea) FROM generate_series(1, 5000) i;",
    );
    let want = pg.psql(
        "app",
        "SELECT id, name, encode(data, 'hex') FROM t ORDER BY id",
    );
    let env = Env::new();
    env.init(&["-e", "repokey"]);
    let cfg = config(&env, &pg, "app");
    env.ok(&["backup", "-c", cfg.to_str().unwrap()]);
    let archive = env.ok(&["list", "--short", &env.repo()]);
    let archive = archive.trim();
    let items = env.ok(&["list", &format!("{}::{archive}", env.repo())]);
    assert!(items.contains("dumps/postgresql-app.sql"), "{items}");

    let dest = env.path("out");
    std::fs::create_dir_all(&dest).unwrap();
    let out = env
        .cmd()
        .args(["extract", &format!("{}::{archive}", env.repo())])
        .current_dir(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = dest.join("dumps/postgresql-app.sql");
    // The postgres user reads the dump to restore it.
    let shared = pg.dir.join("dump.sql");
    std::fs::copy(&dump, &shared).unwrap();
    pg.psql("postgres", "CREATE DATABASE restored");
    ok(Command::new(pg.bin.join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
        .arg(&pg.dir)
        .args(["-p", &pg.port.to_string(), "-d", "restored", "-f"])
        .arg(&shared));
    let got = pg.psql(
        "restored",
        "SELECT id, name, encode(data, 'hex') FROM t ORDER BY id",
    );
    assert_eq!(got.lines().count(), 5000);
    assert_eq!(got, want);
}

#[test]
fn a_failing_dump_fails_the_backup_and_commits_nothing() {
    let pg = Postgres::start();
    let env = Env::new();
    env.init(&["-e", "repokey"]);
    let cfg = config(&env, &pg, "no_such_database");
    let out = env.run(&["backup", "-c", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pg_dump failed") && err.contains("no_such_database"),
        "{err}"
    );
    assert_eq!(
        env.ok(&["list", "--short", &env.repo()]),
        "",
        "no archive with a truncated dump"
    );
    let status = env.ok(&["status", "--json", "-c", cfg.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["jobs"][0]["last"]["outcome"], "failed", "{v}");
}
