//! Outbound mail: `compose_message` (the recipient rule, the template or body, the stored
//! message) and `send_mail` (SMTP with at-most-once sending).
//!
//! At most once: before talking to the server the message is committed as `sending`. A job
//! that finds its message `sending` (the server may have accepted it, then the worker died
//! before recording `sent`) does not send again: it is dead-lettered for reconciliation
//! against the mail server's log, by the message's Message-ID. A 4xx reply or a connection
//! failure puts the message back to `queued` (committed) and the job is retried; a 5xx reply,
//! or the last allowed attempt, fails it.

use base64::Engine;
use gochat_entities::messages::{self, Channel, MessageDirection, OutboundKind, OutboundState};
use gochat_entities::threads::ThreadStatus;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::jobs::JobError;
use crate::mail::mime::{self, MailAttachment, OutgoingMail, Party};
use crate::store::outbound::{self, Delivery};
use crate::store::threads::{self, NewAttachment, NewMessage};
use crate::workflow::Facts;
use crate::workflow::action::{Action, Flow, Flows, Form};
use crate::workflow::context::{Batch, JobState, StepContext};
use crate::workflow::params::Params;
use crate::workflow::spec::{ActionSpec, FactSpec, FactType};

/// How long `send_mail` keeps trying to record the server's answer while the database is
/// unreachable. The answer (a 250 above all) is known to this process only: given up, the
/// message stays `sending` and the retried job must dead-letter it as "in doubt" for an
/// operator, though nothing was in doubt. Database blips last seconds; this covers restarts
/// and fail-overs, and stays well inside RabbitMQ's 30-minute consumer ack timeout.
const RECORD_OUTCOME_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Writes the delivery outcomes and commits them, retrying (backoff up to 5 s) while the
/// failure is transient and [`RECORD_OUTCOME_FOR`] has not run out. Returns the rows as
/// saved, in order.
pub(super) async fn record_outcomes(
    tx: &mut crate::store::Tx,
    outcomes: &[(&messages::Model, OutboundState, Delivery)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<messages::Model>, JobError> {
    let deadline = std::time::Instant::now() + RECORD_OUTCOME_FOR;
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        let attempt = async {
            let mut saved = Vec::with_capacity(outcomes.len());
            for (row, state, delivery) in outcomes {
                let db = tx.get().await?;
                saved.push(outbound::set_state(db, row, *state, delivery.clone(), now).await?);
            }
            tx.checkpoint().await?;
            Ok::<_, crate::store::StoreError>(saved)
        }
        .await;
        match attempt {
            Ok(saved) => return Ok(saved),
            Err(e) if e.is_transient() && std::time::Instant::now() < deadline => {
                // A transaction broken by a lost connection is of no further use.
                let _ = tx.rollback().await;
                tracing::warn!(
                    messages = outcomes.len(),
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "cannot record the mail server's answer yet; retrying"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The composed message's id (`mail.id`).
pub(super) fn mail_id(facts: &Facts) -> Result<Uuid, JobError> {
    facts
        .str("mail.id")
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| JobError::permanent("no composed message (mail.id)"))
}

/// The composed message `id`: the row a step before handed on, else read back.
pub(super) async fn composed_row(
    db: &impl sea_orm::ConnectionTrait,
    id: Uuid,
    handed: Option<Box<messages::Model>>,
) -> Result<messages::Model, JobError> {
    match handed {
        Some(row) if row.id == id => Ok(*row),
        _ => messages::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| JobError::permanent(format!("message {id} vanished"))),
    }
}

/// The mail to hand the server for `row` (the job's attachments come from its payload).
pub(super) fn outgoing(
    mail: &crate::config::MailConfig,
    payload: &Value,
    row: &messages::Model,
) -> Result<lettre::Message, JobError> {
    let strings = crate::store::json_strings;
    let parties = |v: &Value| {
        strings(v)
            .into_iter()
            .map(|a| Party {
                name: None,
                address: a,
            })
            .collect()
    };
    let from = Party {
        name: row.from_name.clone(),
        address: row.from_address.clone(),
    };
    let kind = row.kind.unwrap_or(OutboundKind::Reply);
    let outgoing = OutgoingMail {
        reply_to: Some(from.clone()),
        from,
        to: parties(&row.to_addresses),
        cc: parties(&row.cc_addresses),
        subject: row.subject.clone(),
        text: row.text_body.clone().unwrap_or_default(),
        html: row.html_body.clone(),
        message_id: format!("<{}>", row.message_id_header.clone().unwrap_or_default()),
        in_reply_to: row.in_reply_to.as_ref().map(|r| format!("<{r}>")),
        references: strings(&row.references)
            .into_iter()
            .map(|r| format!("<{r}>"))
            .collect(),
        automatic: kind != OutboundKind::Reply,
        attachments: attachments(payload)?,
        date: std::time::SystemTime::now(),
        envelope_from: mime::verp_sender(row.id, &mail.domain),
    };
    mime::build(&outgoing).map_err(|e| JobError::permanent(format!("message {}: {e}", row.id)))
}

/// What the server's answer means for `row`: its new state, what to record and, for a
/// temporary failure with attempts left, why the job is retried. Counts SMTP errors.
pub(super) fn judge(
    services: &crate::services::Services,
    row: &messages::Model,
    result: Result<crate::mail::smtp::Accepted, crate::mail::smtp::SendError>,
    now: chrono::DateTime<chrono::Utc>,
) -> (OutboundState, Delivery, Option<String>) {
    let max = services.config.smtp.max_attempts.max(1) as i32;
    match result {
        Ok(accepted) => (
            OutboundState::Sent,
            Delivery {
                smtp_reply: Some(format!("{} {}", accepted.code, accepted.message)),
                sent_at: Some(now),
                ..Default::default()
            },
            None,
        ),
        Err(e) => {
            services
                .metrics
                .smtp_errors
                .with_label_values(&[e.class()])
                .inc();
            let give_up = e.is_permanent() || row.attempts >= max;
            let why = if give_up && !e.is_permanent() {
                format!("gave up after {} attempts: {e}", row.attempts)
            } else {
                e.to_string()
            };
            (
                if give_up {
                    OutboundState::Failed
                } else {
                    OutboundState::Queued
                },
                Delivery {
                    smtp_reply: Some(e.to_string()),
                    error: give_up.then(|| why.clone()),
                    ..Default::default()
                },
                (!give_up).then_some(why),
            )
        }
    }
}

/// Counts a recorded delivery outcome.
pub(super) fn count_outcome(services: &crate::services::Services, state: OutboundState) {
    let label = match state {
        OutboundState::Sent => "sent",
        OutboundState::Failed => "failed",
        _ => "queued",
    };
    services
        .metrics
        .outbound_messages
        .with_label_values(&[label])
        .inc();
}

const MAIL_FACTS: &[FactSpec] = &[
    FactSpec {
        name: "mail.id",
        ty: FactType::Uuid,
        doc: "The outbound message's id.",
    },
    FactSpec {
        name: "mail.message_id",
        ty: FactType::Str,
        doc: "Its RFC 5322 Message-ID (without angle brackets).",
    },
    FactSpec {
        name: "mail.kind",
        ty: FactType::Enum(&["reply", "reminder", "notification"]),
        doc: "Why it is sent.",
    },
    FactSpec {
        name: "mail.sent",
        ty: FactType::Bool,
        doc: "The server accepted it.",
    },
    FactSpec {
        name: "mail.failed",
        ty: FactType::Bool,
        doc: "It failed for good.",
    },
    FactSpec {
        name: "mail.error",
        ty: FactType::Any,
        doc: "Why it failed, or null.",
    },
];

/// The support address with the thread's reply token: `support+<token>@domain`.
fn reply_address(from: &str, token: &str) -> String {
    match from.split_once('@') {
        Some((local, domain)) => format!("{local}+{token}@{domain}"),
        None => from.to_owned(),
    }
}

fn kind_of(job: &Value) -> OutboundKind {
    match job.get("kind").and_then(Value::as_str) {
        Some("reminder") => OutboundKind::Reminder,
        Some("notification") => OutboundKind::Notification,
        _ => OutboundKind::Reply,
    }
}

fn kind_name(k: OutboundKind) -> &'static str {
    match k {
        OutboundKind::Reply => "reply",
        OutboundKind::Reminder => "reminder",
        OutboundKind::Notification => "notification",
    }
}

fn set_mail_facts(ctx: &mut StepContext<'_>, m: &messages::Model) {
    *ctx.outbound = Some(Box::new(m.clone()));
    mail_facts(ctx.facts, m);
}

/// The `mail.*` facts of `m`.
pub(super) fn mail_facts(facts: &mut Facts, m: &messages::Model) {
    facts.set("mail.id", json!(m.id));
    facts.set("mail.message_id", json!(m.message_id_header));
    facts.set(
        "mail.kind",
        json!(kind_name(m.kind.unwrap_or(OutboundKind::Reply))),
    );
    facts.set("mail.sent", json!(m.state == Some(OutboundState::Sent)));
    facts.set("mail.failed", json!(m.state == Some(OutboundState::Failed)));
    facts.set("mail.error", json!(m.error));
}

/// The job's attachments, decoded.
fn attachments(job: &Value) -> Result<Vec<MailAttachment>, JobError> {
    let Some(list) = job.get("attachments").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|a| {
            let name = a["name"].as_str().unwrap_or("attachment").to_owned();
            let content = base64::engine::general_purpose::STANDARD
                .decode(a["content_base64"].as_str().unwrap_or_default())
                .map_err(|e| {
                    JobError::permanent(format!("attachment {name:?}: not base64: {e}"))
                })?;
            Ok(MailAttachment {
                content_type: a["content_type"]
                    .as_str()
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
                name,
                content,
            })
        })
        .collect()
}

/// `compose_message`.
pub struct ComposeMessage;

static COMPOSE: ActionSpec = ActionSpec {
    name: "compose_message",
    summary: "Checks every recipient (to, cc) is a contact of one of the thread's customers \
              (otherwise a permanent failure: nothing is sent) and that the thread is not closed \
              (unless its lifecycle says `closed_outbound: allow`), renders the job's template \
              in the first language of: the job's `language`, the contact's, the \
              lifecycle's, English (or takes its `body`), and stores the message as `queued` \
              with a new Message-ID and the thread's In-Reply-To/References. A retried job \
              finds its message instead of composing a second.",
    params: &[],
    reads: &["thread.id"],
    writes: MAIL_FACTS,
};

#[async_trait::async_trait]
impl Action for ComposeMessage {
    fn spec(&self) -> &'static ActionSpec {
        &COMPOSE
    }

    /// Its own job's message; the thread's card is version-checked.
    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, _params: &Params) -> Result<Flow, JobError> {
        let services = ctx.services;
        let job_msg = ctx.job;
        let job = &job_msg.payload;
        let templates = ctx.templates.clone();
        let (lifecycle_lang, closed_allowed) = ctx
            .lifecycle()
            .map(|l| (l.language.clone(), l.closed_outbound_allowed))
            .unwrap_or_else(|_| ("en".into(), false));
        let thread = ctx.thread()?.clone();
        let db = ctx.db().await?;
        if let Some(existing) = outbound::for_job(db, &job_msg.message_id).await? {
            let state = existing.state;
            set_mail_facts(ctx, &existing);
            return match state {
                Some(OutboundState::Queued) => Ok(Flow::Continue),
                Some(OutboundState::Sending) => Err(JobError::permanent(format!(
                    "delivery of message {} (Message-ID <{}>) was interrupted after it was handed to the mail server; it may have been delivered, so it is not sent again: check the server's log for that Message-ID and record the outcome",
                    existing.id,
                    existing.message_id_header.unwrap_or_default()
                ))),
                // Sent or failed by an earlier attempt of this job whose later steps did not
                // commit (the job is not recorded as processed, or it would not be here):
                // they run now, so the events and the ladder happen exactly once.
                _ => Ok(Flow::Continue),
            };
        }
        if thread.status == ThreadStatus::Closed && !closed_allowed {
            return Err(JobError::permanent(format!(
                "thread {} is closed and its lifecycle `{}` refuses messages to closed threads (closed_outbound): reopen it first",
                thread.id, thread.lifecycle
            )));
        }
        let mut to = Vec::new();
        let mut cc = Vec::new();
        let mut refused = Vec::new();
        for (field, out) in [("to", &mut to), ("cc", &mut cc)] {
            for spec in job
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                match outbound::resolve_recipient(db, thread.id, spec).await? {
                    Ok(r) => out.push(r),
                    Err(why) => refused.push(why),
                }
            }
        }
        if !refused.is_empty() {
            return Err(JobError::permanent(format!(
                "forbidden recipient: {}",
                refused.join("; ")
            )));
        }
        let first = to
            .first()
            .or(cc.first())
            .cloned()
            .ok_or_else(|| JobError::permanent("the message has no recipient"))?;
        let mail = &services.config.mail;
        let from_address = reply_address(&mail.from_address, &thread.reply_token);
        let (subject, text, html) = if let Some(template) =
            job.get("template").and_then(Value::as_str)
        {
            let chain: Vec<&str> = [
                job.get("language").and_then(Value::as_str),
                first.language.as_deref(),
                Some(lifecycle_lang.as_str()),
            ]
            .into_iter()
            .flatten()
            .collect();
            // Read only for a template that shows it (an acknowledgement does not).
            let latest = if templates.quotes(template) {
                outbound::latest_inbound(db, thread.id).await?
            } else {
                None
            };
            let quote = latest
                .and_then(|m| {
                    let text = m.text_body?;
                    Some(json!({
                        "from": m.from_name.unwrap_or(m.from_address),
                        "at": m.created_at.to_rfc3339(),
                        "text": text.trim_end(),
                    }))
                })
                .unwrap_or(Value::Null);
            let mut data = json!({
                "quote": quote,
                "thread": {"id": thread.id, "subject": thread.subject, "reply_token": thread.reply_token},
                "contact": {"name": first.name.clone().unwrap_or_else(|| first.address.clone()), "address": first.address,
                            "language": first.language, "time_zone": first.time_zone},
                "mail": {"from_name": mail.from_name, "from_address": from_address},
                "author": job.get("author").cloned().unwrap_or(Value::Null),
            });
            if let Some(vars) = job.get("variables").and_then(Value::as_object) {
                for (k, v) in vars {
                    data[k] = v.clone();
                }
            }
            let r = templates
                .render(template, &chain, &data)
                .map_err(|e| JobError::permanent(e.to_string()))?;
            (r.subject, r.text, r.html)
        } else {
            let body = job.get("body").cloned().unwrap_or(Value::Null);
            let text = body["text"].as_str().map(str::to_owned);
            let html = body["html"].as_str().map(str::to_owned);
            let Some(text) = text.or_else(|| html.as_deref().map(crate::mail::text_from_html))
            else {
                return Err(JobError::permanent(
                    "the job has neither `template` nor a `body` with `text` or `html`",
                ));
            };
            let subject = body["subject"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("Re: {}", thread.subject));
            (subject, text, html)
        };
        let history = outbound::thread_message_ids(db, thread.id).await?;
        let message_id = mime::new_message_id(&mail.domain);
        let kind = kind_of(job);
        let mut m = NewMessage::new(
            MessageDirection::Outbound,
            Channel::Email,
            from_address,
            subject,
        );
        m.from_name = Some(mail.from_name.clone());
        m.contact_id = Some(first.contact_id);
        m.message_id_header = Some(message_id.trim_matches(['<', '>']).to_owned());
        m.in_reply_to = history.last().cloned();
        m.references = history;
        m.to = to.iter().map(|r| r.address.clone()).collect();
        m.cc = cc.iter().map(|r| r.address.clone()).collect();
        m.text_body = Some(text);
        m.html_body = html;
        m.kind = Some(kind);
        m.state = Some(OutboundState::Queued);
        m.author = job.get("author").cloned();
        m.job_message_id = Some(job_msg.message_id.clone());
        m.attachments = attachments(job)?
            .into_iter()
            .map(|a| NewAttachment {
                name: a.name,
                content_type: a.content_type,
                data: a.content,
                inline: false,
                content_id: None,
            })
            .collect();
        let now = ctx.now;
        let (card, row) = threads::add_message(ctx.db().await?, &thread, m, now).await?;
        ctx.set_thread(card);
        set_mail_facts(ctx, &row);
        services
            .metrics
            .outbound_messages
            .with_label_values(&["queued"])
            .inc();
        Ok(Flow::Continue)
    }
}

/// `send_mail`.
pub struct SendMail;

static SEND: ActionSpec = ActionSpec {
    name: "send_mail",
    summary: "Delivers the composed message by SMTP, at most once: commits it as `sending` \
              first, then `sent` with the server's reply. A 4xx reply or a connection \
              failure puts it back to `queued` and retries the job (until `smtp.max_attempts`, \
              then `failed`); a 5xx reply fails it at once. Sets `mail.sent` / `mail.failed`.",
    params: &[],
    reads: &["mail.id"],
    writes: MAIL_FACTS,
};

#[async_trait::async_trait]
impl Action for SendMail {
    fn spec(&self) -> &'static ActionSpec {
        &SEND
    }

    fn commits_midway(&self) -> bool {
        true
    }

    /// A batch's messages are marked `sending` together, delivered together and their
    /// answers recorded together: three commits a batch (see [`super::outbound_batch`]).
    fn form(&self) -> Form {
        Form::Set
    }

    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        super::outbound_batch::send_set(batch, items).await
    }
}
