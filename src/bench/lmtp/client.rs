//! The bench's LMTP client: what Postfix's `lmtp` delivery agent does on a cached
//! connection: LHLO once, then per mail MAIL, RCPT and DATA pipelined in one write, the
//! message (dot-stuffed) once `354` came, and the recipient's reply.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// One mail to send.
pub struct Outgoing {
    pub sender: String,
    pub recipient: String,
    pub raw: Vec<u8>,
}

/// What became of one mail.
pub struct Sent {
    /// The job id from the `250` reply; `None` when refused.
    pub job_id: Option<String>,
    /// When MAIL was sent (for publish → commit latencies).
    pub at: chrono::DateTime<chrono::Utc>,
    /// MAIL sent → the recipient's reply read.
    pub latency: Duration,
}

pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
}

impl Client {
    /// Connects, reads the greeting and says LHLO.
    pub async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the LMTP server {addr}"))?;
        stream.set_nodelay(true)?;
        let (rd, writer) = stream.into_split();
        let mut c = Client {
            reader: BufReader::new(rd),
            writer,
            line: String::new(),
        };
        c.expect(220).await?;
        c.writer.write_all(b"LHLO bench.example\r\n").await?;
        c.expect(250).await?;
        Ok(c)
    }

    /// Sends one mail to its one recipient.
    pub async fn send(&mut self, mail: &Outgoing) -> anyhow::Result<Sent> {
        let at = chrono::Utc::now();
        let start = Instant::now();
        let envelope = format!(
            "MAIL FROM:<{}> SIZE={}\r\nRCPT TO:<{}>\r\nDATA\r\n",
            mail.sender,
            mail.raw.len(),
            mail.recipient
        );
        self.writer.write_all(envelope.as_bytes()).await?;
        self.expect(250).await?;
        self.expect(250).await?;
        self.expect(354).await?;
        self.writer.write_all(&stuffed(&mail.raw)).await?;
        let (code, text) = self.reply().await?;
        Ok(Sent {
            job_id: (code == 250)
                .then(|| text.rsplit(' ').next().map(str::to_owned))
                .flatten(),
            at,
            latency: start.elapsed(),
        })
    }

    pub async fn quit(mut self) {
        let _ = self.writer.write_all(b"QUIT\r\n").await;
        let _ = self.reply().await;
    }

    async fn expect(&mut self, want: u16) -> anyhow::Result<()> {
        let (code, text) = self.reply().await?;
        anyhow::ensure!(
            code == want,
            "expected {want}, the server said {code} {text}"
        );
        Ok(())
    }

    /// The next reply: its code and its last line's text.
    async fn reply(&mut self) -> anyhow::Result<(u16, String)> {
        loop {
            self.line.clear();
            let n = self.reader.read_line(&mut self.line).await?;
            anyhow::ensure!(n > 0, "the LMTP server closed the connection");
            let line = self.line.trim_end();
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("not a reply: {line:?}"))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, line.get(4..).unwrap_or_default().to_owned()));
            }
        }
    }
}

/// The message as it goes after DATA: a dot added to lines (after CRLF) starting with
/// one, CRLF at the end if missing, then the lone dot.
pub fn stuffed(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 8);
    let mut line_start = true;
    let mut prev = 0u8;
    for &b in raw {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = prev == b'\r' && b == b'\n';
        prev = b;
    }
    if !raw.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_starting_with_a_dot_get_another() {
        assert_eq!(super::stuffed(b".a\r\nb\r\n"), b"..a\r\nb\r\n.\r\n");
        assert_eq!(super::stuffed(b"x"), b"x\r\n.\r\n");
        assert_eq!(super::stuffed(b"a\n.b\r\n"), b"a\n.b\r\n.\r\n");
    }
}
