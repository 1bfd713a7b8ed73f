//! `gochat run`: the worker. Starts it, serves HTTP, reloads workflows on SIGHUP, and stops
//! gracefully on SIGTERM or SIGINT: stop taking work, finish what is in flight, close
//! connections, exit 0.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::shutdown;
use crate::worker::{StartError, Worker};

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    tracing::info!(
        database = %config.database.url,
        broker = %config.amqp.url,
        prefix = %config.amqp.prefix,
        http = %config.http.addr,
        workflows = %config.workflows.dir.display(),
        threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "starting the worker"
    );
    let metrics = Metrics::new(&crate::workflow::Registry::builtin().names())
        .context("registering metrics")?;
    let http_addr = config.http.addr;
    let api_enabled = config.api.enabled;
    let api_config = config.clone();
    let worker = match Worker::start(config, Arc::new(SystemClock), metrics.clone()).await {
        Ok(w) => w,
        Err(e @ StartError::Workflows { .. }) => {
            eprintln!("gochat: {e}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };

    let (http_stop, _) = shutdown::channel();
    let state = HttpState {
        store: worker.services.store.clone(),
        broker: worker.broker.status(),
        metrics,
    };
    let (addr, http_task) = http::serve(http_addr, state, http_stop.subscribe())
        .await
        .with_context(|| format!("binding the HTTP address {http_addr}"))?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    let api = if api_enabled {
        let running = crate::api::start(
            &api_config,
            worker.services.store.clone(),
            Arc::new(SystemClock),
            http_stop.subscribe(),
        )
        .await;
        match running {
            Ok(r) => {
                tracing::info!(addr = %r.addr, "serving the inbox API");
                Some(r)
            }
            Err(e) => {
                worker.stop().await;
                return Err(anyhow::Error::new(e).context("starting the inbox API"));
            }
        }
    } else {
        None
    };

    // SIGHUP reloads the workflows (and the API's lifecycles) until SIGTERM or SIGINT.
    shutdown::signal_or_hangup(|| {
        match worker.reload() {
            Ok(kinds) => tracing::info!(?kinds, "workflows reloaded"),
            Err(e) => tracing::error!(problems = %e, "workflows NOT reloaded (the previous ones stay in force)"),
        }
        if let Some(api) = &api {
            super::api::reload_lifecycles(api, &api_config.workflows.dir);
        }
    })
    .await;
    tracing::info!("shutdown requested; finishing in-flight work");
    worker.stop().await;
    http_stop.trigger();
    let _ = http_task.await;
    if let Some(api) = api {
        api.stopped().await;
    }
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}
