//! The outbox relay's claim looks for the oldest unpublished rows. The old index
//! (`published_at`, `available_at`) made it sort every pending row by id on each round,
//! which costs time in proportion to the backlog just when there is one. A partial index on
//! `id` over unpublished rows keeps a claim at the size of its batch, and published rows
//! (kept for a while, then pruned by id) no longer weigh on it. Plain SQL: both databases
//! take this partial index as written.

use sea_orm_migration::prelude::*;

use crate::exec_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        exec_all(
            m,
            &[
                "CREATE INDEX IF NOT EXISTS ix_outbox_unpublished ON outbox (id) WHERE published_at IS NULL",
                "DROP INDEX IF EXISTS ix_outbox_pending",
            ],
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        exec_all(
            m,
            &[
                "CREATE INDEX IF NOT EXISTS ix_outbox_pending ON outbox (published_at, available_at)",
                "DROP INDEX IF EXISTS ix_outbox_unpublished",
            ],
        )
        .await
    }
}
