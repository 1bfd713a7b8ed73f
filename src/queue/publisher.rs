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
        let sends = msgs.iter().map(|m| {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(m.content_type.into())
                .with_message_id(m.message_id.as_str().into())
                .with_headers(m.headers.clone());
            self.channel.basic_publish(
                m.exchange.as_str().into(),
                m.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: m.mandatory,
                    ..Default::default()
                },
                &m.payload,
                props,
            )
        });
        // Each publish waits for lapin's I/O thread to write its frames; awaited one by one,
        // that was a wake-up and a round trip through that thread per message.
        let pending = match tokio::time::timeout_at(deadline, in_order(sends)).await {
            Ok(sent) => sent,
            Err(_) => {
                return msgs
                    .iter()
                    .map(|_| Err(QueueError::ConfirmTimeout(self.timeout)))
                    .collect();
            }
        };
        let mut results = Vec::with_capacity(msgs.len());
        for (m, sent) in msgs.iter().zip(pending) {
            let result = match sent {
                Err(e) => Err(e.into()),
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

/// Runs the futures together, each first polled in the order given, and returns their
/// outputs in that order. A lapin publish queues its frames and takes its confirm number on
/// its first poll, so the messages go out in order (`join_all` does not promise the order of
/// first polls).
async fn in_order<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut ready = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(o) => *output = Some(o),
                    std::task::Poll::Pending => ready = false,
                }
            }
        }
        if ready {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
