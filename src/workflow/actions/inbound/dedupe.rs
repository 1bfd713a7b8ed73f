//! `dedupe_mail`: the same mail delivered twice (or on two mailboxes) is stored once.

use gochat_entities::raw_mails::RawMailStatus;

use crate::mail::inbound::{self, InboundMail};
use crate::store::inbound as store;
use crate::workflow::actions::inbound::{count_item, mail_of};
use crate::workflow::actions::prelude::*;

/// `dedupe_mail`.
pub struct DedupeMail;

static DEDUPE: ActionSpec = ActionSpec {
    name: "dedupe_mail",
    summary: "Recognises a mail already stored: the same Message-ID from the same sender, \
              whatever mailbox it came in on (a mail without a Message-ID by its content). \
              A duplicate's raw row (with the mailbox it reached) is marked so and linked to \
              the message, and its workflow ends, done.",
    params: &[],
    reads: &["inbound.class"],
    writes: &[FactSpec {
        name: "inbound.duplicate_of",
        ty: FactType::Any,
        doc: "The message it repeats, or null.",
    }],
};

#[async_trait::async_trait]
impl Action for DedupeMail {
    fn spec(&self) -> &'static ActionSpec {
        &DEDUPE
    }

    fn form(&self) -> Form {
        Form::Set
    }

    /// One lookup for the batch's keys.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        let now = batch.now;
        let tx = &mut *batch.tx;
        let mut keys: Vec<String> = Vec::with_capacity(items.len());
        for (k, item) in items.iter().enumerate() {
            let key = dedupe_key_of(mail_of(item)?)?;
            if keys.contains(&key) {
                return Ok(cut_at(
                    k,
                    JobError::transient("repeats a mail earlier in its batch: runs after it"),
                ));
            }
            keys.push(key);
        }
        let db = tx.get().await?;
        let stored = store::by_dedupe_keys(db, &keys).await?;
        let mut marks = Vec::new();
        let mut flows = Vec::with_capacity(items.len());
        for (item, key) in items.iter_mut().zip(keys) {
            let existing = stored.get(&key);
            let raw_id = mail_of(item)?.raw_id;
            if let Some(m) = item.inbound.as_deref_mut() {
                m.dedupe_key = Some(key);
            }
            let Some(existing) = existing else {
                item.facts
                    .set("inbound.duplicate_of", serde_json::Value::Null);
                flows.push(Ok(Flow::Continue));
                continue;
            };
            marks.push(duplicate_mark(raw_id));
            store::link_raw(db, raw_id, existing.id).await?;
            count_item(item, "duplicate");
            flows.push(Ok(duplicate(&mut item.facts, existing)));
        }
        store::mark_raw_many(db, &marks, now).await?;
        Ok(flows)
    }
}

/// The key that makes two deliveries one mail.
pub(in crate::workflow::actions) fn dedupe_key_of(m: &InboundMail) -> Result<String, JobError> {
    let p = m.parsed.as_ref().ok_or_else(|| {
        JobError::permanent("the mail is not parsed at this step (`parse_mail` did not run)")
    })?;
    let sender = p
        .from
        .as_ref()
        .map(|f| f.address.clone())
        .or_else(|| m.envelope_from.clone())
        .unwrap_or_default();
    Ok(inbound::dedupe_key(
        p.message_id.as_deref(),
        &sender,
        &m.raw,
    ))
}

/// How a duplicate's raw row is marked.
pub(in crate::workflow::actions) fn duplicate_mark(raw_id: uuid::Uuid) -> store::RawMark {
    store::RawMark {
        id: raw_id,
        state: store::RawState {
            status: RawMailStatus::Duplicate,
            error: None,
            classification: None,
        },
    }
}

/// Ends the workflow of a mail that repeats `existing`.
pub(in crate::workflow::actions) fn duplicate(
    facts: &mut Facts,
    existing: &gochat_entities::messages::Model,
) -> Flow {
    facts.set("inbound.duplicate_of", json!(existing.id));
    Flow::Stop(format!(
        "a duplicate of message {} (thread {})",
        existing.id, existing.thread_id
    ))
}
