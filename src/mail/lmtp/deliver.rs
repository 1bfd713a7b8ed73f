//! The broker side of `gochat lmtp`: one supervised connection and one confirm-mode
//! publisher shared by every session, so a mail costs a publish and its confirm, not a
//! process and a connection as with `gochat mailgate`.
//!
//! The supervisor reconnects on its own and declares the topology on each connection; the
//! publisher is opened again when the connection it was on is gone. A session that finds no
//! connection waits for one up to `amqp.confirm_timeout`, then answers its recipients
//! `451`: the MTA keeps the mail and tries again.

use super::session::Mail;
use crate::config::AmqpConfig;
use crate::mail::gateway;
use crate::queue::{Outgoing, SharedPublisher};

/// Why a recipient's job was not confirmed. Cloned to each recipient of a failed mail.
pub use crate::queue::PublishError as DeliverError;

/// The most payload bytes published at once for one mail.
const PUBLISH_BYTES: usize = 64 << 20;

/// Publishes each received mail as `inbound-mail` jobs, one per recipient.
pub struct Gateway {
    jobs: SharedPublisher,
}

impl Gateway {
    /// Starts the broker supervisor (it connects in the background, retrying).
    pub fn start(amqp: &AmqpConfig) -> Gateway {
        Gateway {
            jobs: SharedPublisher::start(amqp, "gochat lmtp"),
        }
    }

    /// Connected to the broker now.
    pub fn is_connected(&self) -> bool {
        self.jobs.is_connected()
    }

    /// Publishes one job per recipient (together: one confirm round trip) and says, per
    /// recipient in order, its job id once the broker confirmed it, or why not.
    pub async fn deliver(&self, mail: &Mail) -> Vec<Result<String, DeliverError>> {
        let publisher = match self.jobs.publisher().await {
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
            self.jobs.names().jobs_exchange(),
            "inbound-mail".into(),
            gateway::job_id(&mail.raw, recipients),
            payload.to_string().into_bytes(),
        )
    }

    /// Closes the publisher and the connection; call once no session delivers any more.
    pub async fn close(&self) {
        self.jobs.close().await;
    }
}
