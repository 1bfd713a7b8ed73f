//! `gochat bench hostile`: what the worst mails a stranger can craft cost to parse, sanitise
//! and classify (CPU time on one thread, measured per mail). Before the HTML limits of
//! [`crate::mail::html`], one mail of nested `<div>`s held a worker for 25 s and more; the
//! aim is that the worst of this set costs at most a second.
//!
//! The set ([`hostile_mails`]) is also what `tests/hostile_mail.rs` feeds the worker, each
//! with the outcome it must have.

use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::{quantile_ms, round2};
use crate::mail::inbound::{Parsed, parse_and_classify};

#[derive(Debug, Args)]
pub struct HostileArgs {
    /// How many times each mail is measured (its fastest run counts: the cost, not the noise).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// A mail of `body_headers` (its MIME headers) and `body` from a customer.
fn mail(id: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Ann <ann@acme.example>\r\nTo: support@gochat.example\r\nSubject: {id}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{id}@acme.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n{body}"
    )
    .into_bytes()
}

/// An HTML-only mail of `html`.
fn html_mail(id: &str, html: &str) -> Vec<u8> {
    mail(id, "text/html; charset=utf-8", html)
}

/// The crafted mails, by name: what once stalled, lost or bloated something, and the
/// shapes around it. Deterministic: the same bytes every run.
pub fn hostile_mails() -> Vec<(&'static str, Vec<u8>)> {
    let mut set = vec![
        ("div-nested-100k", html_mail("h1", &"<div>".repeat(100_000))),
        ("li-nested-20k", html_mail("h2", &"<ul><li>".repeat(20_000))),
        (
            "div-stray-ends-50k",
            html_mail("h3", &"<div></span>".repeat(50_000)),
        ),
        ("b-unclosed-200k", html_mail("h4", &"<b>x".repeat(200_000))),
        (
            "b-i-misnested-60k",
            html_mail("h5", &"<b><i>x</b></i>".repeat(60_000)),
        ),
        (
            "table-nested-20k",
            html_mail("h6", &"<table><tr><td>".repeat(20_000)),
        ),
        (
            "flat-html-24MiB",
            html_mail("h7", &"<p>hello world</p>".repeat(24 * 1024 * 1024 / 18)),
        ),
        (
            "html-under-limits",
            html_mail(
                "h8",
                &format!(
                    "{}{}",
                    "<div>".repeat(490),
                    "<span>x</span>".repeat(49_000 / 2)
                ),
            ),
        ),
    ];
    // 40,000 parts each with a Content-ID, against 4 MB of HTML naming them.
    let mut parts = String::from("--b\r\nContent-Type: text/html\r\n\r\n");
    for i in 0..40_000 {
        parts.push_str(&format!("<img src=\"cid:img{i}@x\">"));
        if i % 4 == 0 {
            parts.push_str(&"<p>padding text</p>".repeat(4));
        }
    }
    parts.push_str("\r\n");
    for i in 0..40_000 {
        parts.push_str(&format!(
            "--b\r\nContent-Type: image/png\r\nContent-ID: <img{i}@x>\r\n\r\nPNG\r\n"
        ));
    }
    parts.push_str("--b--\r\n");
    set.push((
        "cid-parts-40k",
        mail("h9", "multipart/related; boundary=\"b\"", &parts),
    ));
    let refs: String = (0..100_000).map(|i| format!(" <r{i}@x>")).collect();
    set.push((
        "references-100k",
        format!(
            "From: a@acme.example\r\nReferences:{refs}\r\nMessage-ID: <{}@x>\r\n\r\nhi\r\n",
            "x".repeat(10_000)
        )
        .into_bytes(),
    ));
    let headers: String = (0..10_000)
        .map(|i| format!("X-H{i}: value {i}\r\n"))
        .collect();
    set.push((
        "headers-10k",
        format!("From: a@acme.example\r\n{headers}\r\nhi\r\n").into_bytes(),
    ));
    let mut nul = mail("h10", "text/plain; charset=\"utf\0-8\"", "Hel\0lo\r\n");
    nul.extend_from_slice(&[0; 1000]);
    set.push(("nul-bytes", nul));
    set
}

/// One thread's CPU time running `f`.
fn cpu_time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let cpu = super::e2e::cpu::thread_cpu_ns;
    let before = cpu().unwrap_or_default();
    let out = f();
    let spent = cpu().unwrap_or_default().saturating_sub(before);
    (out, Duration::from_nanos(spent))
}

pub fn run(args: HostileArgs) -> anyhow::Result<()> {
    let set = hostile_mails();
    let rounds = args.rounds.max(1);
    let mut costs = Vec::with_capacity(set.len());
    let mut worst = ("", Duration::ZERO);
    println!(
        "bench hostile: {} crafted mails, fastest of {rounds} runs each",
        set.len()
    );
    for (name, raw) in &set {
        let mut best = Duration::MAX;
        let mut outcome = String::new();
        for _ in 0..rounds {
            let (parsed, spent) = cpu_time(|| parse_and_classify(raw, None, &[]));
            best = best.min(spent);
            outcome = match parsed {
                Parsed::Mail { parsed, .. } => format!(
                    "html {}, {} attachments",
                    if parsed.html.is_some() {
                        "shown"
                    } else {
                        "not shown"
                    },
                    parsed.attachments.len()
                ),
                Parsed::Unparseable(why) => why,
            };
        }
        println!(
            "  {name:<22} {:>10} bytes  {:>9.1} ms CPU  ({outcome})",
            raw.len(),
            best.as_secs_f64() * 1000.0
        );
        if best > worst.1 {
            worst = (name, best);
        }
        costs.push(best);
    }
    costs.sort();
    let worst_ms = worst.1.as_secs_f64() * 1000.0;
    println!(
        "worst: {} at {worst_ms:.1} ms CPU (aim: at most 1,000 ms); median {:.1} ms",
        worst.0,
        quantile_ms(&costs, 0.5)
    );
    println!(
        "{}",
        json!({"bench": "hostile", "mails": set.len(), "worst": worst.0,
               "worst_cpu_ms": round2(worst_ms), "p50_cpu_ms": round2(quantile_ms(&costs, 0.5))})
    );
    Ok(())
}
