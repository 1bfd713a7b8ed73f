//! The worker under test as a real `gochat run` process (this same executable), so the
//! bench measures what production runs, peak RSS included.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A `gochat run` child process; killed if dropped while running.
pub struct WorkerProcess {
    child: Child,
    pub http: String,
}

impl WorkerProcess {
    /// Starts `gochat run` with these overrides and waits until `/readyz` answers 200.
    pub async fn start(env: &[(&str, String)], log: &Path) -> anyhow::Result<WorkerProcess> {
        Self::start_command("run", "GOCHAT_HTTP_ADDR", env, log).await
    }

    /// Starts `gochat <command>` with its `/readyz` on a free port given in `addr_env`
    /// (unless `env` sets it), and waits until it answers 200.
    pub async fn start_command(
        command: &str,
        addr_env: &str,
        env: &[(&str, String)],
        log: &Path,
    ) -> anyhow::Result<WorkerProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let http = env
            .iter()
            .find(|(k, _)| *k == addr_env)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("127.0.0.1:{port}"));
        let exe = std::env::current_exe().context("the bench's own executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg(command)
            .env(addr_env, &http)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting gochat {command}"))?;
        let mut w = WorkerProcess { child, http };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !w.ready().await {
            if let Some(status) = w.child.try_wait()? {
                anyhow::bail!("gochat {command} exited ({status}); see {}", log.display());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "gochat {command} not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(w)
    }

    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn ready(&self) -> bool {
        self.get("/readyz").await.is_some()
    }

    /// The worker's `/metrics` text, if it answers.
    pub async fn metrics(&self) -> Option<String> {
        self.get("/metrics")
            .await
            .map(|body| String::from_utf8_lossy(&body).into_owned())
    }

    /// The body of `GET path` when the answer is 200.
    async fn get(&self, path: &str) -> Option<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&self.http).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.http);
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        if !(buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200")) {
            return None;
        }
        let at = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        Some(buf.split_off(at + 4))
    }

    /// The process's peak resident set so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// SIGTERM, then wait for the clean exit (finishing in-flight work).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(status.success(), "gochat run exited with {status}");
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "gochat run did not stop within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
