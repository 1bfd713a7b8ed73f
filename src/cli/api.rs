//! `gochat api` (the inbox HTTP API alone; see `crate::api` and docs/api.md) and
//! `gochat api-key create|list|revoke`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::shutdown;
use crate::store::Store;
use crate::store::api_keys::{self, Scope};

/// Serves the API until SIGTERM or Ctrl-C, then finishes the requests in flight and exits 0.
pub async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let store = open(&config).await?;
    let (stop, listener) = shutdown::channel();
    let running =
        match crate::api::start(&config, store.clone(), Arc::new(SystemClock), listener).await {
            Ok(r) => r,
            Err(e @ crate::api::StartError::Workflows { .. }) => {
                eprintln!("gochat: {e}");
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => return Err(e.into()),
        };
    tracing::info!(
        addr = %running.addr,
        database = %config.database.url,
        broker = %config.amqp.url,
        "serving the inbox API"
    );
    // SIGHUP reloads the lifecycles (status colours, allowed moves) until SIGTERM or SIGINT.
    shutdown::signal_or_hangup(|| reload_lifecycles(&running, &config.workflows.dir)).await;
    tracing::info!("shutdown requested; finishing the requests in flight");
    stop.trigger();
    running.stopped().await;
    store.close().await;
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// The API's lifecycles from `dir` again (SIGHUP), logged either way.
pub(super) fn reload_lifecycles(api: &crate::api::Running, dir: &std::path::Path) {
    match api.reload(dir) {
        Ok(()) => tracing::info!("the API's lifecycles reloaded"),
        Err(e) => {
            tracing::error!(problems = %e, "the API's lifecycles NOT reloaded (the previous ones stay in force)")
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; prints it once, on the last line (only its hash is stored).
    Create(CreateArgs),
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id; requests with it get 401 from then on.
    Revoke { id: Uuid },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// What the key is for, e.g. "inbox UI".
    #[arg(long)]
    pub name: String,
    /// `read` (GET only) or `write` (also replies, comments, changes).
    #[arg(long, value_parser = parse_scope)]
    pub scope: Scope,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).ok_or_else(|| format!("unknown scope {s:?}; expected read or write"))
}

pub async fn keys(config: &Config, cmd: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    let store = open(config).await?;
    let db = store.conn();
    let now = chrono::Utc::now();
    let code = match cmd {
        ApiKeyCommand::Create(args) => {
            let (key, token) = api_keys::create(db, &args.name, args.scope, now).await?;
            println!("api key {} ({}, {})", key.id, key.name, key.scope.as_str());
            println!("{token}");
            ExitCode::SUCCESS
        }
        ApiKeyCommand::List => {
            println!(
                "{:<36}  {:<5}  {:<20}  {:<20}  NAME",
                "ID", "SCOPE", "CREATED", "REVOKED"
            );
            for k in api_keys::list(db).await? {
                println!(
                    "{:<36}  {:<5}  {:<20}  {:<20}  {}",
                    k.id,
                    k.scope.as_str(),
                    k.created_at.format("%Y-%m-%d %H:%M:%S"),
                    k.revoked_at
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| "-".into()),
                    k.name
                );
            }
            ExitCode::SUCCESS
        }
        ApiKeyCommand::Revoke { id } => {
            if api_keys::revoke(db, id, now).await? {
                println!("revoked {id}");
                ExitCode::SUCCESS
            } else {
                eprintln!("gochat: no active API key {id}");
                ExitCode::FAILURE
            }
        }
    };
    store.close().await;
    Ok(code)
}

async fn open(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database).await?;
    store
        .ensure_schema(config.database.auto_migrate)
        .await
        .context("opening the database")?;
    Ok(store)
}
