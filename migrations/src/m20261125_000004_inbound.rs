//! Inbound mail: what each raw mail was classified as (normal, auto_reply, bounce,
//! feedback_report: a mail kept only as raw mail still says what it was), and the index the
//! loop check reads (recent mail from one sender).

use sea_orm_migration::prelude::*;

use crate::index;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum RawMails {
    Table,
    Classification,
}

#[derive(DeriveIden, Clone, Copy)]
enum Messages {
    Table,
    FromAddress,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(RawMails::Table)
                .add_column(
                    ColumnDef::new(RawMails::Classification)
                        .string_len(32)
                        .null(),
                )
                .to_owned(),
        )
        .await?;
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
        .await?;
        m.alter_table(
            Table::alter()
                .table(RawMails::Table)
                .drop_column(RawMails::Classification)
                .to_owned(),
        )
        .await
    }
}
