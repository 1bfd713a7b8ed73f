//! The set-based forms of the inbound actions (see [`Action::run_set`]): the same rules as
//! their one-mail forms in `inbound` and `threading`, with one statement for the whole
//! batch where those have one per mail. Each gives every mail what it would get running
//! alone after the batch's earlier mails; where that depends on what an earlier mail of
//! the batch does later in its workflow (the same dedupe key twice, a sender near the
//! loop limit twice), the mail is cut off to run after them.
//!
//! [`Action::run_set`]: crate::workflow::Action::run_set

use std::collections::HashMap;

use serde_json::json;

use super::inbound::{
    NO_MAIL, RawInput, apply_parse, conversation_keys, count_item, dedupe_key_of, duplicate,
    duplicate_mark, loop_sender, loop_window, parse_off_runtime, refused, set_loop, stored_raw,
    take_parse,
};
use super::threading::{
    inbound_message, is_normal_mail, new_customer, record_sender, sender_input, set_message_facts,
};
use crate::jobs::JobError;
use crate::mail::inbound::{EarlyParse, InboundMail, Sender};
use crate::store::threads::{self, Target};
use crate::store::{ContactInput, customers, inbound as store};
use crate::workflow::action::{Flow, Flows, cut_at};
use crate::workflow::context::{Batch, JobState};

/// How long a statement for a whole batch may wait for rows another batch holds (the
/// senders' upserts, see [`upsert_sender`]; `match_thread`'s read-ahead of threads).
/// Failing sooner would run the whole batch one job at a time; the rows go in sorted, so
/// two batches take them in one order and cannot deadlock on them.
pub(super) const SET_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `items` sorted by `key`, so concurrent batches lock their rows in one order, with the
/// position each came from.
fn sorted<T: Clone, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> (Vec<usize>, Vec<T>) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| key(&items[i]));
    let sorted = order.iter().map(|&i| items[i].clone()).collect();
    (order, sorted)
}

/// Results for the sorted items of [`sorted`], put back in the items' order.
fn unsorted<R>(order: &[usize], results: Vec<R>) -> Result<Vec<R>, JobError> {
    let mut out: Vec<Option<R>> = order.iter().map(|_| None).collect();
    for (&i, r) in order.iter().zip(results) {
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.ok_or_else(|| JobError::permanent("a multi-row write returned too few rows")))
        .collect()
}

/// The working mail of an item; the loader guarantees `store_raw_mail` ran before.
fn mail_of<'i>(item: &'i JobState<'_>) -> Result<&'i InboundMail, JobError> {
    item.inbound
        .as_deref()
        .ok_or_else(|| JobError::permanent(NO_MAIL))
}

/// `store_raw_mail`: each mail parsed, then one multi-row insert of the rows marked with
/// what they are (a reprocessed mail finds its stored row).
pub(super) async fn store_raw(
    batch: &mut Batch<'_>,
    items: &mut [&mut JobState<'_>],
) -> Result<Flows, JobError> {
    let (services, now) = (batch.services, batch.now);
    let tx = &mut *batch.tx;
    let max = services.config.mail.max_size;
    let inputs: Vec<Result<RawInput, String>> = items
        .iter()
        .map(|item| RawInput::of(item.job, max, now))
        .collect();
    // Parsed here, before the transaction begins, so each row goes in once, marked (a
    // reprocessed mail is parsed by `parse_mail`, which marks its stored row).
    let (inputs, outcomes): (Vec<_>, Vec<_>) = parse_off_runtime(inputs).await?.into_iter().unzip();
    // First, before any row lock: a batch holding a mail's reply commits first.
    let keys = conversation_keys(outcomes.iter().flatten().map(|(o, _)| o));
    crate::jobs::turn::in_turn(async {
        let bound = tx.lock_wait();
        if bound.is_some() {
            tx.bound_lock_waits(SET_LOCK_WAIT).await?;
        }
        store::lock_conversations(tx.get().await?, &keys).await?;
        if let Some(bound) = bound {
            tx.bound_lock_waits(bound).await?;
        }
        Ok::<_, JobError>(())
    })
    .await?;
    let db = tx.get().await?;
    let new: Vec<store::NewRawMail<'_>> = items
        .iter()
        .zip(&inputs)
        .zip(&outcomes)
        .filter_map(|((item, input), outcome)| match (input, outcome) {
            (Ok(i), Some((_, state))) => Some(i.row(&item.job.message_id, Some((state, now)))),
            _ => None,
        })
        .collect();
    let mut rows = store::store_raw_many(db, &new).await?.into_iter();
    drop(new);
    let mut flows = Vec::with_capacity(items.len());
    for ((item, input), outcome) in items.iter_mut().zip(inputs).zip(outcomes) {
        let input = match input {
            Ok(input) => input,
            Err(why) => {
                count_item(item, "refused");
                flows.push(Ok(Flow::Refuse(why)));
                continue;
            }
        };
        let (raw_id, early) = match (input.reprocess, outcome) {
            (Some(id), _) => (stored_raw(db, id).await?, None),
            (None, Some((outcome, _))) => {
                let row = rows.next().ok_or_else(|| {
                    JobError::permanent("the raw mail insert returned fewer rows than mails")
                })?;
                let on_row = row.written;
                (row.id, Some(EarlyParse { outcome, on_row }))
            }
            (None, None) => {
                return Err(JobError::permanent(
                    "a new raw mail was not parsed before it was stored",
                ));
            }
        };
        item.inbound = Some(input.stored(raw_id, early, &mut item.facts));
        flows.push(Ok(Flow::Continue));
    }
    Ok(flows)
}

/// `parse_mail`: takes each mail's parse (made by `store_raw_mail`); marks, in one
/// statement per distinct outcome, only the rows that do not say it yet.
pub(super) async fn parse(
    batch: &mut Batch<'_>,
    items: &mut [&mut JobState<'_>],
) -> Result<Flows, JobError> {
    let now = batch.now;
    let tx = &mut *batch.tx;
    let mut outcomes = Vec::with_capacity(items.len());
    let mut marks = Vec::new();
    for item in items.iter_mut() {
        let m = item
            .inbound
            .as_deref_mut()
            .ok_or_else(|| JobError::permanent(NO_MAIL))?;
        let (outcome, mark) = take_parse(m);
        marks.extend(mark);
        outcomes.push(outcome);
    }
    if !marks.is_empty() {
        store::mark_raw_many(tx.get().await?, &marks, now).await?;
    }
    let mut flows = Vec::with_capacity(items.len());
    for (item, outcome) in items.iter_mut().zip(outcomes) {
        let (flow, label) = apply_parse(outcome, &mut item.facts, item.inbound.as_deref_mut());
        if let Some(label) = label {
            count_item(item, label);
        }
        flows.push(Ok(flow));
    }
    Ok(flows)
}

/// `dedupe_mail`: one lookup for the batch's keys.
pub(super) async fn dedupe(
    batch: &mut Batch<'_>,
    items: &mut [&mut JobState<'_>],
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

/// `check_loop`: one grouped count for the batch's senders. A sender's second mail in the
/// batch is over the limit if the first count is, under it if even counting every earlier
/// mail of the batch leaves it under; in between it runs after them.
pub(super) async fn check_loop(
    batch: &mut Batch<'_>,
    items: &mut [&mut JobState<'_>],
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

/// `upsert_sender`: the batch's contacts, their customers, the missing customers and
/// their links, one statement each. A contact met twice is written once, with what the
/// mails say of it merged in order (the first name given fills a missing one, as running
/// one after the other would).
pub(super) async fn upsert_sender(
    batch: &mut Batch<'_>,
    items: &mut [&mut JobState<'_>],
) -> Result<Flows, JobError> {
    let (services, now) = (batch.services, batch.now);
    let tx = &mut *batch.tx;
    // Each item's contact input (or why it is refused), and the distinct contacts.
    let mut inputs: Vec<Result<ContactInput, String>> = Vec::with_capacity(items.len());
    let mut contacts: Vec<ContactInput> = Vec::new();
    let mut slot: Vec<Option<usize>> = Vec::with_capacity(items.len());
    for item in items.iter() {
        let input = sender_input(mail_of(item)?)?;
        let at = input.as_ref().ok().map(|c| {
            match contacts.iter().position(|d| d.address == c.address) {
                Some(at) => {
                    let known = &mut contacts[at];
                    known.name = known.name.take().or_else(|| c.name.clone());
                    known.language = known.language.take().or_else(|| c.language.clone());
                    at
                }
                None => {
                    contacts.push(c.clone());
                    contacts.len() - 1
                }
            }
        });
        slot.push(at);
        inputs.push(input);
    }
    // Another batch that inserted one of these contacts or customers holds it until it
    // commits, within its own run; failing here would run this whole batch one job at a
    // time, so these statements may wait longer than the batch's bound. The rows go in
    // sorted, so two batches take them in the same order and cannot deadlock on them.
    let bound = tx.lock_wait();
    if bound.is_some() {
        tx.bound_lock_waits(SET_LOCK_WAIT).await?;
    }
    let db = tx.get().await?;
    let (order, rows) = sorted(&contacts, |c| c.address.clone());
    let written = unsorted(
        &order,
        customers::find_or_create_contacts(db, &rows, now).await?,
    )?;
    // The customers of the contacts that sent normal mail; a contact the statement above
    // created belongs to none yet.
    let normal: Vec<bool> = items
        .iter()
        .map(|item| mail_of(item).map(is_normal_mail))
        .collect::<Result<_, _>>()?;
    let mut asked: Vec<uuid::Uuid> = slot
        .iter()
        .zip(&normal)
        .filter_map(|(at, n)| at.filter(|_| *n).map(|at| written[at]))
        .filter_map(|(id, created)| (!created).then_some(id))
        .collect();
    asked.sort();
    asked.dedup();
    let known = store::customers_of_contacts(db, &asked).await?;

    // A customer for each contact of normal mail that has none, named from its first
    // such mail (as running in order would), created once per external id.
    let mut wanted: Vec<(String, String)> = Vec::new();
    let mut wanted_by: HashMap<uuid::Uuid, usize> = HashMap::new();
    for (k, input) in inputs.iter().enumerate() {
        let (Ok(input), Some(at)) = (input, slot[k]) else {
            continue;
        };
        let contact = written[at].0;
        if !normal[k] || known.contains_key(&contact) || wanted_by.contains_key(&contact) {
            continue;
        }
        let (external, name) = new_customer(services, input);
        let w = match wanted.iter().position(|(e, _)| *e == external) {
            Some(w) => w,
            None => {
                wanted.push((external, name));
                wanted.len() - 1
            }
        };
        wanted_by.insert(contact, w);
    }
    let (order, rows) = sorted(&wanted, |(external, _)| external.clone());
    let made = unsorted(&order, customers::ensure_customers(db, &rows, now).await?)?;
    let mut links: Vec<(uuid::Uuid, uuid::Uuid)> = wanted_by
        .iter()
        .map(|(contact, w)| (made[*w].0, *contact))
        .collect();
    links.sort();
    customers::attach_contacts(db, &links, now).await?;
    if let Some(bound) = bound {
        tx.bound_lock_waits(bound).await?;
    }

    // Each mail's sender, as if run in order: only the first mail of a new contact created
    // it, only the first normal mail needing a customer created one.
    let mut contact_told = vec![false; contacts.len()];
    let mut customer_told = vec![false; wanted.len()];
    let mut flows = Vec::with_capacity(items.len());
    let mut refusals = Vec::new();
    for (k, item) in items.iter_mut().enumerate() {
        let (input, at) = match (&inputs[k], slot[k]) {
            (Ok(input), Some(at)) => (input, at),
            (Err(why), _) => {
                count_item(item, "refused");
                let (mark, reason) = refused(mail_of(item)?.raw_id, why);
                refusals.push(mark);
                flows.push(Ok(Flow::Refuse(reason)));
                continue;
            }
            (Ok(_), None) => return Err(JobError::permanent("a sender lost its contact")),
        };
        let (contact_id, created) = written[at];
        let contact_created = created && !std::mem::replace(&mut contact_told[at], true);
        let mut customer_created = false;
        let mut customers = Vec::new();
        if normal[k] {
            if let Some(list) = known.get(&contact_id) {
                customers = list.iter().map(|c| (c.id, c.attributes.clone())).collect();
            } else if let Some(&w) = wanted_by.get(&contact_id) {
                let (customer, created) = made[w];
                customer_created = created && !std::mem::replace(&mut customer_told[w], true);
                customers.push((customer, json!({})));
            }
        }
        let sender = Sender {
            contact_id,
            address: input.address.clone(),
            name: input.name.clone(),
            customers,
        };
        record_sender(
            services,
            &mut item.facts,
            item.inbound.as_deref_mut(),
            sender,
            contact_created,
            customer_created,
        );
        flows.push(Ok(Flow::Continue));
    }
    if !refusals.is_empty() {
        store::mark_raw_many(tx.get().await?, &refusals, now).await?;
    }
    Ok(flows)
}

/// `store_message`: the batch's mails on their threads in a few statements whatever their
/// number (see [`threads::add_messages`]): the threads they open go in with their first
/// message on the card, and mails of the batch on one thread go on its card in order.
pub(super) async fn store_messages(
    batch: &mut Batch<'_>,
    items: &mut [&mut JobState<'_>],
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
