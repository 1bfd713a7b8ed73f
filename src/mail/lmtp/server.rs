//! The listener: accepts connections up to `lmtp.max_connections`, one task per session,
//! and on shutdown stops accepting and waits for the sessions to end (those receiving a
//! message finish it; idle ones are told `421` and closed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
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
}

/// A bound LMTP server, not yet serving.
pub struct Server {
    listener: TcpListener,
    limits: Limits,
    timeouts: Timeouts,
    max_connections: usize,
    gateway: Arc<Gateway>,
}

impl Server {
    /// Binds `lmtp.addr` (port 0 picks a free port: see [`Server::local_addr`]).
    pub async fn bind(config: &Config, gateway: Arc<Gateway>) -> Result<Server, ServerError> {
        let addr = config.lmtp.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server {
            listener,
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
            let (stream, peer) = tokio::select! {
                _ = shutdown.recv() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, say: wait instead of spinning.
                        tracing::warn!(error = %e, "cannot accept an LMTP connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Replies are small and each waits on the client's next command.
            let _ = stream.set_nodelay(true);
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
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
                Err(_) => {
                    tracing::warn!(%peer, max = self.max_connections, "LMTP connection refused: lmtp.max_connections reached");
                    tokio::spawn(refuse(stream));
                }
            }
        }
        drop(self.listener);
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = permits.acquire_many(all).await;
    }
}

/// Tells a connection over the limit to come back later.
async fn refuse(mut stream: TcpStream) {
    let bye = b"421 4.3.2 Too many connections, try again later\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(bye)).await;
}
