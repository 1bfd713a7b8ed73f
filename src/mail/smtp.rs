//! SMTP delivery with lettre: one pooled transport per process, built from `smtp.url`
//! (`smtp://host:port` plain, `?tls=required` for STARTTLS, `smtps://` for TLS, credentials
//! in the URL). Failures are classed so the outbound job knows what to do: a 4xx reply or a
//! connection problem is temporary (retry with backoff), a 5xx reply is permanent (fail now).

use std::time::Duration;

use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::SecretUrl;

/// The server's answer to an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// 4xx: try again later.
    #[error("temporary failure {code}: {message}")]
    Temporary { code: String, message: String },
    /// 5xx: the server refused the message for good.
    #[error("permanent failure {code}: {message}")]
    Permanent { code: String, message: String },
    /// The server could not be reached or the conversation broke off.
    #[error("connection failure: {0}")]
    Connection(String),
}

impl SendError {
    /// The `gochat_smtp_errors_total` class.
    pub fn class(&self) -> &'static str {
        match self {
            SendError::Temporary { .. } => "temporary",
            SendError::Permanent { .. } => "permanent",
            SendError::Connection(_) => "connection",
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Permanent { .. })
    }
}

#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Smtp {
    /// Builds the pooled transport (no connection is made until the first send).
    pub fn new(url: &SecretUrl, timeout: Duration, pool_size: u32) -> Result<Smtp, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|e| format!("smtp.url {url}: {e}"))?
            .timeout(Some(timeout))
            .pool_config(PoolConfig::new().max_size(pool_size.max(1)))
            .build();
        Ok(Smtp { transport })
    }

    /// Sends `message` to its envelope's recipients.
    pub async fn send(&self, message: &Message) -> Result<Accepted, SendError> {
        match self.transport.send(message.clone()).await {
            Ok(r) => Ok(Accepted {
                code: r.code().to_string(),
                message: r.message().collect::<Vec<_>>().join(" "),
            }),
            Err(e) => Err(classify(&e)),
        }
    }
}

fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let text = e.to_string();
    match e.status() {
        Some(code) if e.is_permanent() => SendError::Permanent {
            code: code.to_string(),
            message: text,
        },
        Some(code) if e.is_transient() => SendError::Temporary {
            code: code.to_string(),
            message: text,
        },
        _ => SendError::Connection(text),
    }
}
