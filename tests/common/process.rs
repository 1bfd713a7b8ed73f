//! Running `gochat run` as a child process: free ports, a guard that kills it if the test
//! fails, HTTP probes of its operations endpoint, and a graceful stop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::gochat;

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running worker, killed if the test fails before stopping it. Its stderr goes to a
/// file (a pipe nobody drains would block a chatty worker). The queue prefix
/// [`start_worker`] made up for it, if the test did not give one, is swept from the
/// machine's broker when it is dropped: the worker declared that topology and nobody else
/// knows its name.
pub struct Worker(pub Child, pub std::path::PathBuf, Option<String>);

impl Worker {
    /// Another `gochat` process started by the test (logging to `log`), killed when
    /// dropped, and the broker topology under `prefix` swept.
    pub fn adopt(child: Child, log: std::path::PathBuf, prefix: String) -> Worker {
        Worker(child, log, Some(prefix))
    }

    /// What the worker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(prefix) = self.2.take() {
            // A thread of its own: drop may run inside the test's runtime, which cannot block.
            let _ = std::thread::spawn(move || super::broker::sweep(&prefix)).join();
        }
    }
}

/// `gochat run` on `db_url` with its HTTP endpoint on `port` and a fresh queue prefix;
/// `extra` environment variables win over those.
pub fn start_worker(dir: &Path, db_url: &str, port: u16, extra: &[(&str, &str)]) -> Worker {
    let mut cmd = gochat(dir, db_url);
    let own_prefix = (!extra.iter().any(|(k, _)| *k == "GOCHAT_AMQP_PREFIX"))
        .then(|| format!("test-{}.", uuid::Uuid::now_v7().simple()));
    cmd.env("GOCHAT_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .arg("run")
        .stdout(Stdio::null());
    if let Some(prefix) = &own_prefix {
        cmd.env("GOCHAT_AMQP_PREFIX", prefix);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let log = dir.join(format!("worker-{}.log", uuid::Uuid::now_v7().simple()));
    cmd.stderr(std::fs::File::create(&log).expect("worker log file"));
    Worker(cmd.spawn().expect("spawn gochat run"), log, own_prefix)
}

/// Status and body of a GET, or `None` when nothing answers.
pub async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.unwrap_or_default()))
}

/// Polls `url` until it answers `want` or 30 s pass.
pub async fn wait_status(url: &str, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((code, body)) = get(url).await
            && code == want
        {
            return body;
        }
        assert!(Instant::now() < deadline, "{url} never answered {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends SIGTERM and waits up to 20 s for the exit; returns the exit code and stderr.
pub fn sigterm_and_wait(worker: &mut Worker) -> (Option<i32>, String) {
    let pid = worker.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = worker.0.try_wait().expect("wait") {
            return (status.code(), worker.log());
        }
        assert!(
            Instant::now() < deadline,
            "gochat run did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Marks `dir` (a service's temporary folder) as owned by this test process.
pub fn claim_dir(dir: &Path) {
    std::fs::write(dir.join("owner.pid"), std::process::id().to_string()).expect("write owner.pid");
}

/// Stops and removes what a killed test process left behind: every folder named
/// `<prefix>*` in the temp folder whose `owner.pid` names a process that no longer exists.
/// Drop guards clean up after a failing test, but not after a test process that was itself
/// killed (a CI timeout, Ctrl-C), and a leftover broker node or database cluster keeps
/// running. A folder's processes are found by its path in their command line (servers) or
/// as their working directory (workers), and killed.
pub fn sweep_stale(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let dir = entry.path();
        let Some(owner) = std::fs::read_to_string(dir.join("owner.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue; // being set up, or not ours
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        kill_processes_mentioning(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn kill_processes_mentioning(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        // Workers run in the folder (`gochat` sets it as their working directory).
        let cwd = std::fs::read_link(p.path().join("cwd")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) || cwd.starts_with(dir) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}
