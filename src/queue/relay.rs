//! The outbox relay: publishes committed outbox rows with confirms and marks them.
//!
//! A job handler hands its committed rows over right after the commit (see
//! [`crate::store::Tx::hand_over`]): they are published at once, without reading them back.
//! A sweep on an interval, or when woken without rows, claims what is left: rows of a
//! process that died before publishing (once their lease ends), rows whose publish failed
//! (after a backoff), rows other writers committed without a hand-over. Claims are leased
//! so several workers share the work.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
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
/// How long a claimed or handed-over row is reserved for this relay.
const LEASE_SECS: i64 = 30;
/// Most rows waiting in a hand-over: beyond, rows are left to the sweep (after their
/// lease), so a stalled broker cannot grow the worker's memory.
const MAX_HANDED: usize = 20_000;

/// The lease rows handed over to the relay are committed with.
pub fn hand_over_lease() -> chrono::Duration {
    chrono::Duration::seconds(LEASE_SECS)
}

/// Wakes the relay, or hands it rows to publish; cheap to clone into every job handler.
#[derive(Clone, Default)]
pub struct RelayWaker(Arc<Wake>);

#[derive(Default)]
struct Wake {
    notify: Notify,
    /// A relay is running and taking hand-overs.
    running: AtomicBool,
    /// Someone committed rows without handing them over: sweep.
    sweep: AtomicBool,
    handed: Mutex<Vec<outbox::OutboxMessage>>,
}

impl RelayWaker {
    /// Asks for a sweep (rows committed without a hand-over).
    pub fn wake(&self) {
        self.0.sweep.store(true, Ordering::Release);
        self.0.notify.notify_one();
    }

    /// Whether a relay takes hand-overs: only then may a job commit its rows leased.
    pub fn takes_hand_overs(&self) -> bool {
        self.0.running.load(Ordering::Acquire)
    }

    /// Gives committed, leased rows to the relay to publish now. Rows beyond
    /// [`MAX_HANDED`] waiting are left to the sweep.
    pub fn hand_over(&self, mut rows: Vec<outbox::OutboxMessage>) {
        if rows.is_empty() {
            return;
        }
        {
            let mut handed = self.0.handed.lock().unwrap_or_else(PoisonError::into_inner);
            let room = MAX_HANDED.saturating_sub(handed.len());
            if rows.len() > room {
                tracing::debug!(
                    left = rows.len() - room,
                    "relay hand-over full; rows are left to the sweep"
                );
                rows.truncate(room);
            }
            handed.append(&mut rows);
        }
        self.0.notify.notify_one();
    }

    fn take_handed(&self) -> Vec<outbox::OutboxMessage> {
        std::mem::take(&mut *self.0.handed.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Marks the waker's relay as running for as long as it lives.
struct Running(RelayWaker);

impl Running {
    fn new(waker: RelayWaker) -> Self {
        waker.0.running.store(true, Ordering::Release);
        Running(waker)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.0.running.store(false, Ordering::Release);
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
    /// Records of jobs dead-lettered longer ago than this are deleted.
    pub dead_jobs_retention: Duration,
    /// Second (Unix time) the backlog gauge was last refreshed.
    pub backlog_counted_at: AtomicI64,
}

impl Relay {
    /// Runs until shutdown; publishes what was handed over and what is claimable before
    /// returning.
    pub async fn run(self, waker: RelayWaker, mut shutdown: Shutdown) {
        let pruning = tokio::spawn(prune_loop(
            self.store.clone(),
            self.clock.clone(),
            (self.retention, self.dead_jobs_retention),
            shutdown.clone(),
        ));
        let running = Running::new(waker);
        let waker = &running.0;
        let mut session: Option<Session> = None;
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            let stopping = shutdown.is_shutdown();
            let handed = waker.take_handed();
            if !handed.is_empty()
                && let Err(e) = self.publish(&mut session, handed).await
            {
                tracing::warn!(error = %e, "publishing handed-over outbox rows failed; the sweep retries them");
                session = None;
            }
            let sweep = waker.0.sweep.swap(false, Ordering::AcqRel)
                || tokio::time::Instant::now() >= next_sweep
                || stopping;
            let mut more = false;
            if sweep {
                next_sweep = tokio::time::Instant::now() + self.interval;
                match self.round(&mut session).await {
                    Ok(n) => more = n as u32 == BATCH && !stopping,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox relay round failed");
                        session = None;
                    }
                }
            }
            if stopping {
                // Later commits wait for their lease and the next worker's sweep.
                waker.0.running.store(false, Ordering::Release);
                let late = waker.take_handed();
                let _ = self.publish(&mut session, late).await;
                break;
            }
            if more {
                next_sweep = tokio::time::Instant::now();
                continue;
            }
            tokio::select! {
                _ = shutdown.recv() => {}
                _ = waker.0.notify.notified() => {}
                _ = tokio::time::sleep_until(next_sweep) => {}
            }
        }
        if let Some(s) = session {
            s.publisher.close().await;
        }
        let _ = pruning.await;
    }

    /// Opens the confirm channel if there is none; `None` while the broker is away.
    async fn session<'s>(
        &self,
        session: &'s mut Option<Session>,
    ) -> Result<Option<&'s mut Session>, String> {
        if session.as_ref().is_none_or(|s| !s.publisher.is_open()) {
            let Some(conn) = self.broker.connected(Duration::from_millis(100)).await else {
                return Ok(None);
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
        Ok(session.as_mut())
    }

    /// Claims and publishes one batch; returns how many rows were claimed.
    async fn round(&self, session: &mut Option<Session>) -> Result<usize, String> {
        self.refresh_backlog_gauge().await;
        if self.session(session).await?.is_none() {
            return Ok(0);
        }
        let rows = outbox::claim(
            self.store.conn(),
            self.clock.now(),
            chrono::Duration::seconds(LEASE_SECS),
            BATCH,
        )
        .await
        .map_err(|e| e.to_string())?;
        let n = rows.len();
        self.publish(session, rows).await?;
        Ok(n)
    }

    /// Publishes rows this relay holds (claimed or handed over) and marks them. Without a
    /// broker they are released at once, so the first sweep after the reconnection takes
    /// them instead of waiting out their lease.
    async fn publish(
        &self,
        session: &mut Option<Session>,
        rows: Vec<outbox::OutboxMessage>,
    ) -> Result<(), String> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let opened = self.session(session).await;
        let Ok(Some(s)) = opened else {
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            let why = match &opened {
                Err(e) => format!("no channel to the broker: {e}"),
                Ok(_) => "not connected to the broker".to_owned(),
            };
            outbox::mark_failed(self.store.conn(), &ids, &why, now)
                .await
                .map_err(|e| e.to_string())?;
            return opened.map(|_| ());
        };
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
        Ok(())
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

/// Deletes published rows and dead-job records past their retention (`(outbox, dead
/// jobs)`) once a minute until shutdown. Its own task, so a long prune never delays a
/// publish.
async fn prune_loop(
    store: Store,
    clock: SharedClock,
    retention: (Duration, Duration),
    mut shutdown: Shutdown,
) {
    let (Ok(outbox_for), Ok(dead_for)) = (
        chrono::Duration::from_std(retention.0),
        chrono::Duration::from_std(retention.1),
    ) else {
        return;
    };
    loop {
        let now = clock.now();
        match outbox::prune(store.conn(), now - outbox_for, PRUNE_MAX).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "pruned published outbox rows"),
            Err(e) => tracing::warn!(error = %e, "cannot prune the outbox"),
        }
        match crate::store::processed::prune_dead(store.conn(), now - dead_for).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "pruned dead-job records"),
            Err(e) => tracing::warn!(error = %e, "cannot prune the dead-job records"),
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
