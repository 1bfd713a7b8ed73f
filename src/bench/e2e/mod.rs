//! `gochat bench e2e`: the whole worker under a realistic mix (see [`load`]), as a real
//! `gochat run` process on the configured broker and database with an SMTP sink on
//! loopback: first at a fixed rate, then as fast as it goes; reminders falling due meanwhile
//! with a million future timers stored; then the worker's memory with a backlog of a
//! million jobs waiting in the broker. The same run measures the raw broker as a baseline.

pub(crate) mod cpu;
mod load;
pub(crate) mod process;
mod seed;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use lapin::{Connection, ConnectionProperties};
use serde_json::{Value, json};

use super::measure::{self, BenchJob, Sent};
use super::{quantile_ms, round2};
use crate::config::{Config, SecretUrl};
use crate::queue::{Names, Outgoing, Publisher, topology};
use crate::store::Store;
use process::WorkerProcess;

#[derive(Debug, Args)]
pub struct E2eArgs {
    /// Jobs a second in the fixed-rate phase.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Length of the fixed-rate phase, in seconds.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Jobs in the maximum-rate phase.
    #[arg(long, default_value_t = 20_000)]
    pub burst: usize,
    /// Threads the load works on.
    #[arg(long, default_value_t = 2_000)]
    pub threads: usize,
    /// Future timers stored during the run.
    #[arg(long, default_value_t = 1_000_000)]
    pub timers: u64,
    /// Reminders falling due during the fixed-rate phase.
    #[arg(long, default_value_t = 1_000)]
    pub reminders: usize,
    /// Jobs waiting in the broker for the memory phase (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: usize,
    /// Scratch database (default: a temporary SQLite file; the aims are for PostgreSQL).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Threads of the worker's runtime (default: `runtime.worker_threads`, else one per
    /// core).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// The corpus folder inbound mails are made from.
    #[arg(long, default_value = "tests/data/corpus")]
    pub corpus: PathBuf,
}

const KINDS: &[&str] = &[
    "inbound-mail",
    "outbound-message",
    "status-transition",
    "thread-update",
];

pub async fn run(mut config: Config, args: E2eArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("temp dir")?;
    let url = super::scratch_database_url(args.database_url.clone(), scratch.path());
    config.database.url = SecretUrl::new(url);
    if let Some(n) = args.worker_threads {
        anyhow::ensure!(n > 0, "--worker-threads must be at least 1");
        config.runtime.worker_threads = Some(n);
    }
    config.amqp.prefix = format!("bench{}.", uuid::Uuid::now_v7().simple());
    let names = Names::new(&config.amqp.prefix);
    let store = Store::connect(&config.database).await?;
    store.ensure_schema(true).await?;
    let backend = format!("{:?}", store.backend()).to_lowercase();
    let threads_before = super::threads_before(&store).await?;
    let conn = Connection::connect(config.amqp.url.expose(), ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {}", config.amqp.url))?;
    println!(
        "bench e2e: database {backend} ({}), broker {}, worker threads {}",
        config.database.url,
        config.amqp.url,
        config
            .runtime
            .worker_threads
            .map_or("one per core".to_owned(), |n| n.to_string())
    );

    let baseline = super::runtime::baseline(&conn, &names, 20_000, config.amqp.prefetch).await?;
    println!("raw broker baseline: {:.0} msg/s", baseline.per_sec);

    let run = uuid::Uuid::now_v7().simple().to_string();
    let t = Instant::now();
    let pool = seed::pool(&store, args.threads.max(1), &run).await?;
    let fixed = (args.rate * args.seconds as f64).round() as usize;
    if let Some(first) = pool.first() {
        let placeholder = crate::store::threads::get(store.conn(), first.id).await?;
        super::timers::store_future_timers(&store, &placeholder, args.timers).await?;
    }
    super::refresh_statistics(&store).await;
    println!(
        "seeded {} threads and {} future timers in {:.1} s",
        pool.len(),
        args.timers,
        t.elapsed().as_secs_f64()
    );

    let (normal, _) = super::inbound::corpus(&args.corpus)?;
    let mix = load::Mix {
        run: &run,
        pool: &pool,
        mails: &normal,
    };
    let delivered = Arc::new(AtomicUsize::new(0));
    let smtp_port = super::sink::start(delivered.clone()).await?;
    let env = worker_env(&config, smtp_port)?;
    let worker = WorkerProcess::start(&env, &scratch.path().join("worker.log")).await?;

    // The reminders fall due over the fixed-rate phase, counted from when they exist and the
    // worker runs: due times fixed earlier would be past before anyone could fire them, and
    // the figure would measure the bench's own start-up and seeding.
    let timers = seed::reminders(&store, args.reminders, &run).await?;
    let start = Utc::now() + chrono::Duration::seconds(2);
    let span = chrono::Duration::seconds(args.seconds.max(4) as i64 - 3);
    let reminders: Vec<_> = timers
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, start + span * i as i32 / args.reminders.max(1) as i32))
        .collect();
    seed::set_due(&store, &reminders).await?;
    println!(
        "{} reminders due during the fixed-rate phase",
        reminders.len()
    );

    // Fixed rate, then as fast as it goes.
    let started = Utc::now();
    let jobs: Vec<BenchJob> = (0..fixed).map(|i| mix.job(i)).collect();
    let sent_fixed = measure::publish(
        &conn,
        &names,
        jobs,
        Some(args.rate),
        config.amqp.confirm_timeout,
    )
    .await?;
    let mine = format!("message_id LIKE 'e2e-{run}-%' AND message_id NOT LIKE '%:%'");
    // The fixed-rate phase took the tables from empty to thousands of rows. Autovacuum
    // would have analysed them many times over by now (its threshold: 50 rows + 10 %);
    // without it, the worker's plans stay costed for empty tables (sequential scans of the
    // processed jobs and raw mails on every lookup) and the burst measures that instead.
    wait_settled(&conn, &names, &store, &mine, fixed).await?;
    super::refresh_statistics(&store).await;
    let jobs: Vec<BenchJob> = (fixed..fixed + args.burst).map(|i| mix.job(i)).collect();
    let batches_before = worker.metrics().await.map(|m| batch_sizes(&m));
    let sampler = cpu::Sampler::start(worker.pid(), Duration::from_millis(250));
    let burst_start = Utc::now();
    let sent_burst =
        measure::publish(&conn, &names, jobs, None, config.amqp.confirm_timeout).await?;
    let dead = wait_settled(&conn, &names, &store, &mine, fixed + args.burst).await?;
    let batches_after = worker.metrics().await.map(|m| batch_sizes(&m));
    let applied = measure::applied_at(store.conn(), &mine).await?;
    let inbound: Vec<&String> = sent_burst
        .iter()
        .filter(|(_, (kind, _))| *kind == "inbound-mail")
        .map(|(id, _)| id)
        .collect();
    let inbound_done = inbound.iter().filter_map(|id| applied.get(*id)).max();
    let cpu = inbound_done.and_then(|until| sampler.split_until(*until));
    drop(sampler);
    let firing = firing_delays(&store, &reminders).await?;
    let peak_rss = worker.peak_rss();
    worker.stop()?;
    // Read now: the backlog phase's worker delivers to the same sink.
    let mails_delivered = delivered.load(Ordering::Relaxed);
    let total_secs = (Utc::now() - started).num_milliseconds() as f64 / 1000.0;

    let mut report = BTreeMap::new();
    let mut burst_batches = Vec::new();
    for kind in KINDS {
        let fixed_fig = phase(&sent_fixed, &applied, kind, None);
        let max_fig = phase(&sent_burst, &applied, kind, Some(burst_start));
        println!(
            "{kind:18} fixed {:>5.0}/s p50 {:>8.1} p99 {:>8.1} p999 {:>8.1} ms | max {:>6.0}/s p50 {:>8.1} p99 {:>8.1} p999 {:>8.1} ms",
            fixed_fig.per_sec,
            fixed_fig.p50,
            fixed_fig.p99,
            fixed_fig.p999,
            max_fig.per_sec,
            max_fig.p50,
            max_fig.p99,
            max_fig.p999
        );
        let mean_batch = batches_before
            .as_ref()
            .zip(batches_after.as_ref())
            .and_then(|(before, after)| mean_batch(before, after, kind));
        report.insert(
            kind.replace('-', "_"),
            json!({"fixed": fig_json(&fixed_fig), "max": fig_json(&max_fig),
                   "max_mean_batch": mean_batch.map(round2)}),
        );
        burst_batches.push(match mean_batch {
            Some(m) => format!("{kind} {m:.1}"),
            None => format!("{kind} -"),
        });
    }
    println!(
        "jobs per transaction in the max phase: {}",
        burst_batches.join(", ")
    );
    let per_mail = |c: &cpu::Split| c.busy_seconds * 1000.0 / inbound.len().max(1) as f64;
    // The cost per mail in speed probes: less swayed than milliseconds by how fast the
    // host runs this guest at the moment (see `cpu`).
    let per_mail_probes = |c: &cpu::Split| c.probe_us.map(|p| per_mail(c) * 1000.0 / p);
    match &cpu {
        Some(split) => println!(
            "CPU from the max phase's start to its last inbound-mail commit: {split}; {:.2} ms of busy CPU per inbound mail{}",
            per_mail(split),
            per_mail_probes(split)
                .map(|p| format!(" ({p:.2} probes)"))
                .unwrap_or_default()
        ),
        None => println!("CPU in the max phase: not measured (no Linux /proc)"),
    }
    report.insert(
        "max_cpu".into(),
        cpu.map_or(Value::Null, |c| {
            let mut o = serde_json::Map::new();
            o.insert("seconds".into(), json!(round2(c.seconds)));
            o.insert("busy".into(), json!(round2(c.busy)));
            o.insert("steal".into(), json!(round2(c.steal)));
            o.insert("ms_per_inbound_mail".into(), json!(round2(per_mail(&c))));
            o.insert("probe_us".into(), json!(c.probe_us.map(round2)));
            o.insert(
                "probes_per_inbound_mail".into(),
                json!(per_mail_probes(&c).map(round2)),
            );
            for (name, share) in c.groups {
                o.insert(name.into(), json!(round2(share)));
            }
            Value::Object(o)
        }),
    );
    let (fire_p50, fire_p99) = (quantile_ms(&firing, 0.5), quantile_ms(&firing, 0.99));
    println!(
        "reminders: {} of {} fired, delay p50 {fire_p50:.0} ms, p99 {fire_p99:.0} ms ({} future timers stored); {} mails delivered; {dead} dead letters; worker peak RSS {} MB; {total_secs:.1} s",
        firing.len(),
        reminders.len(),
        args.timers,
        mails_delivered,
        peak_rss / (1024 * 1024)
    );

    let backlog_rss = if args.backlog > 0 {
        let rss = backlog_memory(
            &conn,
            &names,
            &env,
            &pool,
            args.backlog,
            &scratch.path().join("backlog.log"),
            &config,
        )
        .await?;
        println!(
            "worker peak RSS while consuming a backlog of {} jobs: {} MB",
            args.backlog,
            rss / (1024 * 1024)
        );
        Some(rss)
    } else {
        None
    };
    super::teardown(&conn, &names, &config).await;
    store.close().await;
    report.insert("bench".into(), json!("e2e"));
    report.insert("database".into(), json!(backend));
    report.insert("threads_before".into(), json!(threads_before));
    report.insert("rate".into(), json!(args.rate));
    report.insert("fixed_jobs".into(), json!(fixed));
    report.insert("max_jobs".into(), json!(args.burst));
    report.insert("dead_letters".into(), json!(dead));
    report.insert("baseline_per_sec".into(), json!(round2(baseline.per_sec)));
    report.insert("reminders_fired".into(), json!(firing.len()));
    report.insert("reminder_delay_p50_ms".into(), json!(round2(fire_p50)));
    report.insert("reminder_delay_p99_ms".into(), json!(round2(fire_p99)));
    report.insert("future_timers".into(), json!(args.timers));
    report.insert("mails_delivered".into(), json!(mails_delivered));
    report.insert(
        "peak_rss_mb".into(),
        json!(round2(peak_rss as f64 / 1048576.0)),
    );
    report.insert("backlog".into(), json!(args.backlog));
    report.insert(
        "worker_threads".into(),
        json!(config.runtime.worker_threads),
    );
    report.insert(
        "backlog_peak_rss_mb".into(),
        json!(backlog_rss.map(|r| round2(r as f64 / 1048576.0))),
    );
    println!("{}", Value::Object(report.into_iter().collect()));
    Ok(())
}

/// The `gochat run` process's overrides: this run's database, broker prefix and SMTP sink.
fn worker_env(config: &Config, smtp_port: u16) -> anyhow::Result<Vec<(&'static str, String)>> {
    let workflows = std::fs::canonicalize(&config.workflows.dir)
        .with_context(|| format!("workflows folder {}", config.workflows.dir.display()))?;
    Ok([
        (
            "GOCHAT_DATABASE_URL",
            config.database.url.expose().to_owned(),
        ),
        ("GOCHAT_AMQP_URL", config.amqp.url.expose().to_owned()),
        ("GOCHAT_AMQP_PREFIX", config.amqp.prefix.clone()),
        ("GOCHAT_SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}")),
        ("GOCHAT_WORKFLOWS", workflows.display().to_string()),
    ]
    .into_iter()
    .chain(
        config
            .runtime
            .worker_threads
            .map(|n| ("GOCHAT_WORKER_THREADS", n.to_string())),
    )
    .collect())
}

/// Each job kind's `(sum, count)` of `gochat_job_batch_size` in a `/metrics` text: how many
/// jobs the worker's transactions held, read from the child process it is.
fn batch_sizes(metrics: &str) -> HashMap<String, (f64, f64)> {
    let mut out: HashMap<String, (f64, f64)> = HashMap::new();
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (labels, is_sum) = if let Some(l) = series.strip_prefix("gochat_job_batch_size_sum{") {
            (l, true)
        } else if let Some(l) = series.strip_prefix("gochat_job_batch_size_count{") {
            (l, false)
        } else {
            continue;
        };
        let Some(kind) = labels
            .split_once("kind=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(kind, _)| kind)
        else {
            continue;
        };
        let entry = out.entry(kind.to_owned()).or_default();
        if is_sum {
            entry.0 = value;
        } else {
            entry.1 = value;
        }
    }
    out
}

/// Jobs per transaction of `kind` between two readings of [`batch_sizes`]; none if it ran
/// no batch in between.
fn mean_batch(
    before: &HashMap<String, (f64, f64)>,
    after: &HashMap<String, (f64, f64)>,
    kind: &str,
) -> Option<f64> {
    let (s0, c0) = before.get(kind).copied().unwrap_or_default();
    let (s1, c1) = after.get(kind).copied()?;
    (c1 > c0).then(|| (s1 - s0) / (c1 - c0))
}

fn fig_json(f: &measure::Figures) -> Value {
    json!({"per_sec": round2(f.per_sec), "p50_ms": round2(f.p50), "p99_ms": round2(f.p99), "p999_ms": round2(f.p999)})
}

/// One kind's figures in one phase. Fixed rate: its rate is the publishing rate's share;
/// max rate: jobs / (its last commit − the phase's start).
fn phase(
    sent: &Sent,
    applied: &HashMap<String, chrono::DateTime<Utc>>,
    kind: &str,
    since: Option<chrono::DateTime<Utc>>,
) -> measure::Figures {
    let of_kind: Sent = sent
        .iter()
        .filter(|(_, (k, _))| *k == kind)
        .map(|(id, v)| (id.clone(), *v))
        .collect();
    let first = of_kind.values().map(|(_, at)| *at).min();
    let last = of_kind
        .keys()
        .filter_map(|id| applied.get(id))
        .max()
        .copied();
    let elapsed = match (since.or(first), last) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    };
    measure::figures(
        of_kind.len(),
        elapsed,
        measure::latencies(&of_kind, applied),
    )
}

/// Waits until every published job is applied or dead-lettered; returns the dead letters.
///
/// The database is counted only once the job queues hold nothing ready: counting the
/// processed jobs is a scan of a growing table, and polling it through the burst loaded
/// the very database whose throughput the burst measures.
async fn wait_settled(
    conn: &Connection,
    names: &Names,
    store: &Store,
    filter: &str,
    n: usize,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    let ch = conn.create_channel().await?;
    loop {
        let mut ready = 0;
        for kind in KINDS {
            ready += topology::depth(&ch, &names.queue(kind)).await?;
        }
        let dead = topology::depth(&ch, &names.dead_letters()).await? as usize;
        if ready == 0
            && measure::wait_applied(store.conn(), filter, n.saturating_sub(dead), Duration::ZERO)
                .await
                .is_ok()
        {
            let _ = ch.close(200, "done".into()).await;
            return Ok(dead);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "jobs still unsettled after 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Due → `delayed-reminder` job confirmed by the broker, for each seeded reminder that fired.
async fn firing_delays(
    store: &Store,
    reminders: &[(uuid::Uuid, chrono::DateTime<Utc>)],
) -> anyhow::Result<Vec<Duration>> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = gochat_entities::outbox::Entity::find()
            .filter(gochat_entities::outbox::Column::RoutingKey.eq("delayed-reminder"))
            .filter(gochat_entities::outbox::Column::PublishedAt.is_not_null())
            .all(store.conn())
            .await?;
        let published: HashMap<String, chrono::DateTime<Utc>> = rows
            .into_iter()
            .filter_map(|r| r.published_at.map(|p| (r.message_id, p)))
            .collect();
        let mut delays: Vec<Duration> = reminders
            .iter()
            .filter_map(|(id, due)| {
                published
                    .get(&id.to_string())
                    .map(|p| (*p - *due).to_std().unwrap_or_default())
            })
            .collect();
        if delays.len() == reminders.len() || Instant::now() > deadline {
            delays.sort();
            return Ok(delays);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Queues `n` jobs while no worker runs, then starts one and reads its peak RSS after it
/// consumed for a while: memory must not grow with what waits in the broker.
async fn backlog_memory(
    conn: &Connection,
    names: &Names,
    env: &[(&'static str, String)],
    pool: &[seed::PoolThread],
    n: usize,
    log: &std::path::Path,
    config: &Config,
) -> anyhow::Result<u64> {
    let publisher = Publisher::open(conn, config.amqp.confirm_timeout).await?;
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let msgs: Vec<Outgoing> = chunk
            .iter()
            .map(|i| {
                let t = &pool[i % pool.len()];
                let body = json!({"schema": "thread-update/v1", "thread_id": t.id,
                                  "actor": {"kind": "system"}, "comment": format!("backlog {i}")});
                Outgoing::json(
                    names.jobs_exchange(),
                    "thread-update".into(),
                    format!("backlog-{i}-{}", uuid::Uuid::now_v7().simple()),
                    body.to_string().into_bytes(),
                )
            })
            .collect();
        for r in publisher.publish_all(&msgs).await {
            r?;
        }
    }
    publisher.close().await;
    println!(
        "queued a backlog of {n} jobs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let worker = WorkerProcess::start(env, log).await?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let rss = worker.peak_rss();
    worker.stop()?;
    Ok(rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_per_transaction_come_from_two_scrapes_of_the_batch_size_histogram() {
        let scrape = |inbound_sum: u32, inbound_count: u32| {
            format!(
                "# HELP gochat_job_batch_size Jobs a batch held.\n\
                 # TYPE gochat_job_batch_size histogram\n\
                 gochat_job_batch_size_bucket{{kind=\"inbound-mail\",le=\"1\"}} 3\n\
                 gochat_job_batch_size_sum{{kind=\"inbound-mail\"}} {inbound_sum}\n\
                 gochat_job_batch_size_count{{kind=\"inbound-mail\"}} {inbound_count}\n\
                 gochat_job_batch_size_sum{{kind=\"thread-update\"}} 40\n\
                 gochat_job_batch_size_count{{kind=\"thread-update\"}} 4\n\
                 gochat_jobs_total{{kind=\"inbound-mail\"}} 999\n"
            )
        };
        let before = batch_sizes(&scrape(100, 20));
        assert_eq!(before.get("inbound-mail"), Some(&(100.0, 20.0)));
        let after = batch_sizes(&scrape(1_100, 40));
        assert_eq!(mean_batch(&before, &after, "inbound-mail"), Some(50.0));
        // No batch in between, or a kind never seen: no figure, not a division by zero.
        assert_eq!(mean_batch(&before, &after, "thread-update"), None);
        assert_eq!(mean_batch(&before, &after, "status-transition"), None);
        // A kind first seen after the start counts from zero.
        assert_eq!(
            mean_batch(&HashMap::new(), &after, "thread-update"),
            Some(10.0)
        );
    }
}
