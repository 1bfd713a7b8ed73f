//! Persistence: the one place that knows SQL. Other modules call domain operations
//! (upsert a customer, list the inbox, claim due timers, ...) and never build queries.

pub mod api_keys;
pub mod bulk;
pub mod cards;
mod connect;
pub mod customers;
mod error;
pub mod files;
pub mod inbound;
pub mod inbox;
pub mod outbound;
pub mod outbox;
pub mod processed;
pub mod read_ahead;
pub mod search;
pub mod threads;
pub mod timers;
mod tx;
pub mod views;

use sea_orm::{DatabaseConnection, DbBackend};

pub use customers::{ContactInput, CustomerUpsert, UpsertOutcome};
pub use error::StoreError;
pub use inbox::InboxFilter;
pub use tx::Tx;

/// A pooled connection to the configured database (SQLite or PostgreSQL).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// The underlying SeaORM connection, for transactions spanning several operations.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// True when the database answers a trivial query (readiness).
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// Connections of the pool in use right now (the `gochat_db_pool_connections` gauge).
    pub fn pool_in_use(&self) -> (u32, u32) {
        match self.backend() {
            DbBackend::Sqlite => {
                let p = self.db.get_sqlite_connection_pool();
                (p.size().saturating_sub(p.num_idle() as u32), p.size())
            }
            _ => {
                let p = self.db.get_postgres_connection_pool();
                (p.size().saturating_sub(p.num_idle() as u32), p.size())
            }
        }
    }

    /// Closes every pooled connection (graceful shutdown).
    pub async fn close(&self) {
        let _ = self.db.close_by_ref().await;
    }
}

/// Inserts `rows`, at most `per_statement` a statement (SQLite allows 32,766 bind
/// parameters in one).
pub(crate) async fn insert_in_chunks<A>(
    db: &impl sea_orm::ConnectionTrait,
    rows: Vec<A>,
    per_statement: usize,
) -> Result<(), StoreError>
where
    A: sea_orm::ActiveModelTrait + Send,
{
    insert_chunks(db, rows, per_statement, None).await
}

/// Inserts link rows (`key` is the table's two-column key) as [`insert_in_chunks`] does; a
/// link that exists already stays as it is.
pub(crate) async fn insert_links_in_chunks<A>(
    db: &impl sea_orm::ConnectionTrait,
    rows: Vec<A>,
    per_statement: usize,
    key: [<A::Entity as sea_orm::EntityTrait>::Column; 2],
) -> Result<(), StoreError>
where
    A: sea_orm::ActiveModelTrait + Send,
{
    let keep = sea_orm::sea_query::OnConflict::columns(key)
        .do_nothing()
        .to_owned();
    insert_chunks(db, rows, per_statement, Some(keep)).await
}

async fn insert_chunks<A>(
    db: &impl sea_orm::ConnectionTrait,
    rows: Vec<A>,
    per_statement: usize,
    on_conflict: Option<sea_orm::sea_query::OnConflict>,
) -> Result<(), StoreError>
where
    A: sea_orm::ActiveModelTrait + Send,
{
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(per_statement.max(1)).collect();
        let mut insert = bulk::insert_statement(db.get_database_backend(), chunk)?;
        if let Some(c) = &on_conflict {
            insert.on_conflict(c.clone());
        }
        db.execute(&insert).await?;
    }
    Ok(())
}

/// The first three bind placeholders in the backend's syntax, for the few statements
/// written as SQL (claims with `RETURNING` and `SKIP LOCKED`).
pub(crate) fn placeholders(
    backend: sea_orm::DbBackend,
) -> (&'static str, &'static str, &'static str) {
    match backend {
        sea_orm::DbBackend::Postgres => ("$1", "$2", "$3"),
        _ => ("?", "?", "?"),
    }
}

/// The strings of a JSON array column (non-strings skipped; not an array: none).
pub fn json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
