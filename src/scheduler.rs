//! The durable timer scheduler: on every tick, claims the timers that fell due and, in the
//! same transaction, writes one `delayed-reminder` job per timer to the outbox (message id =
//! timer id). The relay publishes them after commit, so neither a crash nor a broker outage
//! loses a timer, and the claim makes several `gochat run` processes fire each timer once.
//!
//! Work per tick follows the number of timers due, not the number stored: the claim is an
//! index range scan over `(state, due_at)`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::queue::Names;
use crate::queue::relay::RelayWaker;
use crate::services::Services;
use crate::shutdown::Shutdown;
use crate::store::{StoreError, Tx, timers};

/// How often the pending/due gauges are recounted (a count over every pending timer is too
/// dear for every tick).
const GAUGE_EVERY: Duration = Duration::from_secs(15);

pub struct Scheduler {
    pub services: Arc<Services>,
    pub names: Names,
    pub relay: RelayWaker,
}

impl Scheduler {
    /// Runs until shutdown.
    pub async fn run(self, mut shutdown: Shutdown) {
        // The gauges count every pending timer: with a million stored, the first count after
        // start-up takes seconds. In a task of their own they never delay a firing.
        let gauges = tokio::spawn(refresh_gauges(self.services.clone(), shutdown.clone()));
        let interval = self.services.config.scheduler.interval;
        loop {
            match self.tick().await {
                // A full batch: more may be due, claim again at once.
                Ok(n) if n as u32 >= self.services.config.scheduler.batch => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "timer scheduler round failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        let _ = gauges.await;
    }

    /// Claims the due timers and queues their jobs; returns how many.
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let s = &self.services;
        let now = s.clock.now();
        // A read first: on SQLite a claim takes the write lock, which idle ticks should not.
        if !timers::any_due(s.store.conn(), now).await? {
            return Ok(0);
        }
        let mut tx = Tx::new(s.store.conn().clone());
        let db = tx.get().await?;
        let due = timers::claim_due(db, now, &s.instance, s.config.scheduler.batch).await?;
        if due.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        for t in &due {
            let payload = json!({
                "schema": "delayed-reminder/v1",
                "timer_id": t.id,
                "thread_id": t.thread_id,
                "step": t.step,
                "expected_version": t.expected_version,
            });
            crate::events::follow_up_job(
                &mut tx,
                &self.names,
                "delayed-reminder",
                &t.id.to_string(),
                &payload,
                now,
            );
        }
        tx.checkpoint().await?;
        self.relay.wake();
        for t in &due {
            let late = (now - t.due_at).to_std().unwrap_or_default();
            s.metrics.timer_firing_delay.observe(late.as_secs_f64());
        }
        tracing::debug!(count = due.len(), "timers claimed");
        Ok(due.len())
    }
}

/// Recounts the pending and due timers every [`GAUGE_EVERY`] until shutdown.
async fn refresh_gauges(s: Arc<Services>, mut shutdown: Shutdown) {
    loop {
        let db = s.store.conn();
        if let Ok(n) = timers::pending_count(db).await {
            s.metrics
                .timers
                .with_label_values(&["pending"])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Ok(n) = timers::due_count(db, s.clock.now()).await {
            s.metrics
                .timers
                .with_label_values(&["due"])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = tokio::time::sleep(GAUGE_EVERY) => {}
        }
    }
}
