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

/// Which of `message_ids` were already applied (one query for a whole batch).
pub async fn which_processed(
    db: &impl ConnectionTrait,
    message_ids: &[&str],
) -> Result<std::collections::HashSet<String>, StoreError> {
    use sea_orm::{QueryFilter, QuerySelect};
    if message_ids.is_empty() {
        return Ok(Default::default());
    }
    let found: Vec<String> = processed_jobs::Entity::find()
        .select_only()
        .column(processed_jobs::Column::MessageId)
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            processed_jobs::Column::MessageId,
            message_ids.iter().copied(),
        ))
        .into_tuple()
        .all(db)
        .await?;
    Ok(found.into_iter().collect())
}

/// Records a batch of jobs as applied, in one statement. Any of them already recorded (by
/// another worker, meanwhile) fails the whole insert with a unique violation, which the
/// caller treats like any failed batch: roll back, then run each job alone.
pub async fn record_many(
    db: &impl ConnectionTrait,
    jobs: &[(&str, &str)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let rows = jobs
        .iter()
        .map(|(message_id, kind)| processed_jobs::ActiveModel {
            message_id: Set((*message_id).to_owned()),
            kind: Set((*kind).to_owned()),
            processed_at: Set(now),
        });
    let insert = super::bulk::insert_statement(db.get_database_backend(), rows)?;
    db.execute(&insert).await?;
    Ok(())
}

/// Records that job `message_id` was moved to the dead letters, and why (a job dead again
/// after a replay keeps its latest reason).
pub async fn record_dead(
    db: &impl ConnectionTrait,
    message_id: &str,
    kind: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    use gochat_entities::dead_jobs;
    use sea_orm::sea_query::OnConflict;
    dead_jobs::Entity::insert(dead_jobs::ActiveModel {
        message_id: Set(message_id.to_owned()),
        kind: Set(kind.to_owned()),
        reason: Set(crate::text::escape_controls(reason).into_owned()),
        dead_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(dead_jobs::Column::MessageId)
            .update_columns([dead_jobs::Column::Reason, dead_jobs::Column::DeadAt])
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Deletes the records of jobs dead-lettered before `before`; returns how many went. The
/// dead-letter queue keeps the jobs themselves: the records only answer the API's `?wait=`
/// for jobs still young enough to be waited on. Dead letters are rare, so one statement
/// (no index on `dead_at`) costs little.
pub async fn prune_dead(
    db: &impl ConnectionTrait,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    use gochat_entities::dead_jobs;
    use sea_orm::{ColumnTrait, QueryFilter};
    let r = dead_jobs::Entity::delete_many()
        .filter(dead_jobs::Column::DeadAt.lt(before))
        .exec(db)
        .await?;
    Ok(r.rows_affected)
}

/// The dead-letter reason of each of `message_ids` that was dead-lettered.
pub async fn dead_reasons(
    db: &impl ConnectionTrait,
    message_ids: &[&str],
) -> Result<std::collections::HashMap<String, String>, StoreError> {
    use gochat_entities::dead_jobs;
    use sea_orm::QueryFilter;
    if message_ids.is_empty() {
        return Ok(Default::default());
    }
    Ok(dead_jobs::Entity::find()
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            dead_jobs::Column::MessageId,
            message_ids.iter().copied(),
        ))
        .all(db)
        .await?
        .into_iter()
        .map(|d| (d.message_id, d.reason))
        .collect())
}
