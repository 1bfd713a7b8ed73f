//! The audit: `thread_events` rows, one per change to a thread, shown in its feed. Built
//! here for every change the other files make; written one at a time or, for a batch,
//! several rows a statement.

use chrono::{DateTime, Utc};
use gochat_entities::thread_events;
use sea_orm::{ConnectionTrait, EntityTrait, IntoActiveModel};
use serde_json::Value;
use uuid::Uuid;

use crate::store::StoreError;

/// An audit event with a `detail` (why a mail joined a thread, ...), built for
/// [`insert_events`].
pub fn event_with_detail(
    thread_id: Uuid,
    kind: &str,
    actor: &Value,
    detail: Value,
    now: DateTime<Utc>,
) -> thread_events::Model {
    event_row(thread_id, kind, actor, None, None, Some(detail), now)
}

/// Writes audit events, several rows a statement.
pub async fn insert_events(
    db: &impl ConnectionTrait,
    events: Vec<thread_events::Model>,
) -> Result<(), StoreError> {
    let rows = events
        .into_iter()
        .map(IntoActiveModel::into_active_model)
        .collect();
    crate::store::insert_in_chunks::<thread_events::ActiveModel>(db, rows, EVENT_CHUNK).await
}

/// Events a statement: eight columns each, well under SQLite's 32,766 parameters.
const EVENT_CHUNK: usize = 500;

/// Records an audit event in the feed (with only a `before`/`after` where they matter).
pub async fn record_event(
    db: &impl ConnectionTrait,
    thread_id: Uuid,
    kind: &str,
    actor: &Value,
    before: Option<Value>,
    after: Option<Value>,
    now: DateTime<Utc>,
) -> Result<thread_events::Model, StoreError> {
    insert_event(
        db,
        event_row(thread_id, kind, actor, before, after, None, now),
    )
    .await
}

pub(super) async fn insert_event(
    db: &impl ConnectionTrait,
    event: thread_events::Model,
) -> Result<thread_events::Model, StoreError> {
    thread_events::Entity::insert(event.clone().into_active_model())
        .exec_without_returning(db)
        .await?;
    Ok(event)
}

#[allow(clippy::too_many_arguments)] // one row's columns; a struct would only rename them
pub(super) fn event_row(
    thread_id: Uuid,
    kind: &str,
    actor: &Value,
    before: Option<Value>,
    after: Option<Value>,
    detail: Option<Value>,
    now: DateTime<Utc>,
) -> thread_events::Model {
    thread_events::Model {
        id: Uuid::now_v7(),
        thread_id,
        kind: kind.to_owned(),
        actor: actor.clone(),
        before,
        after,
        detail,
        at: now,
    }
}
