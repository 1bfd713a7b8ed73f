//! The set-based forms of the thread actions (see [`Action::run_set`]): `load_thread`,
//! `transition` and `add_comment`, with the same rules as their one-job forms, but a
//! batch's threads read in one statement and its cards, timers and comments written in one
//! each. Status changes and comments come in bursts from the agents' tools; one by one
//! they cost four or five statements a job, which took the database from the mail.
//!
//! A batch that runs as a set is on distinct threads: `load_thread` cuts it at a job on a
//! thread an earlier job of the batch loaded, which then runs after that one. Otherwise the
//! later job would be checked against the thread as it was before the earlier one changed
//! it (its `expected_version`, the status it moves from). Inbound mail matches its threads
//! itself, and two mails of a batch may answer one thread: the steps here take each job's
//! thread as the batch's earlier jobs left it, as one by one they would.
//!
//! [`Action::run_set`]: crate::workflow::Action::run_set

use std::collections::{HashMap, HashSet};

use gochat_entities::threads::Model as Thread;
use uuid::Uuid;

use super::inbound_batch::SET_LOCK_WAIT;
use super::lifecycle::{Asked, transition_facts};
use super::threads::{comment, expected_version, thread_id, unknown_thread};
use crate::jobs::JobError;
use crate::store::cards::{self, CardWrite};
use crate::store::{threads, timers};
use crate::workflow::action::{Flow, Flows, cut_at};
use crate::workflow::context::{Batch, JobState, current_thread, lifecycle_of};
use crate::workflow::memo::Memo;
use crate::workflow::params::Params;

/// The cards a set-based step changes, kept in memory and written together when the step
/// ends.
#[derive(Default)]
struct Cards {
    writes: Vec<CardWrite>,
    at: HashMap<Uuid, usize>,
}

impl Cards {
    /// The item's thread as it stands: as this step changed it, else the newest card its
    /// unit of work wrote, else the item's own copy.
    fn current(&self, memo: &Memo, item: &JobState<'_>) -> Result<Thread, JobError> {
        let own = current_thread(item.thread.as_ref(), item.thread_stale)?;
        Ok(match self.at.get(&own.id) {
            Some(&i) => self.writes[i].card.clone(),
            None => memo.newer_thread(own).unwrap_or(own).clone(),
        })
    }

    /// Keeps `after`, one change further than `before` (see [`threads::bump`]).
    fn change(&mut self, before: &Thread, after: Thread) {
        match self.at.get(&before.id) {
            Some(&i) => self.writes[i].card = after,
            None => {
                self.at.insert(before.id, self.writes.len());
                self.writes.push(CardWrite {
                    base: before.version,
                    card: after,
                });
            }
        }
    }

    /// Writes the changed cards in one statement, and keeps them as their threads' newest
    /// in the unit of work.
    async fn write(self, batch: &mut Batch<'_>) -> Result<(), JobError> {
        if self.writes.is_empty() {
            return Ok(());
        }
        cards::save_many(batch.tx.get().await?, &self.writes).await?;
        for w in &self.writes {
            batch.memo.note_thread(&w.card);
        }
        Ok(())
    }
}

/// `load_thread`: the batch's threads read and locked in one statement, in id order.
pub(super) async fn load_threads(
    batch: &mut Batch<'_>,
    items: &mut [&mut JobState<'_>],
    params: &Params,
) -> Result<Flows, JobError> {
    let mut ids = Vec::with_capacity(items.len());
    let mut seen = HashSet::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        let id = match thread_id(&item.facts, params) {
            Ok(id) => id,
            Err(e) => return Ok(cut_at(k, e)),
        };
        if !seen.insert(id) {
            return Ok(cut_at(
                k,
                JobError::transient(format!(
                    "an earlier job of its batch is on thread {id}: runs after it"
                )),
            ));
        }
        ids.push(id);
    }
    // Nothing is locked yet, and the rows go in sorted: waiting for another batch's
    // threads cannot deadlock, and failing at once would run the batch one job at a time.
    let bound = batch.tx.lock_wait();
    if bound.is_some() {
        batch.tx.bound_lock_waits(SET_LOCK_WAIT).await?;
    }
    let found = cards::get_many_for_update(batch.tx.get().await?, &ids).await?;
    if let Some(bound) = bound {
        batch.tx.bound_lock_waits(bound).await?;
    }
    let mut flows = Vec::with_capacity(items.len());
    for (k, (item, id)) in items.iter_mut().zip(ids).enumerate() {
        let Some(stored) = found.get(&id) else {
            return Ok(cut_at(k, unknown_thread(id)));
        };
        let thread = batch.memo.newer_thread(stored).unwrap_or(stored).clone();
        let version = thread.version;
        batch.memo.note_thread(&thread);
        item.set_thread(thread);
        match expected_version(&item.facts, params, id, version) {
            Ok(flow) => flows.push(Ok(flow)),
            Err(e) => return Ok(cut_at(k, e)),
        }
    }
    Ok(flows)
}

/// `transition`: each job's change worked out in order, as its lifecycle says, from its
/// thread as the earlier jobs left it; then the changed threads' timers cancelled, their
/// cards saved and the next timers armed, one statement each. The audit events go with
/// the commit.
pub(super) async fn transitions(
    batch: &mut Batch<'_>,
    items: &mut [&mut JobState<'_>],
    params: &Params,
) -> Result<Flows, JobError> {
    let now = batch.now;
    let mut cards = Cards::default();
    let mut cancelled: Vec<Uuid> = Vec::new();
    // The timer each thread's last change armed: every change cancels what came before.
    let mut armed: Vec<(Uuid, gochat_entities::timers::ActiveModel)> = Vec::new();
    let mut events = Vec::new();
    let mut flows = Vec::with_capacity(items.len());
    for (k, item) in items.iter_mut().enumerate() {
        let asked = Asked::of(&item.facts, params);
        let decided = cards.current(&batch.memo, item).and_then(|before| {
            let lifecycle = lifecycle_of(&batch.lifecycles, &before)?;
            let change = asked.change(&lifecycle, before.status, now)?;
            Ok((before, change))
        });
        let (before, change) = match decided {
            Ok(decided) => decided,
            Err(e) => return Ok(cut_at(k, e)),
        };
        let Some(change) = change else {
            transition_facts(&mut item.facts, before.status, before.status, None);
            flows.push(Ok(Flow::Continue));
            continue;
        };
        if !cancelled.contains(&before.id) {
            cancelled.push(before.id);
        }
        armed.retain(|(thread, _)| *thread != before.id);
        let after = match threads::status_change(
            &before,
            change.to.status,
            change.to.step,
            &asked.who,
            asked.reason.as_deref(),
            now,
        ) {
            Some((changed, event)) => {
                let after = threads::bump(&before, changed, now);
                cards.change(&before, after.clone());
                events.extend(event);
                after
            }
            None => before.clone(),
        };
        if let Some(arm) = &change.arm {
            armed.push((
                before.id,
                timers::timer_row(&after, arm.step, arm.due_at, now),
            ));
        }
        transition_facts(
            &mut item.facts,
            before.status,
            after.status,
            change.arm.map(|a| a.due_at),
        );
        item.set_thread(after);
        flows.push(Ok(Flow::Continue));
    }
    if !cancelled.is_empty() {
        timers::cancel_for_threads(batch.tx.get().await?, &cancelled).await?;
    }
    cards.write(batch).await?;
    if !armed.is_empty() {
        let rows = armed.into_iter().map(|(_, row)| row).collect();
        timers::schedule_many(batch.tx.get().await?, rows).await?;
    }
    batch.tx.defer_events(&mut events);
    Ok(flows)
}

/// `add_comment`: the batch's comments in one statement, their threads' cards in another.
pub(super) async fn add_comments(
    batch: &mut Batch<'_>,
    items: &mut [&mut JobState<'_>],
    params: &Params,
) -> Result<Flows, JobError> {
    let mut cards = Cards::default();
    let mut rows = Vec::with_capacity(items.len());
    let mut flows = Vec::with_capacity(items.len());
    for (k, item) in items.iter_mut().enumerate() {
        let taken = comment(&item.facts, params)
            .and_then(|(body, author)| Ok((body, author, cards.current(&batch.memo, item)?)));
        let (body, author, before) = match taken {
            Ok(taken) => taken,
            Err(e) => return Ok(cut_at(k, e)),
        };
        rows.push(threads::comment_row(before.id, &author, &body, batch.now));
        let after = threads::bump(&before, threads::with_comment(&before), batch.now);
        cards.change(&before, after.clone());
        item.set_thread(after);
        flows.push(Ok(Flow::Continue));
    }
    threads::insert_comments(batch.tx.get().await?, rows).await?;
    cards.write(batch).await?;
    Ok(flows)
}
