//! `send_mail`: SMTP delivery, at most once, with three commits a batch instead of three a
//! message.
//!
//! At most once: before talking to the server the message is committed as `sending`. A job
//! that finds its message `sending` (the server may have accepted it, then the worker died
//! before recording `sent`) does not send again: it is dead-lettered for reconciliation
//! against the mail server's log, by the message's Message-ID. A 4xx reply or a connection
//! failure puts the message back to `queued` (committed) and the job is retried; a 5xx reply,
//! or the last allowed attempt, fails it.
//!
//! 1. Every composed message still `queued` is marked `sending` in one statement, and the
//!    batch commits: its jobs' composed messages and thread cards with it.
//! 2. The messages go to the mail server together, over the SMTP pool.
//! 3. The answers are recorded and committed (retried while the database is away).
//!
//! A job whose message the server turned down for now ends with [`Flow::Retry`]: its
//! `queued` message stays, the job is retried later, and the others go on. A cut after the
//! first commit is safe as ever: a job run again finds its message `sent` and runs only the
//! steps after delivery.

use gochat_entities::messages::{self, OutboundKind, OutboundState};
use sea_orm::EntityTrait;
use uuid::Uuid;

use crate::mail::mime::{self, OutgoingMail, Party};
use crate::store::outbound::{self, Delivery};
use crate::workflow::actions::outbound::{MAIL_FACTS, attachments, mail_facts, mail_id};
use crate::workflow::actions::prelude::*;

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
    /// answers recorded together: three commits a batch (see the module docs).
    fn form(&self) -> Form {
        Form::Set
    }

    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        let (services, now) = (batch.services, batch.now);
        let tx = &mut *batch.tx;
        let mut flows: Vec<Result<Flow, JobError>> = Vec::with_capacity(items.len());
        let mut to_send = Vec::new();
        for (k, item) in items.iter_mut().enumerate() {
            let prepared = async {
                let id = mail_id(&item.facts)?;
                let row = composed_row(tx.get().await?, id, item.outbound.take()).await?;
                if row.state != Some(OutboundState::Queued) {
                    // Sent or failed by an earlier attempt: only the later steps run.
                    mail_facts(&mut item.facts, &row);
                    return Ok(None);
                }
                let mail = outgoing(&services.config.mail, &item.job.payload, &row)?;
                Ok::<_, JobError>(Some((row, mail)))
            }
            .await;
            match prepared {
                Ok(Some((row, mail))) => to_send.push(ToSend { item: k, row, mail }),
                Ok(None) => {}
                Err(e) => return Ok(cut_at(k, e)),
            }
            flows.push(Ok(Flow::Continue));
        }
        if to_send.is_empty() {
            return Ok(flows);
        }

        // Committed before the server hears of them: from here on, never sent twice.
        let ids: Vec<Uuid> = to_send.iter().map(|s| s.row.id).collect();
        outbound::mark_sending(tx.get().await?, &ids, now).await?;
        let bound = tx.lock_wait();
        tx.checkpoint().await?;
        // The batch's locks ended with that commit: what its jobs noted of each other is void.
        batch.memo.clear();
        // That commit ended every thread lock of the batch, those of jobs with nothing to send
        // included: later steps that read a thread read it again (see
        // `StepContext::thread_may_have_changed`).
        for item in items.iter_mut() {
            item.thread_stale = item.thread.is_some();
        }
        for s in &mut to_send {
            s.row.state = Some(OutboundState::Sending);
            s.row.attempts += 1;
            s.row.updated_at = now;
        }
        services
            .metrics
            .outbound_messages
            .with_label_values(&["sending"])
            .inc_by(to_send.len() as u64);

        let answers =
            futures_util::future::join_all(to_send.iter().map(|s| services.smtp.send(&s.mail)))
                .await;
        let now = services.clock.now();
        let judged: Vec<(OutboundState, Delivery, Option<String>)> = to_send
            .iter()
            .zip(answers)
            .map(|(s, answer)| judge(services, &s.row, answer, now))
            .collect();
        // Recorded at once: whatever later steps do, these outcomes stand.
        let outcomes: Vec<(&messages::Model, OutboundState, Delivery)> = to_send
            .iter()
            .zip(&judged)
            .map(|(s, (state, delivery, _))| (&s.row, *state, delivery.clone()))
            .collect();
        let saved = record_outcomes(tx, &outcomes, now).await?;
        if let Some(limit) = bound {
            // The later steps lock threads again, as the batch's first steps did.
            tx.bound_lock_waits(limit).await?;
        }
        for ((s, (state, _, retry)), row) in to_send.iter().zip(judged).zip(saved) {
            count_outcome(services, state);
            let item = &mut items[s.item];
            flows[s.item] = Ok(match retry {
                Some(why) => Flow::Retry(format!("message {}: {why}", row.id)),
                None => {
                    mail_facts(&mut item.facts, &row);
                    Flow::Continue
                }
            });
        }
        Ok(flows)
    }
}

/// How long `send_mail` keeps trying to record the server's answer while the database is
/// unreachable. The answer (a 250 above all) is known to this process only: given up, the
/// message stays `sending` and the retried job must dead-letter it as "in doubt" for an
/// operator, though nothing was in doubt. Database blips last seconds; this covers restarts
/// and fail-overs, and stays well inside RabbitMQ's 30-minute consumer ack timeout.
const RECORD_OUTCOME_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Writes the delivery outcomes and commits them, retrying with backoff (200 ms doubling
/// to 5 s) while the failure is transient, for up to [`RECORD_OUTCOME_FOR`] of waiting.
/// Returns the rows as saved, in order.
pub(in crate::workflow::actions) async fn record_outcomes(
    tx: &mut crate::store::Tx,
    outcomes: &[(&messages::Model, OutboundState, Delivery)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<messages::Model>, JobError> {
    use backon::{ExponentialBuilder, RetryableWithContext};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(5))
        .without_max_times()
        .with_total_delay(Some(RECORD_OUTCOME_FOR));
    let attempt = move |tx| write_outcomes(tx, outcomes, now);
    let (_, written) = attempt
        .retry(backoff)
        .context(tx)
        .when(crate::store::StoreError::is_transient)
        .notify(|e, wait| {
            tracing::warn!(
                messages = outcomes.len(),
                error = %e,
                retry_in_ms = wait.as_millis() as u64,
                "cannot record the mail server's answer yet; retrying"
            );
        })
        .await;
    Ok(written?)
}

/// One attempt of [`record_outcomes`]; the unit of work comes back for the next.
async fn write_outcomes<'t>(
    tx: &'t mut crate::store::Tx,
    outcomes: &[(&messages::Model, OutboundState, Delivery)],
    now: chrono::DateTime<chrono::Utc>,
) -> (
    &'t mut crate::store::Tx,
    Result<Vec<messages::Model>, crate::store::StoreError>,
) {
    let written = async {
        let mut saved = Vec::with_capacity(outcomes.len());
        for (row, state, delivery) in outcomes {
            let db = tx.get().await?;
            saved.push(outbound::set_state(db, row, *state, delivery.clone(), now).await?);
        }
        tx.checkpoint().await?;
        Ok(saved)
    }
    .await;
    if written.is_err() {
        // A transaction broken by a lost connection is of no further use.
        let _ = tx.rollback().await;
    }
    (tx, written)
}

/// The composed message `id`: the row a step before handed on, else read back.
pub(in crate::workflow::actions) async fn composed_row(
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
pub(in crate::workflow::actions) fn outgoing(
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
pub(in crate::workflow::actions) fn judge(
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
pub(in crate::workflow::actions) fn count_outcome(
    services: &crate::services::Services,
    state: OutboundState,
) {
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

/// One message of the batch to deliver.
struct ToSend {
    item: usize,
    row: messages::Model,
    mail: lettre::Message,
}
