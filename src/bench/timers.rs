//! `gochat bench timers`: the durable timer scheduler with many future timers stored.
//!
//! 1. Claim cost: M timers already due are claimed (and their jobs written to the outbox)
//!    by the scheduler's own `tick`, first with no other timer stored, then with N future
//!    timers stored. Equal times show the claim follows the number due, not the number
//!    stored.
//! 2. Firing delay: M timers fall due over a few seconds while `gochat run`'s scheduler and
//!    relay run at the configured interval; the delay is due time → job confirmed by the
//!    broker (the outbox row's `published_at`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use gochat_entities::threads::ThreadStatus;
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement};
use serde_json::json;

use super::{quantile_ms, round2};
use crate::clock::SystemClock;
use crate::config::{Config, SecretUrl};
use crate::metrics::Metrics;
use crate::queue::Names;
use crate::queue::relay::RelayWaker;
use crate::scheduler::Scheduler;
use crate::services::Services;
use crate::store::threads::{self, NewThread};
use crate::store::{Store, timers};

#[derive(Debug, Args)]
pub struct TimersArgs {
    /// Future timers stored.
    #[arg(long, default_value_t = 1_000_000)]
    pub stored: u64,
    /// Timers falling due.
    #[arg(long, default_value_t = 1_000)]
    pub due: usize,
    /// Scratch database (default: a temporary SQLite file). Migrated if needed.
    #[arg(long)]
    pub database_url: Option<String>,
}

pub async fn run(mut config: Config, args: TimersArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("temp dir")?;
    let url = super::scratch_database_url(args.database_url, scratch.path());
    config.database.url = SecretUrl::new(url);
    config.database.auto_migrate = true;
    config.amqp.prefix = format!("bench{}.", uuid::Uuid::now_v7().simple());
    // No job workflows: only the scheduler and the relay run.
    std::fs::create_dir_all(scratch.path().join("workflows/jobs"))?;
    config.workflows.dir = scratch.path().join("workflows");
    let store = Store::connect(&config.database).await?;
    store.ensure_schema(true).await?;
    let backend = store.conn().get_database_backend();
    println!(
        "bench timers: {} stored, {} due, database {}, scheduler every {:?} (batch {})",
        args.stored,
        args.due,
        if backend == DbBackend::Postgres {
            "postgres"
        } else {
            "sqlite"
        },
        config.scheduler.interval,
        config.scheduler.batch
    );
    let now = Utc::now();
    let thread = threads::create(
        store.conn(),
        NewThread::new("bench", ThreadStatus::Reminder, Vec::new()),
        &json!({"kind": "system"}),
        now,
    )
    .await?;
    let services = Arc::new(Services {
        config: config.clone(),
        store: store.clone(),
        clock: Arc::new(SystemClock),
        metrics: Metrics::new(&crate::workflow::Registry::builtin().names())?,
        instance: "bench".into(),
        smtp: crate::mail::smtp::Smtp::new(&config.smtp.url, config.smtp.timeout, 1)
            .map_err(|e| anyhow::anyhow!(e))?,
    });
    let scheduler = Scheduler {
        services: services.clone(),
        names: Names::new(&config.amqp.prefix),
        relay: RelayWaker::default(),
    };

    // 1. Claim cost with nothing else stored, then with N future timers.
    let claim_empty = claim_all(&scheduler, &store, &thread, args.due).await?;
    let started = Instant::now();
    store_future_timers(&store, &thread, args.stored).await?;
    println!(
        "stored {} future timers in {:.1} s",
        args.stored,
        started.elapsed().as_secs_f64()
    );
    let claim_full = claim_all(&scheduler, &store, &thread, args.due).await?;
    println!(
        "claim + outbox write of {} due timers: {:.1} ms with 0 stored, {:.1} ms with {} stored",
        args.due, claim_empty, claim_full, args.stored
    );

    // 2. Live firing delay under the real scheduler and relay.
    let worker = super::start_worker(&config).await?;
    let spread = chrono::Duration::seconds(5);
    let start = Utc::now() + chrono::Duration::seconds(1);
    let mut due_at = HashMap::new();
    for i in 0..args.due {
        let at = start + spread * i as i32 / args.due.max(1) as i32;
        let t = timers::schedule(store.conn(), &thread, 1, at, Utc::now()).await?;
        due_at.insert(t.id.to_string(), at);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let delays = loop {
        let rows = gochat_entities::outbox::Entity::find()
            .filter(gochat_entities::outbox::Column::RoutingKey.eq("delayed-reminder"))
            .filter(gochat_entities::outbox::Column::PublishedAt.is_not_null())
            .all(store.conn())
            .await?;
        let mut delays: Vec<Duration> = rows
            .iter()
            .filter_map(|r| {
                let due = due_at.get(&r.message_id)?;
                (r.published_at? - *due).to_std().ok()
            })
            .collect();
        if delays.len() >= args.due || Instant::now() > deadline {
            delays.sort();
            break delays;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    worker.stop().await;
    let conn = lapin::Connection::connect(
        config.amqp.url.expose(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    super::teardown(&conn, &Names::new(&config.amqp.prefix), &config).await;
    let _ = conn.close(200, "done".into()).await;

    let (p50, p99) = (quantile_ms(&delays, 0.5), quantile_ms(&delays, 0.99));
    println!(
        "firing delay (due → job confirmed by the broker) of {} timers: p50 {p50:.1} ms, p99 {p99:.1} ms",
        delays.len()
    );
    if delays.len() < args.due {
        println!(
            "WARNING: only {} of {} timers fired within 2 minutes",
            delays.len(),
            args.due
        );
    }
    println!(
        "{}",
        json!({
            "bench": "timers",
            "database": if backend == DbBackend::Postgres { "postgres" } else { "sqlite" },
            "stored": args.stored,
            "due": args.due,
            "fired": delays.len(),
            "claim_ms_0_stored": round2(claim_empty),
            "claim_ms_n_stored": round2(claim_full),
            "firing_delay_p50_ms": round2(p50),
            "firing_delay_p99_ms": round2(p99),
            "scheduler_interval_ms": config.scheduler.interval.as_millis() as u64,
        })
    );
    Ok(())
}

/// Stores `due` timers due a minute ago and times the scheduler claiming them all (with
/// their outbox rows); then cancels them and empties the outbox for the next phase.
async fn claim_all(
    scheduler: &Scheduler,
    store: &Store,
    thread: &gochat_entities::threads::Model,
    due: usize,
) -> anyhow::Result<f64> {
    let past = Utc::now() - chrono::Duration::minutes(1);
    for _ in 0..due {
        timers::schedule(store.conn(), thread, 1, past, Utc::now()).await?;
    }
    let started = Instant::now();
    let mut claimed = 0;
    while claimed < due {
        let n = scheduler.tick().await?;
        if n == 0 {
            anyhow::bail!("only {claimed} of {due} due timers were claimed");
        }
        claimed += n;
    }
    if claimed != due {
        anyhow::bail!("claimed {claimed} timers, but only {due} were due");
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    timers::cancel_for_thread(store.conn(), thread.id).await?;
    gochat_entities::outbox::Entity::delete_many()
        .exec(store.conn())
        .await?;
    Ok(ms)
}

/// Inserts `n` timers due in 30 days and later, in the database itself (a million rows
/// through the ORM would take longer than the measurement).
pub(super) async fn store_future_timers(
    store: &Store,
    thread: &gochat_entities::threads::Model,
    n: u64,
) -> anyhow::Result<()> {
    let db = store.conn();
    let backend = db.get_database_backend();
    let base = Utc::now() + chrono::Duration::days(30);
    let mut left = n;
    while left > 0 {
        let chunk = left.min(100_000);
        let sql = match backend {
            DbBackend::Postgres => format!(
                "INSERT INTO timers (id, thread_id, lifecycle, step, due_at, expected_status, \
                 expected_version, state, created_at) \
                 SELECT gen_random_uuid(), $1, 'default', 1, $2::timestamptz + g * interval '1 second', \
                 'reminder', 1, 'pending', $3 FROM generate_series(1, {chunk}) AS g"
            ),
            // Every future timer gets the same far due time: SQLite compares the stored
            // text, and only the bound value is sure to be in the stored format.
            _ => format!(
                "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {chunk}) \
                 INSERT INTO timers (id, thread_id, lifecycle, step, due_at, expected_status, \
                 expected_version, state, created_at) \
                 SELECT randomblob(16), ?, 'default', 1, ?, 'reminder', 1, 'pending', ? FROM g"
            ),
        };
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [thread.id.into(), base.into(), Utc::now().into()],
        ))
        .await?;
        left -= chunk;
    }
    Ok(())
}
