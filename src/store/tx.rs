//! A job's unit of work: a transaction begun on first use and committed at the end.
//!
//! Most jobs need exactly one transaction. Outbound delivery needs a checkpoint (commit
//! "sending" before talking to the SMTP server), so the transaction can be committed midway
//! and a fresh one begun on next use; the job's idempotency record always goes into the last.

use sea_orm::{
    DatabaseConnection, DatabaseTransaction, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};

use super::StoreError;

pub struct Tx {
    db: DatabaseConnection,
    current: Option<DatabaseTransaction>,
}

impl Tx {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db, current: None }
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

    /// Commits what was done so far; the next `get` begins a new transaction.
    pub async fn checkpoint(&mut self) -> Result<(), StoreError> {
        if let Some(t) = self.current.take() {
            t.commit().await?;
        }
        Ok(())
    }

    /// Drops uncommitted work.
    pub async fn rollback(&mut self) -> Result<(), StoreError> {
        if let Some(t) = self.current.take() {
            t.rollback().await?;
        }
        Ok(())
    }
}
