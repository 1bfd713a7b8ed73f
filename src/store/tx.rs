//! A job's unit of work: a transaction begun on first use and committed at the end.
//!
//! Most jobs need exactly one transaction. Outbound delivery needs a checkpoint (commit
//! "sending" before talking to the SMTP server), so the transaction can be committed midway
//! and a fresh one begun on next use; the job's idempotency record always goes into the last.
//!
//! Outbox rows (events, follow-up jobs) are nobody's to read before commit, so they are kept
//! here and written together just before the commit: one statement for a whole batch of
//! jobs instead of one per event.

use sea_orm::{
    DatabaseConnection, DatabaseTransaction, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};

use gochat_entities::outbox;

use super::StoreError;

pub struct Tx {
    db: DatabaseConnection,
    current: Option<DatabaseTransaction>,
    /// Outbox rows written at the next checkpoint, dropped by a rollback.
    outbox: Vec<outbox::ActiveModel>,
}

impl Tx {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            current: None,
            outbox: Vec::new(),
        }
    }

    /// Adds an outbox row to this unit of work; it is written just before the commit.
    pub fn defer_outbox(&mut self, row: outbox::ActiveModel) {
        self.outbox.push(row);
    }

    /// The open transaction, begun now if there is none. On SQLite it is begun IMMEDIATE:
    /// job transactions write, and a deferred one that read first could not upgrade to a
    /// writer once another job committed (SQLITE_BUSY at once, without waiting the busy
    /// timeout). PostgreSQL ignores the mode.
    pub async fn get(&mut self) -> Result<&DatabaseTransaction, StoreError> {
        if self.current.is_none() {
            let options = TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            };
            self.current = Some(self.db.begin_with_options(options).await?);
        }
        match &self.current {
            Some(t) => Ok(t),
            None => Err(StoreError::Invalid("transaction vanished".into())),
        }
    }

    /// From now until the end of the open transaction, a lock wait longer than `limit` fails
    /// (PostgreSQL `SET LOCAL lock_timeout`; SQLite has one writer and no row locks, so
    /// nothing to bound). Why: a batch holds the locks of its earlier jobs while a later one
    /// waits, so two replicas' batches that touch the same threads in different orders
    /// deadlock, which PostgreSQL only detects after `deadlock_timeout` (1 s) — and every
    /// other worker waiting on those threads waits too. A bounded wait fails the waiting
    /// job instead; the batch commits what came before it and runs it alone.
    pub async fn bound_lock_waits(&mut self, limit: std::time::Duration) -> Result<(), StoreError> {
        use sea_orm::ConnectionTrait;
        if self.db.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(());
        }
        let sql = format!("SET LOCAL lock_timeout = '{}ms'", limit.as_millis().max(1));
        self.get().await?.execute_unprepared(&sql).await?;
        Ok(())
    }

    /// Commits what was done so far (with the deferred outbox rows); the next `get` begins a
    /// new transaction.
    pub async fn checkpoint(&mut self) -> Result<(), StoreError> {
        if !self.outbox.is_empty() {
            let rows = std::mem::take(&mut self.outbox);
            super::outbox::insert_all(self.get().await?, rows).await?;
        }
        if let Some(t) = self.current.take() {
            t.commit().await?;
        }
        Ok(())
    }

    /// Drops uncommitted work, deferred outbox rows included.
    pub async fn rollback(&mut self) -> Result<(), StoreError> {
        self.outbox.clear();
        if let Some(t) = self.current.take() {
            t.rollback().await?;
        }
        Ok(())
    }
}
