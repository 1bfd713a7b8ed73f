//! The broker side of `gochat lmtp`: one supervised connection and one confirm-mode
//! publisher shared by every session, so a mail costs a publish and its confirm, not a
//! process and a connection as with `gochat mailgate`.
//!
//! The supervisor reconnects on its own and declares the topology on each connection; the
//! publisher is opened again when the connection it was on is gone. A session that finds no
//! connection waits for one up to `amqp.confirm_timeout`, then answers its recipients
//! `451`: the MTA keeps the mail and tries again.

use std::sync::Arc;
use std::time::Duration;

use lapin::Connection;
use tokio::sync::Mutex;

use super::session::Mail;
use crate::config::AmqpConfig;
use crate::mail::gateway;
use crate::queue::{Broker, Names, Outgoing, Publisher};
use crate::shutdown::{self, ShutdownTrigger};

/// The most payload bytes published at once for one mail.
const PUBLISH_BYTES: usize = 64 << 20;

/// Why a recipient's job was not confirmed. Cloned to each recipient of a failed mail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliverError {
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

/// Publishes each received mail as `inbound-mail` jobs, one per recipient.
pub struct Gateway {
    broker: Broker,
    names: Names,
    confirm_timeout: Duration,
    /// Shared by all sessions; replaced (under the lock, by one session) after a reconnect.
    current: Mutex<Option<Current>>,
    /// Stops the supervisor; only after the sessions finished, so mails in DATA at shutdown
    /// still get their confirms.
    stop: ShutdownTrigger,
    supervisor: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Gateway {
    /// Starts the broker supervisor (it connects in the background, retrying).
    pub fn start(amqp: &AmqpConfig) -> Gateway {
        let (stop, listener) = shutdown::channel();
        let names = Names::new(&amqp.prefix);
        let (broker, task) = Broker::supervise(
            amqp.url.clone(),
            "gochat lmtp".into(),
            Some((names.clone(), amqp.clone())),
            listener,
        );
        Gateway {
            broker,
            names,
            confirm_timeout: amqp.confirm_timeout,
            current: Mutex::new(None),
            stop,
            supervisor: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Connected to the broker now.
    pub fn is_connected(&self) -> bool {
        self.broker.status().is_connected()
    }

    /// Publishes one job per recipient (together: one confirm round trip) and says, per
    /// recipient in order, its job id once the broker confirmed it, or why not.
    pub async fn deliver(&self, mail: &Mail) -> Vec<Result<String, DeliverError>> {
        let publisher = match self.publisher().await {
            Ok(p) => p,
            Err(e) => return mail.recipients.iter().map(|_| Err(e.clone())).collect(),
        };
        // Each job carries the whole mail in base64: a large mail to many recipients goes
        // out a few jobs at a time, so its payloads are never all in memory at once.
        let job_size = mail.raw.len() / 3 * 4 + 1024;
        let per_publish = (PUBLISH_BYTES / job_size).max(1);
        let mut outcomes = Vec::with_capacity(mail.recipients.len());
        for recipients in mail.recipients.chunks(per_publish) {
            let jobs: Vec<Outgoing> = recipients.iter().map(|r| self.job(mail, r)).collect();
            let confirmed = publisher.publish_all(&jobs).await;
            outcomes.extend(jobs.into_iter().zip(confirmed).map(|(job, outcome)| {
                outcome
                    .map(|()| job.message_id)
                    .map_err(|e| DeliverError::NotConfirmed(e.to_string()))
            }));
        }
        outcomes
    }

    /// The `inbound-mail` job of one recipient, as `gochat mailgate` builds it.
    fn job(&self, mail: &Mail, recipient: &String) -> Outgoing {
        let recipients = std::slice::from_ref(recipient);
        let payload = gateway::payload(
            &mail.raw,
            &gateway::Envelope {
                sender: Some(&mail.sender),
                recipients,
                mailbox: None,
            },
        );
        Outgoing::json(
            self.names.jobs_exchange(),
            "inbound-mail".into(),
            gateway::job_id(&mail.raw, recipients),
            payload.to_string().into_bytes(),
        )
    }

    /// The shared publisher on the current connection, opened again if that changed.
    async fn publisher(&self) -> Result<Arc<Publisher>, DeliverError> {
        // Waiting for a connection happens outside the lock: sessions wait side by side,
        // not one confirm timeout after another.
        let conn = self
            .broker
            .connected(self.confirm_timeout)
            .await
            .ok_or(DeliverError::Unavailable)?;
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
        .map_err(|_| DeliverError::Unavailable)?
        .map_err(|e| DeliverError::NotConfirmed(e.to_string()))?;
        let publisher = Arc::new(opened);
        *current = Some(Current {
            conn,
            publisher: publisher.clone(),
        });
        Ok(publisher)
    }

    /// Closes the publisher and the connection; call once no session delivers any more.
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
