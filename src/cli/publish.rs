//! `gochat publish <kind> [FILE or -]`: publish one JSON payload, or JSON lines, as jobs with
//! publisher confirms; prints each job's message id. Every payload is validated before
//! anything is sent; the exit code is non-zero if any job was refused or not confirmed.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lapin::{Connection, ConnectionProperties};

use crate::config::Config;
use crate::contract::JOB_KINDS;
use crate::queue::{Names, Outgoing, Publisher, topology};

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The job kind (routing key), e.g. `customer-upsert`.
    pub kind: String,
    /// A file with one JSON payload or JSON lines; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// The message id (idempotency key) of a single job; default a new UUID v7 per job.
    #[arg(long)]
    pub message_id: Option<String>,
}

pub async fn run(config: &Config, args: PublishArgs) -> anyhow::Result<ExitCode> {
    if !JOB_KINDS.contains(&args.kind.as_str()) {
        eprintln!(
            "gochat: unknown job kind {:?}; expected one of {}",
            args.kind,
            JOB_KINDS.join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    let text = match args.file.as_deref() {
        None => read_stdin()?,
        Some(p) if p.as_os_str() == "-" => read_stdin()?,
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
    };
    let payloads = match parse_payloads(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gochat: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if args.message_id.is_some() && payloads.len() != 1 {
        eprintln!(
            "gochat: --message-id needs exactly one payload, found {}",
            payloads.len()
        );
        return Ok(ExitCode::from(2));
    }
    let mut refused = 0;
    for (i, p) in payloads.iter().enumerate() {
        if let Err(e) = crate::jobs::check_payload(&args.kind, p) {
            eprintln!("gochat: payload {} refused: {e}", i + 1);
            refused += 1;
        }
    }
    if refused > 0 {
        eprintln!("gochat: nothing published: {refused} payload(s) refused");
        return Ok(ExitCode::FAILURE);
    }

    let jobs = payloads
        .iter()
        .map(|p| {
            let id = args
                .message_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
            (id, p.clone())
        })
        .collect();
    let failed = report(publish_jobs(config, &args.kind, jobs).await?);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Publishes `(message id, payload)` jobs of `kind` with confirms; each job's outcome.
pub(super) async fn publish_jobs(
    config: &Config,
    kind: &str,
    jobs: Vec<(String, serde_json::Value)>,
) -> anyhow::Result<Vec<(String, Result<(), crate::queue::QueueError>)>> {
    let (conn, names, publisher) = connect(config).await?;
    let msgs: Vec<Outgoing> = jobs
        .into_iter()
        .map(|(id, p)| {
            Outgoing::json(
                names.jobs_exchange(),
                kind.to_owned(),
                id,
                p.to_string().into_bytes(),
            )
        })
        .collect();
    let mut out = Vec::with_capacity(msgs.len());
    for chunk in msgs.chunks(1000) {
        for (m, r) in chunk.iter().zip(publisher.publish_all(chunk).await) {
            out.push((m.message_id.clone(), r));
        }
    }
    publisher.close().await;
    let _ = conn.close(200, "done".into()).await;
    Ok(out)
}

/// Prints the id of each confirmed job (stdout) and why each other one failed (stderr);
/// returns how many failed.
pub(super) fn report(outcomes: Vec<(String, Result<(), crate::queue::QueueError>)>) -> usize {
    let mut failed = 0;
    for (id, r) in outcomes {
        match r {
            Ok(()) => println!("{id}"),
            Err(e) => {
                eprintln!("gochat: job {id} not confirmed: {e}");
                failed += 1;
            }
        }
    }
    failed
}

/// A broker connection (within 10 s), the contract's topology declared, and a publisher with
/// confirms: what every command that publishes jobs needs.
async fn connect(config: &Config) -> anyhow::Result<(Connection, Names, Publisher)> {
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(config.amqp.url.expose(), ConnectionProperties::default()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the broker {} did not answer within 10 s", config.amqp.url))?
    .with_context(|| format!("connecting to the broker {}", config.amqp.url))?;
    let names = Names::new(&config.amqp.prefix);
    topology::declare(&conn, &names, &config.amqp).await?;
    let publisher = Publisher::open(&conn, config.amqp.confirm_timeout).await?;
    Ok((conn, names, publisher))
}

fn read_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading standard input")?;
    Ok(s)
}

/// One JSON document, or one per non-empty line.
pub fn parse_payloads(text: &str) -> Result<Vec<serde_json::Value>, String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        return Ok(vec![v]);
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("line {}: not valid JSON: {e}", i + 1))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.is_empty() {
                Err("no payload given".into())
            } else {
                Ok(v)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::parse_payloads;

    #[test]
    fn one_document_or_json_lines() {
        assert_eq!(parse_payloads("{\n \"a\": 1\n}").map(|v| v.len()), Ok(1));
        assert_eq!(
            parse_payloads("{\"a\":1}\n\n{\"a\":2}\n").map(|v| v.len()),
            Ok(2)
        );
        assert!(
            parse_payloads("{\"a\":1}\n{oops}\n")
                .unwrap_err()
                .starts_with("line 2: not valid JSON")
        );
        assert!(parse_payloads("  \n").is_err());
    }
}
