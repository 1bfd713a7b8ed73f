//! The RabbitMQ side: one supervised connection, the contract's topology, publishers with
//! confirms, consumers that settle jobs only after commit, and the outbox relay.

mod acks;
mod connection;
pub mod consumer;
mod error;
mod names;
pub mod publisher;
pub mod relay;
pub mod shared;
pub mod topology;

pub use crate::jobs::{Handled, Handler};
pub use connection::{Broker, BrokerStatus};
pub use consumer::ConsumerSpec;
pub use error::QueueError;
pub use names::Names;
pub use publisher::{Outgoing, Publisher};
pub use shared::{PublishError, SharedPublisher};
