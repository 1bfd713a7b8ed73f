//! `transition`: each job's change worked out in order from its thread as the batch's
//! earlier jobs left it; the changed threads' timers, cards and next timers written in
//! one statement each.

use chrono::{DateTime, Utc};
use gochat_entities::threads::ThreadStatus;
use uuid::Uuid;

use crate::contract::STATUSES;
use crate::lifecycle::{Change, Lifecycle, parse_status};
use crate::store::{threads, timers};
use crate::workflow::actions::lifecycle::{TRANSITION_FACTS, transition_facts};
use crate::workflow::actions::prelude::*;
use crate::workflow::actions::threads::{ACTOR, Cards, actor_in};
use crate::workflow::context::lifecycle_of;

/// `transition`.
pub struct Transition;

static TRANSITION: ActionSpec = ActionSpec {
    name: "transition",
    summary: "Moves the thread as its lifecycle says: to the status in fact `to` (if the \
              lifecycle allows it from the current one; the ladder's status starts the \
              ladder) or by the event in fact `event` (`agent_replied`, `customer_replied`, \
              ...). Cancels the thread's pending timers and arms the next one. An illegal \
              transition is a permanent failure.",
    params: &[
        ParamSpec {
            name: "to",
            ty: ParamType::Fact,
            default: Some("~"),
            doc: "The fact holding the status to set (e.g. `job.to`).",
        },
        ParamSpec {
            name: "event",
            ty: ParamType::Fact,
            default: Some("~"),
            doc: "The fact holding the lifecycle event (e.g. `job.event`).",
        },
        ParamSpec {
            name: "on",
            ty: ParamType::Str,
            default: Some("~"),
            doc: "Or: a literal lifecycle event (e.g. `agent_replied` after a reply was sent).",
        },
        ParamSpec {
            name: "reason",
            ty: ParamType::Fact,
            default: Some("~"),
            doc: "The fact holding why (kept in the audit).",
        },
        ACTOR,
    ],
    reads: &["thread.id"],
    writes: TRANSITION_FACTS,
};

#[async_trait::async_trait]
impl Action for Transition {
    fn spec(&self) -> &'static ActionSpec {
        &TRANSITION
    }

    fn validate(&self, params: &Params) -> Result<(), String> {
        if params.is_set("to") || params.is_set("event") || params.is_set("on") {
            Ok(())
        } else {
            Err("set `to`, `event` (facts; the job then names one of them) or `on` (a literal event)".into())
        }
    }

    /// The batch's timers cancelled, cards saved and next timers armed in one statement
    /// each (see [`for_batch`]).
    fn form(&self) -> Form {
        Form::Set
    }

    /// Each job's change worked out in order, as its lifecycle says, from its
    /// thread as the earlier jobs left it; then the changed threads' timers cancelled, their
    /// cards saved and the next timers armed, one statement each. The audit events go with
    /// the commit.
    async fn run(
        &self,
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
}

/// What a job asks `transition` for: a status or an event, who asks and why.
pub(in crate::workflow::actions) struct Asked {
    to: Option<String>,
    event: Option<String>,
    pub reason: Option<String>,
    pub who: Value,
}

impl Asked {
    pub fn of(facts: &Facts, params: &Params) -> Self {
        let fact = |name: &str| -> Option<String> {
            params
                .str(name)
                .ok()
                .filter(|_| params.is_set(name))
                .and_then(|f| facts.str(f))
                .map(str::to_owned)
        };
        let literal = params
            .str("on")
            .ok()
            .filter(|_| params.is_set("on"))
            .map(str::to_owned);
        Asked {
            to: fact("to"),
            event: fact("event").or(literal),
            reason: fact("reason"),
            who: actor_in(facts, params),
        }
    }

    /// The lifecycle's answer from status `from`: the change, `None` for none, or a
    /// permanent failure for an illegal or malformed request.
    pub fn change(
        &self,
        lifecycle: &Lifecycle,
        from: ThreadStatus,
        now: DateTime<Utc>,
    ) -> Result<Option<Change>, JobError> {
        match (&self.to, &self.event) {
            (Some(to), None) => {
                let status = parse_status(to).ok_or_else(|| {
                    JobError::permanent(format!("{to:?} is not a status ({})", STATUSES.join(", ")))
                })?;
                lifecycle.set_status(from, status, now)
            }
            (None, Some(event)) => lifecycle.event(from, event, now).map(Some),
            (Some(_), Some(_)) => {
                return Err(JobError::permanent(
                    "the job names both `to` and `event`; name one",
                ));
            }
            (None, None) => {
                return Err(JobError::permanent(
                    "the job names neither `to` nor `event`",
                ));
            }
        }
        .map_err(|e| JobError::permanent(format!("illegal transition: {e}")))
    }
}
