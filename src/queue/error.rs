//! Broker errors. All of them are transient from a job's point of view: the broker comes
//! back, and the job (still unacknowledged, or still in the outbox) is tried again.

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("not connected to the broker")]
    Disconnected,
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker did not confirm the publish within {0:?}")]
    ConfirmTimeout(std::time::Duration),
    #[error("the broker refused the publish (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {routing_key:?} on exchange {exchange:?}")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error(
        "{what} exists with other arguments than configured ({source}); delete it or restore \
         the previous amqp settings (queue_type, retry_delays)"
    )]
    Topology {
        what: String,
        #[source]
        source: lapin::Error,
    },
}
