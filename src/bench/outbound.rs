//! `gochat bench outbound`: messages rendered from a template, built as MIME and delivered
//! by the pooled SMTP transport, as fast as they go. The SMTP server is a minimal sink
//! inside this process (it accepts and discards), unless `--smtp-url` names a real one, so
//! the figure is the worker's own cost plus loopback SMTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::{quantile_ms, round2};
use crate::config::{Config, SecretUrl};
use crate::mail::Templates;
use crate::mail::mime::{self, OutgoingMail, Party};
use crate::mail::smtp::Smtp;

#[derive(Debug, Args)]
pub struct OutboundArgs {
    /// Messages to deliver.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Messages in flight at once (and SMTP connections in the pool).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// A real SMTP server to deliver to (default: an in-process sink).
    #[arg(long)]
    pub smtp_url: Option<String>,
}

pub async fn run(config: Config, args: OutboundArgs) -> anyhow::Result<()> {
    let n = args.messages.max(1);
    let received = Arc::new(AtomicUsize::new(0));
    let url = match args.smtp_url {
        Some(u) => u,
        None => {
            let port = super::sink::start(received.clone()).await?;
            format!("smtp://127.0.0.1:{port}")
        }
    };
    let templates = Arc::new(
        Templates::load(&config.workflows.dir.join("templates"))
            .map_err(|p| anyhow::anyhow!("templates: {p:?}"))?,
    );
    let smtp = Smtp::new(
        &SecretUrl::new(url.clone()),
        Duration::from_secs(30),
        args.concurrency as u32,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "bench outbound: {n} messages (template reminder-1, text only), {} at once, to {url}",
        args.concurrency
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (templates, smtp, next, domain) = (
            templates.clone(),
            smtp.clone(),
            next.clone(),
            config.mail.domain.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                let data = json!({
                    "thread": {"id": i, "subject": format!("Ticket {i}"), "reply_token": "tok"},
                    "contact": {"name": "Zoë", "address": "zoe@example.com"},
                    "mail": {"from_name": "Go!Chat Support", "from_address": "support@gochat.example"},
                    "step": 1,
                });
                let r = templates.render("reminder-1", &["en"], &data)?;
                let m = OutgoingMail {
                    from: Party {
                        name: Some("Go!Chat Support".into()),
                        address: "support+tok@gochat.example".into(),
                    },
                    reply_to: None,
                    to: vec![Party {
                        name: Some("Zoë".into()),
                        address: "zoe@example.com".into(),
                    }],
                    cc: vec![],
                    subject: r.subject,
                    text: r.text,
                    html: r.html,
                    message_id: mime::new_message_id(&domain),
                    in_reply_to: Some("<previous@example.com>".into()),
                    references: vec!["<previous@example.com>".into()],
                    automatic: true,
                    attachments: vec![],
                    date: std::time::SystemTime::now(),
                    envelope_from: mime::verp_sender(uuid::Uuid::now_v7(), &domain),
                };
                let msg = mime::build(&m)?;
                smtp.send(&msg).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for t in tasks {
        latencies.extend(t.await.context("sender task")??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let per_sec = n as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (quantile_ms(&latencies, 0.5), quantile_ms(&latencies, 0.99));
    println!(
        "delivered {n} in {:.2} s: {per_sec:.0} messages/s, p50 {p50:.2} ms, p99 {p99:.2} ms",
        elapsed.as_secs_f64()
    );
    if received.load(Ordering::Relaxed) > 0 {
        println!(
            "the sink received {} messages",
            received.load(Ordering::Relaxed)
        );
    }
    println!(
        "{}",
        json!({
            "bench": "outbound",
            "messages": n,
            "concurrency": args.concurrency,
            "messages_per_sec": round2(per_sec),
            "p50_ms": round2(p50),
            "p99_ms": round2(p99),
        })
    );
    Ok(())
}
