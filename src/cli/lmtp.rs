//! `gochat lmtp`: the LMTP server the MTA delivers to (see `crate::mail::lmtp` and
//! docs/inbound.md). Stops on SIGTERM or Ctrl-C like `gochat run`: no new connections,
//! messages being received are finished and answered, idle sessions are told `421 4.3.2`;
//! then the broker connection closes and it exits 0.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::mail::lmtp::{Gateway, Server};
use crate::shutdown;

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let gateway = Arc::new(Gateway::start(&config.amqp));
    let server = Server::bind(&config, gateway.clone())
        .await
        .context("starting the LMTP server")?;
    let addr = server.local_addr().context("the LMTP address")?;
    tracing::info!(
        %addr,
        broker = %config.amqp.url,
        prefix = %config.amqp.prefix,
        max_size = config.mail.max_size,
        "serving LMTP"
    );
    let (stop, listener) = shutdown::channel();
    let serving = tokio::spawn(server.serve(listener));
    shutdown::signal().await;
    tracing::info!("shutdown requested; finishing the messages being received");
    stop.trigger();
    serving.await.context("the LMTP server task")?;
    gateway.close().await;
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}
