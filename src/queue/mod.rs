//! The RabbitMQ side: one supervised connection, the topology, publishers and consumers.

mod connection;

pub use connection::{Broker, BrokerStatus};
