//! Two indexes every stored mail paid for, narrowed to the rows they serve. Inbound mail
//! is the busiest insert path, and each index is one more entry written per mail:
//! - `messages (job_message_id)` serves one lookup, an outbound job finding the message an
//!   earlier attempt composed (`store::outbound::for_job`). It now holds outbound rows
//!   only, so an inbound message no longer adds an entry.
//! - `raw_mails (status, received_at)` served no query: every raw mail is `parsed` or
//!   `duplicate` within its job. What ops look for is the mail that did not get there,
//!   `failed` (to reprocess) or still `pending` (a job that never finished), by arrival:
//!   that is the index now, and it stays as small as those rows.
//!
//! Plain SQL: both databases take partial indexes as written. A query meant to use one
//! states the index's condition as a literal: PostgreSQL's generic plan for a prepared
//! statement cannot match a bound parameter to it.

use sea_orm_migration::prelude::*;

crate::sql_migration!(
    up: [
        "CREATE INDEX IF NOT EXISTS ix_messages_outbound_job ON messages (job_message_id) \
         WHERE direction = 'outbound'",
        "DROP INDEX IF EXISTS ix_messages_job",
        "CREATE INDEX IF NOT EXISTS ix_raw_mails_unsettled ON raw_mails (received_at) \
         WHERE status IN ('pending', 'failed')",
        "DROP INDEX IF EXISTS ix_raw_mails_status_received",
    ],
    down: [
        "CREATE INDEX IF NOT EXISTS ix_messages_job ON messages (job_message_id)",
        "DROP INDEX IF EXISTS ix_messages_outbound_job",
        "CREATE INDEX IF NOT EXISTS ix_raw_mails_status_received ON raw_mails (status, received_at)",
        "DROP INDEX IF EXISTS ix_raw_mails_unsettled",
    ],
);
