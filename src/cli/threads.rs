//! `gochat threads` (the inbox, newest update first) and `gochat thread <id>` (one thread and
//! its feed), as a readable table or as the contract's JSON.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use gochat_entities::threads::ThreadStatus;
use sea_orm::ActiveEnum;
use uuid::Uuid;

use crate::config::Config;
use crate::store::views::{FeedItem, ThreadCard, ThreadView};
use crate::store::{InboxFilter, Store, inbox};

#[derive(Debug, Args)]
pub struct ThreadsArgs {
    /// Only threads in this status: open, waiting, reminder or closed.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<ThreadStatus>,
    /// Most threads listed.
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    /// Print the contract's JSON array of thread cards.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ThreadArgs {
    /// The thread's id (a UUID).
    pub id: Uuid,
    /// Print `{"thread": card, "feed": [...]}`.
    #[arg(long)]
    pub json: bool,
}

fn parse_status(s: &str) -> Result<ThreadStatus, String> {
    ThreadStatus::try_from_value(&s.to_owned()).map_err(|_| {
        format!(
            "unknown status {s:?}; expected one of {}",
            crate::contract::STATUSES.join(", ")
        )
    })
}

pub async fn list(config: &Config, args: ThreadsArgs) -> anyhow::Result<ExitCode> {
    let store = open(config).await?;
    let filter = InboxFilter {
        statuses: args.status.into_iter().collect(),
        limit: args.limit,
        ..InboxFilter::default()
    };
    let mut cards = inbox::list_threads(store.conn(), &filter).await?;
    colour(config, &mut cards);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cards)?);
    } else {
        print!("{}", table(&cards));
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn show(config: &Config, args: ThreadArgs) -> anyhow::Result<ExitCode> {
    let store = open(config).await?;
    let view = inbox::thread_view(store.conn(), args.id).await?;
    store.close().await;
    let Some(mut view) = view else {
        eprintln!("gochat: no thread {}", args.id);
        return Ok(ExitCode::FAILURE);
    };
    colour(config, std::slice::from_mut(&mut view.thread));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", feed(&view));
    }
    Ok(ExitCode::SUCCESS)
}

/// Fills in each card's status colour from its lifecycle. Lifecycles that do not load leave
/// the colours unset rather than failing the inbox (`gochat check` reports them).
fn colour(config: &Config, cards: &mut [ThreadCard]) {
    if let Ok(lifecycles) = crate::lifecycle::load::load_dir(&config.workflows.dir) {
        lifecycles.colour(cards);
    }
}

async fn open(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database).await?;
    store
        .ensure_schema(false)
        .await
        .context("reading the inbox")?;
    Ok(store)
}

/// The inbox as a fixed-width table.
pub fn table(cards: &[ThreadCard]) -> String {
    let mut out = format!(
        "{:<36}  {:<8}  {:<16}  {:<24}  {:>5}  {:<12}  {}\n",
        "ID", "STATUS", "UPDATED", "CONTACT", "ITEMS", "ASSIGNEE", "SUBJECT"
    );
    for c in cards {
        let contact = c
            .contact
            .as_ref()
            .map(|c| c.name.clone().unwrap_or_else(|| c.address.clone()))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<36}  {:<8}  {:<16}  {:<24}  {:>5}  {:<12}  {}{}\n",
            c.id,
            c.status,
            c.updated_at.format("%Y-%m-%d %H:%M"),
            clip(&contact, 24),
            c.item_count,
            clip(c.assignee.as_deref().unwrap_or("-"), 12),
            c.subject,
            if c.tags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", c.tags.join(", "))
            },
        ));
    }
    if cards.is_empty() {
        out.push_str("(no threads)\n");
    }
    out
}

/// One thread: a header, then its feed in time order.
pub fn feed(view: &ThreadView) -> String {
    let t = &view.thread;
    let customers: Vec<String> = t
        .customers
        .iter()
        .map(|c| format!("{} ({})", c.name, c.external_id))
        .collect();
    let mut out = format!(
        "{}\n  id {}  status {}  version {}\n  customers: {}\n  assignee: {}  tags: {}\n\n",
        t.subject,
        t.id,
        t.status,
        t.version,
        if customers.is_empty() {
            "-".into()
        } else {
            customers.join(", ")
        },
        t.assignee.as_deref().unwrap_or("-"),
        if t.tags.is_empty() {
            "-".into()
        } else {
            t.tags.join(", ")
        },
    );
    for item in &view.feed {
        let at = item.at().format("%Y-%m-%d %H:%M:%S");
        match item {
            FeedItem::Message(m) => {
                let state = m
                    .state
                    .as_deref()
                    .or(m.classification.as_deref())
                    .unwrap_or("");
                out.push_str(&format!(
                    "{at}  {} message from {} [{state}]: {}\n",
                    m.direction, m.from, m.subject
                ));
                if let Some(text) = &m.text {
                    for line in text.lines().take(6) {
                        out.push_str(&format!("    | {line}\n"));
                    }
                }
                for a in &m.attachments {
                    out.push_str(&format!(
                        "    + {} ({}, {} bytes)\n",
                        a.name, a.content_type, a.size
                    ));
                }
            }
            FeedItem::Comment(c) => {
                let who = c
                    .author
                    .get("name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("agent");
                out.push_str(&format!("{at}  comment by {who}: {}\n", c.body));
            }
            FeedItem::Event(e) => {
                let show = |v: &Option<serde_json::Value>| {
                    v.as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into())
                };
                out.push_str(&format!(
                    "{at}  {} changed: {} -> {}\n",
                    e.kind,
                    show(&e.before),
                    show(&e.after)
                ));
            }
        }
    }
    out
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(n.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}
