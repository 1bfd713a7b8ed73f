//! Jobs moved to the dead letters, by AMQP `message_id`, with the reason: what a reader of
//! the database (the API's `?wait=`) needs to tell "failed for good" from "not done yet".
//! The dead-letter queue stays the record a job can be replayed from.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum DeadJobs {
    Table,
    MessageId,
    Kind,
    Reason,
    DeadAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(DeadJobs::Table)
                .if_not_exists()
                .col(string(DeadJobs::MessageId).primary_key())
                .col(string_len(DeadJobs::Kind, 32))
                .col(text(DeadJobs::Reason))
                .col(timestamp_with_time_zone(DeadJobs::DeadAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(DeadJobs::Table).if_exists().to_owned())
            .await
    }
}
