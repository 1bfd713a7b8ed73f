//! Every inbound mail's raw bytes, stored before parsing so a parse failure never loses mail
//! (`gochat mail reprocess` runs a stored mail again).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "raw_mails")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The inbound-mail job that brought it (unique: a redelivered job stores nothing new).
    #[sea_orm(unique)]
    pub job_message_id: Option<String>,
    pub envelope_from: Option<String>,
    pub recipients: Json,
    pub mailbox: Option<String>,
    pub size: i64,
    pub sha256: String,
    #[sea_orm(column_type = "Blob")]
    pub data: Vec<u8>,
    pub status: RawMailStatus,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    /// What it was recognised as: `normal`, `auto_reply`, `bounce`, `feedback_report`.
    pub classification: Option<String>,
    /// The `messages.id` it became (no foreign key: messages point here already).
    pub message_row_id: Option<Uuid>,
    pub received_at: DateTimeUtc,
    pub processed_at: Option<DateTimeUtc>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum RawMailStatus {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "parsed")]
    Parsed,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "duplicate")]
    Duplicate,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::messages::Entity")]
    Messages,
}

impl ActiveModelBehavior for ActiveModel {}
