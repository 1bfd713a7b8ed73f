//! `gochat bench runtime`: jobs through the full consumer path (decode, schema check,
//! workflow, one committed transaction, ack) against the raw lapin publish → consume → ack
//! rate of the same broker. Uses its own queue prefix and cleans it up; writes customers
//! into the database it is given, so point it at a scratch one (default: a temp SQLite file).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;

use super::measure::{BenchJob, Figures, figures, publish_and_wait};
use super::round2;
use crate::config::Config;
use crate::queue::{Names, Outgoing, Publisher};
use crate::worker::Worker;

#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Jobs to run through each path.
    #[arg(long, default_value_t = 50_000)]
    pub jobs: usize,
    /// Scratch database (default: a temporary SQLite file). Migrated if needed.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Jobs run first, unmeasured, before the statistics are refreshed (see `warm_up`).
    #[arg(long, default_value_t = 5_000)]
    pub warm_up: usize,
}

pub async fn run(mut config: Config, args: RuntimeArgs) -> anyhow::Result<()> {
    let n = args.jobs.max(1);
    let scratch = tempfile::tempdir().context("temp dir")?;
    let backend = super::isolate(&mut config, args.database_url, scratch.path());
    let names = Names::new(&config.amqp.prefix);
    println!(
        "bench runtime: {n} jobs, database {backend} ({}), broker {}",
        config.database.url, config.amqp.url
    );

    let conn = Connection::connect(config.amqp.url.expose(), ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {}", config.amqp.url))?;

    let baseline = baseline(&conn, &names, n, config.amqp.prefetch).await?;
    println!(
        "baseline (lapin publish → consume → ack): {:.0} msg/s, p50 {:.2} ms, p99 {:.2} ms",
        baseline.per_sec, baseline.p50, baseline.p99
    );

    let worker = super::start_worker(&config).await?;
    let warm = uuid::Uuid::now_v7().simple().to_string();
    super::warm_up(
        &conn,
        &names,
        &worker,
        upserts(args.warm_up, &warm),
        &format!("bench-{warm}-"),
        config.amqp.confirm_timeout,
    )
    .await?;
    let full = full_path(&conn, &names, &worker, n, config.amqp.confirm_timeout).await;
    let store = worker.services.store.clone();
    // Each job emits an event through the outbox: a rate the relay cannot keep up with is
    // not a rate the worker can sustain, so say how long after the last commit they were out.
    let drained = events_drained(&store, names.prefix()).await;
    worker.stop().await;
    let full = full?;
    super::teardown(&conn, &names, &config).await;
    store.close().await;

    let ratio = full.per_sec / baseline.per_sec.max(f64::MIN_POSITIVE);
    println!(
        "full path (decode, validate, workflow, commit, ack): {:.0} jobs/s, p50 {:.2} ms, p99 {:.2} ms; ratio to baseline {:.2}; {:.1} jobs per batch",
        full.per_sec,
        full.p50,
        full.p99,
        ratio,
        full.mean_batch.unwrap_or(0.0)
    );
    let drained_ms = drained.map(|d| round2(d.as_secs_f64() * 1000.0));
    match drained_ms {
        Some(ms) => println!("events: all published {ms:.0} ms after the last job committed"),
        None => println!("events: NOT all published within {DRAIN_LIMIT:?} of the last commit"),
    }
    println!(
        "{}",
        json!({
            "bench": "runtime", "jobs": n, "database": backend,
            "jobs_per_sec": round2(full.per_sec), "p50_ms": round2(full.p50), "p99_ms": round2(full.p99),
            "baseline_per_sec": round2(baseline.per_sec), "baseline_p50_ms": round2(baseline.p50), "baseline_p99_ms": round2(baseline.p99),
            "ratio": round2(ratio), "events_drained_ms": drained_ms, "mean_batch": full.mean_batch.map(round2),
        })
    );
    Ok(())
}

/// Raw lapin: a plain durable queue, persistent messages with confirms, one consumer acking
/// each message, prefetch as configured.
pub(super) async fn baseline(
    conn: &Connection,
    names: &Names,
    n: usize,
    prefetch: u16,
) -> anyhow::Result<Figures> {
    let queue = format!("{}baseline", names.prefix());
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let publisher = Publisher::open(conn, Duration::from_secs(30)).await?;
    let start = Instant::now();
    let q = queue.clone();
    let publishing = tokio::spawn(async move {
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let msgs: Vec<Outgoing> = chunk
                .iter()
                .map(|i| {
                    let sent = start.elapsed().as_nanos() as u64;
                    Outgoing::json(
                        String::new(),
                        q.clone(),
                        format!("b{i}"),
                        sent.to_le_bytes().to_vec(),
                    )
                })
                .collect();
            for r in publisher.publish_all(&msgs).await {
                r?;
            }
        }
        publisher.close().await;
        anyhow::Ok(())
    });
    let mut latencies = Vec::with_capacity(n);
    while latencies.len() < n {
        let d = consumer.next().await.context("consumer ended")??;
        let mut b = [0u8; 8];
        b.copy_from_slice(d.data.get(..8).context("short message")?);
        let sent = Duration::from_nanos(u64::from_le_bytes(b));
        latencies.push(start.elapsed().saturating_sub(sent));
        d.acker.ack(BasicAckOptions::default()).await?;
    }
    let elapsed = start.elapsed();
    publishing.await??;
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = ch.close(200, "done".into()).await;
    Ok(figures(n, elapsed, latencies))
}

/// How long [`events_drained`] waits.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Time until the outbox holds nothing unpublished for this run's exchanges (`None`: not
/// within [`DRAIN_LIMIT`]).
async fn events_drained(store: &crate::store::Store, prefix: &str) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < DRAIN_LIMIT {
        if crate::store::outbox::backlog_for(store.conn(), prefix)
            .await
            .ok()
            == Some(0)
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The worker's path: `customer-upsert` jobs (one new customer and contact each).
async fn full_path(
    conn: &Connection,
    names: &Names,
    worker: &Worker,
    n: usize,
    confirm: Duration,
) -> anyhow::Result<Figures> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let jobs = upserts(n, &run);
    publish_and_wait(conn, names, worker, jobs, &format!("bench-{run}-"), confirm).await
}

/// `n` customer-upsert jobs of run `run`, each a new customer with one contact.
fn upserts(n: usize, run: &str) -> Vec<BenchJob> {
    (0..n)
        .map(|i| {
            let id = format!("bench-{run}-{i}");
            let body = json!({"schema": "customer-upsert/v1", "external_id": id, "name": format!("Customer {i}"),
                              "contacts": [{"kind": "email", "address": format!("c{i}-{run}@bench.example")}]});
            BenchJob { id, kind: "customer-upsert", body: body.to_string().into_bytes() }
        })
        .collect()
}
