//! `check_loop`: a sender over `mail.loop_limit` within `mail.loop_window` is a loop.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::mail::inbound::InboundMail;
use crate::services::Services;
use crate::store::inbound as store;
use crate::workflow::actions::inbound::mail_of;
use crate::workflow::actions::prelude::*;

/// `check_loop`.
pub struct CheckLoop;

static CHECK_LOOP: ActionSpec = ActionSpec {
    name: "check_loop",
    summary: "Counts the sender's mail within `mail.loop_window`: beyond `mail.loop_limit` the \
              mail is part of a loop (two robots answering each other), stored but never \
              answered, never opening or reopening a thread.",
    params: &[],
    reads: &["inbound.class"],
    writes: &[FactSpec {
        name: "inbound.loop",
        ty: FactType::Bool,
        doc: "The sender is over the loop limit.",
    }],
};

#[async_trait::async_trait]
impl Action for CheckLoop {
    fn spec(&self) -> &'static ActionSpec {
        &CHECK_LOOP
    }

    fn form(&self) -> Form {
        Form::Set
    }

    /// One grouped count for the batch's senders. A sender's second mail in the
    /// batch is over the limit if the first count is, under it if even counting every earlier
    /// mail of the batch leaves it under; in between it runs after them.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        let (services, now) = (batch.services, batch.now);
        let tx = &mut *batch.tx;
        let senders: Vec<Option<String>> = items
            .iter()
            .map(|item| mail_of(item).map(loop_sender))
            .collect::<Result<_, _>>()?;
        let mut distinct: Vec<String> = senders.iter().flatten().cloned().collect();
        distinct.sort();
        distinct.dedup();
        let (limit, since) = loop_window(services, now);
        let counts = store::recent_from_many(tx.get().await?, &distinct, since).await?;
        let mut seen: HashMap<&str, u64> = HashMap::new();
        let mut flows = Vec::with_capacity(items.len());
        let mut looping = Vec::new();
        for (k, (item, sender)) in items.iter_mut().zip(&senders).enumerate() {
            let Some(sender) = sender else {
                item.facts.set("inbound.loop", json!(false));
                flows.push(Ok(Flow::Continue));
                continue;
            };
            let recent = counts.get(sender).copied().unwrap_or(0);
            let earlier = seen.entry(sender.as_str()).or_insert(0);
            if *earlier > 0 && recent < limit && recent + *earlier >= limit {
                // Every item before it went on (a loop check ends no workflow).
                return Ok(cut_at(
                    k,
                    JobError::transient(
                        "its sender nears mail.loop_limit with an earlier mail of its batch: runs after it",
                    ),
                ));
            }
            *earlier += 1;
            let raw_id = mail_of(item)?.raw_id;
            if set_loop(
                &mut item.facts,
                item.inbound.as_deref_mut(),
                sender,
                recent,
                limit,
            ) {
                looping.push(raw_id);
            }
            flows.push(Ok(Flow::Continue));
        }
        if !looping.is_empty() {
            store::reclassify_raw(tx.get().await?, &looping, "loop").await?;
        }
        Ok(flows)
    }
}

/// Whose mail the loop check counts: the From address, else the envelope sender.
pub(in crate::workflow::actions) fn loop_sender(m: &InboundMail) -> Option<String> {
    m.parsed
        .as_ref()
        .and_then(|p| p.from.as_ref())
        .map(|f| f.address.to_ascii_lowercase())
        .or_else(|| m.envelope_from.clone())
}

/// `mail.loop_limit` and the start of `mail.loop_window` before `now`.
pub(in crate::workflow::actions) fn loop_window(
    services: &Services,
    now: DateTime<Utc>,
) -> (u64, DateTime<Utc>) {
    let cfg = &services.config.mail;
    let since = now - chrono::Duration::from_std(cfg.loop_window).unwrap_or_default();
    (u64::from(cfg.loop_limit), since)
}

/// Records whether `sender`, with `recent` mails in the window, is over `limit`; true when
/// it is (its raw row is then classified `loop`).
pub(in crate::workflow::actions) fn set_loop(
    facts: &mut Facts,
    mail: Option<&mut InboundMail>,
    sender: &str,
    recent: u64,
    limit: u64,
) -> bool {
    let looping = recent >= limit;
    if looping {
        tracing::warn!(%sender, recent, limit, "mail loop: the sender is over mail.loop_limit");
    }
    if let Some(m) = mail {
        m.looping = looping;
    }
    facts.set("inbound.loop", json!(looping));
    looping
}
