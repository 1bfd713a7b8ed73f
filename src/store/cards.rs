//! Threads read and written a batch at a time, for the set-based steps: a batch's threads
//! read and locked in one statement, and the cards its jobs changed written back in one,
//! where the one-job path spends a statement on each.
//!
//! A card changed in memory keeps the version each change gave it (one more per change, as
//! [`super::threads::bump`] counts), and is written only if the database still holds the
//! version it was read at: the same compare-and-set as [`super::threads`]'s one-row save,
//! for many rows.

use std::collections::HashMap;

use gochat_entities::threads;
use sea_orm::{
    ConnectionTrait, DbBackend, EntityTrait, IdenStatic, Iterable, ModelTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use uuid::Uuid;

use super::StoreError;

/// Threads a statement: 19 parameters a row, under SQLite's 32,766.
const ROWS_PER_STATEMENT: usize = 500;

/// A thread's card as a set-based step left it, to write with [`save_many`].
#[derive(Debug, Clone, PartialEq)]
pub struct CardWrite {
    /// The version the database holds; the write is refused if it holds another.
    pub base: i64,
    /// The card now, its version one more than `base` per change made to it.
    pub card: threads::Model,
}

/// The threads with these ids, locked until the transaction ends as
/// [`super::threads::get_for_update`] locks one. In id order, as every batch takes them,
/// so two batches locking overlapping sets cannot deadlock on them. Unknown ids are
/// missing from the map.
pub async fn get_many_for_update(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, threads::Model>, StoreError> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut q = threads::Entity::find()
            .filter(super::bulk::any_of(
                db.get_database_backend(),
                threads::Column::Id,
                chunk.iter().copied(),
            ))
            .order_by_asc(threads::Column::Id);
        if db.get_database_backend() == DbBackend::Postgres {
            q = q.lock_exclusive();
        }
        out.extend(q.all(db).await?.into_iter().map(|t| (t.id, t)));
    }
    Ok(out)
}

/// Writes the cards, a statement per 500, each only where the database still holds its
/// `base` version: [`StoreError::Conflict`] (transient) if any changed meanwhile, and the
/// caller rolls back. One write per thread: a thread given twice is refused as invalid.
pub async fn save_many(db: &impl ConnectionTrait, writes: &[CardWrite]) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::with_capacity(writes.len());
    if let Some(w) = writes.iter().find(|w| !seen.insert(w.card.id)) {
        return Err(StoreError::Invalid(format!(
            "thread {} written twice in one statement",
            w.card.id
        )));
    }
    let backend = db.get_database_backend();
    for chunk in writes.chunks(ROWS_PER_STATEMENT) {
        let res = db.execute_raw(update_statement(backend, chunk)?).await?;
        if res.rows_affected() != chunk.len() as u64 {
            let first = &chunk[0];
            return Err(StoreError::Conflict {
                thread_id: first.card.id,
                version: first.base,
            });
        }
    }
    Ok(())
}

/// The statement [`save_many`] runs for one chunk of writes: on PostgreSQL the rows as one
/// `jsonb` parameter where they can be, else a `VALUES` list. Public so a test can read
/// the plan PostgreSQL makes for it.
pub fn update_statement(backend: DbBackend, chunk: &[CardWrite]) -> Result<Statement, StoreError> {
    let json = match backend {
        DbBackend::Postgres => json_update(chunk)?,
        _ => None,
    };
    Ok(json.unwrap_or_else(|| values_update(backend, chunk)))
}

/// Every column a card write sets, the id first (it picks the row): all but `created_at`.
fn written_columns() -> impl Iterator<Item = threads::Column> {
    threads::Column::iter().filter(|c| !matches!(c, threads::Column::CreatedAt))
}

/// The update with its rows as a `VALUES` list (SQLite, and PostgreSQL's fallback).
fn values_update(backend: DbBackend, chunk: &[CardWrite]) -> Statement {
    let mut values = Vec::with_capacity(chunk.len() * (written_columns().count() + 1));
    for w in chunk {
        values.push(sea_orm::Value::from(w.base));
        values.extend(written_columns().map(|c| w.card.get(c)));
    }
    Statement::from_sql_and_values(backend, update_sql(backend, chunk.len()), values)
}

/// The PostgreSQL form of the update: the rows as one `jsonb` parameter (see
/// [`super::bulk`]), so one statement serves every batch size. None: a value the JSON form
/// does not carry exactly, and the `VALUES` form is used.
fn json_update(chunk: &[CardWrite]) -> Result<Option<Statement>, StoreError> {
    let mut rows = super::bulk::JsonRows::with_capacity(chunk.len());
    for w in chunk {
        rows.start_row();
        if !rows.field(BASE, &sea_orm::Value::from(w.base)) {
            return Ok(None);
        }
        for c in written_columns() {
            if !rows.field(c.as_str(), &w.card.get(c)) {
                return Ok(None);
            }
        }
    }
    let ids = super::bulk::array(chunk.iter().map(|w| w.card.id));
    Ok(Some(Statement::from_sql_and_values(
        DbBackend::Postgres,
        json_update_sql(),
        [sea_orm::Value::from(rows.finish()?), ids],
    )))
}

/// The field of a JSON row holding the version the write expects.
const BASE: &str = "gochat_base";

/// `UPDATE threads ... FROM jsonb_array_elements($1)`, each element read as a `threads` row.
///
/// The planner cannot see how many elements `$1` holds and assumes 100, so the statement
/// spells out how to find the rows, whatever the table's size:
/// - the ids come again as an array (`$2`), so the threads are read through their primary
///   key (against the guess of 100, a generic plan would scan the whole table);
/// - each element is matched by the id read straight from its JSON, so the join pairs
///   elements and threads by id and version before any element is expanded into a row
///   (matched through `v.id`, the join would pair them by version alone and expand every
///   element once per thread of that version).
fn json_update_sql() -> String {
    format!(
        "UPDATE \"threads\" SET {} FROM jsonb_array_elements(CAST($1 AS jsonb)) AS e \
         CROSS JOIN LATERAL jsonb_populate_record(NULL::\"threads\", e) AS v \
         WHERE \"threads\".\"id\" = ANY(CAST($2 AS uuid[])) \
         AND \"threads\".\"id\" = CAST(e ->> 'id' AS uuid) \
         AND \"threads\".\"version\" = CAST(e ->> '{BASE}' AS bigint)",
        assignments()
    )
}

/// `"column" = v."column"` for each written column but the id (which picks the row).
fn assignments() -> String {
    written_columns()
        .map(|c| c.as_str())
        .filter(|c| *c != "id")
        .map(|c| format!("\"{c}\" = v.\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `UPDATE threads ... FROM (VALUES ...)` for `rows` rows of (base, columns...): one
/// statement both databases run (SQLite since 3.33), each row matched by id and base
/// version.
fn update_sql(backend: DbBackend, rows: usize) -> String {
    let columns: Vec<&str> = written_columns().map(|c| c.as_str()).collect();
    let width = columns.len() + 1;
    let mut n = 0;
    let tuples: Vec<String> = (0..rows)
        .map(|_| {
            let marks: Vec<String> = (0..width)
                .map(|_| {
                    n += 1;
                    match backend {
                        DbBackend::Postgres => format!("${n}"),
                        _ => "?".to_owned(),
                    }
                })
                .collect();
            format!("({})", marks.join(", "))
        })
        .collect();
    let names: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "WITH v (\"{BASE}\", {}) AS (VALUES {}) UPDATE \"threads\" SET {} FROM v \
         WHERE \"threads\".\"id\" = v.\"id\" AND \"threads\".\"version\" = v.\"{BASE}\"",
        names.join(", "),
        tuples.join(", "),
        assignments()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_names_every_column_but_created_at_and_checks_the_base_version() {
        let sql = update_sql(DbBackend::Postgres, 2);
        assert!(sql.contains("VALUES ($1, $2,"), "{sql}");
        let width = written_columns().count() + 1;
        assert!(sql.contains(&format!("${})", 2 * width)), "{sql}");
        assert!(!sql.contains(&format!("${}", 2 * width + 1)), "{sql}");
        assert!(!sql.contains("created_at"), "{sql}");
        assert!(sql.contains("\"status\" = v.\"status\""), "{sql}");
        assert!(
            !sql.contains("\"id\" = v.\"id\","),
            "the id is matched, not set: {sql}"
        );
        assert!(
            sql.ends_with("\"threads\".\"version\" = v.\"gochat_base\""),
            "{sql}"
        );
        let json = json_update_sql();
        assert!(
            json.contains("jsonb_populate_record(NULL::\"threads\", e)"),
            "{json}"
        );
        assert!(json.contains("\"status\" = v.\"status\""), "{json}");
        assert!(
            !json.contains("created_at") && !json.contains("$3"),
            "{json}"
        );
        assert!(
            json.ends_with("\"version\" = CAST(e ->> 'gochat_base' AS bigint)"),
            "{json}"
        );
        let lite = update_sql(DbBackend::Sqlite, 3);
        assert_eq!(lite.matches('?').count(), 3 * width);
        assert!(!lite.contains('$'));
    }
}
