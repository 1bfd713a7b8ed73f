//! Building test mails (RFC 5322) and piping them through `gochat mailgate`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// A plain-text mail with the given headers; `None` headers are left out.
#[derive(Debug, Clone)]
pub struct TestMail {
    pub from: String,
    pub to: String,
    pub subject: String,
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub extra_headers: Vec<(String, String)>,
    pub body: String,
}

impl TestMail {
    pub fn new(from: &str, to: &str, subject: &str, body: &str) -> TestMail {
        TestMail {
            from: from.into(),
            to: to.into(),
            subject: subject.into(),
            message_id: Some(format!(
                "<{}@customer.example>",
                uuid::Uuid::now_v7().simple()
            )),
            in_reply_to: None,
            references: Vec::new(),
            extra_headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Its Message-ID without angle brackets.
    pub fn id(&self) -> String {
        self.message_id
            .clone()
            .unwrap_or_default()
            .trim_matches(['<', '>'])
            .to_owned()
    }

    pub fn replying_to(mut self, message_id: &str) -> TestMail {
        let id = format!("<{}>", message_id.trim_matches(['<', '>']));
        self.in_reply_to = Some(id.clone());
        self.references.push(id);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> TestMail {
        self.extra_headers.push((name.into(), value.into()));
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut s = format!(
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n",
            self.from, self.to, self.subject
        );
        if let Some(m) = &self.message_id {
            s.push_str(&format!("Message-ID: {m}\r\n"));
        }
        if let Some(r) = &self.in_reply_to {
            s.push_str(&format!("In-Reply-To: {r}\r\n"));
        }
        if !self.references.is_empty() {
            s.push_str(&format!("References: {}\r\n", self.references.join(" ")));
        }
        for (k, v) in &self.extra_headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.push_str(&self.body.replace('\n', "\r\n"));
        s.into_bytes()
    }
}

/// Runs `gochat mailgate --recipient <recipient>` with `raw` on stdin and the given
/// environment (database, broker prefix, ...).
pub fn mailgate(
    raw: &[u8],
    recipient: &str,
    sender: Option<&str>,
    env: &[(&str, String)],
) -> Output {
    let mut cmd = Command::new(super::gochat_bin());
    cmd.arg("mailgate").arg("--recipient").arg(recipient);
    if let Some(s) = sender {
        cmd.arg("--sender").arg(s);
    }
    cmd.env_remove("GOCHAT_CONFIG")
        .env("RUST_LOG", "warn")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run gochat mailgate");
    if let Some(mut stdin) = child.stdin.take() {
        // A refused (too large) mail may close stdin early: that is the point.
        let _ = stdin.write_all(raw);
    }
    child.wait_with_output().expect("mailgate output")
}
