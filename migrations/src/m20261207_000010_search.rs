//! The keyword index of the inbox's `q` filter (issue 33), and its backfill.
//!
//! - `search_docs`: one document per message (its subject and text), keyed by the message's
//!   id, plus one per thread whose subject no message of it carries, keyed by the thread's
//!   id; each with its `thread_id`, so a query asks "does this thread have a document with
//!   the word" (`store::search`).
//! - `search_parties`: one document per contact (display name, address) and per customer
//!   (name, external id), keyed by its id: a word is matched against these small tables
//!   first, then the threads referring to what matched.
//!
//! Text is folded by the application (`search_text::fold`), so both databases index the same
//! plain words. PostgreSQL stores only the `tsvector` (GIN-indexed; the text is in
//! `messages` already). SQLite keeps FTS5 tables, their `id` and `thread_id` unindexed
//! columns that the match is filtered by. Existing rows are indexed here, a page at a time.

use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, Value};
use sea_orm_migration::prelude::*;
use uuid::Uuid;

use crate::exec_all;
use crate::search_text::{fold, message_text, subject_needs_own_doc};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS search_docs (\
        id uuid PRIMARY KEY, \
        thread_id uuid NOT NULL REFERENCES threads (id) ON DELETE CASCADE, \
        tsv tsvector NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ix_search_docs_tsv ON search_docs USING gin (tsv)",
    "CREATE INDEX IF NOT EXISTS ix_search_docs_thread ON search_docs (thread_id)",
    "CREATE TABLE IF NOT EXISTS search_parties (id uuid PRIMARY KEY, tsv tsvector NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ix_search_parties_tsv ON search_parties USING gin (tsv)",
    THREADS_BY_CONTACT,
];

const SQLITE_UP: &[&str] = &[
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_docs USING fts5(\
        body, id UNINDEXED, thread_id UNINDEXED, \
        tokenize = 'unicode61 remove_diacritics 2')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_parties USING fts5(\
        body, id UNINDEXED, tokenize = 'unicode61 remove_diacritics 2')",
    THREADS_BY_CONTACT,
];

/// The threads whose latest contact is one a word matched (also what deleting a contact,
/// `ON DELETE SET NULL`, looked for without an index).
const THREADS_BY_CONTACT: &str =
    "CREATE INDEX IF NOT EXISTS ix_threads_contact ON threads (contact_id)";

/// Rows read and written per statement by the backfill (three parameters a row).
const PAGE: u64 = 500;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let backend = m.get_database_backend();
        match backend {
            DatabaseBackend::Postgres => exec_all(m, POSTGRES_UP).await?,
            _ => exec_all(m, SQLITE_UP).await?,
        }
        backfill_messages(m).await?;
        backfill_thread_subjects(m).await?;
        backfill_parties(m, "SELECT id, display_name, address FROM contacts").await?;
        backfill_parties(m, "SELECT id, name, external_id FROM customers").await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        exec_all(
            m,
            &[
                "DROP TABLE IF EXISTS search_parties",
                "DROP TABLE IF EXISTS search_docs",
                "DROP INDEX IF EXISTS ix_threads_contact",
            ],
        )
        .await
    }
}

/// A document row: its id, its thread (none for a party) and its folded text.
type Doc = (Uuid, Option<Uuid>, String);

/// Every stored message's document, by message id a page at a time.
async fn backfill_messages(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = m.get_connection();
    let backend = m.get_database_backend();
    let mut after: Option<Uuid> = None;
    loop {
        let (sql, values) = match after {
            None => (
                format!(
                    "SELECT id, thread_id, subject, text_body FROM messages ORDER BY id LIMIT {PAGE}"
                ),
                vec![],
            ),
            Some(id) => (
                format!(
                    "SELECT id, thread_id, subject, text_body FROM messages WHERE id > {} ORDER BY id LIMIT {PAGE}",
                    param(backend, 1)
                ),
                vec![Value::from(id)],
            ),
        };
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = Some(last.try_get("", "id")?);
        let mut docs = Vec::with_capacity(rows.len());
        for r in &rows {
            let subject: String = r.try_get("", "subject")?;
            let text: Option<String> = r.try_get("", "text_body")?;
            docs.push((
                r.try_get("", "id")?,
                Some(r.try_get("", "thread_id")?),
                message_text(&subject, text.as_deref()),
            ));
        }
        insert_docs(m, "search_docs", docs).await?;
    }
}

/// A document for each thread whose subject its first message does not carry.
async fn backfill_thread_subjects(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = m.get_connection();
    let backend = m.get_database_backend();
    let mut after: Option<Uuid> = None;
    let select = "SELECT t.id, t.subject, (SELECT m.subject FROM messages m \
         WHERE m.thread_id = t.id ORDER BY m.created_at, m.id LIMIT 1) AS first_subject \
         FROM threads t";
    loop {
        let (sql, values) = match after {
            None => (format!("{select} ORDER BY t.id LIMIT {PAGE}"), vec![]),
            Some(id) => (
                format!(
                    "{select} WHERE t.id > {} ORDER BY t.id LIMIT {PAGE}",
                    param(backend, 1)
                ),
                vec![Value::from(id)],
            ),
        };
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = Some(last.try_get("", "id")?);
        let mut docs = Vec::new();
        for r in &rows {
            let subject: String = r.try_get("", "subject")?;
            let first: Option<String> = r.try_get("", "first_subject")?;
            if subject_needs_own_doc(&subject, first.as_deref()) {
                let id: Uuid = r.try_get("", "id")?;
                docs.push((id, Some(id), fold(&subject)));
            }
        }
        insert_docs(m, "search_docs", docs).await?;
    }
}

/// The documents of contacts or customers: `select` reads their id, name and address or
/// external id.
async fn backfill_parties(m: &SchemaManager<'_>, select: &str) -> Result<(), DbErr> {
    let db = m.get_connection();
    let backend = m.get_database_backend();
    let mut after: Option<Uuid> = None;
    loop {
        let (sql, values) = match after {
            None => (format!("{select} ORDER BY id LIMIT {PAGE}"), vec![]),
            Some(id) => (
                format!(
                    "{select} WHERE id > {} ORDER BY id LIMIT {PAGE}",
                    param(backend, 1)
                ),
                vec![Value::from(id)],
            ),
        };
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = Some(last.try_get_by_index(0)?);
        let mut docs = Vec::with_capacity(rows.len());
        for r in &rows {
            let name: Option<String> = r.try_get_by_index(1)?;
            let key: String = r.try_get_by_index(2)?;
            docs.push((
                r.try_get_by_index(0)?,
                None,
                crate::search_text::party_text(name.as_deref(), &key),
            ));
        }
        insert_docs(m, "search_parties", docs).await?;
    }
}

/// Inserts documents into `table` in one statement.
async fn insert_docs(m: &SchemaManager<'_>, table: &str, docs: Vec<Doc>) -> Result<(), DbErr> {
    if docs.is_empty() {
        return Ok(());
    }
    let backend = m.get_database_backend();
    let with_thread = docs[0].1.is_some();
    let mut rows = Vec::with_capacity(docs.len());
    let mut values = Vec::with_capacity(docs.len() * 3);
    for (id, thread, text) in docs {
        let mut row = vec![next(backend, &mut values, Value::from(id))];
        if let Some(thread) = thread {
            row.push(next(backend, &mut values, Value::from(thread)));
        }
        let text = next(backend, &mut values, Value::from(text));
        row.push(match backend {
            DatabaseBackend::Postgres => format!("to_tsvector('simple', {text})"),
            _ => text,
        });
        rows.push(format!("({})", row.join(", ")));
    }
    let body = match backend {
        DatabaseBackend::Postgres => "tsv",
        _ => "body",
    };
    let columns = if with_thread {
        format!("id, thread_id, {body}")
    } else {
        format!("id, {body}")
    };
    let sql = format!("INSERT INTO {table} ({columns}) VALUES {}", rows.join(", "));
    m.get_connection()
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(())
}

/// Pushes `v` and returns its placeholder.
fn next(backend: DatabaseBackend, values: &mut Vec<Value>, v: Value) -> String {
    values.push(v);
    param(backend, values.len())
}

/// The `n`th placeholder (1-based) in the backend's syntax.
fn param(backend: DatabaseBackend, n: usize) -> String {
    match backend {
        DatabaseBackend::Postgres => format!("${n}"),
        _ => "?".into(),
    }
}
