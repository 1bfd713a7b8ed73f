//! The outbox relay's claim looks for the oldest unpublished rows. The old index
//! (`published_at`, `available_at`) made it sort every pending row by id on each round,
//! which costs time in proportion to the backlog just when there is one. A partial index on
//! `id` over unpublished rows keeps a claim at the size of its batch, and published rows
//! (kept for a while, then pruned by id) no longer weigh on it. Plain SQL: both databases
//! take this partial index as written.

use sea_orm_migration::prelude::*;

crate::sql_migration!(
    up: [
        "CREATE INDEX IF NOT EXISTS ix_outbox_unpublished ON outbox (id) WHERE published_at IS NULL",
        "DROP INDEX IF EXISTS ix_outbox_pending",
    ],
    down: [
        "CREATE INDEX IF NOT EXISTS ix_outbox_pending ON outbox (published_at, available_at)",
        "DROP INDEX IF EXISTS ix_outbox_unpublished",
    ],
);
