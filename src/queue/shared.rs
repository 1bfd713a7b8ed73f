//! One supervised connection and one confirm-mode publisher shared by every task of a
//! process that publishes jobs on behalf of others (`gochat lmtp` sessions, API requests):
//! a job costs a publish and its confirm, not a connection.
//!
//! The supervisor reconnects on its own and declares the topology on each connection; the
//! publisher is opened again when the connection it was on is gone. A caller that finds no
//! connection waits for one up to `amqp.confirm_timeout`, then gets
//! [`PublishError::Unavailable`] and tells its own client to retry.

use std::sync::Arc;
use std::time::Duration;

use lapin::Connection;
use tokio::sync::Mutex;

use crate::config::AmqpConfig;
use crate::queue::{Broker, Names, Publisher};
use crate::shutdown::{self, ShutdownTrigger};

/// Why a job was not confirmed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    #[error("the message queue is unreachable")]
    Unavailable,
    #[error("the message queue did not confirm the job: {0}")]
    NotConfirmed(String),
}

/// The publisher and the connection it was opened on.
struct Current {
    conn: Arc<Connection>,
    publisher: Arc<Publisher>,
}

pub struct SharedPublisher {
    broker: Broker,
    names: Names,
    confirm_timeout: Duration,
    /// Replaced (under the lock, by one caller) after a reconnect.
    current: Mutex<Option<Current>>,
    /// Stops the supervisor; only after the callers finished, so jobs published at shutdown
    /// still get their confirms.
    stop: ShutdownTrigger,
    supervisor: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SharedPublisher {
    /// Starts the broker supervisor (it connects in the background, retrying). `instance`
    /// names the connection in the broker's management UI.
    pub fn start(amqp: &AmqpConfig, instance: &str) -> SharedPublisher {
        let (stop, listener) = shutdown::channel();
        let names = Names::new(&amqp.prefix);
        let (broker, task) = Broker::supervise(
            amqp.url.clone(),
            instance.into(),
            Some((names.clone(), amqp.clone())),
            listener,
        );
        SharedPublisher {
            broker,
            names,
            confirm_timeout: amqp.confirm_timeout,
            current: Mutex::new(None),
            stop,
            supervisor: std::sync::Mutex::new(Some(task)),
        }
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Connected to the broker now.
    pub fn is_connected(&self) -> bool {
        self.broker.status().is_connected()
    }

    /// The shared publisher on the current connection, opened again if that changed.
    pub async fn publisher(&self) -> Result<Arc<Publisher>, PublishError> {
        // Waiting for a connection happens outside the lock: callers wait side by side,
        // not one confirm timeout after another.
        let conn = self
            .broker
            .connected(self.confirm_timeout)
            .await
            .ok_or(PublishError::Unavailable)?;
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref()
            && Arc::ptr_eq(&c.conn, &conn)
            && c.publisher.is_open()
        {
            return Ok(c.publisher.clone());
        }
        let opened = tokio::time::timeout(
            self.confirm_timeout,
            Publisher::open(&conn, self.confirm_timeout),
        )
        .await
        .map_err(|_| PublishError::Unavailable)?
        .map_err(|e| PublishError::NotConfirmed(e.to_string()))?;
        let publisher = Arc::new(opened);
        *current = Some(Current {
            conn,
            publisher: publisher.clone(),
        });
        Ok(publisher)
    }

    /// Closes the publisher and the connection; call once nobody publishes any more.
    pub async fn close(&self) {
        if let Some(c) = self.current.lock().await.take() {
            c.publisher.close().await;
        }
        self.stop.trigger();
        let task = self
            .supervisor
            .lock()
            .map(|mut t| t.take())
            .unwrap_or_default();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
