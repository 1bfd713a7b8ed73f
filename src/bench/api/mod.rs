//! `gochat bench api`: the inbox API at scale. Seeds PostgreSQL (once; `--reuse` keeps a
//! seeded database) with a million threads and five million messages by default, runs
//! `gochat api` as a process of its own, and measures each kind of request with concurrent
//! HTTP clients: latency percentiles, requests a second, and the API process's peak RSS.

mod seed;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::Rng;
use sea_orm::{ConnectionTrait, Statement};

use crate::config::{Config, SecretUrl};
use crate::store::Store;

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Threads to seed.
    #[arg(long, default_value_t = 1_000_000)]
    pub threads: u64,
    /// Messages per thread.
    #[arg(long, default_value_t = 5)]
    pub messages: u64,
    /// Customers (each with one contact).
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds each kind of request is measured.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// The PostgreSQL database to seed (dropped and created unless --reuse).
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/gochat_bench_api"
    )]
    pub database_url: String,
    /// Keep the database if it already holds the threads asked for (seeding takes minutes).
    #[arg(long)]
    pub reuse: bool,
}

/// One kind of request: a name and how to make the next path.
struct Scenario {
    name: &'static str,
    paths: Box<dyn Fn(&mut rand::rngs::ThreadRng) -> String + Send + Sync>,
}

pub async fn run(mut config: Config, args: ApiArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.database_url.starts_with("postgres"),
        "bench api runs on PostgreSQL (--database-url postgres://...)"
    );
    config.database.url = SecretUrl::new(args.database_url.clone());
    let store = prepare(&config, &args).await?;

    // Ids and cursors the clients pick from.
    let samples = sample_threads(&store, 2_000).await?;
    anyhow::ensure!(!samples.is_empty(), "the database holds no threads");
    let (_, key) = crate::store::api_keys::create(
        store.conn(),
        "bench",
        crate::store::api_keys::Scope::Read,
        chrono::Utc::now(),
    )
    .await?;

    let scratch = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let api = crate::bench::e2e::process::WorkerProcess::start_command(
        "api",
        "GOCHAT_API_ADDR",
        &[
            ("GOCHAT_DATABASE_URL", args.database_url.clone()),
            ("GOCHAT_API_ADDR", addr.clone()),
        ],
        &scratch.path().join("api.log"),
    )
    .await?;
    let base = format!("http://{addr}");
    let ids: Arc<Vec<(String, String)>> = Arc::new(samples);
    let customers = args.customers;
    let pick = {
        let ids = ids.clone();
        move |rng: &mut rand::rngs::ThreadRng| ids[rng.random_range(0..ids.len())].clone()
    };
    let scenarios: Vec<Scenario> = vec![
        scenario("inbox first page", |_| "/api/v1/threads".into()),
        scenario("filtered page", |rng| {
            format!(
                "/api/v1/threads?status=open&assignee=agent-{}&tag={}",
                rng.random_range(0..seed::AGENTS),
                seed::TAGS[rng.random_range(0..seed::TAGS.len())]
            )
        }),
        scenario("deep page by cursor", {
            let pick = pick.clone();
            move |rng| format!("/api/v1/threads?cursor={}", pick(rng).1)
        }),
        scenario("search common word", |rng| {
            let w = ["printer", "rechnung", "facture", "pedido"][rng.random_range(0..4)];
            format!("/api/v1/threads?q={w}")
        }),
        scenario("search two words", |_| {
            "/api/v1/threads?q=cafe%20garantie".into()
        }),
        scenario("search phrase", |_| {
            "/api/v1/threads?q=%22still%20not%20working%22".into()
        }),
        scenario("search rare word", |_| {
            format!("/api/v1/threads?q={}", seed::RARE)
        }),
        scenario("thread", {
            let pick = pick.clone();
            move |rng| format!("/api/v1/threads/{}", pick(rng).0)
        }),
        scenario("feed", {
            let pick = pick.clone();
            move |rng| format!("/api/v1/threads/{}/feed", pick(rng).0)
        }),
        scenario("customer inbox", move |rng| {
            format!(
                "/api/v1/customers/cust-{}/threads",
                rng.random_range(1..=customers)
            )
        }),
    ];

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut results = BTreeMap::new();
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "request", "req/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for s in scenarios {
        let r = measure(&http, &base, &key, &s, args.clients, args.seconds).await;
        println!(
            "{:<22} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            s.name, r.per_second, r.p50_ms, r.p99_ms, r.max_ms, r.errors
        );
        results.insert(s.name.replace(' ', "_"), r);
    }
    let rss = api.peak_rss();
    api.stop()?;
    store.close().await;
    println!("API process peak RSS: {:.1} MB", rss as f64 / 1e6);
    let json = serde_json::json!({
        "bench": "api",
        "threads": args.threads,
        "messages": args.threads * args.messages,
        "clients": args.clients,
        "api_peak_rss_mb": super::round2(rss as f64 / 1e6),
        "requests": results,
    });
    println!("{json}");
    Ok(())
}

fn scenario(
    name: &'static str,
    f: impl Fn(&mut rand::rngs::ThreadRng) -> String + Send + Sync + 'static,
) -> Scenario {
    Scenario {
        name,
        paths: Box::new(f),
    }
}

/// A database with the threads asked for: the existing one with `--reuse`, else a new one.
async fn prepare(config: &Config, args: &ApiArgs) -> anyhow::Result<Store> {
    if args.reuse
        && let Ok(store) = Store::connect(&config.database).await
        && store.ensure_schema(false).await.is_ok()
    {
        let n = count(&store, "SELECT count(*) AS n FROM threads").await?;
        if n == args.threads {
            println!("reusing the seeded database ({n} threads)");
            return Ok(store);
        }
        store.close().await;
    }
    let (admin_url, name) = args
        .database_url
        .rsplit_once('/')
        .context("--database-url has no database name")?;
    anyhow::ensure!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "the database name {name:?} must be letters, digits and _"
    );
    let admin = sea_orm::Database::connect(format!("{admin_url}/postgres")).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    admin.close().await?;
    let store = Store::connect(&config.database).await?;
    store.migrate().await?;
    let t = Instant::now();
    seed::seed(&store, args.threads, args.messages, args.customers).await?;
    println!(
        "seeded {} threads, {} messages in {:.0} s",
        args.threads,
        args.threads * args.messages,
        t.elapsed().as_secs_f64()
    );
    Ok(store)
}

async fn count(store: &Store, sql: &str) -> anyhow::Result<u64> {
    let row = store
        .conn()
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql.to_owned(),
        ))
        .await?
        .context("no row")?;
    Ok(u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0))
}

/// `n` random threads: their ids and a cursor that starts the page after each.
async fn sample_threads(store: &Store, n: u64) -> anyhow::Result<Vec<(String, String)>> {
    let rows = store
        .conn()
        .query_all_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!("SELECT id, updated_at FROM threads TABLESAMPLE SYSTEM (1) LIMIT {n}"),
        ))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: uuid::Uuid = r.try_get("", "id")?;
        let at: chrono::DateTime<chrono::Utc> = r.try_get("", "updated_at")?;
        let cursor = crate::api::cursor_for(at, id);
        out.push((id.to_string(), cursor));
    }
    Ok(out)
}

#[derive(serde::Serialize)]
struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
}

/// `clients` tasks sending `s`'s requests back to back for `seconds`.
async fn measure(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    s: &Scenario,
    clients: usize,
    seconds: u64,
) -> Figures {
    let end = Instant::now() + Duration::from_secs(seconds);
    let paths: Vec<Vec<String>> = (0..clients)
        .map(|_| {
            let mut rng = rand::rng();
            (0..4096).map(|_| (s.paths)(&mut rng)).collect()
        })
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = paths
        .into_iter()
        .map(|paths| {
            let http = http.clone();
            let base = base.to_owned();
            let auth = format!("Bearer {key}");
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                for path in paths.iter().cycle() {
                    if Instant::now() >= end {
                        break;
                    }
                    let t = Instant::now();
                    let ok = match http
                        .get(format!("{base}{path}"))
                        .header("authorization", &auth)
                        .send()
                        .await
                    {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    lat.push(t.elapsed());
                    if !ok {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    Figures {
        per_second: super::round2(all.len() as f64 / elapsed),
        p50_ms: super::round2(super::quantile_ms(&all, 0.5)),
        p99_ms: super::round2(super::quantile_ms(&all, 0.99)),
        max_ms: super::round2(all.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)),
        errors,
    }
}
