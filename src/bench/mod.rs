//! `gochat bench <name>`: measurements, run in a release build. Each prints readable lines
//! and, last, one JSON object with the figures (for `docs/BENCHMARKS.md` and CI trends).

pub mod api;
pub mod e2e;
pub mod hostile;
pub mod inbound;
pub mod lmtp;
pub mod measure;
pub mod outbound;
pub mod runtime;
pub mod sink;
pub mod timers;

/// A figure rounded to two decimals for the JSON line.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The database a bench writes into: `url` if given, else a SQLite file in `scratch`.
pub fn scratch_database_url(url: Option<String>, scratch: &std::path::Path) -> String {
    url.unwrap_or_else(|| format!("sqlite://{}/bench.db?mode=rwc", scratch.display()))
}

/// Points `config` at the bench's own world: the scratch database (migrated on start) and
/// a broker prefix of its own. Returns the database's kind, for the report.
pub fn isolate(
    config: &mut crate::config::Config,
    url: Option<String>,
    scratch: &std::path::Path,
) -> &'static str {
    config.database.url = crate::config::SecretUrl::new(scratch_database_url(url, scratch));
    config.database.auto_migrate = true;
    config.amqp.prefix = format!("bench{}.", uuid::Uuid::now_v7().simple());
    if config.database.url.expose().starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    }
}

/// Starts an in-process worker on the system clock and waits until it is connected.
pub async fn start_worker(config: &crate::config::Config) -> anyhow::Result<crate::worker::Worker> {
    use anyhow::Context;
    let worker = crate::worker::Worker::start(
        config.clone(),
        std::sync::Arc::new(crate::clock::SystemClock),
        crate::metrics::Metrics::new(&crate::workflow::Registry::builtin().names())?,
    )
    .await?;
    worker
        .broker
        .connected(std::time::Duration::from_secs(10))
        .await
        .context("worker did not connect")?;
    refresh_statistics(&worker.services.store).await;
    Ok(worker)
}

/// Runs `jobs` through the worker unmeasured, then refreshes the statistics, so the
/// measured run sees the steady state. On an empty database the statistics say "empty": the
/// worker's prepared statements get generic plans costed for empty tables (sequential
/// scans), and with autovacuum off nothing replaces them while the tables grow.
pub(crate) async fn warm_up(
    conn: &lapin::Connection,
    names: &crate::queue::Names,
    worker: &crate::worker::Worker,
    jobs: Vec<measure::BenchJob>,
    id_prefix: &str,
    confirm: std::time::Duration,
) -> anyhow::Result<()> {
    let n = jobs.len();
    if n > 0 {
        measure::publish_and_wait(conn, names, worker, jobs, id_prefix, confirm).await?;
        println!("warm-up: {n} jobs run, not measured; statistics refreshed");
        refresh_statistics(&worker.services.store).await;
    }
    Ok(())
}

/// Threads the scratch database held before this run, with a note when it is not empty.
/// `--database-url` keeps what earlier runs stored (the bench migrates, it never empties),
/// and a database grown run after run measures differently from a new one: the report
/// carries the count so figures from the two are not compared as one.
pub(crate) async fn threads_before(store: &crate::store::Store) -> anyhow::Result<u64> {
    use sea_orm::{EntityTrait, PaginatorTrait};
    let n = gochat_entities::threads::Entity::find()
        .count(store.conn())
        .await?;
    if n > 0 {
        println!(
            "note: the scratch database already holds {n} threads from earlier runs; for figures comparable with a new database, drop and create it first"
        );
    }
    Ok(n)
}

/// On PostgreSQL, refresh the scratch database's statistics before measuring. Its planner
/// works from statistics that autovacuum keeps fresh, and autovacuum clears the dead rows
/// the outbox's updates leave. On a server running without it (CI images turn it off), a
/// scratch database grown by earlier runs is never analysed nor vacuumed, and point lookups
/// get parallel plans that slow the bench down. So: `ANALYZE`, or
/// `VACUUM ANALYZE` when autovacuum is off, saying so (production must not run like that).
pub(crate) async fn refresh_statistics(store: &crate::store::Store) {
    use sea_orm::ConnectionTrait;
    if store.backend() != sea_orm::DbBackend::Postgres {
        return;
    }
    let db = store.conn();
    let autovacuum = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT current_setting('autovacuum') AS v",
        ))
        .await
        .ok()
        .flatten()
        .and_then(|r| r.try_get::<String>("", "v").ok());
    let sql = if autovacuum.as_deref() == Some("off") {
        println!(
            "note: this PostgreSQL runs with autovacuum off; vacuuming and analysing the scratch database first (production needs autovacuum on)"
        );
        "VACUUM ANALYZE"
    } else {
        "ANALYZE"
    };
    if let Err(e) = db.execute_unprepared(sql).await {
        println!("note: {sql} failed: {e}");
    }
}

/// Deletes the bench's queues and exchanges (its own prefix) and its unpublished outbox
/// rows, saying so if it cannot. Opens its own database connection: the worker's closed
/// with the worker.
pub async fn teardown(
    conn: &lapin::Connection,
    names: &crate::queue::Names,
    config: &crate::config::Config,
) {
    if let Err(e) = crate::queue::topology::delete(conn, names, &config.amqp).await {
        eprintln!(
            "gochat: could not delete the bench queues of prefix {}: {e}",
            names.prefix()
        );
    }
    // Rows still unpublished would address exchanges that are now gone; left behind, every
    // later run's relay would have to set them aside again.
    let forgotten = async {
        let store = crate::store::Store::connect(&config.database).await?;
        let n = crate::store::outbox::forget_unpublished(store.conn(), names.prefix()).await;
        store.close().await;
        n
    };
    if let Err(e) = forgotten.await {
        eprintln!("gochat: could not delete the bench's unpublished outbox rows: {e}");
    }
}

/// The `q`-quantile (0..=1) of sorted `samples`, in milliseconds.
pub fn quantile_ms(sorted: &[std::time::Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&s, 0.5), 51.0);
        assert_eq!(quantile_ms(&s, 0.99), 99.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
    }
}
