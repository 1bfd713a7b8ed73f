//! Durable reminder timers. They live in the database, not the broker, so they survive a
//! broker loss; the scheduler claims due ones with one statement whose cost follows the
//! number due (an index range scan on `(state, due_at)`), never the number stored.
//!
//! States: `pending` → `claimed` (its `delayed-reminder` job is in the outbox) → `fired`
//! or `stale` (the job found the thread moved on); `pending`/`claimed` → `cancelled` when
//! the thread changes status first.

use chrono::{DateTime, Utc};
use gochat_entities::threads;
use gochat_entities::timers::{self, TimerState};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, Statement,
};
use uuid::Uuid;

use super::{StoreError, placeholders};

/// Schedules ladder step `step` of `thread` (as it is after the change that armed it) at
/// `due_at`. The timer expects the thread to still hold this status and step when it fires.
pub async fn schedule(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    step: i32,
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<timers::Model, StoreError> {
    let row = timer_row(thread, step, due_at, now);
    Ok(timers::Entity::insert(row).exec_with_returning(db).await?)
}

/// The row [`schedule`] writes.
pub fn timer_row(
    thread: &threads::Model,
    step: i32,
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> timers::ActiveModel {
    timers::ActiveModel {
        id: Set(Uuid::now_v7()),
        thread_id: Set(thread.id),
        lifecycle: Set(thread.lifecycle.clone()),
        step: Set(step),
        due_at: Set(due_at),
        expected_status: Set(thread.status.as_str().to_owned()),
        expected_version: Set(thread.version),
        state: Set(TimerState::Pending),
        claimed_by: Set(None),
        claimed_at: Set(None),
        fired_at: Set(None),
        created_at: Set(now),
    }
}

/// Schedules several timers ([`timer_row`]s), several a statement.
pub async fn schedule_many(
    db: &impl ConnectionTrait,
    rows: Vec<timers::ActiveModel>,
) -> Result<(), StoreError> {
    // Twelve columns a row: well under SQLite's 32,766 parameters.
    super::insert_in_chunks(db, rows, 1000).await
}

/// Cancels the thread's timers that have not fired yet (pending, or claimed with their job
/// on its way): a reply or a status change makes them moot. Returns how many.
pub async fn cancel_for_thread(
    db: &impl ConnectionTrait,
    thread_id: Uuid,
) -> Result<u64, StoreError> {
    cancel_for_threads(db, &[thread_id]).await
}

/// [`cancel_for_thread`] for several threads, 500 a statement.
pub async fn cancel_for_threads(
    db: &impl ConnectionTrait,
    thread_ids: &[Uuid],
) -> Result<u64, StoreError> {
    let mut cancelled = 0;
    for chunk in thread_ids.chunks(500) {
        let r = timers::Entity::update_many()
            .col_expr(
                timers::Column::State,
                sea_orm::sea_query::Expr::value(TimerState::Cancelled),
            )
            .filter(super::bulk::any_of(
                db.get_database_backend(),
                timers::Column::ThreadId,
                chunk.iter().copied(),
            ))
            .filter(timers::Column::State.is_in([TimerState::Pending, TimerState::Claimed]))
            .exec(db)
            .await?;
        cancelled += r.rows_affected;
    }
    Ok(cancelled)
}

pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<timers::Model>, StoreError> {
    Ok(timers::Entity::find_by_id(id).one(db).await?)
}

/// Records how a claimed timer ended (`Fired` or `Stale`).
pub async fn finish(
    db: &impl ConnectionTrait,
    id: Uuid,
    state: TimerState,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    timers::Entity::update_many()
        .col_expr(
            timers::Column::State,
            sea_orm::sea_query::Expr::value(state),
        )
        .col_expr(
            timers::Column::FiredAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(timers::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// The thread's timers still to fire, soonest first.
pub async fn pending_for_thread(
    db: &impl ConnectionTrait,
    thread_id: Uuid,
) -> Result<Vec<timers::Model>, StoreError> {
    use sea_orm::QueryOrder;
    Ok(timers::Entity::find()
        .filter(timers::Column::ThreadId.eq(thread_id))
        .filter(timers::Column::State.is_in([TimerState::Pending, TimerState::Claimed]))
        .order_by_asc(timers::Column::DueAt)
        .all(db)
        .await?)
}

/// Claims up to `limit` due timers for `instance`: one statement on both databases.
/// PostgreSQL skips rows another scheduler has locked (`FOR UPDATE SKIP LOCKED`); SQLite
/// serialises writers, and the `state = 'pending'` condition is re-checked by the UPDATE
/// itself, so a timer is claimed once whichever way the race goes.
pub async fn claim_due(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    instance: &str,
    limit: u32,
) -> Result<Vec<timers::Model>, StoreError> {
    let backend = db.get_database_backend();
    let sql = claim_sql(backend);
    let stmt = Statement::from_sql_and_values(
        backend,
        sql,
        [
            instance.into(),
            now.into(),
            now.into(),
            i64::from(limit).into(),
        ],
    );
    let mut rows = timers::Entity::find().from_raw_sql(stmt).all(db).await?;
    rows.sort_by_key(|t| t.due_at);
    Ok(rows)
}

/// Whether any pending timer is due (an index probe).
pub async fn any_due(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<bool, StoreError> {
    use sea_orm::QuerySelect;
    Ok(timers::Entity::find()
        .select_only()
        .column(timers::Column::Id)
        .filter(timers::Column::State.eq(TimerState::Pending))
        .filter(timers::Column::DueAt.lte(now))
        .limit(1)
        .into_tuple::<Uuid>()
        .one(db)
        .await?
        .is_some())
}

/// The claim statement for `backend`; binds: instance, now, now, limit.
pub fn claim_sql(backend: DbBackend) -> String {
    let lock = if backend == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let (p1, p2, p3) = placeholders(backend);
    let p4 = if backend == DbBackend::Postgres {
        "$4"
    } else {
        "?"
    };
    // The outer re-check of `state` must not steer SQLite's planner onto the
    // `(state, due_at)` index (a scan of every pending timer, future ones included): a
    // unary `+` keeps it a primary-key lookup there.
    let recheck = if backend == DbBackend::Postgres {
        "state"
    } else {
        "+state"
    };
    format!(
        "UPDATE timers SET state = 'claimed', claimed_by = {p1}, claimed_at = {p2} \
         WHERE {recheck} = 'pending' AND id IN (SELECT id FROM timers WHERE state = 'pending' \
         AND due_at <= {p3} ORDER BY due_at LIMIT {p4}{lock}) RETURNING *"
    )
}

/// Timers waiting to fire (for the gauge).
pub async fn pending_count(db: &impl ConnectionTrait) -> Result<u64, StoreError> {
    Ok(timers::Entity::find()
        .filter(timers::Column::State.eq(TimerState::Pending))
        .count(db)
        .await?)
}

/// Pending timers already due (for the gauge: a growing number means the scheduler lags).
pub async fn due_count(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<u64, StoreError> {
    Ok(timers::Entity::find()
        .filter(timers::Column::State.eq(TimerState::Pending))
        .filter(timers::Column::DueAt.lte(now))
        .count(db)
        .await?)
}
