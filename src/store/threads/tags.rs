//! A thread's tags (`thread_tags` rows), changed as a set with one `tags` event holding the
//! sets before and after.

use chrono::{DateTime, Utc};
use gochat_entities::{thread_tags, threads};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use super::card::save;
use super::events::{event_row, insert_event};
use crate::store::StoreError;

/// The thread's tags, sorted.
pub async fn tags(db: &impl ConnectionTrait, thread_id: Uuid) -> Result<Vec<String>, StoreError> {
    let mut tags: Vec<String> = thread_tags::Entity::find()
        .filter(thread_tags::Column::ThreadId.eq(thread_id))
        .all(db)
        .await?
        .into_iter()
        .map(|t| t.tag)
        .collect();
    tags.sort();
    Ok(tags)
}

/// Adds and removes tags; records a `tags` event with the sets before and after.
pub async fn change_tags(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    add: &[String],
    remove: &[String],
    actor: &Value,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    let before = tags(db, thread.id).await?;
    let mut after = before.clone();
    after.retain(|t| !remove.contains(t));
    for t in add {
        let t = t.trim();
        if t.is_empty() {
            return Err(StoreError::Invalid("a tag cannot be empty".into()));
        }
        if !after.iter().any(|x| x == t) {
            after.push(t.to_owned());
        }
    }
    after.sort();
    if after == before {
        return Ok(thread.clone());
    }
    thread_tags::Entity::delete_many()
        .filter(thread_tags::Column::ThreadId.eq(thread.id))
        .filter(crate::store::bulk::any_of(
            db.get_database_backend(),
            thread_tags::Column::Tag,
            remove.iter().map(String::as_str),
        ))
        .exec(db)
        .await?;
    let new: Vec<thread_tags::ActiveModel> = after
        .iter()
        .filter(|t| !before.contains(t))
        .map(|t| thread_tags::ActiveModel {
            thread_id: Set(thread.id),
            tag: Set(t.clone()),
        })
        .collect();
    if !new.is_empty() {
        thread_tags::Entity::insert_many(new)
            .on_conflict(
                OnConflict::columns([thread_tags::Column::ThreadId, thread_tags::Column::Tag])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    let saved = save(db, thread, thread.clone(), now).await?;
    insert_event(
        db,
        event_row(
            thread.id,
            "tags",
            actor,
            Some(json!({"tags": before})),
            Some(json!({"tags": after})),
            None,
            now,
        ),
    )
    .await?;
    Ok(saved)
}
