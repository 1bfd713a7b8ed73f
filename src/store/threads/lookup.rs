//! Finding a thread: by id (optionally locked for the transaction), by the reply token in
//! an address, or by the Message-ID of a mail on it. Kept apart from the writes so the
//! threading code's reads are in one short file.

use gochat_entities::{messages, threads};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use crate::store::StoreError;

/// The thread, or `NotFound`.
pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<threads::Model, StoreError> {
    threads::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound {
            what: "thread",
            id: id.to_string(),
        })
}

/// The thread, locked for the rest of the transaction (PostgreSQL `FOR UPDATE`), so jobs on
/// one thread queue up instead of failing each other's version check. SQLite needs no lock:
/// its write transactions are serialised already (see `Tx`).
pub async fn get_for_update(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<threads::Model, StoreError> {
    let mut q = threads::Entity::find_by_id(id);
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        q = q.lock_exclusive();
    }
    q.one(db).await?.ok_or(StoreError::NotFound {
        what: "thread",
        id: id.to_string(),
    })
}

/// The thread whose reply token is `token`, if any.
pub async fn by_reply_token(
    db: &impl ConnectionTrait,
    token: &str,
) -> Result<Option<threads::Model>, StoreError> {
    Ok(threads::Entity::find()
        .filter(threads::Column::ReplyToken.eq(token))
        .one(db)
        .await?)
}

/// The thread holding a message whose Message-ID header is one of `ids` (the newest match).
pub async fn by_message_ids(
    db: &impl ConnectionTrait,
    ids: &[String],
) -> Result<Option<threads::Model>, StoreError> {
    if ids.is_empty() {
        return Ok(None);
    }
    let found = messages::Entity::find()
        .filter(crate::store::bulk::any_of(
            db.get_database_backend(),
            messages::Column::MessageIdHeader,
            ids.iter().map(String::as_str),
        ))
        .all(db)
        .await?;
    let Some(newest) = found.into_iter().max_by_key(|m| m.created_at) else {
        return Ok(None);
    };
    Ok(Some(get(db, newest.thread_id).await?))
}
