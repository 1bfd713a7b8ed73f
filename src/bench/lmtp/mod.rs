//! `gochat bench lmtp`: mails handed over by LMTP, as an MTA does, to an in-process
//! `gochat lmtp` server on loopback over `--connections` connections.
//!
//! Two phases. First the server alone: mails accepted a second (a `250` comes only after
//! the broker confirmed the job) and the per-mail latency an MTA sees. Then with a worker
//! (in process, consuming `inbound-mail` only) on the scratch database: mails a second from
//! the first MAIL to the last committed thread, and each mail's MAIL → commit latency.
//! The mails are small and plain (about 1 KB), as most support mail is: 80 % open
//! threads, 20 % reply to an earlier mail of the run.

mod client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;

use super::measure::{self, Sent as SentJobs};
use super::{quantile_ms, round2};
use crate::config::Config;
use crate::mail::lmtp::{Gateway, Server};
use crate::queue::Names;
use client::{Client, Outgoing, Sent};

#[derive(Debug, Args)]
pub struct LmtpArgs {
    /// Mails in each phase.
    #[arg(long, default_value_t = 20_000)]
    pub mails: usize,
    /// LMTP connections sending at once (an MTA's concurrent deliveries).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Scratch database (default: a temporary SQLite file; the aim is for PostgreSQL).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Mails run through the worker first, unmeasured (see `bench::warm_up`).
    #[arg(long, default_value_t = 2_000)]
    pub warm_up: usize,
}

const SUPPORT: &str = "support@gochat.example";

pub async fn run(mut config: Config, args: LmtpArgs) -> anyhow::Result<()> {
    let (n, connections) = (args.mails.max(1), args.connections.max(1));
    let scratch = tempfile::tempdir().context("temp dir")?;
    let backend = super::isolate(&mut config, args.database_url, scratch.path());
    config.mail.loop_limit = u32::MAX;
    config.amqp.consume = vec!["inbound-mail".into()];
    config.lmtp.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.lmtp.max_connections = connections + 1;
    let names = Names::new(&config.amqp.prefix);
    let conn = Connection::connect(config.amqp.url.expose(), ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {}", config.amqp.url))?;

    let gateway = Arc::new(Gateway::start(&config.amqp));
    let server = Server::bind(&config, gateway.clone()).await?;
    let addr = server.local_addr()?;
    let (stop, listener) = crate::shutdown::channel();
    let serving = tokio::spawn(server.serve(listener));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gateway.is_connected() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the LMTP server's broker connection did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "bench lmtp: {n} mails a phase over {connections} connections to {addr}, database {backend} ({}), broker {}",
        config.database.url, config.amqp.url
    );
    let result = phases(&config, &conn, &names, addr, n, connections, args.warm_up).await;
    stop.trigger();
    let _ = serving.await;
    gateway.close().await;
    super::teardown(&conn, &names, &config).await;
    let report = result?;
    println!("{report}");
    Ok(())
}

async fn phases(
    config: &Config,
    conn: &Connection,
    names: &Names,
    addr: std::net::SocketAddr,
    n: usize,
    connections: usize,
    warm_up: usize,
) -> anyhow::Result<serde_json::Value> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    // Phase 1: the server alone; the queue is emptied after.
    let start = Instant::now();
    let alone = send_all(addr, mails(n, &format!("{run}a")), connections).await?;
    let alone_secs = start.elapsed().as_secs_f64();
    let (alone_ok, mut alone_lat) = accepted(&alone);
    alone_lat.sort();
    let alone_rate = alone_ok as f64 / alone_secs;
    println!(
        "server alone: {alone_rate:.0} mails/s accepted (250 after confirm), p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; {} refused",
        quantile_ms(&alone_lat, 0.5),
        quantile_ms(&alone_lat, 0.99),
        quantile_ms(&alone_lat, 0.999),
        n - alone_ok
    );
    purge(conn, &names.queue("inbound-mail")).await?;

    // Phase 2: with the worker committing threads.
    let worker = super::start_worker(config).await?;
    let threads_before = super::threads_before(&worker.services.store).await?;
    let result = with_worker(&worker, addr, &run, n, connections, warm_up).await;
    let store = worker.services.store.clone();
    worker.stop().await;
    store.close().await;
    let w = result?;
    let [committed, cut, failed] = w.batch_outcomes;
    println!("batches: {committed} committed, {cut} cut at a job, {failed} failed whole");
    println!(
        "with the worker: {:.0} mails/s accepted, {:.0} mails/s to committed threads; MAIL → commit p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; {} refused",
        w.accepted_per_sec,
        w.committed.per_sec,
        w.committed.p50,
        w.committed.p99,
        w.committed.p999,
        w.refused
    );
    Ok(json!({
        "bench": "lmtp", "mails": n, "connections": connections, "database": config_backend(config),
        "threads_before": threads_before,
        "accepted_per_sec": round2(alone_rate),
        "accept_p50_ms": round2(quantile_ms(&alone_lat, 0.5)),
        "accept_p99_ms": round2(quantile_ms(&alone_lat, 0.99)),
        "refused": (n - alone_ok) + w.refused,
        "with_worker": {
            "accepted_per_sec": round2(w.accepted_per_sec),
            "committed_per_sec": round2(w.committed.per_sec),
            "commit_p50_ms": round2(w.committed.p50), "commit_p99_ms": round2(w.committed.p99),
            "commit_p999_ms": round2(w.committed.p999),
            "mean_batch": w.mean_batch.map(round2),
            "batches": {"committed": committed, "cut": cut, "failed": failed},
        },
    }))
}

fn config_backend(config: &Config) -> &'static str {
    if config.database.url.expose().starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    }
}

struct WithWorker {
    accepted_per_sec: f64,
    committed: measure::Figures,
    mean_batch: Option<f64>,
    /// Multi-job batches committed, cut at a job, failed whole (cut and failed ones run
    /// their jobs alone, at the single-job rate).
    batch_outcomes: [u64; 3],
    refused: usize,
}

async fn with_worker(
    worker: &crate::worker::Worker,
    addr: std::net::SocketAddr,
    run: &str,
    n: usize,
    connections: usize,
    warm_up: usize,
) -> anyhow::Result<WithWorker> {
    let metrics = &worker.services.metrics;
    let limit = Duration::from_secs(1800);
    if warm_up > 0 {
        let (sent, _, _) = send_and_wait(
            metrics,
            addr,
            mails(warm_up, &format!("{run}w")),
            connections,
            limit,
        )
        .await?;
        anyhow::ensure!(accepted(&sent).0 == warm_up, "warm-up mails were refused");
        println!("warm-up: {warm_up} mails, not measured; statistics refreshed");
        super::refresh_statistics(&worker.services.store).await;
    }
    let batches = metrics.job_batch_size.with_label_values(&["inbound-mail"]);
    let before = (batches.get_sample_sum(), batches.get_sample_count());
    let outcomes = || {
        ["committed", "cut", "failed"].map(|o| {
            metrics
                .job_batches
                .with_label_values(&["inbound-mail", o])
                .get()
        })
    };
    let outcomes_before = outcomes();
    let (sent, sent_in, committed_in) = send_and_wait(
        metrics,
        addr,
        mails(n, &format!("{run}m")),
        connections,
        limit,
    )
    .await?;
    let (ok, _) = accepted(&sent);
    let jobs: SentJobs = sent
        .iter()
        .filter_map(|s| Some((s.job_id.clone()?, ("inbound-mail", s.at))))
        .collect();
    let applied =
        measure::applied_at(worker.services.store.conn(), "kind = 'inbound-mail'").await?;
    let calls = batches.get_sample_count().saturating_sub(before.1);
    Ok(WithWorker {
        accepted_per_sec: ok as f64 / sent_in.as_secs_f64(),
        committed: measure::figures(n, committed_in, measure::latencies(&jobs, &applied)),
        mean_batch: (calls > 0).then(|| (batches.get_sample_sum() - before.0) / calls as f64),
        batch_outcomes: {
            let after = outcomes();
            [0, 1, 2].map(|i| after[i].saturating_sub(outcomes_before[i]))
        },
        refused: n - ok,
    })
}

/// Sends `mails` while the worker commits them; returns what became of each, when the
/// last reply came and when the worker had acked every accepted one (a refused mail is not
/// waited for: it may never come).
async fn send_and_wait(
    metrics: &crate::metrics::Metrics,
    addr: std::net::SocketAddr,
    mails: Vec<Outgoing>,
    connections: usize,
    limit: Duration,
) -> anyhow::Result<(Vec<Sent>, Duration, Duration)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let acked = metrics.jobs.with_label_values(&["inbound-mail", "acked"]);
    let before = acked.get();
    let expected = AtomicUsize::new(mails.len());
    let start = Instant::now();
    let sending = async {
        let sent = send_all(addr, mails, connections).await?;
        expected.store(accepted(&sent).0, Ordering::SeqCst);
        Ok::<_, anyhow::Error>((sent, start.elapsed()))
    };
    let waiting = async {
        loop {
            let done = acked.get().saturating_sub(before) as usize;
            if done >= expected.load(Ordering::SeqCst) {
                return Ok(start.elapsed());
            }
            anyhow::ensure!(
                start.elapsed() < limit,
                "only {done} mails committed after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let ((sent, sent_in), committed_in) = tokio::try_join!(sending, waiting)?;
    Ok((sent, sent_in, committed_in))
}

/// Mails accepted, and their latencies.
fn accepted(sent: &[Sent]) -> (usize, Vec<Duration>) {
    let lat: Vec<Duration> = sent
        .iter()
        .filter(|s| s.job_id.is_some())
        .map(|s| s.latency)
        .collect();
    (lat.len(), lat)
}

/// Sends `mails` over `connections` connections at once, mail `i` on connection
/// `i % connections`, each connection one mail after the other.
async fn send_all(
    addr: std::net::SocketAddr,
    mails: Vec<Outgoing>,
    connections: usize,
) -> anyhow::Result<Vec<Sent>> {
    let mut shares: Vec<Vec<Outgoing>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, m) in mails.into_iter().enumerate() {
        shares[i % connections].push(m);
    }
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await?;
                let mut out = Vec::with_capacity(share.len());
                for m in &share {
                    out.push(client.send(m).await?);
                }
                client.quit().await;
                Ok::<_, anyhow::Error>(out)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("an LMTP client task")??);
    }
    Ok(all)
}

async fn purge(conn: &Connection, queue: &str) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    ch.queue_purge(queue.into(), Default::default()).await?;
    let _ = ch.close(200, "purged".into()).await;
    Ok(())
}

/// `n` small plain-text mails of run `run`: 80 % open threads, 20 % answer the mail sent
/// nine before, one that opened a thread (from its sender, with `In-Reply-To`). A reply
/// to a reply would come from a stranger to that thread, which the worker sets apart.
fn mails(n: usize, run: &str) -> Vec<Outgoing> {
    (0..n)
        .map(|i| {
            let reply_to = (i % 5 == 4 && i >= 9).then(|| i - 9);
            let who = reply_to.unwrap_or(i);
            let sender = format!("c{who}-{run}@customer.example");
            let mut head = format!(
                "Received: from mx.customer.example (mx.customer.example [192.0.2.{}])\r\n\tby mx.gochat.example (Postfix) with ESMTPS id {run}{i}\r\n\tfor <{SUPPORT}>; Mon, 7 Dec 2026 10:00:00 +0000 (UTC)\r\n\
                 From: Customer {who} <{sender}>\r\nTo: Support <{SUPPORT}>\r\n\
                 Subject: {}order {who}: the printer does not print\r\n\
                 Date: Mon, 7 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{run}-{i}@customer.example>\r\n\
                 MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
                i % 250,
                if reply_to.is_some() { "Re: " } else { "" },
            );
            if let Some(to) = reply_to {
                head.push_str(&format!(
                    "In-Reply-To: <{run}-{to}@customer.example>\r\nReferences: <{run}-{to}@customer.example>\r\n"
                ));
            }
            head.push_str("\r\n");
            head.push_str(
                "Hello,\r\n\r\nsince this morning the printer on the second floor does not print: \
                 the queue shows our jobs as sent, the display says ready, and nothing comes out.\r\n\
                 We restarted it twice and checked the paper and the toner. Could you have a look\r\n\
                 or tell us what to try next? The order number is in the subject.\r\n\r\n\
                 Thank you,\r\n-- \r\nA customer\r\n",
            );
            Outgoing {
                sender,
                recipient: SUPPORT.into(),
                raw: head.into_bytes(),
            }
        })
        .collect()
}
