//! Publishing with confirms: a publish counts only when the broker confirmed it, within a
//! timeout, and routed it (`mandatory`, with the returned message checked — a mandatory
//! publish nobody takes is still acked by the broker).

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::QueueError;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    /// The AMQP `message_id`: the idempotency key of a job, the event id of an event.
    pub message_id: String,
    pub content_type: &'static str,
    pub payload: Vec<u8>,
    pub headers: FieldTable,
    /// Refuse the publish when no queue is bound (jobs: a missing queue is an error). Events
    /// are not mandatory: a topic nobody subscribes to is not a failure.
    pub mandatory: bool,
}

impl Outgoing {
    pub fn json(
        exchange: String,
        routing_key: String,
        message_id: String,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            exchange,
            routing_key,
            message_id,
            content_type: "application/json",
            payload,
            headers: FieldTable::default(),
            mandatory: true,
        }
    }

    pub fn header(mut self, name: &str, value: AMQPValue) -> Self {
        self.headers.insert(name.into(), value);
        self
    }
}

/// A confirm-mode channel.
pub struct Publisher {
    channel: Channel,
    timeout: Duration,
}

impl Publisher {
    pub async fn open(conn: &Connection, timeout: Duration) -> Result<Self, QueueError> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel, timeout })
    }

    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Publishes one message and waits for its confirm.
    pub async fn publish(&self, msg: &Outgoing) -> Result<(), QueueError> {
        self.publish_all(std::slice::from_ref(msg))
            .await
            .pop()
            .unwrap_or(Err(QueueError::Nacked))
    }

    /// Publishes every message, then waits for all confirms (pipelined: one round trip for
    /// the batch, not one per message). One result per message, in order. The confirm
    /// timeout bounds the whole batch: on a dead connection, waiting it out per message
    /// would stall a 500-row outbox batch for over an hour.
    pub async fn publish_all(&self, msgs: &[Outgoing]) -> Vec<Result<(), QueueError>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pending = Vec::with_capacity(msgs.len());
        for m in msgs {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(m.content_type.into())
                .with_message_id(m.message_id.as_str().into())
                .with_headers(m.headers.clone());
            let sent = self.channel.basic_publish(
                m.exchange.as_str().into(),
                m.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: m.mandatory,
                    ..Default::default()
                },
                &m.payload,
                props,
            );
            let sent = match tokio::time::timeout_at(deadline, sent).await {
                Ok(r) => r.map_err(QueueError::from),
                Err(_) => Err(QueueError::ConfirmTimeout(self.timeout)),
            };
            pending.push(sent);
        }
        let mut results = Vec::with_capacity(msgs.len());
        for (m, sent) in msgs.iter().zip(pending) {
            let result = match sent {
                Err(e) => Err(e),
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Err(_) => Err(QueueError::ConfirmTimeout(self.timeout)),
                    Ok(Err(e)) => Err(e.into()),
                    Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                    Ok(Ok(Confirmation::Ack(Some(_)))) => Err(QueueError::Unroutable {
                        exchange: m.exchange.clone(),
                        routing_key: m.routing_key.clone(),
                    }),
                    Ok(Ok(_)) => Err(QueueError::Nacked),
                },
            };
            results.push(result);
        }
        results
    }

    pub async fn close(&self) {
        let _ = self.channel.close(200, "bye".into()).await;
    }
}
