//! A RabbitMQ node of the test's own — its own node name, AMQP and distribution ports,
//! data and log folders and Erlang cookie — so a test can stop and start "the broker"
//! without disturbing the machine's RabbitMQ or any other test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::free_port;

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

pub struct OwnRabbit {
    pub node: String,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl OwnRabbit {
    /// Starts the node and waits until it accepts AMQP connections.
    pub fn start() -> OwnRabbit {
        super::process::sweep_stale("gochat-rabbit-");
        let dir = tempfile::Builder::new()
            .prefix("gochat-rabbit-")
            .tempdir()
            .expect("tempdir");
        super::process::claim_dir(dir.path());
        let port = free_port();
        let node = format!("gochat-test-{}-{port}@localhost", std::process::id());
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("write rabbitmq.conf");
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("write plugins");
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "").expect("write env");
        let rabbit = OwnRabbit { node, port, dir };
        let status = rabbit
            .command(SERVER)
            .arg("-detached")
            // Not piped: the detached VM would hold the pipe open forever.
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run rabbitmq-server");
        assert!(status.success(), "rabbitmq-server -detached failed");
        rabbit.await_startup();
        rabbit
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the RabbitMQ application: every connection drops and the port closes, while
    /// durable queues and persistent messages stay on disk — a broker outage as clients
    /// see it, restartable in seconds.
    pub fn stop_app(&self) {
        self.ctl(&["stop_app"]);
    }

    pub fn start_app(&self) {
        self.ctl(&["start_app"]);
        self.await_startup();
    }

    fn await_startup(&self) {
        // The detached VM registers with epmd a moment after the script returns; until then
        // `await_startup` says "not running at all", so ask again.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            match self.try_ctl(&["await_startup", "--timeout", "60"]) {
                Ok(()) => break,
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "RabbitMQ node {} did not start: {e}\nlog: {}",
                        self.node,
                        self.log_tail()
                    );
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        // The listener opens a moment after the application reports started.
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "RabbitMQ node {} never listened on {}",
                self.node,
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let path = self
            .dir
            .path()
            .join("log")
            .join(format!("{}.log", self.node));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn ctl(&self, args: &[&str]) {
        if let Err(e) = self.try_ctl(args) {
            panic!("rabbitmqctl {args:?} on {}: {e}", self.node);
        }
    }

    fn try_ctl(&self, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(CTL)
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .output()
            .expect("run rabbitmqctl");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The node's environment: everything under the test's folder, the cookie included
    /// (HOME), and the distribution port next to nothing else's.
    fn command(&self, program: &str) -> Command {
        let d: &Path = self.dir.path();
        let mut cmd = Command::new(program);
        let p = |name: &str| -> PathBuf { d.join(name) };
        cmd.env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_CONFIG_FILE", p("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", p("enabled_plugins"))
            .env("RABBITMQ_CONF_ENV_FILE", p("rabbitmq-env.conf"))
            .env("RABBITMQ_MNESIA_BASE", p("mnesia"))
            .env("RABBITMQ_LOG_BASE", p("log"))
            .env("RABBITMQ_PID_FILE", p("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    }
}

impl Drop for OwnRabbit {
    fn drop(&mut self) {
        let _ = self
            .command(CTL)
            .arg("-n")
            .arg(&self.node)
            .arg("stop")
            .output();
    }
}
