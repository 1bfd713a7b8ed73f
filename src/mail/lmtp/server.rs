//! The listeners: TCP (`lmtp.addr`) and, when configured, a Unix socket (`lmtp.socket`).
//! Accepts connections up to `lmtp.max_connections`, one task per session, and on shutdown
//! stops accepting and waits for the sessions to end (those receiving a message finish it;
//! idle ones are told `421` and closed).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use super::connection::{self, Timeouts};
use super::deliver::Gateway;
use super::session::Limits;
use crate::config::Config;
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on the Unix socket {path}: {source}")]
    BindUnix {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A bound LMTP server, not yet serving.
pub struct Server {
    listener: TcpListener,
    /// The Unix socket and its path (removed when the server stops).
    unix: Option<(UnixListener, PathBuf)>,
    limits: Limits,
    timeouts: Timeouts,
    max_connections: usize,
    gateway: Arc<Gateway>,
}

impl Server {
    /// Binds `lmtp.addr` (port 0 picks a free port: see [`Server::local_addr`]) and
    /// `lmtp.socket` if set.
    pub async fn bind(config: &Config, gateway: Arc<Gateway>) -> Result<Server, ServerError> {
        let addr = config.lmtp.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let unix = match &config.lmtp.socket {
            Some(path) => Some((bind_unix(path)?, path.clone())),
            None => None,
        };
        Ok(Server {
            listener,
            unix,
            limits: Limits {
                max_size: config.mail.max_size,
                hostname: config.mail.domain.clone(),
            },
            timeouts: Timeouts {
                idle: config.lmtp.idle_timeout,
                read: config.lmtp.read_timeout,
            },
            max_connections: config.lmtp.max_connections,
            gateway,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then waits for every session to end.
    pub async fn serve(self, mut shutdown: Shutdown) {
        // Each session holds a permit; shutdown is over when all of them are back.
        let permits = Arc::new(Semaphore::new(self.max_connections));
        loop {
            tokio::select! {
                _ = shutdown.recv() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // Replies are small and each waits on the client's next command.
                        let _ = stream.set_nodelay(true);
                        self.start(stream, peer.to_string(), &permits, &shutdown);
                    }
                    Err(e) => accept_failed(e).await,
                },
                accepted = accept_unix(self.unix.as_ref()) => match accepted {
                    Ok(stream) => self.start(stream, "unix socket".into(), &permits, &shutdown),
                    Err(e) => accept_failed(e).await,
                },
            }
        }
        drop(self.listener);
        if let Some((unix, path)) = self.unix {
            drop(unix);
            let _ = std::fs::remove_file(path);
        }
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = permits.acquire_many(all).await;
    }

    /// Serves a new connection in its own task, or refuses it past the limit.
    fn start<S>(&self, stream: S, peer: String, permits: &Arc<Semaphore>, shutdown: &Shutdown)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = self.max_connections, "LMTP connection refused: lmtp.max_connections reached");
            tokio::spawn(refuse(stream));
            return;
        };
        let session = connection::serve(
            stream,
            self.limits.clone(),
            self.timeouts,
            self.gateway.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            tracing::debug!(%peer, "LMTP session started");
            session.await;
            drop(permit);
        });
    }
}

/// Binds the Unix socket, replacing a stale one (a socket file nobody listens on, left by
/// a crash); any other file there is an error, never deleted.
fn bind_unix(path: &Path) -> Result<UnixListener, ServerError> {
    let fail = |source| ServerError::BindUnix {
        path: path.to_owned(),
        source,
    };
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
        && std::os::unix::net::UnixStream::connect(path).is_err()
    {
        std::fs::remove_file(path).map_err(fail)?;
    }
    UnixListener::bind(path).map_err(fail)
}

/// The next connection on the Unix socket; never, without one.
async fn accept_unix(
    unix: Option<&(UnixListener, PathBuf)>,
) -> std::io::Result<tokio::net::UnixStream> {
    match unix {
        Some((listener, _)) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

async fn accept_failed(e: std::io::Error) {
    // Out of file descriptors, say: wait instead of spinning.
    tracing::warn!(error = %e, "cannot accept an LMTP connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Tells a connection over the limit to come back later.
async fn refuse<S: AsyncWrite + Unpin>(mut stream: S) {
    let bye = b"421 4.3.2 Too many connections, try again later\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(bye)).await;
}
