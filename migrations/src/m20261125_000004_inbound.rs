//! Inbound mail: the index the loop check reads (recent mail from one sender).

use sea_orm_migration::prelude::*;

use crate::index;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Messages {
    Table,
    FromAddress,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(index(
            "ix_messages_from_created",
            Messages::Table,
            &[Messages::FromAddress, Messages::CreatedAt],
        ))
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_messages_from_created")
                .table(Messages::Table)
                .to_owned(),
        )
        .await
    }
}
