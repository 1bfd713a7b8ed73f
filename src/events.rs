//! Events for other Algoreg tools: CloudEvents 1.0 in structured JSON mode, written to the
//! outbox with the job's transaction (so an event goes out if and only if its change
//! committed) and published to `<prefix>gochat.events` with routing key = the event name.

use chrono::{DateTime, Utc};
use gochat_entities::outbox::OutboxKind;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::queue::Names;
use crate::store::{Tx, outbox};

/// Prefix of every event `type`.
pub const TYPE_PREFIX: &str = "com.algoreg.gochat.";

/// A CloudEvents 1.0 envelope for `name` about `subject` (a thread id, usually).
pub fn cloud_event(id: Uuid, name: &str, subject: &str, time: DateTime<Utc>, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id.to_string(),
        "source": "gochat",
        "type": format!("{TYPE_PREFIX}{name}"),
        "subject": subject,
        "time": time.to_rfc3339(),
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// Queues event `name` for publishing after `tx` commits; returns the event's id.
pub fn emit(
    tx: &mut Tx,
    names: &Names,
    name: &str,
    subject: &str,
    data: Value,
    now: DateTime<Utc>,
) -> Uuid {
    let id = Uuid::now_v7();
    let event = cloud_event(id, name, subject, now, data);
    tx.defer_outbox(outbox::new_row(
        OutboxKind::Event,
        &names.events_exchange(),
        name,
        &id.to_string(),
        &event,
        now,
    ));
    id
}

/// Queues a follow-up job (`kind`, with its `message_id`) for publishing after `tx` commits.
pub fn follow_up_job(
    tx: &mut Tx,
    names: &Names,
    kind: &str,
    message_id: &str,
    payload: &Value,
    now: DateTime<Utc>,
) {
    tx.defer_outbox(outbox::new_row(
        OutboxKind::Job,
        &names.jobs_exchange(),
        kind,
        message_id,
        payload,
        now,
    ));
}
