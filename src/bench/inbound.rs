//! `gochat bench inbound`: inbound mails end to end (published `inbound-mail` job →
//! committed thread, acknowledgement queued), and the parse-and-classify rate alone.
//!
//! The mails are made from the corpus (`tests/data/corpus/`): its normal messages, each with
//! a new Message-ID and sender put in front of its own headers (so every mail is new and no
//! sender trips the loop check), 70 % opening threads, 20 % replying to an earlier mail, and
//! 10 % real bounces. The worker runs in this process and consumes `inbound-mail` only: the
//! acknowledgements new threads queue are published (the relay's work counts) but not
//! delivered here; `bench e2e` delivers them along with everything else.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use clap::Args;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;

use super::measure::{BenchJob, publish_and_wait};
use super::round2;
use crate::config::Config;
use crate::mail::classify::{self, MailClass};
use crate::mail::parse;
use crate::queue::Names;

#[derive(Debug, Args)]
pub struct InboundArgs {
    /// Mails to run through the worker.
    #[arg(long, default_value_t = 20_000)]
    pub mails: usize,
    /// Scratch database (default: a temporary SQLite file). Migrated if needed.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Mails run first, unmeasured, before the statistics are refreshed (see `warm_up`).
    #[arg(long, default_value_t = 2_000)]
    pub warm_up: usize,
    /// The corpus folder the mails are made from.
    #[arg(long, default_value = "tests/data/corpus")]
    pub corpus: PathBuf,
}

const SUPPORT: &str = "support@gochat.example";

pub async fn run(mut config: Config, args: InboundArgs) -> anyhow::Result<()> {
    let n = args.mails.max(1);
    let (normal, bounces) = corpus(&args.corpus)?;
    let parse_only = parse_rate(&normal, &bounces);
    println!(
        "parse and classify alone: {:.0} mails/s ({} normal and {} bounce templates)",
        parse_only,
        normal.len(),
        bounces.len()
    );

    let scratch = tempfile::tempdir().context("temp dir")?;
    let backend = super::isolate(&mut config, args.database_url, scratch.path());
    config.mail.loop_limit = u32::MAX;
    config.amqp.consume = vec!["inbound-mail".into()];
    let names = Names::new(&config.amqp.prefix);
    println!(
        "bench inbound: {n} mails, database {backend} ({}), broker {}",
        config.database.url, config.amqp.url
    );
    let conn = Connection::connect(config.amqp.url.expose(), ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {}", config.amqp.url))?;
    let worker = super::start_worker(&config).await?;
    let threads_before = super::threads_before(&worker.services.store).await?;
    let warm = uuid::Uuid::now_v7().simple().to_string();
    super::warm_up(
        &conn,
        &names,
        &worker,
        mails(args.warm_up, &warm, &normal, &bounces),
        &format!("bench-inbound-{warm}-"),
        config.amqp.confirm_timeout,
    )
    .await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let jobs = mails(n, &run, &normal, &bounces);
    let figures = publish_and_wait(
        &conn,
        &names,
        &worker,
        jobs,
        &format!("bench-inbound-{run}-"),
        config.amqp.confirm_timeout,
    )
    .await;
    let acks = ack_count(worker.services.store.conn(), &run).await;
    let store = worker.services.store.clone();
    worker.stop().await;
    super::teardown(&conn, &names, &config).await;
    store.close().await;
    let f = figures?;
    println!(
        "end to end (published → committed thread): {:.0} mails/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; {acks} acknowledgements queued; {:.1} mails per batch",
        f.per_sec,
        f.p50,
        f.p99,
        f.p999,
        f.mean_batch.unwrap_or(0.0)
    );
    if let Some([committed, cut, failed]) = f.batch_outcomes {
        println!("batches: {committed} committed, {cut} cut at a job, {failed} failed whole");
    }
    println!(
        "{}",
        json!({
            "bench": "inbound", "mails": n, "database": backend, "threads_before": threads_before,
            "mails_per_sec": round2(f.per_sec), "p50_ms": round2(f.p50), "p99_ms": round2(f.p99), "p999_ms": round2(f.p999),
            "parse_only_per_sec": round2(parse_only), "acknowledgements_queued": acks, "mean_batch": f.mean_batch.map(round2),
        })
    );
    Ok(())
}

/// The acknowledgements the run's mails queued (outbox rows).
async fn ack_count(db: &sea_orm::DatabaseConnection, run: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    let sql = format!(
        "SELECT COUNT(*) AS n FROM outbox WHERE routing_key = 'outbound-message' AND message_id LIKE 'bench-inbound-{run}-%'"
    );
    match db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
    {
        Ok(Some(row)) => row.try_get("", "n").unwrap_or(0),
        _ => 0,
    }
}

/// Raw mails.
pub(super) type Mails = Vec<Vec<u8>>;

/// The corpus's normal messages (with a sender) and its bounces, as templates.
pub(super) fn corpus(dir: &Path) -> anyhow::Result<(Mails, Mails)> {
    let (mut normal, mut bounces) = (Vec::new(), Vec::new());
    let none = classify::Envelope {
        from: None,
        recipients: &[],
    };
    for folder in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let folder = folder?.path();
        if !folder.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&folder)? {
            let path = f?.path();
            if path.file_name().is_some_and(|n| n == "LICENSE") {
                continue;
            }
            let raw = std::fs::read(&path)?;
            let Ok(p) = parse::parse(&raw) else { continue };
            match classify::classify(&p, &raw, &none) {
                MailClass::Normal if p.from.is_some() => normal.push(without_mbox_line(raw)),
                MailClass::Bounce(_) => bounces.push(without_mbox_line(raw)),
                _ => {}
            }
        }
    }
    anyhow::ensure!(
        !normal.is_empty() && !bounces.is_empty(),
        "no corpus under {} (run from the project folder, or pass --corpus)",
        dir.display()
    );
    Ok((normal, bounces))
}

/// Headers put in front must come first: drop an mbox `From ` line.
fn without_mbox_line(raw: Vec<u8>) -> Vec<u8> {
    if raw.starts_with(b"From ") {
        let at = raw
            .iter()
            .position(|b| *b == b'\n')
            .map_or(raw.len(), |i| i + 1);
        raw[at..].to_vec()
    } else {
        raw
    }
}

/// Single-threaded parse + classify over the templates for about two seconds, as the
/// worker's `parse_mail` step does them.
fn parse_rate(normal: &[Vec<u8>], bounces: &[Vec<u8>]) -> f64 {
    let all: Vec<&Vec<u8>> = normal.iter().chain(bounces).collect();
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < Duration::from_secs(2) {
        for raw in &all {
            std::hint::black_box(crate::mail::inbound::parse_and_classify(raw, None, &[]));
            done += 1;
        }
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// The run's mails: 70 % new threads, 20 % replies, 10 % bounces.
fn mails(n: usize, run: &str, normal: &[Vec<u8>], bounces: &[Vec<u8>]) -> Vec<BenchJob> {
    (0..n)
        .map(|i| {
            let message_id = format!("<{run}-{i}@bench.example>");
            let head = match i % 10 {
                0..=6 => format!(
                    "From: Customer {i} <c{i}-{run}@bench.example>\r\nMessage-ID: {message_id}\r\n"
                ),
                7 | 8 => {
                    // Answers the newest mail that opened a thread, from its sender.
                    let to = i - (i % 10) + 6;
                    let to = if to >= i { i.saturating_sub(4) } else { to };
                    format!(
                        "From: Customer {to} <c{to}-{run}@bench.example>\r\nMessage-ID: {message_id}\r\nIn-Reply-To: <{run}-{to}@bench.example>\r\n"
                    )
                }
                _ => format!("Message-ID: {message_id}\r\n"),
            };
            let template = if i % 10 == 9 {
                &bounces[i % bounces.len()]
            } else {
                &normal[i % normal.len()]
            };
            let mut raw = head.into_bytes();
            raw.extend_from_slice(template);
            let body = json!({"schema": "inbound-mail/v1",
                "raw_base64": base64::engine::general_purpose::STANDARD.encode(&raw),
                "recipients": [SUPPORT]});
            BenchJob {
                id: format!("bench-inbound-{run}-{i}"),
                kind: "inbound-mail",
                body: body.to_string().into_bytes(),
            }
        })
        .collect()
}
