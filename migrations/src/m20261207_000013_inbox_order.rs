//! The inbox's indexes end in `id`: the inbox sorts by (`updated_at`, `id`), newest first,
//! so that equal times still have one order and a page cursor resumes exactly. With indexes
//! on `updated_at` alone, PostgreSQL would not walk an assignee's or a status's own index in
//! that order; it walked the whole inbox by `updated_at` instead, filtering as it went: a
//! page filtered by status, assignee and tag read 360,000 threads of a million (456 ms at
//! p99 in `bench api`). Same number of indexes, each 16 bytes a row wider.

use sea_orm_migration::prelude::*;

crate::sql_migration!(
    up: [
        "CREATE INDEX IF NOT EXISTS ix_threads_updated_id ON threads (updated_at, id)",
        "CREATE INDEX IF NOT EXISTS ix_threads_status_updated_id ON threads (status, updated_at, id)",
        "CREATE INDEX IF NOT EXISTS ix_threads_assignee_updated_id ON threads (assignee, updated_at, id)",
        "DROP INDEX IF EXISTS ix_threads_updated",
        "DROP INDEX IF EXISTS ix_threads_status_updated",
        "DROP INDEX IF EXISTS ix_threads_assignee_updated",
    ],
    down: [
        "CREATE INDEX IF NOT EXISTS ix_threads_updated ON threads (updated_at)",
        "CREATE INDEX IF NOT EXISTS ix_threads_status_updated ON threads (status, updated_at)",
        "CREATE INDEX IF NOT EXISTS ix_threads_assignee_updated ON threads (assignee, updated_at)",
        "DROP INDEX IF EXISTS ix_threads_updated_id",
        "DROP INDEX IF EXISTS ix_threads_status_updated_id",
        "DROP INDEX IF EXISTS ix_threads_assignee_updated_id",
    ],
);
