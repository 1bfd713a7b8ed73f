//! The transactional outbox: follow-up jobs and events are written in the job's own
//! transaction and published after commit by the relay, so a crash between commit and
//! publish loses nothing (the row is still there) and a rolled-back job publishes nothing.

use chrono::{DateTime, Duration, Utc};
use gochat_entities::outbox;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, Statement,
};
use uuid::Uuid;

use super::{StoreError, placeholders};

/// A row to publish.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: Uuid,
    pub kind: outbox::OutboxKind,
    pub exchange: String,
    pub routing_key: String,
    pub message_id: String,
    pub payload: String,
    pub headers: Option<serde_json::Value>,
    /// Claims so far, this one included.
    pub attempts: i32,
}

/// A new outbox row, to be written with the job's other effects (see [`Tx::defer_outbox`]).
///
/// [`Tx::defer_outbox`]: super::Tx::defer_outbox
pub fn new_row(
    kind: outbox::OutboxKind,
    exchange: &str,
    routing_key: &str,
    message_id: &str,
    payload: &serde_json::Value,
    now: DateTime<Utc>,
) -> outbox::ActiveModel {
    outbox::ActiveModel {
        id: Set(Uuid::now_v7()),
        kind: Set(kind),
        exchange: Set(exchange.to_owned()),
        routing_key: Set(routing_key.to_owned()),
        message_id: Set(message_id.to_owned()),
        payload: Set(payload.to_string()),
        headers: Set(None),
        created_at: Set(now),
        available_at: Set(now),
        attempts: Set(0),
        published_at: Set(None),
        last_error: Set(None),
    }
}

/// The row as the relay publishes it, for a hand-over right after commit (see
/// [`Tx::hand_over`]); `None` for a row missing a column, which the sweep then publishes.
///
/// [`Tx::hand_over`]: super::Tx::hand_over
pub fn message_of(row: &outbox::ActiveModel) -> Option<OutboxMessage> {
    use sea_orm::ActiveValue;
    fn value<T: Clone + Into<sea_orm::Value>>(v: &ActiveValue<T>) -> Option<T> {
        match v {
            ActiveValue::Set(x) | ActiveValue::Unchanged(x) => Some(x.clone()),
            ActiveValue::NotSet => None,
        }
    }
    Some(OutboxMessage {
        id: value(&row.id)?,
        kind: value(&row.kind)?,
        exchange: value(&row.exchange)?,
        routing_key: value(&row.routing_key)?,
        message_id: value(&row.message_id)?,
        payload: value(&row.payload)?,
        headers: value(&row.headers)?,
        attempts: value(&row.attempts)?,
    })
}

/// Rows per INSERT: twelve columns each stays far below PostgreSQL's 65,535 bind parameters
/// and SQLite's 32,766.
const INSERT_CHUNK: usize = 1000;

/// Writes rows in as few statements as possible (inside the caller's transaction).
pub async fn insert_all(
    db: &impl ConnectionTrait,
    rows: Vec<outbox::ActiveModel>,
) -> Result<(), StoreError> {
    super::insert_in_chunks(db, rows, INSERT_CHUNK).await
}

/// Claims up to `limit` unpublished rows for `lease`: other relays skip them until the lease
/// ends, so several workers do not publish the same rows (and if this one dies, another
/// takes them over after the lease). One statement on both databases; PostgreSQL skips rows
/// another relay has locked instead of waiting.
pub async fn claim(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    lease: Duration,
    limit: u32,
) -> Result<Vec<OutboxMessage>, StoreError> {
    let backend = db.get_database_backend();
    let lock = if backend == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let (p1, p2, p3) = placeholders(backend);
    let sql = format!(
        "UPDATE outbox SET available_at = {p1}, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM outbox WHERE published_at IS NULL AND available_at <= {p2} \
         ORDER BY id LIMIT {p3}{lock}) \
         RETURNING id, kind, exchange, routing_key, message_id, payload, headers, attempts"
    );
    let stmt = Statement::from_sql_and_values(
        backend,
        sql,
        [(now + lease).into(), now.into(), i64::from(limit).into()],
    );
    let rows = db.query_all_raw(stmt).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let kind: String = r.try_get("", "kind")?;
        out.push(OutboxMessage {
            id: r.try_get("", "id")?,
            kind: if kind == "event" {
                outbox::OutboxKind::Event
            } else {
                outbox::OutboxKind::Job
            },
            exchange: r.try_get("", "exchange")?,
            routing_key: r.try_get("", "routing_key")?,
            message_id: r.try_get("", "message_id")?,
            payload: r.try_get("", "payload")?,
            headers: r.try_get("", "headers")?,
            attempts: r.try_get("", "attempts")?,
        });
    }
    out.sort_by_key(|m| m.id);
    Ok(out)
}

/// Marks rows published (confirmed by the broker).
pub async fn mark_published(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::PublishedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            outbox::Column::Id,
            ids.iter().copied(),
        ))
        .exec(db)
        .await?;
    Ok(())
}

/// Records why publishing `ids` failed; they become available again at `available_at`.
pub async fn mark_failed(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
    error: &str,
    available_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::LastError,
            sea_orm::sea_query::Expr::value(error.to_owned()),
        )
        .col_expr(
            outbox::Column::AvailableAt,
            sea_orm::sea_query::Expr::value(available_at),
        )
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            outbox::Column::Id,
            ids.iter().copied(),
        ))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes the unpublished rows addressed to exchanges named `prefix*`: for a bench or a
/// test that deleted its own exchanges, so no relay keeps trying them. Returns how many.
pub async fn forget_unpublished(
    db: &impl ConnectionTrait,
    prefix: &str,
) -> Result<u64, StoreError> {
    let r = outbox::Entity::delete_many()
        .filter(outbox::Column::PublishedAt.is_null())
        .filter(outbox::Column::Exchange.like(starting_with(prefix)))
        .exec(db)
        .await?;
    Ok(r.rows_affected)
}

/// Unpublished rows addressed to exchanges named `prefix*` (one deployment's, or a bench's).
pub async fn backlog_for(db: &impl ConnectionTrait, prefix: &str) -> Result<u64, StoreError> {
    Ok(outbox::Entity::find()
        .filter(outbox::Column::PublishedAt.is_null())
        .filter(outbox::Column::Exchange.like(starting_with(prefix)))
        .count(db)
        .await?)
}

/// `LIKE 'prefix%'` with the prefix taken literally: `_` and `%` are wildcards, escaped so
/// that "a_b." does not also match "axb.".
fn starting_with(prefix: &str) -> sea_orm::sea_query::LikeExpr {
    let escaped: String = prefix
        .chars()
        .flat_map(|c| match c {
            '\\' | '%' | '_' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    sea_orm::sea_query::LikeExpr::new(format!("{escaped}%")).escape('\\')
}

/// Rows not yet published (the `gochat_outbox_backlog` gauge).
pub async fn backlog(db: &impl ConnectionTrait) -> Result<u64, StoreError> {
    Ok(outbox::Entity::find()
        .filter(outbox::Column::PublishedAt.is_null())
        .count(db)
        .await?)
}

/// Rows deleted per statement when pruning: short statements, short locks.
const PRUNE_CHUNK: u64 = 5000;

/// Deletes published rows created before `before` (at most `max` of them), keeping the
/// table and its indexes small. Rows are found by id, which is a UUIDv7 and so ordered by
/// creation time: a range of the primary key, no scan of the table and no index on
/// `published_at` to keep up. Unpublished rows stay, however old. Returns how many went.
pub async fn prune(
    db: &impl ConnectionTrait,
    before: DateTime<Utc>,
    max: u64,
) -> Result<u64, StoreError> {
    let bound = v7_floor(before);
    let mut deleted = 0;
    while deleted < max {
        let chunk = PRUNE_CHUNK.min(max - deleted);
        let r = outbox::Entity::delete_many()
            .filter(
                outbox::Column::Id.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(outbox::Column::Id)
                        .from(outbox::Entity)
                        .and_where(outbox::Column::Id.lt(bound))
                        .and_where(outbox::Column::PublishedAt.is_not_null())
                        .limit(chunk)
                        .to_owned(),
                ),
            )
            .exec(db)
            .await?;
        deleted += r.rows_affected;
        if r.rows_affected < chunk {
            break;
        }
    }
    Ok(deleted)
}

/// The smallest UUIDv7 of the millisecond `t`: every id made before `t` sorts below it.
fn v7_floor(t: DateTime<Utc>) -> Uuid {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v7_floor_of_a_time_sorts_between_ids_made_before_and_after_it() {
        let t = Utc::now();
        let before = Uuid::now_v7();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let floor = v7_floor(Utc::now());
        std::thread::sleep(std::time::Duration::from_millis(3));
        let after = Uuid::now_v7();
        assert!(before < floor && floor < after, "{before} {floor} {after}");
        assert_eq!(floor.get_version_num(), 7);
        assert!(v7_floor(t) <= floor);
    }
}
