//! Files attached to messages: their bytes go once into the content-addressed `blobs`
//! table (keyed by SHA-256), and each attachment is an `attachments` row pointing at its
//! blob.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use gochat_entities::{attachments, blobs};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::StoreError;

/// A file attached to a message. Its bytes go to the content-addressed `blobs` table.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
    pub inline: bool,
    pub content_id: Option<String>,
}

/// Attachments a statement: 9 columns each.
const ATTACHMENT_CHUNK: usize = 1000;

/// Messages' attachments: the blobs not stored yet, then the attachment rows, in at most
/// three statements per thousand. The stored blobs are asked for first because the same
/// files come again and again (signature logos, a document quoted back in every reply): an
/// insert that meets an existing blob would still ship its bytes to the server.
pub(super) async fn store_attachments(
    db: &impl ConnectionTrait,
    messages: &[(Uuid, Vec<NewAttachment>)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let all: Vec<(Uuid, &NewAttachment)> = messages
        .iter()
        .flat_map(|(id, list)| list.iter().map(move |a| (*id, a)))
        .collect();
    // Nine columns a row stays under SQLite's 32,766 bind variables.
    for chunk in all.chunks(1000) {
        store_attachment_rows(db, chunk, now).await?;
    }
    Ok(())
}

async fn store_attachment_rows(
    db: &impl ConnectionTrait,
    list: &[(Uuid, &NewAttachment)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let shas: Vec<String> = list
        .iter()
        .map(|(_, a)| hex::encode(Sha256::digest(&a.data)))
        .collect();
    let stored: HashSet<String> = blobs::Entity::find()
        .select_only()
        .column(blobs::Column::Sha256)
        .filter(crate::store::bulk::any_of(
            db.get_database_backend(),
            blobs::Column::Sha256,
            shas.iter().map(String::as_str),
        ))
        .into_tuple::<String>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let mut new = HashSet::new();
    let missing: Vec<blobs::ActiveModel> = list
        .iter()
        .zip(&shas)
        .filter(|(_, sha)| !stored.contains(*sha) && new.insert(sha.as_str()))
        .map(|((_, a), sha)| blobs::ActiveModel {
            sha256: Set(sha.clone()),
            size: Set(a.data.len() as i64),
            data: Set(a.data.clone()),
            created_at: Set(now),
        })
        .collect();
    if !missing.is_empty() {
        // A concurrent job may store the same blob meanwhile: theirs is as good as ours.
        let mut insert = crate::store::bulk::insert_statement(db.get_database_backend(), missing)?;
        insert.on_conflict(
            OnConflict::column(blobs::Column::Sha256)
                .do_nothing()
                .to_owned(),
        );
        db.execute(&insert).await?;
    }
    let rows = list
        .iter()
        .zip(shas)
        .map(|((message_id, a), sha)| attachments::ActiveModel {
            id: Set(Uuid::now_v7()),
            message_id: Set(*message_id),
            name: Set(a.name.clone()),
            content_type: Set(a.content_type.clone()),
            size: Set(a.data.len() as i64),
            sha256: Set(sha),
            inline: Set(a.inline),
            content_id: Set(a.content_id.clone()),
            created_at: Set(now),
        });
    crate::store::insert_in_chunks(db, rows.collect(), ATTACHMENT_CHUNK).await
}

#[cfg(test)]
mod tests {
    /// Blob keys (like dedupe keys, job ids and reply tokens) are lower-case hex, two digits
    /// a byte, as the keys already stored are (moved here with `src/hex.rs`).
    #[test]
    fn every_byte_is_two_lower_case_digits() {
        assert_eq!(hex::encode([0u8; 0]), "");
        assert_eq!(hex::encode([0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex::encode(&all), want);
    }
}
