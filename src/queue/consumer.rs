//! Consuming one job kind: take a delivery, decode it, hand it to the handler, and settle it.
//!
//! Settling is where "nothing lost" is decided: a job is acked only after the handler
//! committed its effects; a transient failure is re-published to the retry ladder and a
//! permanent one to the dead letters, each confirmed by the broker *before* the original is
//! acked. If that publish fails, the original is requeued, so the worst case is a
//! redelivery, which the handler's idempotency makes harmless.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::acks::{Acks, Settlement, Ticket};
use super::publisher::{Outgoing, Publisher};
use super::topology::{RETRY_DELAY_HEADER, retry_header_value};
use super::{Broker, Names};
use crate::jobs::turn::Turns;
use crate::jobs::{Handled, Handler, Job, JobError, handle_each};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

pub const REASON_HEADER: &str = "x-gochat-reason";
pub const KIND_HEADER: &str = "x-gochat-kind";
pub const ATTEMPTS_HEADER: &str = "x-gochat-attempts";
pub const FIRST_FAILURE_HEADER: &str = "x-gochat-first-failure";

/// How one kind's consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub kind: String,
    pub prefetch: u16,
    /// Batches running at once.
    pub concurrency: usize,
    /// Most deliveries handed to the handler together.
    pub batch_size: usize,
    pub retry_delays: Vec<Duration>,
    pub confirm_timeout: Duration,
    /// Batches start their transactions in delivery order (see [`crate::jobs::turn`]):
    /// for inbound mail, whose replies must see the mails they answer.
    pub in_turn: bool,
}

/// Consumes `spec.kind` until shutdown, reconnecting with the broker. On shutdown it stops
/// taking deliveries, waits for those in flight, and returns.
pub async fn run<H: Handler>(
    broker: Broker,
    names: Names,
    spec: ConsumerSpec,
    handler: Arc<H>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(spec.concurrency));
    let ctx = Arc::new(Settle {
        names,
        spec,
        metrics,
    });
    let mut watch = broker.watch();
    while !shutdown.is_shutdown() {
        // Wait for a live connection (or shutdown).
        let conn = tokio::select! {
            _ = shutdown.recv() => break,
            c = watch.wait_for(|c| c.as_ref().is_some_and(|c| c.status().connected())) => match c {
                Ok(c) => c.clone(),
                Err(_) => break,
            },
        };
        let Some(conn) = conn else { continue };
        match consume_on(&conn, &ctx, &slots, &handler, &mut shutdown).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(kind = %ctx.spec.kind, error = %e, "consumer interrupted; resuming when the broker is back");
                tokio::select! {
                    _ = shutdown.recv() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
    // Let in-flight jobs finish: each holds a slot.
    let _all = slots.acquire_many(ctx.spec.concurrency as u32).await;
    tracing::info!(kind = %ctx.spec.kind, "consumer stopped");
}

struct Settle {
    names: Names,
    spec: ConsumerSpec,
    metrics: Metrics,
}

async fn consume_on<H: Handler>(
    conn: &lapin::Connection,
    ctx: &Arc<Settle>,
    slots: &Arc<Semaphore>,
    handler: &Arc<H>,
    shutdown: &mut Shutdown,
) -> Result<(), super::QueueError> {
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(ctx.spec.prefetch, BasicQosOptions::default())
        .await?;
    let publisher = Arc::new(Publisher::open(conn, ctx.spec.confirm_timeout).await?);
    let acks = Acks::new(channel.clone());
    let tag = format!("gochat-{}-{}", ctx.spec.kind, uuid::Uuid::now_v7().simple());
    let queue = ctx.names.queue(&ctx.spec.kind);
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(kind = %ctx.spec.kind, %queue, prefetch = ctx.spec.prefetch, concurrency = ctx.spec.concurrency, "consuming");
    let mut turns = ctx.spec.in_turn.then(Turns::default);
    loop {
        // A free slot first, then a delivery: while every slot is busy, deliveries wait in
        // the prefetch buffer and the next batch takes them all at once.
        let permit = tokio::select! {
            _ = shutdown.recv() => None,
            p = slots.clone().acquire_owned() => p.ok(),
        };
        let Some(permit) = permit else {
            let _ = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
            break;
        };
        let first = tokio::select! {
            _ = shutdown.recv() => {
                let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                break;
            }
            d = consumer.next() => d,
        };
        // Every delivery is tracked as it is taken, in order (see `acks`).
        let mut batch = match first {
            Some(Ok(d)) => vec![(acks.track(d.delivery_tag), d)],
            Some(Err(e)) => return Err(e.into()),
            None => return Err(super::QueueError::Disconnected),
        };
        // Only what is already here: a batch never waits for more work to arrive.
        let mut broken = None;
        while batch.len() < ctx.spec.batch_size.max(1) {
            match consumer.next().now_or_never() {
                Some(Some(Ok(d))) => batch.push((acks.track(d.delivery_tag), d)),
                Some(Some(Err(e))) => {
                    broken = Some(super::QueueError::from(e));
                    break;
                }
                Some(None) => {
                    broken = Some(super::QueueError::Disconnected);
                    break;
                }
                None => break,
            }
        }
        let (ctx, handler, publisher, acks) = (
            ctx.clone(),
            handler.clone(),
            publisher.clone(),
            acks.clone(),
        );
        let turn = turns.as_mut().map(Turns::next_turn);
        tokio::spawn(async move {
            let process = ctx.process(batch, handler.as_ref(), &publisher);
            match turn {
                Some(turn) => turn.scope(process).await,
                None => process.await,
            }
            acks.flush().await;
            drop(permit);
        });
        if let Some(e) = broken {
            return Err(e);
        }
    }
    // Deliveries already running keep their slot; wait for them before closing the channel
    // they must ack on.
    let _all = slots.acquire_many(ctx.spec.concurrency as u32).await;
    publisher.close().await;
    let _ = channel.close(200, "shutdown".into()).await;
    Ok(())
}

impl Settle {
    /// Decodes a batch of deliveries, runs the valid jobs through the handler together, and
    /// settles each delivery by its own result (sent by the caller's flush).
    async fn process<H: Handler>(
        &self,
        batch: Vec<(Ticket, Delivery)>,
        handler: &H,
        publisher: &Publisher,
    ) {
        let kind = self.spec.kind.as_str();
        let started = Instant::now();
        self.metrics
            .jobs_consumed
            .with_label_values(&[kind])
            .inc_by(batch.len() as u64);
        self.metrics
            .job_batch_size
            .with_label_values(&[kind])
            .observe(batch.len() as f64);
        let mut jobs = Vec::with_capacity(batch.len());
        let mut deliveries = Vec::with_capacity(batch.len());
        for (ticket, delivery) in batch {
            match decode(kind, &delivery) {
                Ok(job) => {
                    jobs.push(job);
                    deliveries.push((ticket, delivery));
                }
                Err(reason) => {
                    let how = self
                        .dead_letter(&delivery, publisher, &reason, 1, None)
                        .await;
                    ticket.settle(how);
                    self.observe(started);
                }
            }
        }
        if jobs.is_empty() {
            return;
        }
        let results = run_guarded(handler, &jobs).await;
        // All of the batch's deliveries are settled at once: a retry or dead letter waits for
        // its publish to be confirmed, and one after the other they held the batch's slot.
        let settled = jobs
            .iter()
            .zip(deliveries)
            .zip(results)
            .map(|((job, (ticket, delivery)), result)| {
                // Settling runs in the job's span, as an instrumented future: a span entered
                // with a guard held across `.await` corrupts the subscriber's span
                // bookkeeping when the task moves between threads (it panicked during a
                // broker outage).
                let span = tracing::info_span!("job", kind, job_id = %job.message_id, attempt = job.attempt);
                async move {
                    let how = self
                        .settle_result(&delivery, publisher, handler, job, result)
                        .await;
                    ticket.settle(how);
                    self.observe(started);
                }
                .instrument(span)
            });
        futures_util::future::join_all(settled).await;
    }

    fn observe(&self, started: Instant) {
        self.metrics
            .job_duration
            .with_label_values(&[&self.spec.kind])
            .observe(started.elapsed().as_secs_f64());
    }

    async fn settle_result<H: Handler>(
        &self,
        delivery: &Delivery,
        publisher: &Publisher,
        handler: &H,
        job: &Job,
        result: Result<Handled, JobError>,
    ) -> Settlement {
        let (attempt, first_failure) = (job.attempt, job.first_failure);
        match result {
            Ok(outcome) => {
                let label = if outcome == Handled::Applied {
                    "acked"
                } else {
                    "duplicate"
                };
                self.metrics
                    .jobs
                    .with_label_values(&[&self.spec.kind, label])
                    .inc();
                Settlement::Ack
            }
            Err(JobError::Transient(reason))
                if (attempt as usize) <= self.spec.retry_delays.len() =>
            {
                let delay = self.spec.retry_delays[attempt as usize - 1];
                tracing::warn!(%reason, retry_in = ?delay, "transient failure; retrying");
                self.retry(delivery, publisher, delay, attempt, first_failure)
                    .await
            }
            Err(e) => {
                let reason = match e {
                    JobError::Transient(r) => format!("gave up after {attempt} attempts: {r}"),
                    JobError::Permanent(r) => r,
                };
                let how = self
                    .dead_letter(delivery, publisher, &reason, attempt, first_failure)
                    .await;
                if how == Settlement::Ack {
                    handler.dead_lettered(job, &reason).await;
                }
                how
            }
        }
    }

    async fn retry(
        &self,
        d: &Delivery,
        publisher: &Publisher,
        delay: Duration,
        attempt: u32,
        first: Option<DateTime<Utc>>,
    ) -> Settlement {
        let first = first.unwrap_or_else(Utc::now);
        let msg = self
            .copy(d, self.names.retry_exchange(), attempt, first)
            .header(RETRY_DELAY_HEADER, retry_header_value(delay));
        self.settle(publisher, msg, "retried").await
    }

    async fn dead_letter(
        &self,
        d: &Delivery,
        publisher: &Publisher,
        reason: &str,
        attempt: u32,
        first: Option<DateTime<Utc>>,
    ) -> Settlement {
        tracing::error!(kind = %self.spec.kind, %reason, "job dead-lettered");
        let mut msg = self.copy(d, String::new(), attempt, first.unwrap_or_else(Utc::now));
        msg.routing_key = self.names.dead_letters();
        let msg = msg.header(REASON_HEADER, text(&one_line(reason)));
        self.settle(publisher, msg, "dead_lettered").await
    }

    /// Publishes `msg` (confirmed): the original is then acked; if the publish failed it is
    /// requeued, so the job is never lost between the two.
    async fn settle(&self, publisher: &Publisher, msg: Outgoing, outcome: &str) -> Settlement {
        let (how, outcome) = match publisher.publish(&msg).await {
            Ok(()) => (Settlement::Ack, outcome),
            Err(e) => {
                tracing::warn!(error = %e, "could not move the job to {}; requeueing it", msg.routing_key);
                (Settlement::Requeue, "requeued")
            }
        };
        self.metrics
            .jobs
            .with_label_values(&[&self.spec.kind, outcome])
            .inc();
        how
    }

    /// The delivery as a new message keeping body, id and headers, with updated counters;
    /// an earlier dead letter's reason is dropped (a dead letter sets its own).
    fn copy(&self, d: &Delivery, exchange: String, attempt: u32, first: DateTime<Utc>) -> Outgoing {
        let mut inner = d
            .properties
            .headers()
            .as_ref()
            .map(|h| h.inner().clone())
            .unwrap_or_default();
        inner.remove(REASON_HEADER);
        let mut headers = FieldTable::from(inner);
        headers.insert(KIND_HEADER.into(), text(&self.spec.kind));
        headers.insert(
            ATTEMPTS_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(attempt)),
        );
        headers.insert(FIRST_FAILURE_HEADER.into(), text(&first.to_rfc3339()));
        let message_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        Outgoing {
            exchange,
            routing_key: self.spec.kind.clone(),
            message_id,
            content_type: "application/json",
            payload: d.data.clone(),
            headers,
            mandatory: true,
        }
    }
}

/// Runs `jobs` through the handler. A panicking handler must not take the deliveries down
/// with its task (they would sit unacked until the channel closed, then come back and panic
/// again): a batch that panics is run again one job at a time, and a job that panics alone
/// fails permanently with the panic's message. Open transactions roll back as the panic
/// unwinds.
async fn run_guarded<H: Handler>(handler: &H, jobs: &[Job]) -> Vec<Result<Handled, JobError>> {
    let span = tracing::debug_span!("batch", size = jobs.len());
    if jobs.len() > 1
        && let Ok(results) = AssertUnwindSafe(handler.handle_batch(jobs))
            .catch_unwind()
            .instrument(span)
            .await
    {
        return results;
    }
    handle_each(handler, jobs).await
}

/// Turns a delivery into a [`Job`], or says why it cannot be one (a permanent failure).
pub fn decode(kind: &str, d: &Delivery) -> Result<Job, String> {
    let message_id = d
        .properties
        .message_id()
        .as_ref()
        .map(|m| crate::text::escape_controls(m.as_str()).into_owned())
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| {
            "job has no AMQP message_id; every job needs one as its idempotency key".to_string()
        })?;
    let headers = d.properties.headers().clone().unwrap_or_default();
    // A dead letter published again (ops replaying it after a fix) carries its reason: it
    // starts the retry ladder afresh instead of resuming an exhausted count.
    let replayed = headers.inner().contains_key(REASON_HEADER);
    let previous = headers
        .inner()
        .get(ATTEMPTS_HEADER)
        .and_then(as_i64)
        .filter(|_| !replayed)
        .unwrap_or(0);
    let first_failure = headers
        .inner()
        .get(FIRST_FAILURE_HEADER)
        .and_then(as_string)
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
        .filter(|_| !replayed);
    let mut payload: serde_json::Value =
        serde_json::from_slice(&d.data).map_err(|e| format!("payload is not valid JSON: {e}"))?;
    // Every text a job brings is stored somewhere: a NUL would fail its insert.
    crate::text::escape_json(&mut payload);
    crate::jobs::check_payload(kind, &payload).map_err(|e| e.to_string())?;
    Ok(Job {
        kind: kind.to_owned(),
        message_id,
        payload,
        attempt: u32::try_from(previous.max(0))
            .unwrap_or(u32::MAX)
            .saturating_add(1),
        first_failure,
    })
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_owned()))
}

fn as_i64(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::LongLongInt(i) => Some(*i),
        AMQPValue::LongInt(i) => Some(i64::from(*i)),
        AMQPValue::LongUInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortUInt(i) => Some(i64::from(*i)),
        _ => as_string(v).and_then(|s| s.parse().ok()),
    }
}

fn as_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A reason fit for a header: one line, at most 500 characters.
pub fn one_line(reason: &str) -> String {
    let flat: String = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 500 {
        let mut cut: String = flat.chars().take(497).collect();
        cut.push_str("...");
        cut
    } else {
        flat
    }
}
