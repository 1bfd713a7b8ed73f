//! `store_message`: the mail on its thread, and the thread's inbox card.

use std::collections::HashMap;

use gochat_entities::messages::{Channel, Classification, MessageDirection};

use crate::mail::classify::MailClass;
use crate::mail::inbound::InboundMail;
use crate::store::threads::{self, Target};
use crate::workflow::actions::inbound::{count_item, mail_of};
use crate::workflow::actions::prelude::*;

/// `store_message`.
pub struct StoreMessage;

static STORE_MESSAGE: ActionSpec = ActionSpec {
    name: "store_message",
    summary: "Stores the mail on the loaded thread (bodies, threading headers, attachments as \
              content-addressed blobs, its classification: new, reply, auto_reply, bounce or \
              loop) and updates the inbox card (last message time, snippet, attachments, item \
              count, latest contact; a stranger's mail changes neither snippet nor contact).",
    params: &[],
    reads: &["thread.id"],
    writes: &[
        FactSpec {
            name: "message.id",
            ty: FactType::Uuid,
            doc: "The stored message.",
        },
        FactSpec {
            name: "message.classification",
            ty: FactType::Enum(&["new", "reply", "auto_reply", "bounce", "loop"]),
            doc: "How the mail is shown in the feed.",
        },
    ],
};

#[async_trait::async_trait]
impl Action for StoreMessage {
    fn spec(&self) -> &'static ActionSpec {
        &STORE_MESSAGE
    }

    fn form(&self) -> Form {
        Form::Set
    }

    fn takes_opened_threads(&self) -> bool {
        true
    }

    /// The batch's mails on their threads in a few statements whatever their
    /// number (see [`threads::add_messages`]): the threads they open go in with their first
    /// message on the card, and mails of the batch on one thread go on its card in order.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        let now = batch.now;
        let tx = &mut *batch.tx;
        let mut writes = Vec::with_capacity(items.len());
        let mut kinds = Vec::with_capacity(items.len());
        let mut versions: HashMap<uuid::Uuid, i64> = HashMap::new();
        for (k, item) in items.iter_mut().enumerate() {
            let created = item.facts.get("thread.created") == Some(&serde_json::Value::Bool(true));
            let (msg, classification, label) = inbound_message(item.job, mail_of(item)?, created)?;
            let target = match item.opened.take() {
                Some(opened) => Target::Open(*opened),
                None => {
                    let thread = item.thread.clone().ok_or_else(|| {
                        JobError::permanent("no thread at this step (`match_thread` did not run)")
                    })?;
                    // Two copies of one thread differ when a later mail's match changed it (an
                    // unknown sender flagged it): the card of the older would be stale.
                    if *versions.entry(thread.id).or_insert(thread.version) != thread.version {
                        return Ok(cut_at(
                            k,
                            JobError::transient(
                                "a mail of its batch changed its thread meanwhile: runs after it",
                            ),
                        ));
                    }
                    Target::Existing(thread)
                }
            };
            kinds.push((msg.message_id_header.clone(), classification, label));
            writes.push((target, msg));
        }
        let mut events = Vec::new();
        let stored = match threads::add_messages(tx.get().await?, writes, now, &mut events).await {
            Err(e) if e.is_unique_violation() => {
                // A copy of one of these mails, delivered twice at once, stored by a concurrent
                // job: run one by one, that one's retry finds it and ends as a duplicate.
                return Err(JobError::transient(format!(
                    "a copy of a mail of this batch is being stored by another job ({e})"
                )));
            }
            other => other?,
        };
        tx.defer_events(&mut events);
        let mut flows = Vec::with_capacity(items.len());
        for ((item, (card, row)), (header, classification, label)) in
            items.iter_mut().zip(stored).zip(kinds)
        {
            if let Some(header) = header {
                batch.memo.mail_stored(&header);
            }
            batch.memo.note_thread(&card);
            item.set_thread(card);
            set_message_facts(&mut item.facts, &row, classification);
            count_item(item, label);
            flows.push(Ok(Flow::Continue));
        }
        Ok(flows)
    }
}

/// The `message.*` facts of a stored mail.
pub(in crate::workflow::actions) fn set_message_facts(
    facts: &mut Facts,
    row: &gochat_entities::messages::Model,
    classification: Classification,
) {
    facts.set("message.id", json!(row.id));
    facts.set(
        "message.classification",
        serde_json::to_value(classification).unwrap_or(Value::Null),
    );
}

/// The message to store for inbound mail `m` of `job` (`created`: it opened its thread),
/// its classification and the label it is counted under.
pub(in crate::workflow::actions) fn inbound_message(
    job: &crate::jobs::Job,
    m: &InboundMail,
    created: bool,
) -> Result<(threads::NewMessage, Classification, &'static str), JobError> {
    let p = m
        .parsed
        .clone()
        .ok_or_else(|| JobError::permanent("the mail is not parsed at this step"))?;
    let (classification, label) = match (&m.class, m.looping) {
        (Some(MailClass::Bounce(_)), _) => (Classification::Bounce, "bounce"),
        (Some(MailClass::AutoReply { .. }), _) => (Classification::AutoReply, "auto_reply"),
        (_, true) => (Classification::Loop, "loop"),
        _ if created => (Classification::New, "new_thread"),
        _ => (Classification::Reply, "reply"),
    };
    let from = p
        .from
        .as_ref()
        .map(|f| f.address.to_ascii_lowercase())
        .or_else(|| m.envelope_from.clone())
        .unwrap_or_else(|| "(unknown sender)".into());
    let mut msg = threads::NewMessage::new(
        MessageDirection::Inbound,
        Channel::Email,
        from,
        p.subject.clone(),
    );
    msg.from_name = p.from.as_ref().and_then(|f| f.name.clone());
    // A bounce comes from a mail server, not from the customer.
    if classification != Classification::Bounce {
        msg.contact_id = m.sender.as_ref().map(|s| s.contact_id);
    }
    msg.message_id_header = p.message_id.clone();
    msg.in_reply_to = p.in_reply_to.first().cloned();
    msg.references = p.references.clone();
    msg.to = p.to.iter().map(|a| a.address.clone()).collect();
    msg.cc = p.cc.iter().map(|a| a.address.clone()).collect();
    msg.text_body = p.text.clone();
    msg.html_body = p.html.clone();
    msg.classification = Some(classification);
    msg.raw_mail_id = Some(m.raw_id);
    msg.job_message_id = Some(job.message_id.clone());
    msg.dedupe_key = m.dedupe_key.clone();
    msg.on_card = !m.stranger;
    msg.attachments = p
        .attachments
        .into_iter()
        .map(|a| threads::NewAttachment {
            name: a.name,
            content_type: a.content_type,
            data: a.data,
            inline: a.inline,
            content_id: a.content_id,
        })
        .collect();
    Ok((msg, classification, label))
}
