//! SMTP delivery: one pool of connections per process, built from `smtp.url`
//! (`smtp://host:port` plain, `?tls=required` / `?tls=opportunistic` for STARTTLS, `smtps://`
//! for TLS from the first byte, credentials in the URL, `ca=/path/ca.pem` to trust a private
//! certificate authority). Failures are classed so the outbound
//! job knows what to do: a 4xx reply or a connection problem is temporary (retry with
//! backoff), a 5xx reply is permanent (fail now).
//!
//! Why our own pool over lettre's connections instead of lettre's pooled transport: lettre
//! writes a message's body and its `.` terminator in two writes, and its sockets keep Nagle's
//! algorithm on, so the terminator waits for the server's delayed ACK (~40 ms on Linux) and
//! every message costs 40 ms whatever the server does. Our plain and STARTTLS connections set
//! `TCP_NODELAY`. Lettre's pool also sends a `NOOP` before every reuse; here only a connection
//! idle for a while is probed. (`smtps://` connections are opened by lettre, which gives no
//! access to the socket: they keep the delay.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::sync::Semaphore;

use crate::config::SecretUrl;

/// A pooled connection idle longer than this is probed with `NOOP` before reuse: servers
/// drop idle clients (and restart), and a message sent on a dead connection fails and waits
/// for its retry. Under load connections are reused within milliseconds and never probed.
const PROBE_AFTER: Duration = Duration::from_secs(1);

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

/// How the connection is secured.
#[derive(Clone)]
enum Security {
    Plain,
    /// STARTTLS; `required: false` upgrades only when the server offers it.
    StartTls {
        tls: TlsParameters,
        required: bool,
    },
    /// TLS from the first byte (`smtps://`).
    Wrapper(TlsParameters),
}

/// Where and how to connect, from `smtp.url`.
#[derive(Clone)]
struct Server {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
}

impl Server {
    fn from_url(url: &SecretUrl) -> Result<Server, String> {
        let bad = |why: String| format!("smtp.url {url}: {why}");
        let parsed = url::Url::parse(url.expose()).map_err(|e| bad(e.to_string()))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| bad("no host".into()))?
            .trim_matches(['[', ']'])
            .to_owned();
        let tls_mode = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let query = |key: &str| {
            parsed
                .query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        // A private CA (an internal relay's own certificate authority), trusted besides the
        // public roots.
        let ca = match query("ca") {
            None => None,
            Some(path) => {
                let pem = std::fs::read(&path)
                    .map_err(|e| bad(format!("ca={path}: cannot read the CA certificate: {e}")))?;
                Some(Certificate::from_pem(&pem).map_err(|e| {
                    bad(format!(
                        "ca={path}: not a PEM certificate ({e}); give the CA's PEM file"
                    ))
                })?)
            }
        };
        if ca.is_some() && parsed.scheme() == "smtp" && tls_mode.is_none() {
            return Err(bad(
                "ca= needs TLS: add tls=required (STARTTLS) or use smtps://".into(),
            ));
        }
        let params = || {
            let mut builder = TlsParameters::builder(host.clone());
            if let Some(ca) = ca.clone() {
                builder = builder.add_root_certificate(ca);
            }
            builder.build().map_err(|e| bad(e.to_string()))
        };
        let (security, default_port) = match (parsed.scheme(), tls_mode.as_deref()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("required")) => (
                Security::StartTls {
                    tls: params()?,
                    required: true,
                },
                587,
            ),
            ("smtp", Some("opportunistic")) => (
                Security::StartTls {
                    tls: params()?,
                    required: false,
                },
                587,
            ),
            ("smtps", None) => (Security::Wrapper(params()?), 465),
            (scheme, tls) => {
                return Err(bad(format!(
                    "unknown scheme {scheme:?} or tls={tls:?}: use smtp://, smtp://...?tls=required, smtp://...?tls=opportunistic or smtps://"
                )));
            }
        };
        let decode = |s: &str| {
            url::form_urlencoded::parse(s.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default()
        };
        let credentials = parsed
            .password()
            .map(|p| Credentials::new(decode(parsed.username()), decode(p)));
        let hello = match parsed.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        Ok(Server {
            port: parsed.port().unwrap_or(default_port),
            host,
            security,
            credentials,
            hello,
        })
    }

    /// A new connection: greeted, secured and authenticated as configured.
    async fn connect(&self, timeout: Duration) -> Result<AsyncSmtpConnection, SendError> {
        let mut conn = match &self.security {
            Security::Wrapper(tls) => AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(timeout),
                &self.hello,
                Some(tls.clone()),
                None,
            )
            .await
            .map_err(|e| classify(&e))?,
            Security::Plain | Security::StartTls { .. } => {
                let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|e| {
                        SendError::Connection(format!("{}:{}: {e}", self.host, self.port))
                    })?;
                tcp.set_nodelay(true)
                    .map_err(|e| SendError::Connection(format!("TCP_NODELAY: {e}")))?;
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                    .await
                    .map_err(|e| classify(&e))?
            }
        };
        if let Security::StartTls { tls, required } = &self.security {
            if conn.can_starttls() {
                conn.starttls(tls.clone(), &self.hello)
                    .await
                    .map_err(|e| classify(&e))?;
            } else if *required {
                return Err(SendError::Connection(format!(
                    "{}:{} does not offer STARTTLS, which smtp.url requires (tls=required)",
                    self.host, self.port
                )));
            }
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| classify(&e))?;
        }
        Ok(conn)
    }
}

/// The pooled SMTP client; cheap to clone.
#[derive(Clone)]
pub struct Smtp {
    inner: Arc<Inner>,
}

struct Inner {
    server: Server,
    /// Bounds each connection attempt and each message's whole conversation.
    timeout: Duration,
    /// Connections in use are bounded by these permits: the pool size.
    slots: Semaphore,
    /// Connections between messages, with when each was last used.
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Smtp {
    /// Builds the pool from `url` (no connection is made until the first send).
    pub fn new(url: &SecretUrl, timeout: Duration, pool_size: u32) -> Result<Smtp, String> {
        Ok(Smtp {
            inner: Arc::new(Inner {
                server: Server::from_url(url)?,
                timeout,
                slots: Semaphore::new(pool_size.max(1) as usize),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Sends `message` to its envelope's recipients.
    pub async fn send(&self, message: &Message) -> Result<Accepted, SendError> {
        let inner = &self.inner;
        let _slot = inner
            .slots
            .acquire()
            .await
            .map_err(|_| SendError::Connection("the SMTP pool is closed".into()))?;
        let mut conn = self.checkout().await?;
        let body = message.formatted();
        let sent = tokio::time::timeout(inner.timeout, conn.send(message.envelope(), &body)).await;
        match sent {
            Ok(Ok(r)) => {
                self.checkin(conn);
                Ok(Accepted {
                    code: r.code().to_string(),
                    message: r.message().collect::<Vec<_>>().join(" "),
                })
            }
            Ok(Err(e)) => {
                // A refused message leaves a usable connection (lettre resets it with RSET
                // on the next MAIL); a broken one is dropped.
                if !conn.has_broken() {
                    self.checkin(conn);
                }
                Err(classify(&e))
            }
            Err(_) => Err(SendError::Connection(format!(
                "no answer from {}:{} within {:?}",
                inner.server.host, inner.server.port, inner.timeout
            ))),
        }
    }

    /// An idle connection (probed if it sat long enough to have been dropped by the
    /// server), or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let idle = match self.inner.idle.lock() {
                Ok(mut v) => v.pop(),
                Err(poisoned) => poisoned.into_inner().pop(),
            };
            let Some((mut conn, since)) = idle else {
                break;
            };
            if since.elapsed() < PROBE_AFTER || conn.test_connected().await {
                return Ok(conn);
            }
            conn.abort().await;
        }
        let timeout = self.inner.timeout;
        tokio::time::timeout(timeout, self.inner.server.connect(timeout))
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Connection(format!(
                    "could not connect to {}:{} within {timeout:?}",
                    self.inner.server.host, self.inner.server.port
                )))
            })
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        let entry = (conn, Instant::now());
        match self.inner.idle.lock() {
            Ok(mut v) => v.push(entry),
            Err(poisoned) => poisoned.into_inner().push(entry),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str) -> Result<Server, String> {
        Server::from_url(&SecretUrl::new(url))
    }

    #[test]
    fn the_url_says_how_to_connect() {
        let s = server("smtp://127.0.0.1:2525").expect("plain");
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 2525));
        assert!(matches!(s.security, Security::Plain));
        assert!(s.credentials.is_none());

        let s = server("smtp://mx.example.com?tls=required").expect("starttls");
        assert_eq!(s.port, 587);
        assert!(matches!(
            s.security,
            Security::StartTls { required: true, .. }
        ));

        let s = server("smtp://u%40x:p%20w@mx.example.com?tls=opportunistic").expect("opp");
        assert!(matches!(
            s.security,
            Security::StartTls {
                required: false,
                ..
            }
        ));
        assert_eq!(
            s.credentials,
            Some(Credentials::new("u@x".into(), "p w".into()))
        );

        let s = server("smtps://mx.example.com").expect("wrapper");
        assert_eq!(s.port, 465);
        assert!(matches!(s.security, Security::Wrapper(_)));
    }

    #[test]
    fn a_bad_url_names_the_fix_and_hides_the_password() {
        for bad in [
            "http://mx.example.com",
            "smtp://mx.example.com?tls=sometimes",
        ] {
            let e = server(bad).err().expect("refused");
            assert!(e.contains("smtps://"), "{e}");
        }
        let e = server("smtp://user:hunter2@/").err().expect("no host");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
