//! `gochat run`: the worker. Connects to the database and the broker, serves HTTP, and stops
//! gracefully on SIGTERM or SIGINT: stop taking work, finish what is in flight, close
//! connections, exit 0.

use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::queue::Broker;
use crate::shutdown;
use crate::store::Store;

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    tracing::info!(
        database = %config.database.url,
        broker = %config.amqp.url,
        prefix = %config.amqp.prefix,
        http = %config.http.addr,
        "starting the worker"
    );
    let store = Store::connect(&config.database).await?;
    store.ensure_schema(config.database.auto_migrate).await?;
    let metrics = Metrics::new().context("registering metrics")?;

    let (trigger, shutdown) = shutdown::channel();
    let signal_trigger = trigger.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        signal_trigger.trigger();
    });

    let name = format!("gochat-{}@{}", std::process::id(), hostname());
    let (broker, broker_task) =
        Broker::supervise(config.amqp.url.clone(), name, trigger.subscribe());
    let state = HttpState {
        store: store.clone(),
        broker: broker.status(),
        metrics: metrics.clone(),
    };
    let (addr, http_task) = http::serve(config.http.addr, state, trigger.subscribe())
        .await
        .with_context(|| format!("binding the HTTP address {}", config.http.addr))?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");

    let mut wait = shutdown;
    wait.recv().await;
    let _ = http_task.await;
    let _ = broker_task.await;
    store.close().await;
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
}
