//! Inbound messages by the Message-ID they answer (`In-Reply-To`), for a mail that arrives
//! after its reply: greylisting, a retry or a backlog drained by several batches at once
//! deliver a reply first, and the mail it answers must then join the reply's thread instead
//! of opening one of its own (`store::inbound::threads_answering`). Partial: only inbound
//! rows that answer something, stated as a literal so PostgreSQL's generic plan uses it.

use sea_orm_migration::prelude::*;

crate::sql_migration!(
    up: [
        "CREATE INDEX IF NOT EXISTS ix_messages_inbound_in_reply_to ON messages (in_reply_to) \
         WHERE direction = 'inbound' AND in_reply_to IS NOT NULL",
    ],
    down: ["DROP INDEX IF EXISTS ix_messages_inbound_in_reply_to"],
);
