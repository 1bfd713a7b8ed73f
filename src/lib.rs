//! Go!Chat worker: support-ticket jobs from RabbitMQ, run as declarative workflows, with the
//! state in SQLite or PostgreSQL.
//!
//! Layout: `config` (what ops set), `store` (the only module that speaks SQL), `queue`
//! (RabbitMQ), `http` (health, readiness, metrics), `cli` (the `gochat` commands), plus the
//! small shared pieces (`clock`, `shutdown`, `metrics`, `telemetry`, `diagnostics`).

pub mod api;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod contract;
pub mod diagnostics;
pub mod events;
pub mod http;
pub mod jobs;
pub mod lifecycle;
pub mod mail;
pub mod metrics;
pub mod queue;
pub mod scheduler;
pub mod services;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod worker;
pub mod workflow;
