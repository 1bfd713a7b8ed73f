//! The customers a thread is for (`thread_customers` rows, kept in the order they were
//! added): reading them, replacing them (audited with a `customers` event), and linking a
//! new thread to its customers.

use chrono::{DateTime, Utc};
use gochat_entities::{customers, thread_customers, threads};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use super::card::save;
use super::events::{event_row, insert_event};
use crate::store::StoreError;

/// The external ids of the thread's customers, in the order they were added.
pub async fn customer_ids(
    db: &impl ConnectionTrait,
    thread_id: Uuid,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    let mut links = thread_customers::Entity::find()
        .filter(thread_customers::Column::ThreadId.eq(thread_id))
        .find_also_related(customers::Entity)
        .all(db)
        .await?;
    links.sort_by_key(|(l, _)| (l.added_at, l.customer_id));
    Ok(links
        .into_iter()
        .filter_map(|(_, c)| c.map(|c| (c.id, c.external_id)))
        .collect())
}

/// The thread's customer ids, as a subquery: a membership test then costs one statement.
pub(crate) fn customer_ids_query(thread: Uuid) -> sea_orm::sea_query::SelectStatement {
    sea_orm::sea_query::Query::select()
        .column(thread_customers::Column::CustomerId)
        .from(thread_customers::Entity)
        .and_where(thread_customers::Column::ThreadId.eq(thread))
        .to_owned()
}

/// Replaces the thread's customers by those with `external_ids` (all must exist).
pub async fn set_customers(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    external_ids: &[String],
    actor: &Value,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    if external_ids.is_empty() {
        return Err(StoreError::Invalid(
            "a thread keeps at least one customer".into(),
        ));
    }
    let found = customers::Entity::find()
        .filter(crate::store::bulk::any_of(
            db.get_database_backend(),
            customers::Column::ExternalId,
            external_ids.iter().map(String::as_str),
        ))
        .all(db)
        .await?;
    if let Some(missing) = external_ids
        .iter()
        .find(|e| !found.iter().any(|c| &&c.external_id == e))
    {
        return Err(StoreError::NotFound {
            what: "customer",
            id: missing.clone(),
        });
    }
    let before: Vec<String> = customer_ids(db, thread.id)
        .await?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let mut after: Vec<String> = external_ids.to_vec();
    after.dedup();
    if before == after {
        return Ok(thread.clone());
    }
    thread_customers::Entity::delete_many()
        .filter(thread_customers::Column::ThreadId.eq(thread.id))
        .exec(db)
        .await?;
    let ordered: Vec<Uuid> = after
        .iter()
        .filter_map(|e| found.iter().find(|c| &c.external_id == e).map(|c| c.id))
        .collect();
    link_customers(db, &[(thread.id, &ordered, now)]).await?;
    let saved = save(db, thread, thread.clone(), now).await?;
    insert_event(
        db,
        event_row(
            thread.id,
            "customers",
            actor,
            Some(json!({"customers": before})),
            Some(json!({"customers": after})),
            None,
            now,
        ),
    )
    .await?;
    Ok(saved)
}

/// Links threads to customers: for each, the thread, its customers in order and when.
pub(super) async fn link_customers(
    db: &impl ConnectionTrait,
    links: &[(Uuid, &[Uuid], DateTime<Utc>)],
) -> Result<(), StoreError> {
    // Distinct `added_at` keep the order customers were given in.
    let rows: Vec<thread_customers::ActiveModel> = links
        .iter()
        .flat_map(|(thread_id, customers, at)| {
            customers
                .iter()
                .enumerate()
                .map(move |(i, c)| thread_customers::ActiveModel {
                    thread_id: Set(*thread_id),
                    customer_id: Set(*c),
                    added_at: Set(*at + chrono::Duration::microseconds(i as i64)),
                })
        })
        .collect();
    // Three columns a row.
    crate::store::insert_links_in_chunks(
        db,
        rows,
        5000,
        [
            thread_customers::Column::ThreadId,
            thread_customers::Column::CustomerId,
        ],
    )
    .await
}
