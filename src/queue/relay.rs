//! The outbox relay: publishes committed outbox rows with confirms and marks them.
//!
//! Woken right after a job commits (low latency) and on an interval (rows left by a crash or
//! a broker outage). Rows are claimed with a lease so several workers share the work; a
//! row whose publish failed becomes available again after a backoff.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

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
    /// Published rows older than this are deleted.
    pub retention: Duration,
    /// Second (Unix time) the backlog gauge was last refreshed.
    pub backlog_counted_at: AtomicI64,
}

impl Relay {
    /// Runs until shutdown; publishes what is claimable before returning.
    pub async fn run(self, waker: RelayWaker, mut shutdown: Shutdown) {
        let pruning = tokio::spawn(prune_loop(
            self.store.clone(),
            self.clock.clone(),
            self.retention,
            shutdown.clone(),
        ));
        let mut session: Option<Session> = None;
        loop {
            let stopping = shutdown.is_shutdown();
            match self.round(&mut session).await {
                Ok(n) if n as u32 == BATCH && !stopping => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay round failed");
                    session = None;
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
        if let Some(s) = session {
            s.publisher.close().await;
        }
        let _ = pruning.await;
    }

    /// Claims and publishes one batch; returns how many rows were claimed.
    async fn round(&self, session: &mut Option<Session>) -> Result<usize, String> {
        self.refresh_backlog_gauge().await;
        if session.as_ref().is_none_or(|s| !s.publisher.is_open()) {
            let Some(conn) = self.broker.connected(Duration::from_millis(100)).await else {
                return Ok(0);
            };
            let publisher = Publisher::open(&conn, self.confirm_timeout)
                .await
                .map_err(|e| e.to_string())?;
            *session = Some(Session {
                conn,
                publisher,
                exchanges: HashSet::new(),
            });
        }
        let Some(s) = session.as_mut() else {
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
        // A row for an exchange that does not exist waits, with the reason on it, until
        // someone declares the exchange or deletes the row; published with the others, it
        // would close the channel and fail them all.
        let mut ready = Vec::with_capacity(rows.len());
        let mut missing: HashMap<&str, Vec<&outbox::OutboxMessage>> = HashMap::new();
        for row in &rows {
            if !missing.contains_key(row.exchange.as_str())
                && s.exchange_exists(&row.exchange).await?
            {
                ready.push(row);
            } else {
                missing.entry(row.exchange.as_str()).or_default().push(row);
            }
        }
        for (exchange, rows) in missing {
            let why = format!(
                "exchange `{exchange}` does not exist on the broker: declare it, or delete this outbox row"
            );
            let mut by_wait: HashMap<chrono::Duration, Vec<Uuid>> = HashMap::new();
            for r in rows {
                by_wait
                    .entry(missing_exchange_wait(r.attempts))
                    .or_default()
                    .push(r.id);
            }
            for (wait, ids) in by_wait {
                let _ = outbox::mark_failed(self.store.conn(), &ids, &why, now + wait).await;
            }
        }
        let msgs: Vec<Outgoing> = ready.iter().map(|r| to_outgoing(r)).collect();
        let results = s.publisher.publish_all(&msgs).await;
        let mut done = Vec::with_capacity(ready.len());
        let mut broken = false;
        for (row, result) in ready.iter().zip(results) {
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
                        outbox::mark_failed(self.store.conn(), &[row.id], &e.to_string(), retry_at)
                            .await;
                }
            }
        }
        outbox::mark_published(self.store.conn(), &done, self.clock.now())
            .await
            .map_err(|e| e.to_string())?;
        if broken {
            *session = None;
        }
        Ok(rows.len())
    }
}

/// How long a row for a missing exchange waits after its `attempts`-th claim: 1 minute,
/// doubling up to an hour, so a stale prefix's rows do not cost every relay round.
fn missing_exchange_wait(attempts: i32) -> chrono::Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(6);
    chrono::Duration::minutes((1i64 << doublings).min(60))
}

/// The relay's link to the broker: a confirm channel, and the exchanges seen to exist on
/// this connection (asked once each, not per row).
struct Session {
    conn: Arc<lapin::Connection>,
    publisher: Publisher,
    exchanges: HashSet<String>,
}

impl Session {
    async fn exchange_exists(&mut self, name: &str) -> Result<bool, String> {
        if self.exchanges.contains(name) {
            return Ok(true);
        }
        let exists = super::topology::exchange_exists(&self.conn, name)
            .await
            .map_err(|e| format!("cannot ask the broker about exchange `{name}`: {e}"))?;
        if exists {
            self.exchanges.insert(name.to_owned());
        }
        Ok(exists)
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

/// How often old published rows are deleted, and the most per prune: bounded work that
/// keeps up with any sustained rate one worker reaches.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_MAX: u64 = 500_000;

/// Deletes published rows past `retention` once a minute until shutdown. Its own task, so
/// a long prune never delays a publish.
async fn prune_loop(store: Store, clock: SharedClock, retention: Duration, mut shutdown: Shutdown) {
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return;
    };
    loop {
        match outbox::prune(store.conn(), clock.now() - retention, PRUNE_MAX).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "pruned published outbox rows"),
            Err(e) => tracing::warn!(error = %e, "cannot prune the outbox"),
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
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

#[cfg(test)]
mod tests {
    use super::missing_exchange_wait;

    #[test]
    fn rows_for_a_missing_exchange_wait_longer_each_time_up_to_an_hour() {
        let minutes: Vec<i64> = [0, 1, 2, 3, 6, 7, 8, 1000]
            .into_iter()
            .map(|a| missing_exchange_wait(a).num_minutes())
            .collect();
        assert_eq!(minutes, [1, 1, 2, 4, 32, 60, 60, 60]);
    }
}
