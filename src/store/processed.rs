//! Idempotency: the message id of every job applied, recorded in the job's own transaction,
//! so "applied" and "recorded" commit together and a redelivered job is a no-op.

use chrono::{DateTime, Utc};
use gochat_entities::processed_jobs;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, SqlErr};

use super::StoreError;

/// True when a job with this message id was already applied.
pub async fn is_processed(db: &impl ConnectionTrait, message_id: &str) -> Result<bool, StoreError> {
    Ok(processed_jobs::Entity::find_by_id(message_id.to_owned())
        .one(db)
        .await?
        .is_some())
}

/// Records the job as applied. `Ok(false)` when another worker recorded it first (the caller
/// rolls back: the job's effects are already committed by that worker).
pub async fn record(
    db: &impl ConnectionTrait,
    message_id: &str,
    kind: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let row = processed_jobs::ActiveModel {
        message_id: Set(message_id.to_owned()),
        kind: Set(kind.to_owned()),
        processed_at: Set(now),
    };
    match processed_jobs::Entity::insert(row)
        .exec_without_returning(db)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
