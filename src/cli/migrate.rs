//! `gochat migrate`: apply pending migrations; running it again does nothing.

use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::store::Store;

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&config.database).await?;
    let applied = store.migrate().await.context("applying migrations")?;
    println!(
        "{applied} migration(s) applied; the schema at {} is up to date",
        config.database.url
    );
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
