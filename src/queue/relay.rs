//! The outbox relay: publishes committed outbox rows with confirms and marks them.
//!
//! Woken right after a job commits (low latency) and on an interval (rows left by a crash or
//! a broker outage). Rows are claimed with a lease so several workers share the work; a
//! row whose publish failed becomes available again after a backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::Broker;
use super::publisher::{Outgoing, Publisher};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{Store, outbox};

/// Rows claimed per round.
const BATCH: u32 = 500;
/// How long a claimed row is reserved for this relay.
const LEASE_SECS: i64 = 30;

/// Wakes the relay; cheap to clone into every job handler.
#[derive(Clone, Default)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

pub struct Relay {
    pub store: Store,
    pub broker: Broker,
    pub clock: SharedClock,
    pub metrics: Metrics,
    pub confirm_timeout: Duration,
    pub interval: Duration,
    /// Second (Unix time) the backlog gauge was last refreshed.
    pub backlog_counted_at: AtomicI64,
}

impl Relay {
    /// Runs until shutdown; publishes what is claimable before returning.
    pub async fn run(self, waker: RelayWaker, mut shutdown: Shutdown) {
        let mut publisher: Option<Publisher> = None;
        loop {
            let stopping = shutdown.is_shutdown();
            match self.round(&mut publisher).await {
                Ok(n) if n as u32 == BATCH && !stopping => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay round failed");
                    publisher = None;
                }
            }
            if stopping {
                break;
            }
            tokio::select! {
                _ = shutdown.recv() => {}
                _ = waker.0.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
        if let Some(p) = publisher {
            p.close().await;
        }
    }

    /// Claims and publishes one batch; returns how many rows were claimed.
    pub async fn round(&self, publisher: &mut Option<Publisher>) -> Result<usize, String> {
        self.refresh_backlog_gauge().await;
        if publisher.as_ref().is_none_or(|p| !p.is_open()) {
            let Some(conn) = self.broker.connected(Duration::from_millis(100)).await else {
                return Ok(0);
            };
            *publisher = Some(
                Publisher::open(&conn, self.confirm_timeout)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let Some(p) = publisher.as_ref() else {
            return Ok(0);
        };
        let now = self.clock.now();
        let rows = outbox::claim(
            self.store.conn(),
            now,
            chrono::Duration::seconds(LEASE_SECS),
            BATCH,
        )
        .await
        .map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Ok(0);
        }
        let msgs: Vec<Outgoing> = rows.iter().map(to_outgoing).collect();
        let results = p.publish_all(&msgs).await;
        let mut done = Vec::with_capacity(rows.len());
        let mut broken = false;
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(()) => {
                    done.push(row.id);
                    self.metrics
                        .outbox_published
                        .with_label_values(&[kind_label(row)])
                        .inc();
                }
                Err(e) => {
                    broken = true;
                    let retry_at = self.clock.now() + chrono::Duration::seconds(5);
                    let _ =
                        outbox::mark_failed(self.store.conn(), row.id, &e.to_string(), retry_at)
                            .await;
                }
            }
        }
        outbox::mark_published(self.store.conn(), &done, self.clock.now())
            .await
            .map_err(|e| e.to_string())?;
        if broken {
            *publisher = None;
        }
        Ok(rows.len())
    }
}

impl Relay {
    /// Counts the backlog for the gauge at most once per second: rounds run after every
    /// committed job, and a `COUNT(*)` per job would tax the hot path for a metric.
    async fn refresh_backlog_gauge(&self) {
        let now = self.clock.now().timestamp();
        if self.backlog_counted_at.swap(now, Ordering::Relaxed) == now {
            return;
        }
        if let Ok(n) = outbox::backlog(self.store.conn()).await {
            self.metrics
                .outbox_backlog
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

fn kind_label(row: &outbox::OutboxMessage) -> &'static str {
    match row.kind {
        gochat_entities::outbox::OutboxKind::Event => "event",
        _ => "job",
    }
}

fn to_outgoing(row: &outbox::OutboxMessage) -> Outgoing {
    let mut m = Outgoing::json(
        row.exchange.clone(),
        row.routing_key.clone(),
        row.message_id.clone(),
        row.payload.clone().into_bytes(),
    );
    if matches!(row.kind, gochat_entities::outbox::OutboxKind::Event) {
        m.content_type = "application/cloudevents+json";
        m.mandatory = false;
    }
    m
}
