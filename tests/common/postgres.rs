//! A PostgreSQL cluster of the test's own — `initdb` and `pg_ctl` from
//! `/usr/lib/postgresql/<version>/bin/`, in a temporary folder, on a free port of 127.0.0.1 —
//! so a test can stop, start and restart "the database" without touching the machine's
//! PostgreSQL. PostgreSQL refuses to run as root, so its commands run as `nobody`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::free_port;

pub struct OwnPostgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// The newest installed PostgreSQL's `bin` folder.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("a PostgreSQL version with pg_ctl under /usr/lib/postgresql/*/bin")
}

impl OwnPostgres {
    /// Creates the cluster (trust authentication, superuser `postgres`, listening on
    /// 127.0.0.1 only, fsync off) and starts it.
    pub fn start() -> OwnPostgres {
        super::process::sweep_stale("gochat-pg-");
        let dir = tempfile::Builder::new()
            .prefix("gochat-pg-")
            .tempdir()
            .expect("tempdir");
        super::process::claim_dir(dir.path());
        let chown = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(dir.path())
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown the PostgreSQL folder to nobody");
        let pg = OwnPostgres {
            port: free_port(),
            bin: bin_dir(),
            dir,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = 200\nshared_buffers = 32MB\n",
            pg.port,
            pg.dir.path().display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data().join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("append to postgresql.conf");
        pg.start_again();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>?sslmode=disable`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Stops the server at once (fast shutdown: connections are cut, no waiting for
    /// clients); the data stays.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    /// Starts the (stopped) server again and waits until it accepts connections.
    pub fn start_again(&self) {
        let log = self.dir.path().join("server.log").display().to_string();
        self.pg_ctl(&["-l", &log, "-t", "60", "start"]);
    }

    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data().display().to_string();
        let mut all = vec!["-D", &data, "-w"];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    /// Runs one of PostgreSQL's programs as `nobody`; panics with its output if it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .as_nobody(program)
            .args(args)
            .output()
            .expect("run a PostgreSQL program");
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}\nserver log: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    fn as_nobody(&self, program: &str) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(self.bin.join(program))
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("PGDATA")
            .stdin(std::process::Stdio::null());
        cmd
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self
            .as_nobody("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        // The TempDir removes the folder (root may delete nobody's files).
    }
}
