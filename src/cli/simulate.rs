//! `gochat workflows simulate <lifecycle>`: the timeline a thread would follow.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;

use crate::config::Config;
use crate::lifecycle::simulate::{parse_events, simulate};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The lifecycle's name (a file in workflows/lifecycles/).
    pub lifecycle: String,
    /// When the thread starts (RFC 3339); default now.
    #[arg(long)]
    pub start: Option<String>,
    /// What happens, e.g. `agent_replied@0,customer_replied@+4d,status:closed@+9d`.
    #[arg(long, default_value = "agent_replied@0")]
    pub events: String,
    /// Print a JSON array of `{"at", "status", "action", "template"}`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: &Config, args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let set = crate::workflow::WorkflowSet::load(&config.workflows.dir)
        .map_err(|e| anyhow::anyhow!("the workflows are invalid:\n{e}"))?;
    let Some(lifecycle) = set.lifecycles.get(&args.lifecycle) else {
        eprintln!(
            "gochat: no lifecycle `{}`; there are: {}",
            args.lifecycle,
            set.lifecycles.names().join(", ")
        );
        return Ok(ExitCode::from(2));
    };
    let start: DateTime<Utc> = match &args.start {
        None => Utc::now(),
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(d) => d.with_timezone(&Utc),
            Err(e) => {
                eprintln!("gochat: --start {s:?} is not an RFC 3339 time: {e}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let events = match parse_events(&args.events, start) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("gochat: --events: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let timeline = match simulate(lifecycle, start, &events) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gochat: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&timeline)?);
    } else {
        for e in &timeline {
            println!(
                "{}  {:<8}  {:<16} {}",
                e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                e.status,
                e.action,
                e.template.as_deref().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
