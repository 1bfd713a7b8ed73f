//! Stored bytes for download: an attachment (from the content-addressed `blobs`) and the
//! raw mail a message came from.

use gochat_entities::{attachments, blobs, messages, raw_mails};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use super::StoreError;

/// An attachment's metadata and bytes.
pub struct File {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Attachment `id` of message `message_id`; `None` when either is unknown or the attachment
/// belongs to another message (an id from one message never opens another's file).
pub async fn attachment(
    db: &impl ConnectionTrait,
    message_id: Uuid,
    id: Uuid,
) -> Result<Option<File>, StoreError> {
    let Some(a) = attachments::Entity::find_by_id(id)
        .filter(attachments::Column::MessageId.eq(message_id))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let data: Option<Vec<u8>> = blobs::Entity::find_by_id(a.sha256.clone())
        .select_only()
        .column(blobs::Column::Data)
        .into_tuple()
        .one(db)
        .await?;
    let Some(data) = data else {
        return Err(StoreError::NotFound {
            what: "attachment content",
            id: a.sha256,
        });
    };
    Ok(Some(File {
        name: a.name,
        content_type: a.content_type,
        data,
    }))
}

/// The raw mail an inbound message was parsed from; `Ok(None)` when there is no such
/// message, `Ok(Some(None))` when it has no raw mail (outbound, or chat).
pub async fn raw_mail(
    db: &impl ConnectionTrait,
    message_id: Uuid,
) -> Result<Option<Option<Vec<u8>>>, StoreError> {
    let raw_id: Option<Option<Uuid>> = messages::Entity::find_by_id(message_id)
        .select_only()
        .column(messages::Column::RawMailId)
        .into_tuple()
        .one(db)
        .await?;
    let Some(raw_id) = raw_id else {
        return Ok(None);
    };
    let Some(raw_id) = raw_id else {
        return Ok(Some(None));
    };
    let data: Option<Vec<u8>> = raw_mails::Entity::find_by_id(raw_id)
        .select_only()
        .column(raw_mails::Column::Data)
        .into_tuple()
        .one(db)
        .await?;
    Ok(Some(data))
}
