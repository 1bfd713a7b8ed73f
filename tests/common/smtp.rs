//! A real SMTP server process for the tests (`tests/support/smtp_sink.py`, on Python's
//! aiosmtpd), on a free port with its own folder of received messages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::free_port;

pub struct SmtpSink {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Environment of the script (STARTTLS certificate, required login), kept for restarts.
    env: Vec<(String, String)>,
}

/// One received message: its envelope and its bytes.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub raw: Vec<u8>,
    /// The client's source port: one per SMTP connection.
    pub peer_port: u16,
    /// The session was upgraded with STARTTLS.
    pub tls: bool,
    /// Who logged in, if the sink required it.
    pub login: Option<String>,
}

impl SmtpSink {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> SmtpSink {
        Self::start_with(Vec::new())
    }

    /// [`SmtpSink::start`] from async code (it blocks until the server listens).
    pub async fn start_async() -> SmtpSink {
        tokio::task::spawn_blocking(SmtpSink::start)
            .await
            .expect("SMTP sink")
    }

    /// A server that requires STARTTLS with this certificate and key (PEM files) and, if
    /// given, a login `(user, password)` over it.
    pub fn start_secure(cert: &Path, key: &Path, login: Option<(&str, &str)>) -> SmtpSink {
        let mut env = vec![
            ("SINK_TLS_CERT".to_owned(), cert.display().to_string()),
            ("SINK_TLS_KEY".to_owned(), key.display().to_string()),
        ];
        if let Some((user, password)) = login {
            env.push(("SINK_AUTH".to_owned(), format!("{user}:{password}")));
        }
        Self::start_with(env)
    }

    fn start_with(env: Vec<(String, String)>) -> SmtpSink {
        let mut sink = SmtpSink {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            env,
        };
        sink.restart();
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops the server (the port closes; received messages stay).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(self.port.to_string())
            .arg(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs the SMTP sink (pip install aiosmtpd, or run .ci/run)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let mut err = String::new();
                if let Some(mut e) = c.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!(
                    "the SMTP sink exited ({status}): {err}\n(is aiosmtpd installed? pip install aiosmtpd)"
                );
            }
            assert!(Instant::now() < deadline, "the SMTP sink never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The next `n` recipients get a 451, whoever they are.
    pub fn tempfail_next(&self, n: u32) {
        std::fs::write(self.dir.path().join("tempfail"), n.to_string()).expect("write budget");
    }

    /// Every message received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read sink dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|json| {
                let env: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&json).expect("read envelope"))
                        .expect("envelope JSON");
                Received {
                    mail_from: env["mail_from"].as_str().unwrap_or_default().to_owned(),
                    rcpt_tos: env["rcpt_tos"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                    raw: std::fs::read(json.with_extension("eml")).expect("read message"),
                    peer_port: env["peer_port"].as_u64().unwrap_or_default() as u16,
                    tls: env["tls"].as_bool().unwrap_or_default(),
                    login: env["login"].as_str().map(str::to_owned),
                }
            })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}
