//! An attachment's metadata; its bytes are a content-addressed blob (`blobs`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "attachments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub message_id: Uuid,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    /// Hex SHA-256 of the bytes: the key into `blobs`.
    pub sha256: String,
    /// Inline parts (images referenced by the HTML) are kept apart from real attachments.
    pub inline: bool,
    pub content_id: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::messages::Entity",
        from = "Column::MessageId",
        to = "super::messages::Column::Id",
        on_delete = "Cascade"
    )]
    Message,
    #[sea_orm(
        belongs_to = "super::blobs::Entity",
        from = "Column::Sha256",
        to = "super::blobs::Column::Sha256"
    )]
    Blob,
}

impl Related<super::messages::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Message.def()
    }
}

impl Related<super::blobs::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Blob.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
