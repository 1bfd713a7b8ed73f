//! A job's unit of work: a transaction begun on first use and committed at the end.
//!
//! Most jobs need exactly one transaction. Outbound delivery needs a checkpoint (commit
//! "sending" before talking to the SMTP server), so the transaction can be committed midway
//! and a fresh one begun on next use; the job's idempotency record always goes into the last.
//!
//! Outbox rows (events, follow-up jobs) are nobody's to read before commit, so they are kept
//! here and written together just before the commit: one statement for a whole batch of
//! jobs instead of one per event.
//!
//! With [`Tx::hand_over`], the committed rows are also kept for the relay to publish at
//! once, without claiming them back from the table: the claim is the outbox's costliest
//! statement (it walks the unpublished index past the rows just published), and doing it
//! after every commit cost PostgreSQL more than the jobs' own inserts. The rows are
//! committed leased, so another relay's sweep leaves them alone while this one publishes;
//! if this process dies first, the lease ends and any relay's sweep publishes them.
//!
//! With [`Tx::gate`], a transaction begins only with a permit of the kind's semaphore and
//! gives it back when it ends, so a kind can keep more jobs going than it keeps inside the
//! database at once (see `db_concurrency` in the configuration).

use std::sync::Arc;

use sea_orm::{
    DatabaseConnection, DatabaseTransaction, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};

use gochat_entities::{outbox, thread_events};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::StoreError;

pub struct Tx {
    db: DatabaseConnection,
    current: Option<DatabaseTransaction>,
    /// Outbox rows written at the next checkpoint, dropped by a rollback.
    outbox: Vec<outbox::ActiveModel>,
    /// Thread audit events, likewise (see [`Tx::defer_events`]).
    events: Vec<thread_events::Model>,
    /// Set by [`Tx::hand_over`]: how long committed rows are reserved for this process.
    hand_over: Option<chrono::Duration>,
    /// Rows committed (leased) and not yet taken by [`Tx::take_committed`].
    committed: Vec<super::outbox::OutboxMessage>,
    /// The current transaction's lock-wait bound, if [`Tx::bound_lock_waits`] set one.
    lock_wait: Option<std::time::Duration>,
    /// Permits to open a transaction (see [`Tx::gate`]), and the one the open one holds.
    gate: Option<Arc<Semaphore>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Tx {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            current: None,
            outbox: Vec::new(),
            events: Vec::new(),
            hand_over: None,
            committed: Vec::new(),
            lock_wait: None,
            gate: None,
            permit: None,
        }
    }

    /// Each transaction of this unit of work begins only once it holds a permit of `gate`,
    /// and gives it back at commit or rollback. A unit of work never holds more than one
    /// permit, and waits for one holding no lock, so gated jobs cannot deadlock each other.
    pub fn gate(&mut self, gate: Arc<Semaphore>) {
        self.gate = Some(gate);
    }

    /// From now on, outbox rows are committed reserved for `lease` and kept for
    /// [`Tx::take_committed`], so this process publishes them itself right after commit.
    pub fn hand_over(&mut self, lease: chrono::Duration) {
        self.hand_over = Some(lease);
    }

    /// Whether committed rows are handed over (see [`Tx::hand_over`]).
    pub fn hands_over(&self) -> bool {
        self.hand_over.is_some()
    }

    /// The outbox rows committed so far under [`Tx::hand_over`], to publish now.
    pub fn take_committed(&mut self) -> Vec<super::outbox::OutboxMessage> {
        std::mem::take(&mut self.committed)
    }

    /// Adds an outbox row to this unit of work; it is written just before the commit.
    pub fn defer_outbox(&mut self, row: outbox::ActiveModel) {
        self.outbox.push(row);
    }

    /// Adds thread audit events to this unit of work; they are written just before the
    /// commit, a batch's in one statement instead of one each. Nothing a job does reads
    /// the audit back (only the feed views do), so writing it late changes no result.
    pub fn defer_events(&mut self, events: &mut Vec<thread_events::Model>) {
        self.events.append(events);
    }

    /// The open transaction, begun now if there is none. On SQLite it is begun IMMEDIATE:
    /// job transactions write, and a deferred one that read first could not upgrade to a
    /// writer once another job committed (SQLITE_BUSY at once, without waiting the busy
    /// timeout). PostgreSQL ignores the mode.
    pub async fn get(&mut self) -> Result<&DatabaseTransaction, StoreError> {
        if self.current.is_none() {
            if let (Some(gate), None) = (&self.gate, &self.permit) {
                let permit =
                    gate.clone().acquire_owned().await.map_err(|_| {
                        StoreError::Invalid("the transaction gate was closed".into())
                    })?;
                self.permit = Some(permit);
            }
            let options = TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            };
            match self.db.begin_with_options(options).await {
                Ok(t) => {
                    if let Some(limit) = self.lock_wait {
                        use sea_orm::ConnectionTrait;
                        t.execute_unprepared(&lock_timeout(limit)).await?;
                    }
                    self.current = Some(t)
                }
                Err(e) => {
                    // No transaction holds the permit: a job retrying against a database
                    // that is down must not keep the others of its kind waiting on it.
                    self.permit = None;
                    return Err(e.into());
                }
            }
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
        self.lock_wait = Some(limit);
        // Not begun yet: `get` sets it when it begins, so a batch that first parses its
        // mails holds no connection (and no transaction) meanwhile.
        if let Some(t) = &self.current {
            t.execute_unprepared(&lock_timeout(limit)).await?;
        }
        Ok(())
    }

    /// The current transaction's lock-wait bound (PostgreSQL), if one was set.
    pub fn lock_wait(&self) -> Option<std::time::Duration> {
        self.lock_wait
    }

    /// Commits what was done so far (with the deferred outbox rows); the next `get` begins a
    /// new transaction.
    pub async fn checkpoint(&mut self) -> Result<(), StoreError> {
        let mut handed = Vec::new();
        if !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            super::threads::insert_events(self.get().await?, events).await?;
        }
        if !self.outbox.is_empty() {
            let mut rows = std::mem::take(&mut self.outbox);
            if let Some(lease) = self.hand_over {
                for row in &mut rows {
                    if let sea_orm::ActiveValue::Set(at) = row.available_at {
                        row.available_at = sea_orm::ActiveValue::Set(at + lease);
                    }
                    handed.extend(super::outbox::message_of(row));
                }
            }
            super::outbox::insert_all(self.get().await?, rows).await?;
        }
        self.lock_wait = None;
        if let Some(t) = self.current.take() {
            let committed = t.commit().await;
            self.permit = None;
            committed?;
        }
        self.committed.append(&mut handed);
        Ok(())
    }

    /// Drops uncommitted work, deferred outbox rows included.
    pub async fn rollback(&mut self) -> Result<(), StoreError> {
        self.outbox.clear();
        self.events.clear();
        self.lock_wait = None;
        if let Some(t) = self.current.take() {
            let rolled_back = t.rollback().await;
            self.permit = None;
            rolled_back?;
        }
        Ok(())
    }
}

/// `SET LOCAL lock_timeout` to `limit` (PostgreSQL).
fn lock_timeout(limit: std::time::Duration) -> String {
    format!("SET LOCAL lock_timeout = '{}ms'", limit.as_millis().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transaction_that_cannot_begin_gives_its_permit_back() {
        let gate = Arc::new(Semaphore::new(1));
        // No database behind it: every begin fails.
        let mut tx = Tx::new(DatabaseConnection::default());
        tx.gate(gate.clone());
        assert!(tx.get().await.is_err());
        assert_eq!(
            gate.available_permits(),
            1,
            "a failed begin kept the permit"
        );
    }
}
