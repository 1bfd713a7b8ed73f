//! Jobs: the unit of work taken from a queue, and the split of its failures into transient
//! (retry later) and permanent (dead letters, with the reason).

mod handling;
pub mod schema;
pub mod turn;

use chrono::{DateTime, Utc};

use crate::store::StoreError;

pub use handling::{Handled, Handler, handle_each};

/// One job as the workflow sees it: decoded, validated, with its delivery history.
#[derive(Debug, Clone)]
pub struct Job {
    /// The routing key, e.g. `inbound-mail`.
    pub kind: String,
    /// The AMQP `message_id`: the idempotency key.
    pub message_id: String,
    pub payload: serde_json::Value,
    /// 1 on first delivery, +1 per retry.
    pub attempt: u32,
    pub first_failure: Option<DateTime<Utc>>,
}

/// Why a job failed, and so what happens to it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    /// Worth retrying: a service was unreachable or a lock not granted.
    #[error("{0}")]
    Transient(String),
    /// A fact about the job itself (bad payload, unknown thread, forbidden recipient):
    /// retrying cannot help, so it goes to the dead letters.
    #[error("{0}")]
    Permanent(String),
}

impl JobError {
    pub fn is_transient(&self) -> bool {
        matches!(self, JobError::Transient(_))
    }

    pub fn permanent(msg: impl Into<String>) -> Self {
        JobError::Permanent(msg.into())
    }

    pub fn transient(msg: impl Into<String>) -> Self {
        JobError::Transient(msg.into())
    }
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            JobError::Transient(e.to_string())
        } else {
            JobError::Permanent(e.to_string())
        }
    }
}

impl From<sea_orm::DbErr> for JobError {
    fn from(e: sea_orm::DbErr) -> Self {
        StoreError::from(e).into()
    }
}

/// Checks a payload against its kind's contract before any work is done: first the schema
/// tag (so a v2 payload is refused with a clear reason), then the JSON Schema.
pub fn check_payload(kind: &str, payload: &serde_json::Value) -> Result<(), JobError> {
    let expected = format!("{kind}/v1");
    match payload.get("schema").and_then(|s| s.as_str()) {
        _ if !payload.is_object() => Err(JobError::permanent("payload is not a JSON object")),
        Some(s) if s == expected => schema::validate(kind, payload),
        Some(s) => Err(JobError::permanent(format!(
            "payload has schema {s:?}, expected {expected:?}"
        ))),
        None => Err(JobError::permanent(format!(
            "payload has no \"schema\" field; expected \"{expected}\""
        ))),
    }
}
