//! `compose_message`: the recipient rule, the template or body, the stored message.

use gochat_entities::messages::{self, Channel, MessageDirection, OutboundKind, OutboundState};
use gochat_entities::threads::ThreadStatus;

use crate::mail::mime;
use crate::store::outbound;
use crate::store::threads::{self, NewAttachment, NewMessage};
use crate::workflow::actions::outbound::{MAIL_FACTS, attachments, mail_facts};
use crate::workflow::actions::prelude::*;

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

fn set_mail_facts(ctx: &mut StepContext<'_>, m: &messages::Model) {
    *ctx.outbound = Some(Box::new(m.clone()));
    mail_facts(ctx.facts, m);
}
