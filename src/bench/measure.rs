//! The measurement the job benches share: publish jobs with confirms while the worker runs,
//! wait until every one is applied, and read each job's latency from publish to the commit
//! of its effects (`processed_jobs.processed_at`).

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
}

pub fn figures(n: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Figures {
    latencies.sort();
    Figures {
        per_sec: n as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        p50: quantile_ms(&latencies, 0.5),
        p99: quantile_ms(&latencies, 0.99),
        p999: quantile_ms(&latencies, 0.999),
    }
}

/// One job to publish: its message id (which must start with the run's prefix), its kind
/// (one kind per run) and its body.
pub struct BenchJob {
    pub id: String,
    pub kind: &'static str,
    pub body: Vec<u8>,
}

/// Publishes `jobs` in confirmed batches of 500 while the worker consumes them, and waits
/// until all are applied: the rate is jobs / (last commit − first publish).
pub async fn publish_and_wait(
    conn: &Connection,
    names: &Names,
    db: &DatabaseConnection,
    jobs: Vec<BenchJob>,
    id_prefix: &str,
    confirm: Duration,
) -> anyhow::Result<Figures> {
    let n = jobs.len();
    // Follow-up jobs (an acknowledgement's id extends its mail's) are not this run's.
    let kind = jobs.first().map_or("", |j| j.kind);
    let publisher = Publisher::open(conn, confirm).await?;
    let exchange = names.jobs_exchange();
    let start = Instant::now();
    let started_at = Utc::now();
    let publishing = tokio::spawn(async move {
        let mut sent = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(500) {
            let msgs: Vec<Outgoing> = chunk
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
            let at = start.elapsed();
            for (m, r) in msgs.iter().zip(publisher.publish_all(&msgs).await) {
                r?;
                sent.push((m.message_id.clone(), at));
            }
        }
        publisher.close().await;
        anyhow::Ok(sent)
    });
    let backend = db.get_database_backend();
    // Only this run's jobs: a reused bench database holds earlier runs' rows.
    let mine = format!("message_id LIKE '{id_prefix}%' AND kind = '{kind}'");
    let count = Statement::from_string(
        backend,
        format!("SELECT COUNT(*) AS n FROM processed_jobs WHERE {mine}"),
    );
    loop {
        let done: i64 = db
            .query_one_raw(count.clone())
            .await?
            .map(|r| r.try_get("", "n"))
            .transpose()?
            .unwrap_or(0);
        if done as usize >= n {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(1800),
            "only {done} of {n} jobs done after 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let sent_at: HashMap<String, Duration> = publishing.await??.into_iter().collect();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            format!("SELECT message_id, processed_at FROM processed_jobs WHERE {mine}"),
        ))
        .await?;
    let mut latencies = Vec::with_capacity(n);
    for r in rows {
        let id: String = r.try_get("", "message_id")?;
        let at: DateTime<Utc> = r.try_get("", "processed_at")?;
        if let Some(sent) = sent_at.get(&id) {
            let done = (at - started_at).to_std().unwrap_or_default();
            latencies.push(done.saturating_sub(*sent));
        }
    }
    Ok(figures(n, elapsed, latencies))
}
