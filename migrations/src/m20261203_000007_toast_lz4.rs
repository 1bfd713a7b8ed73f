//! PostgreSQL compresses a value too large for its row (a raw mail, a long body, an
//! attachment) before it stores it, with `pglz` unless told otherwise. Stored mail is
//! written once and read rarely, and `lz4` compresses it about twice as fast as `pglz`
//! and a little smaller: on the test corpus (4.5 kB a mail) 38 µs a row against 85–100 µs,
//! the largest part of a raw mail's insert (see docs/BENCHMARKS.md, session 21). Only new
//! values use it; stored ones stay as they are and read the same.
//!
//! A server built without lz4 refuses `SET COMPRESSION lz4`: the migration then notes it
//! and keeps `pglz`, since the columns work either way. SQLite has no such setting.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::exec_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The columns holding mail-sized values, as `table.column`.
const COLUMNS: &[(&str, &str)] = &[
    ("raw_mails", "data"),
    ("messages", "text_body"),
    ("messages", "html_body"),
    ("blobs", "data"),
];

/// Sets `method` on every column in one `DO` block, or leaves them all as they were (with
/// a notice) when the server lacks the method. Nothing on SQLite.
async fn set_compression(m: &SchemaManager<'_>, method: &str) -> Result<(), DbErr> {
    if m.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    let alters: String = COLUMNS
        .iter()
        .map(|(t, c)| format!("ALTER TABLE {t} ALTER COLUMN {c} SET COMPRESSION {method};\n"))
        .collect();
    let block = format!(
        "DO $$ BEGIN\n{alters}EXCEPTION WHEN feature_not_supported THEN\n\
         RAISE NOTICE 'this PostgreSQL has no {method} compression: mail columns keep the default';\n\
         END $$"
    );
    exec_all(m, &[&block]).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        set_compression(m, "lz4").await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        set_compression(m, "pglz").await
    }
}
