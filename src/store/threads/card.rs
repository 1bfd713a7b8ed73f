//! The thread row itself, which is also its inbox card: the version-checked save every
//! change goes through, and the changes to the row's own fields (status and lifecycle
//! step, assignee, flags), each audited with a `thread_events` row.

use chrono::{DateTime, Utc};
use gochat_entities::{thread_events, threads};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
};
use serde_json::{Value, json};

use super::events::{event_row, insert_event};
use crate::store::StoreError;

/// Saves `changed` (a modified copy of `current`) if nobody changed the thread since
/// `current` was read; bumps the version and `updated_at`.
pub(super) async fn save(
    db: &impl ConnectionTrait,
    current: &threads::Model,
    changed: threads::Model,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    let changed = bump(current, changed, now);
    let am = changed.clone().into_active_model().reset_all();
    let res = threads::Entity::update_many()
        .set(am)
        .filter(threads::Column::Id.eq(current.id))
        .filter(threads::Column::Version.eq(current.version))
        .exec(db)
        .await?;
    if res.rows_affected == 0 {
        return Err(StoreError::Conflict {
            thread_id: current.id,
            version: current.version,
        });
    }
    Ok(changed)
}

/// `changed` (a modified copy of `current`) as one change further: the next version,
/// stamped `now`. What [`save`] writes, and what a set-based step keeps in memory until
/// it writes a batch's cards together ([`crate::store::cards::save_many`]).
pub fn bump(
    current: &threads::Model,
    mut changed: threads::Model,
    now: DateTime<Utc>,
) -> threads::Model {
    changed.version = current.version + 1;
    changed.updated_at = now;
    changed
}

/// Sets the status (and the lifecycle step, `None` off the reminder ladder); records a
/// `status` event when it changes. Returns the thread unchanged if nothing changes.
pub async fn set_status(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    status: threads::ThreadStatus,
    step: Option<i32>,
    actor: &Value,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    let Some((changed, event)) = status_change(thread, status, step, actor, reason, now) else {
        return Ok(thread.clone());
    };
    let saved = save(db, thread, changed, now).await?;
    if let Some(event) = event {
        insert_event(db, event).await?;
    }
    Ok(saved)
}

/// What [`set_status`] changes, not yet saved: the card with its new status and step, and
/// the `status` event when the status itself changes. `None` when nothing changes.
pub fn status_change(
    thread: &threads::Model,
    status: threads::ThreadStatus,
    step: Option<i32>,
    actor: &Value,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Option<(threads::Model, Option<thread_events::Model>)> {
    if thread.status == status && thread.lifecycle_step == step {
        return None;
    }
    let mut changed = thread.clone();
    changed.status = status;
    changed.lifecycle_step = step;
    let event = (thread.status != status).then(|| {
        event_row(
            thread.id,
            "status",
            actor,
            Some(json!({"status": thread.status})),
            Some(json!({"status": status})),
            reason.map(|r| json!({"reason": r})),
            now,
        )
    });
    Some((changed, event))
}

/// Assigns the thread to an agent (`None` unassigns).
pub async fn set_assignee(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    assignee: Option<String>,
    actor: &Value,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    if thread.assignee == assignee {
        return Ok(thread.clone());
    }
    let mut changed = thread.clone();
    changed.assignee = assignee.clone();
    let saved = save(db, thread, changed, now).await?;
    insert_event(
        db,
        event_row(
            thread.id,
            "assignee",
            actor,
            Some(json!({"assignee": thread.assignee})),
            Some(json!({"assignee": assignee})),
            None,
            now,
        ),
    )
    .await?;
    Ok(saved)
}

/// Adds `flag` (e.g. `unknown_sender`) to the thread, audited with `detail`; a flag already
/// set is left as it is.
pub async fn add_flag(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    flag: &str,
    detail: Value,
    actor: &Value,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    let mut flags = crate::store::json_strings(&thread.flags);
    if flags.iter().any(|f| f == flag) {
        return Ok(thread.clone());
    }
    flags.push(flag.to_owned());
    let mut changed = thread.clone();
    changed.flags = json!(flags);
    let saved = save(db, thread, changed, now).await?;
    insert_event(
        db,
        event_row(
            thread.id,
            "flagged",
            actor,
            None,
            Some(json!({ "flag": flag })),
            Some(detail),
            now,
        ),
    )
    .await?;
    Ok(saved)
}
