//! The measurement the job benches share: publish jobs with confirms (as fast as they go,
//! or at a fixed rate) while the worker runs, wait until every one is applied, and read
//! each job's latency from publish to the commit of its effects
//! (`processed_jobs.processed_at`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lapin::Connection;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use super::quantile_ms;
use crate::queue::{Names, Outgoing, Publisher};

/// Throughput and latency of one run.
pub struct Figures {
    pub per_sec: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    /// Deliveries per handler call in the worker during the run, when it ran in process.
    pub mean_batch: Option<f64>,
    /// Multi-job batches by outcome during the run (committed, cut, failed), when the
    /// worker ran in process: cuts and failures run jobs alone, at the single-job rate.
    pub batch_outcomes: Option<[u64; 3]>,
}

pub fn figures(n: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Figures {
    latencies.sort();
    Figures {
        per_sec: n as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        p50: quantile_ms(&latencies, 0.5),
        p99: quantile_ms(&latencies, 0.99),
        p999: quantile_ms(&latencies, 0.999),
        mean_batch: None,
        batch_outcomes: None,
    }
}

/// One job to publish: its message id (which must start with the run's prefix), its kind
/// and its body.
pub struct BenchJob {
    pub id: String,
    pub kind: &'static str,
    pub body: Vec<u8>,
}

/// When each job was confirmed by the broker, by message id.
pub type Sent = HashMap<String, (&'static str, DateTime<Utc>)>;

/// Publishes `jobs` with confirms: in batches of 500 as fast as they go, or `rate` jobs a
/// second in ticks of 100 ms.
pub async fn publish(
    conn: &Connection,
    names: &Names,
    jobs: Vec<BenchJob>,
    rate: Option<f64>,
    confirm: Duration,
) -> anyhow::Result<Sent> {
    let publisher = Publisher::open(conn, confirm).await?;
    let exchange = names.jobs_exchange();
    let chunk = match rate {
        Some(r) => ((r / 10.0).round() as usize).max(1),
        None => 500,
    };
    let mut sent = Sent::with_capacity(jobs.len());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for part in jobs.chunks(chunk) {
        if rate.is_some() {
            tick.tick().await;
        }
        let msgs: Vec<Outgoing> = part
            .iter()
            .map(|j| {
                Outgoing::json(
                    exchange.clone(),
                    j.kind.into(),
                    j.id.clone(),
                    j.body.clone(),
                )
            })
            .collect();
        let at = Utc::now();
        for (j, r) in part.iter().zip(publisher.publish_all(&msgs).await) {
            r?;
            sent.insert(j.id.clone(), (j.kind, at));
        }
    }
    publisher.close().await;
    Ok(sent)
}

/// Waits until `n` jobs matching the SQL condition `filter` (on `processed_jobs`) are
/// applied, for at most `limit`.
pub async fn wait_applied(
    db: &DatabaseConnection,
    filter: &str,
    n: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let count = Statement::from_string(
        db.get_database_backend(),
        format!("SELECT COUNT(*) AS n FROM processed_jobs WHERE {filter}"),
    );
    wait_for(n, limit, Duration::from_millis(20), || async {
        let done: i64 = db
            .query_one_raw(count.clone())
            .await?
            .map(|r| r.try_get("", "n"))
            .transpose()?
            .unwrap_or(0);
        Ok(done as usize)
    })
    .await
}

/// Polls `done` every `every` until it reaches `n`, for at most `limit`.
async fn wait_for<F, Fut>(n: usize, limit: Duration, every: Duration, done: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    let start = Instant::now();
    loop {
        let done = done().await?;
        if done >= n {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "only {done} of {n} jobs applied after {limit:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// When each job matching `filter` committed, by message id.
pub async fn applied_at(
    db: &DatabaseConnection,
    filter: &str,
) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT message_id, processed_at FROM processed_jobs WHERE {filter}"),
        ))
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        out.insert(r.try_get("", "message_id")?, r.try_get("", "processed_at")?);
    }
    Ok(out)
}

/// Publish → commit latencies of the `sent` jobs that committed.
pub fn latencies(sent: &Sent, applied: &HashMap<String, DateTime<Utc>>) -> Vec<Duration> {
    sent.iter()
        .filter_map(|(id, (_, at))| {
            applied
                .get(id)
                .map(|done| (*done - *at).to_std().unwrap_or_default())
        })
        .collect()
}

/// Waits until the in-process worker has acked `n` jobs of `kind` (counted from its
/// metrics, so waiting puts no load on the database being measured), for at most `limit`.
pub async fn wait_acked(
    metrics: &crate::metrics::Metrics,
    kind: &str,
    n: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let acked = metrics.jobs.with_label_values(&[kind, "acked"]);
    let before = acked.get();
    wait_for(n, limit, Duration::from_millis(5), || async {
        Ok(acked.get().saturating_sub(before) as usize)
    })
    .await
}

/// Publishes `jobs` (one kind) as fast as they go while the in-process `worker` consumes
/// them, and waits until all are applied: the rate is jobs / (last ack − first publish).
/// Latencies are publish → commit, read from `processed_jobs` once at the end.
///
/// Progress comes from the worker's metrics: polling `processed_jobs` with a `LIKE` count
/// every 20 ms cost PostgreSQL a quarter of a core in a 50,000-job run, load on the very
/// database being measured.
pub async fn publish_and_wait(
    conn: &Connection,
    names: &Names,
    worker: &crate::worker::Worker,
    jobs: Vec<BenchJob>,
    id_prefix: &str,
    confirm: Duration,
) -> anyhow::Result<Figures> {
    let n = jobs.len();
    // Follow-up jobs (an acknowledgement's id extends its mail's) are not this run's.
    let kind = jobs.first().map_or("", |j| j.kind);
    let mine = format!("message_id LIKE '{id_prefix}%' AND kind = '{kind}'");
    let batches = worker
        .services
        .metrics
        .job_batch_size
        .with_label_values(&[kind]);
    let before = (batches.get_sample_sum(), batches.get_sample_count());
    let outcomes = || {
        ["committed", "cut", "failed"].map(|o| {
            worker
                .services
                .metrics
                .job_batches
                .with_label_values(&[kind, o])
                .get()
        })
    };
    let outcomes_before = outcomes();
    let start = Instant::now();
    let (sent, elapsed) = tokio::try_join!(publish(conn, names, jobs, None, confirm), async {
        wait_acked(&worker.services.metrics, kind, n, Duration::from_secs(1800)).await?;
        Ok(start.elapsed())
    })?;
    let applied = applied_at(worker.services.store.conn(), &mine).await?;
    let calls = batches.get_sample_count().saturating_sub(before.1);
    Ok(Figures {
        mean_batch: (calls > 0).then(|| (batches.get_sample_sum() - before.0) / calls as f64),
        batch_outcomes: Some({
            let after = outcomes();
            [0, 1, 2].map(|i| after[i].saturating_sub(outcomes_before[i]))
        }),
        ..figures(n, elapsed, latencies(&sent, &applied))
    })
}
