//! A supervised broker connection: connect with backoff, notice loss, connect again.
//!
//! Our own loop rather than lapin's auto-recovery, because recovery replays channels and
//! consumers we would then have to reason about; here every (re)connection is a fresh start
//! that consumers and publishers observe through a `watch` channel, and readiness reads the
//! same state.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::watch;

use super::Names;
use crate::config::{AmqpConfig, SecretUrl};
use crate::shutdown::Shutdown;

/// Readiness view of the broker: cheap to clone, never blocks.
#[derive(Clone)]
pub struct BrokerStatus(watch::Receiver<Option<Arc<Connection>>>);

impl BrokerStatus {
    pub fn is_connected(&self) -> bool {
        self.0
            .borrow()
            .as_ref()
            .is_some_and(|c| c.status().connected())
    }

    /// A status that is never connected (commands that do not use the broker).
    pub fn disconnected() -> Self {
        let (_tx, rx) = watch::channel(None);
        BrokerStatus(rx)
    }
}

/// The supervisor's handle: the current connection, if any.
#[derive(Clone)]
pub struct Broker {
    current: watch::Receiver<Option<Arc<Connection>>>,
}

impl Broker {
    /// Starts the supervisor task; it runs until `shutdown`, then closes the connection.
    /// With `topology`, the contract's exchanges and queues are declared on every connection
    /// before anyone sees it, so a consumer never starts on a broker that lost its queues.
    pub fn supervise(
        url: SecretUrl,
        name: String,
        topology: Option<(Names, AmqpConfig)>,
        mut shutdown: Shutdown,
    ) -> (Broker, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(None::<Arc<Connection>>);
        let task = tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                let attempt = tokio::select! {
                    _ = shutdown.recv() => break,
                    r = Connection::connect(url.expose(), ConnectionProperties::default()
                        .with_connection_name(name.clone().into())) => r,
                };
                match attempt {
                    Ok(conn) => {
                        let conn = Arc::new(conn);
                        if let Some((names, config)) = &topology
                            && let Err(e) = super::topology::declare(&conn, names, config).await
                        {
                            tracing::error!(error = %e, retry_in = ?delay, "cannot declare the broker topology");
                            let _ = conn.close(200, "topology failed".into()).await;
                            tokio::select! {
                                _ = shutdown.recv() => break,
                                _ = tokio::time::sleep(delay) => {}
                            }
                            delay = (delay * 2).min(Duration::from_secs(10));
                            continue;
                        }
                        delay = Duration::from_millis(200);
                        tracing::info!(broker = %url, "connected to the broker");
                        let mut events = conn.events_listener();
                        tx.send_replace(Some(conn.clone()));
                        // Wait for the connection to fail or for shutdown.
                        let lost = loop {
                            tokio::select! {
                                _ = shutdown.recv() => break false,
                                ev = events.next() => match ev {
                                    // lapin reports a channel closed by the broker (a
                                    // publish to a missing exchange, say) here too; that
                                    // is its user's to handle, and the connection stays.
                                    Some(lapin::Event::Error(e)) if conn.status().connected() => {
                                        tracing::warn!(error = %e, "a broker channel was closed by an error; the connection stays");
                                    }
                                    Some(lapin::Event::Error(e)) => {
                                        tracing::warn!(error = %e, "broker connection lost");
                                        break true;
                                    }
                                    Some(_) => continue,
                                    None => break true,
                                },
                            }
                        };
                        tx.send_replace(None);
                        if !lost {
                            let _ = conn.close(200, "shutdown".into()).await;
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(broker = %url, error = %e, retry_in = ?delay, "cannot connect to the broker");
                        tokio::select! {
                            _ = shutdown.recv() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
            tx.send_replace(None);
        });
        (Broker { current: rx }, task)
    }

    pub fn status(&self) -> BrokerStatus {
        BrokerStatus(self.current.clone())
    }

    /// Watches the current connection; `None` while disconnected.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Connection>>> {
        self.current.clone()
    }

    /// The connection once there is one, or `None` if `timeout` passes first.
    pub async fn connected(&self, timeout: Duration) -> Option<Arc<Connection>> {
        let mut rx = self.current.clone();
        let wait = rx.wait_for(|c| c.as_ref().is_some_and(|c| c.status().connected()));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(c)) => c.clone(),
            _ => None,
        }
    }
}
