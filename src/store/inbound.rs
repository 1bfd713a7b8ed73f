//! Inbound mail's storage: the raw bytes first (so a mail that cannot be parsed or
//! processed is never lost), the lookups that route a mail (duplicates, the thread a
//! Message-ID or token names, the message a bounce is about), the loop count, and the
//! contact facts threading decides on.

use chrono::{DateTime, Utc};
use gochat_entities::messages::{self, MessageDirection, OutboundState};
use gochat_entities::raw_mails::{self, RawMailStatus};
use gochat_entities::{customer_contacts, customers, thread_customers, threads};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::json;
use uuid::Uuid;

use super::StoreError;

/// A raw mail as it arrived.
#[derive(Debug, Clone)]
pub struct NewRawMail<'a> {
    /// The inbound-mail job that brought it: storing again under the same job is a no-op.
    pub job_message_id: &'a str,
    pub envelope_from: Option<&'a str>,
    pub recipients: &'a [String],
    pub mailbox: Option<&'a str>,
    pub data: &'a [u8],
    pub sha256: &'a str,
    pub received_at: DateTime<Utc>,
}

/// Stores the raw bytes (once per job) and returns the row's id.
pub async fn store_raw(db: &impl ConnectionTrait, m: &NewRawMail<'_>) -> Result<Uuid, StoreError> {
    let insert = raw_mails::Entity::insert(raw_mails::ActiveModel {
        id: Set(Uuid::now_v7()),
        job_message_id: Set(Some(m.job_message_id.to_owned())),
        envelope_from: Set(m.envelope_from.map(str::to_owned)),
        recipients: Set(json!(m.recipients)),
        mailbox: Set(m.mailbox.map(str::to_owned)),
        size: Set(m.data.len() as i64),
        sha256: Set(m.sha256.to_owned()),
        data: Set(m.data.to_vec()),
        status: Set(RawMailStatus::Pending),
        error: Set(None),
        classification: Set(None),
        message_row_id: Set(None),
        received_at: Set(m.received_at),
        processed_at: Set(None),
    })
    // A job run again (retried, replayed from the dead letters) finds its row.
    .on_conflict(
        OnConflict::column(raw_mails::Column::JobMessageId)
            .update_column(raw_mails::Column::JobMessageId)
            .to_owned(),
    );
    super::upsert_returning_id(db, insert, raw_mails::Column::Id).await
}

/// A stored raw mail (`gochat mail reprocess`).
pub async fn raw(db: &impl ConnectionTrait, id: Uuid) -> Result<raw_mails::Model, StoreError> {
    raw_mails::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound {
            what: "raw mail",
            id: id.to_string(),
        })
}

/// Records what became of a raw mail: its status, what went wrong or was odd, and (once
/// known) what it was classified as.
pub async fn mark_raw(
    db: &impl ConnectionTrait,
    id: Uuid,
    status: RawMailStatus,
    error: Option<&str>,
    classification: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut update = raw_mails::Entity::update_many()
        .col_expr(raw_mails::Column::Status, Expr::value(status))
        .col_expr(
            raw_mails::Column::Error,
            Expr::value(error.map(str::to_owned)),
        )
        .col_expr(raw_mails::Column::ProcessedAt, Expr::value(now));
    if let Some(c) = classification {
        update = update.col_expr(raw_mails::Column::Classification, Expr::value(c.to_owned()));
    }
    update.filter(raw_mails::Column::Id.eq(id)).exec(db).await?;
    Ok(())
}

/// Links a raw mail to the message it repeats (a duplicate; a stored message points to its
/// raw mail itself, `messages.raw_mail_id`).
pub async fn link_raw(
    db: &impl ConnectionTrait,
    raw_id: Uuid,
    message_row_id: Uuid,
) -> Result<(), StoreError> {
    raw_mails::Entity::update_many()
        .col_expr(raw_mails::Column::MessageRowId, Expr::value(message_row_id))
        .filter(raw_mails::Column::Id.eq(raw_id))
        .exec(db)
        .await?;
    Ok(())
}

/// The message already stored under `dedupe_key`, if any.
pub async fn by_dedupe_key(
    db: &impl ConnectionTrait,
    key: &str,
) -> Result<Option<messages::Model>, StoreError> {
    Ok(messages::Entity::find()
        .filter(messages::Column::DedupeKey.eq(key))
        .one(db)
        .await?)
}

/// The newest stored message (ours or theirs) whose Message-ID is one of `ids`, with the id
/// that matched: threading follows In-Reply-To and References to it.
pub async fn by_message_ids(
    db: &impl ConnectionTrait,
    ids: &[String],
) -> Result<Option<(String, Uuid)>, StoreError> {
    if ids.is_empty() {
        return Ok(None);
    }
    let found: Option<(Option<String>, Uuid)> = messages::Entity::find()
        .select_only()
        .column(messages::Column::MessageIdHeader)
        .column(messages::Column::ThreadId)
        .filter(messages::Column::MessageIdHeader.is_in(ids.iter().cloned()))
        .order_by_desc(messages::Column::CreatedAt)
        .into_tuple()
        .one(db)
        .await?;
    Ok(found.map(|(mid, thread)| (mid.unwrap_or_default(), thread)))
}

/// The thread whose reply token is `token`.
pub async fn by_token(
    db: &impl ConnectionTrait,
    token: &str,
) -> Result<Option<threads::Model>, StoreError> {
    super::threads::by_reply_token(db, token).await
}

/// Whether `contact` belongs to one of the thread's customers: only then may a guessable
/// token (address or subject) route its mail into the thread.
pub async fn is_contact_of_thread(
    db: &impl ConnectionTrait,
    contact: Uuid,
    thread: Uuid,
) -> Result<bool, StoreError> {
    let customers: Vec<Uuid> = thread_customers::Entity::find()
        .select_only()
        .column(thread_customers::Column::CustomerId)
        .filter(thread_customers::Column::ThreadId.eq(thread))
        .into_tuple()
        .all(db)
        .await?;
    if customers.is_empty() {
        return Ok(false);
    }
    Ok(customer_contacts::Entity::find()
        .filter(customer_contacts::Column::ContactId.eq(contact))
        .filter(customer_contacts::Column::CustomerId.is_in(customers))
        .count(db)
        .await?
        > 0)
}

/// The customers `contact` belongs to, with their attributes (lifecycle selectors read
/// them).
pub async fn customers_of_contact(
    db: &impl ConnectionTrait,
    contact: Uuid,
) -> Result<Vec<customers::Model>, StoreError> {
    Ok(customer_contacts::Entity::find()
        .filter(customer_contacts::Column::ContactId.eq(contact))
        .find_also_related(customers::Entity)
        .all(db)
        .await?
        .into_iter()
        .filter_map(|(_, c)| c)
        .collect())
}

/// The customers of a thread, with their attributes.
pub async fn customers_of_thread(
    db: &impl ConnectionTrait,
    thread: Uuid,
) -> Result<Vec<customers::Model>, StoreError> {
    Ok(thread_customers::Entity::find()
        .filter(thread_customers::Column::ThreadId.eq(thread))
        .find_also_related(customers::Entity)
        .all(db)
        .await?
        .into_iter()
        .filter_map(|(_, c)| c)
        .collect())
}

/// Inbound mails from `address` stored since `since` (the loop check).
pub async fn recent_from(
    db: &impl ConnectionTrait,
    address: &str,
    since: DateTime<Utc>,
) -> Result<u64, StoreError> {
    Ok(messages::Entity::find()
        .filter(messages::Column::FromAddress.eq(address))
        .filter(messages::Column::CreatedAt.gte(since))
        .filter(messages::Column::Direction.eq(MessageDirection::Inbound))
        .count(db)
        .await?)
}

/// The outbound message a bounce is about: by the VERP id of our envelope sender (exact), or
/// by the Message-ID the bounce quotes.
pub async fn bounced_message(
    db: &impl ConnectionTrait,
    verp: Option<Uuid>,
    original_message_id: Option<&str>,
) -> Result<Option<messages::Model>, StoreError> {
    let outbound = messages::Column::Direction.eq(MessageDirection::Outbound);
    if let Some(id) = verp
        && let Some(m) = messages::Entity::find_by_id(id)
            .filter(outbound.clone())
            .one(db)
            .await?
    {
        return Ok(Some(m));
    }
    let Some(mid) = original_message_id else {
        return Ok(None);
    };
    Ok(messages::Entity::find()
        .filter(messages::Column::MessageIdHeader.eq(mid.trim_matches(['<', '>'])))
        .filter(outbound)
        .one(db)
        .await?)
}

/// Marks a delivered message failed because it bounced (a later bounce of the same message
/// changes nothing); returns whether it changed.
pub async fn mark_bounced(
    db: &impl ConnectionTrait,
    message: Uuid,
    diagnostic: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let r = messages::Entity::update_many()
        .col_expr(messages::Column::State, Expr::value(OutboundState::Failed))
        .col_expr(messages::Column::Error, Expr::value(diagnostic.to_owned()))
        .col_expr(messages::Column::UpdatedAt, Expr::value(now))
        .filter(messages::Column::Id.eq(message))
        .filter(messages::Column::State.ne(OutboundState::Failed))
        .exec(db)
        .await?;
    Ok(r.rows_affected > 0)
}
