//! Reconciling what was published with what happened: the database's effects, the mail the
//! SMTP sink received (by Message-ID and recipient) and the dead letters.

use std::collections::HashMap;

use gochat::queue::Names;
use gochat_entities::messages::{self, MessageDirection, OutboundState};
use gochat_entities::threads::ThreadStatus;
use gochat_entities::{outbox, raw_mails};
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use lapin::{Connection, ConnectionProperties};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Statement};

use crate::common::smtp::Received;
use crate::load::{Expect, Job};

/// A dead letter taken off `<prefix>gochat.dead`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub kind: String,
    pub reason: String,
}

/// The reason the worker gives for a message found `sending` (it may have reached the
/// server): the one dead letter at-most-once delivery allows.
pub const INTERRUPTED: &str = "was interrupted after it was handed to the mail server";

/// Takes every dead letter off the queue (they are kept in the caller's list).
pub async fn drain_dead_letters(url: &str, names: &Names) -> Vec<DeadLetter> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect to the own broker");
    let ch = conn.create_channel().await.expect("channel");
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(
            names.dead_letters().as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic_get on the dead letters")
    {
        let header = |name: &str| {
            m.delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(name).cloned())
                .map(|v| match v {
                    AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    AMQPValue::ShortString(s) => s.as_str().to_owned(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default()
        };
        out.push(DeadLetter {
            message_id: m
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            kind: header("x-gochat-kind"),
            reason: header("x-gochat-reason"),
        });
    }
    let _ = conn.close(200, "ok".into()).await;
    out
}

/// A mail the sink received, parsed.
#[derive(Debug, Clone)]
pub struct Mail {
    pub message_id: String,
}

pub fn parse_sink(received: &[Received]) -> Vec<Mail> {
    received
        .iter()
        .map(|r| {
            let parsed = mail_parser::MessageParser::default().parse(&r.raw);
            Mail {
                message_id: parsed
                    .as_ref()
                    .and_then(|p| p.message_id())
                    .unwrap_or_default()
                    .to_owned(),
            }
        })
        .collect()
}

/// The state of the world, read once per reconciliation.
pub struct World {
    comments: HashMap<String, i64>,
    status_events: HashMap<String, i64>,
    outbound: Vec<messages::Model>,
    inbound_by_header: HashMap<String, i64>,
    raw_by_job: HashMap<String, i64>,
    /// (thread id, template) → reminder jobs written to the outbox.
    reminders: HashMap<(String, String), i64>,
    sink_by_id: HashMap<String, i64>,
    /// Message-IDs of what was dead-lettered as interrupted, by job id.
    interrupted: HashMap<String, String>,
}

async fn counts(db: &impl ConnectionTrait, sql: &str) -> HashMap<String, i64> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .expect("query")
    .into_iter()
    .map(|row| {
        (
            row.try_get::<String>("", "k").expect("k"),
            row.try_get::<i64>("", "n").expect("n"),
        )
    })
    .collect()
}

impl World {
    pub async fn read(store: &gochat::store::Store, sink: &[Mail], dead: &[DeadLetter]) -> World {
        let db = store.conn();
        let comments = counts(
            db,
            "SELECT body AS k, COUNT(*) AS n FROM comments GROUP BY body",
        )
        .await;
        let status_events = counts(
            db,
            "SELECT CAST(thread_id AS TEXT) AS k, COUNT(*) AS n FROM thread_events \
             WHERE kind = 'status' GROUP BY thread_id",
        )
        .await;
        let all = messages::Entity::find().all(db).await.expect("messages");
        let mut inbound_by_header = HashMap::new();
        let mut outbound = Vec::new();
        for m in all {
            if m.direction == MessageDirection::Inbound {
                *inbound_by_header
                    .entry(m.message_id_header.clone().unwrap_or_default())
                    .or_insert(0) += 1;
            } else {
                outbound.push(m);
            }
        }
        let mut raw_by_job = HashMap::new();
        for r in raw_mails::Entity::find().all(db).await.expect("raw mails") {
            *raw_by_job
                .entry(r.job_message_id.unwrap_or_default())
                .or_insert(0) += 1;
        }
        let mut reminders = HashMap::new();
        for r in outbox::Entity::find()
            .filter(outbox::Column::RoutingKey.eq("outbound-message"))
            .filter(outbox::Column::MessageId.starts_with("reminder-"))
            .all(db)
            .await
            .expect("outbox")
        {
            let job: serde_json::Value = serde_json::from_str(&r.payload).expect("JSON");
            let key = (
                job["thread_id"].as_str().unwrap_or_default().to_owned(),
                job["template"].as_str().unwrap_or_default().to_owned(),
            );
            *reminders.entry(key).or_insert(0) += 1;
        }
        let mut sink_by_id = HashMap::new();
        for m in sink {
            *sink_by_id.entry(m.message_id.clone()).or_insert(0) += 1;
        }
        let interrupted = dead
            .iter()
            .filter(|d| d.reason.contains(INTERRUPTED))
            .map(|d| (d.message_id.clone(), d.reason.clone()))
            .collect();
        World {
            comments,
            status_events,
            outbound,
            inbound_by_header,
            raw_by_job,
            reminders,
            sink_by_id,
            interrupted,
        }
    }
}

/// What became of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exactly one effect.
    Done,
    /// No effect (yet).
    Missing(String),
    /// More than one effect.
    Duplicate(String),
    /// A mail dead-lettered as interrupted mid-delivery: sent at most once, but whether it
    /// went out only the server knows (here: the sink, `delivered`).
    InDoubt { delivered: bool },
}

fn exactly_one(n: i64, what: &str) -> Outcome {
    match n {
        1 => Outcome::Done,
        0 => Outcome::Missing(format!("no {what}")),
        n => Outcome::Duplicate(format!("{n} × {what}")),
    }
}

/// Worst of several outcomes: duplicate, then missing, then in doubt, then done.
fn worst(all: Vec<Outcome>) -> Outcome {
    let rank = |o: &Outcome| match o {
        Outcome::Duplicate(_) => 0,
        Outcome::Missing(_) => 1,
        Outcome::InDoubt { .. } => 2,
        Outcome::Done => 3,
    };
    all.into_iter().min_by_key(rank).unwrap_or(Outcome::Done)
}

impl World {
    /// Outbound messages of `kind` addressed to `address`: `want` of them, each delivered to
    /// the sink exactly once (or in doubt).
    fn mails_to(
        &self,
        address: &str,
        kind: Option<messages::OutboundKind>,
        want: usize,
    ) -> Outcome {
        let rows: Vec<&messages::Model> = self
            .outbound
            .iter()
            .filter(|m| {
                kind.is_none_or(|k| m.kind == Some(k))
                    && m.to_addresses.to_string().contains(address)
            })
            .collect();
        if rows.len() > want {
            return Outcome::Duplicate(format!("{} {kind:?} messages to {address}", rows.len()));
        }
        if rows.len() < want {
            return Outcome::Missing(format!(
                "{} of {want} {kind:?} messages to {address}",
                rows.len()
            ));
        }
        worst(rows.into_iter().map(|m| self.delivery(m)).collect())
    }

    fn delivery(&self, m: &messages::Model) -> Outcome {
        let header = m.message_id_header.clone().unwrap_or_default();
        let at_sink = self.sink_by_id.get(&header).copied().unwrap_or(0);
        let job = m.job_message_id.clone().unwrap_or_default();
        match m.state {
            _ if at_sink > 1 => Outcome::Duplicate(format!("{at_sink} × mail {header}")),
            Some(OutboundState::Sent) => exactly_one(
                at_sink,
                &format!("mail {header} at the sink (row says sent)"),
            ),
            Some(OutboundState::Sending) if self.interrupted.contains_key(&job) => {
                Outcome::InDoubt {
                    delivered: at_sink == 1,
                }
            }
            state => Outcome::Missing(format!(
                "message {header} of job {job} is {state:?} ({:?}), at the sink {at_sink} ×",
                m.error
            )),
        }
    }

    pub async fn outcome(&self, store: &gochat::store::Store, job: &Job) -> Outcome {
        match &job.expect {
            Expect::Comment { body } => {
                exactly_one(self.comments.get(body).copied().unwrap_or(0), "comment")
            }
            Expect::Waiting { thread } => {
                let n = self
                    .status_events
                    .get(&thread.to_string())
                    .copied()
                    .unwrap_or(0);
                let t = gochat::store::threads::get(store.conn(), *thread)
                    .await
                    .expect("thread");
                match exactly_one(n, "status change") {
                    Outcome::Done if t.status != ThreadStatus::Waiting => {
                        Outcome::Missing(format!("thread is {:?}", t.status))
                    }
                    o => o,
                }
            }
            Expect::Reply => {
                let rows: Vec<&messages::Model> = self
                    .outbound
                    .iter()
                    .filter(|m| m.job_message_id.as_deref() == Some(job.id.as_str()))
                    .collect();
                match rows.as_slice() {
                    [m] => self.delivery(m),
                    rows => exactly_one(rows.len() as i64, "outbound message row"),
                }
            }
            Expect::Inbound { message_id, sender } => worst(vec![
                exactly_one(
                    self.raw_by_job.get(&job.id).copied().unwrap_or(0),
                    "raw mail",
                ),
                exactly_one(
                    self.inbound_by_header.get(message_id).copied().unwrap_or(0),
                    "inbound message",
                ),
                self.mails_to(sender, None, 1),
            ]),
            Expect::Ladder { thread, address } => {
                let t = gochat::store::threads::get(store.conn(), *thread)
                    .await
                    .expect("thread");
                let key = |tpl: &str| (thread.to_string(), tpl.to_owned());
                let mut all = vec![
                    exactly_one(
                        self.reminders.get(&key("reminder-1")).copied().unwrap_or(0),
                        "reminder-1 job",
                    ),
                    exactly_one(
                        self.reminders.get(&key("reminder-2")).copied().unwrap_or(0),
                        "reminder-2 job",
                    ),
                    self.mails_to(address, Some(messages::OutboundKind::Reminder), 2),
                ];
                if (t.status, t.lifecycle_step) != (ThreadStatus::Open, None) {
                    all.push(Outcome::Missing(format!(
                        "ladder not over: {:?} step {:?}",
                        t.status, t.lifecycle_step
                    )));
                }
                worst(all)
            }
        }
    }
}

/// A phase's jobs reconciled.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub done: usize,
    pub in_doubt: usize,
    pub in_doubt_delivered: usize,
    pub duplicates: Vec<String>,
    pub missing: Vec<String>,
}

pub async fn tally(store: &gochat::store::Store, world: &World, jobs: &[Job]) -> Tally {
    let mut t = Tally::default();
    for job in jobs {
        match world.outcome(store, job).await {
            Outcome::Done => t.done += 1,
            Outcome::InDoubt { delivered } => {
                t.in_doubt += 1;
                t.in_doubt_delivered += usize::from(delivered);
            }
            Outcome::Duplicate(why) => t.duplicates.push(format!("{}: {why}", job.id)),
            Outcome::Missing(why) => t.missing.push(format!("{}: {why}", job.id)),
        }
    }
    t
}
