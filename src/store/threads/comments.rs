//! Internal comments (never shown to the customer): the `comments` rows and the card's item
//! count they raise.

use chrono::{DateTime, Utc};
use gochat_entities::{comments, threads};
use sea_orm::{ConnectionTrait, EntityTrait, IntoActiveModel};
use serde_json::Value;
use uuid::Uuid;

use super::card::save;
use crate::store::StoreError;

/// Adds an internal comment (never shown to the customer).
pub async fn add_comment(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    author: &Value,
    body: &str,
    now: DateTime<Utc>,
) -> Result<(threads::Model, comments::Model), StoreError> {
    let row = comment_row(thread.id, author, body, now);
    comments::Entity::insert(row.clone().into_active_model())
        .exec_without_returning(db)
        .await?;
    let card = save(db, thread, with_comment(thread), now).await?;
    Ok((card, row))
}

/// The `comments` row of a new internal comment.
pub fn comment_row(
    thread_id: Uuid,
    author: &Value,
    body: &str,
    now: DateTime<Utc>,
) -> comments::Model {
    comments::Model {
        id: Uuid::now_v7(),
        thread_id,
        author: author.clone(),
        body: body.to_owned(),
        created_at: now,
    }
}

/// The thread's card with one more comment counted, not yet saved.
pub fn with_comment(thread: &threads::Model) -> threads::Model {
    let mut card = thread.clone();
    card.item_count += 1;
    card
}

/// Comments a statement: five columns each, well under SQLite's 32,766 parameters.
const COMMENT_CHUNK: usize = 500;

/// Writes comments, several rows a statement.
pub async fn insert_comments(
    db: &impl ConnectionTrait,
    rows: Vec<comments::Model>,
) -> Result<(), StoreError> {
    let rows = rows
        .into_iter()
        .map(IntoActiveModel::into_active_model)
        .collect();
    crate::store::insert_in_chunks::<comments::ActiveModel>(db, rows, COMMENT_CHUNK).await
}
