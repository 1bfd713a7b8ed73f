//! `send_mail` for a batch of outbound jobs at once: the same at-most-once rule as one job
//! (see [`super::outbound`]), with three commits a batch instead of three a message.
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

use gochat_entities::messages::{self, OutboundState};
use uuid::Uuid;

use super::outbound::{
    composed_row, count_outcome, judge, mail_facts, mail_id, outgoing, record_outcomes,
};
use crate::jobs::JobError;
use crate::store::outbound::{self, Delivery};
use crate::workflow::action::{Flow, Flows, cut_at};
use crate::workflow::context::{Batch, JobState};

/// One message of the batch to deliver.
struct ToSend {
    item: usize,
    row: messages::Model,
    mail: lettre::Message,
}

pub(super) async fn send_set(
    batch: &mut Batch<'_>,
    items: &mut [&mut JobState<'_>],
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
        futures_util::future::join_all(to_send.iter().map(|s| services.smtp.send(&s.mail))).await;
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
