//! Threads: loading one, and changing its status, assignee, tags, customers and comments.
//! Every change goes through the store's versioned compare-and-set and leaves an audit event.
//!
//! A batch that runs as a set is on distinct threads: `load_thread` cuts it at a job on a
//! thread an earlier job of the batch loaded, which then runs after that one. Otherwise the
//! later job would be checked against the thread as it was before the earlier one changed
//! it (its `expected_version`, the status it moves from). Inbound mail matches its threads
//! itself, and two mails of a batch may answer one thread: the set steps take each job's
//! thread as the batch's earlier jobs left it ([`Cards`]), as one by one they would.

mod add_comment;
mod change_tags;
mod load;
mod set_assignee;
mod set_customers;
mod set_status;

pub use add_comment::AddComment;
pub use change_tags::ChangeTags;
pub use load::LoadThread;
pub use set_assignee::SetAssignee;
pub use set_customers::SetCustomers;
pub use set_status::SetStatus;

use std::collections::HashMap;

use gochat_entities::threads::Model as Thread;
use uuid::Uuid;

use crate::contract::STATUSES;
use crate::store::cards::{self, CardWrite};
use crate::workflow::actions::prelude::*;
use crate::workflow::context::current_thread;
use crate::workflow::memo::Memo;

/// Facts describing the current thread, written by every action that loads or changes it.
pub(in crate::workflow::actions) const THREAD_FACTS: &[FactSpec] = &[
    FactSpec {
        name: "thread.id",
        ty: FactType::Uuid,
        doc: "The thread's id.",
    },
    FactSpec {
        name: "thread.status",
        ty: FactType::Enum(STATUSES),
        doc: "Its status now.",
    },
    FactSpec {
        name: "thread.version",
        ty: FactType::Int,
        doc: "Its version now.",
    },
    FactSpec {
        name: "thread.assignee",
        ty: FactType::Any,
        doc: "The assigned agent, or null.",
    },
    FactSpec {
        name: "thread.lifecycle",
        ty: FactType::Str,
        doc: "Its lifecycle workflow's name.",
    },
    FactSpec {
        name: "thread.lifecycle_step",
        ty: FactType::Any,
        doc: "Its reminder step, or null.",
    },
];

/// The actor of a change: the fact named by parameter `actor`, or the system.
pub(in crate::workflow::actions) fn actor(ctx: &StepContext<'_>, params: &Params) -> Value {
    actor_in(ctx.facts, params)
}

/// [`actor`] from a job's facts (a set-based step has no [`StepContext`]).
pub(in crate::workflow::actions) fn actor_in(facts: &Facts, params: &Params) -> Value {
    params
        .str("actor")
        .ok()
        .and_then(|f| facts.get(f).cloned())
        .unwrap_or_else(|| json!({"kind": "system", "id": "gochat", "name": "Go!Chat"}))
}

pub(in crate::workflow::actions) const ACTOR: ParamSpec = ParamSpec {
    name: "actor",
    ty: ParamType::Fact,
    default: Some("job.actor"),
    doc: "The fact holding who makes the change (`{kind, id, name}`), recorded in the audit.",
};

/// The cards a set-based step changes, kept in memory and written together when the step
/// ends.
#[derive(Default)]
pub(in crate::workflow::actions) struct Cards {
    writes: Vec<CardWrite>,
    at: HashMap<Uuid, usize>,
}

impl Cards {
    /// The item's thread as it stands: as this step changed it, else the newest card its
    /// unit of work wrote, else the item's own copy.
    pub(in crate::workflow::actions) fn current(
        &self,
        memo: &Memo,
        item: &JobState<'_>,
    ) -> Result<Thread, JobError> {
        let own = current_thread(item.thread.as_ref(), item.thread_stale)?;
        Ok(match self.at.get(&own.id) {
            Some(&i) => self.writes[i].card.clone(),
            None => memo.newer_thread(own).unwrap_or(own).clone(),
        })
    }

    /// Keeps `after`, one change further than `before` (see [`threads::bump`]).
    pub(in crate::workflow::actions) fn change(&mut self, before: &Thread, after: Thread) {
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
    pub(in crate::workflow::actions) async fn write(
        self,
        batch: &mut Batch<'_>,
    ) -> Result<(), JobError> {
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
