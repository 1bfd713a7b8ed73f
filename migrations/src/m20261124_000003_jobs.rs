//! The job machinery: durable timers, processed job ids (idempotency) and the outbox.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000002_threads::Threads;
use crate::{fk, index};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Timers {
    Table,
    Id,
    ThreadId,
    Lifecycle,
    Step,
    DueAt,
    ExpectedStatus,
    ExpectedVersion,
    State,
    ClaimedBy,
    ClaimedAt,
    FiredAt,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ProcessedJobs {
    Table,
    MessageId,
    Kind,
    ProcessedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Outbox {
    Table,
    Id,
    Kind,
    Exchange,
    RoutingKey,
    MessageId,
    Payload,
    Headers,
    CreatedAt,
    AvailableAt,
    Attempts,
    PublishedAt,
    LastError,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Timers::Table)
                .if_not_exists()
                .col(uuid(Timers::Id).primary_key())
                .col(uuid(Timers::ThreadId))
                .col(string(Timers::Lifecycle))
                .col(integer(Timers::Step))
                .col(timestamp_with_time_zone(Timers::DueAt))
                .col(string_len(Timers::ExpectedStatus, 16))
                .col(big_integer(Timers::ExpectedVersion))
                .col(string_len(Timers::State, 16))
                .col(string_null(Timers::ClaimedBy))
                .col(timestamp_with_time_zone_null(Timers::ClaimedAt))
                .col(timestamp_with_time_zone_null(Timers::FiredAt))
                .col(timestamp_with_time_zone(Timers::CreatedAt))
                .foreign_key(&mut fk(
                    "fk_timers_thread",
                    Timers::Table,
                    Timers::ThreadId,
                    Threads::Table,
                    Threads::Id,
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        // The scheduler reads `state = 'pending' AND due_at <= now ORDER BY due_at`: a range
        // scan over due timers only, whatever the number of future ones.
        m.create_index(index(
            "ix_timers_state_due",
            Timers::Table,
            &[Timers::State, Timers::DueAt],
        ))
        .await?;
        m.create_index(index(
            "ix_timers_thread_state",
            Timers::Table,
            &[Timers::ThreadId, Timers::State],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(ProcessedJobs::Table)
                .if_not_exists()
                .col(string(ProcessedJobs::MessageId).primary_key())
                .col(string_len(ProcessedJobs::Kind, 32))
                .col(timestamp_with_time_zone(ProcessedJobs::ProcessedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_processed_jobs_at",
            ProcessedJobs::Table,
            &[ProcessedJobs::ProcessedAt],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Outbox::Table)
                .if_not_exists()
                .col(uuid(Outbox::Id).primary_key())
                .col(string_len(Outbox::Kind, 16))
                .col(string(Outbox::Exchange))
                .col(string(Outbox::RoutingKey))
                .col(string_uniq(Outbox::MessageId))
                .col(text(Outbox::Payload))
                .col(json_null(Outbox::Headers))
                .col(timestamp_with_time_zone(Outbox::CreatedAt))
                .col(timestamp_with_time_zone(Outbox::AvailableAt))
                .col(integer(Outbox::Attempts).default(0))
                .col(timestamp_with_time_zone_null(Outbox::PublishedAt))
                .col(text_null(Outbox::LastError))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_outbox_pending",
            Outbox::Table,
            &[Outbox::PublishedAt, Outbox::AvailableAt],
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Outbox::Table.into_iden(),
            ProcessedJobs::Table.into_iden(),
            Timers::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
