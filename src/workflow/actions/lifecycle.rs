//! The lifecycle actions: `transition` (an agent's status change or a named event, checked
//! against the thread's lifecycle) and `fire_timer` (a ladder step falling due). Both apply
//! the pure state machine's answer in the job's transaction: the thread's new status and
//! step, its earlier timers cancelled, the next timer armed.

use chrono::{DateTime, Utc};
use gochat_entities::threads::ThreadStatus;
use gochat_entities::timers::TimerState;
use serde_json::{Value, json};
use uuid::Uuid;

use super::threads::{ACTOR, actor_in};
use crate::contract::STATUSES;
use crate::jobs::JobError;
use crate::lifecycle::{Change, Lifecycle, parse_status, status_name};
use crate::store::{threads, timers};
use crate::workflow::Facts;
use crate::workflow::action::{Action, Flow, Flows, Form};
use crate::workflow::context::{Batch, JobState, StepContext};
use crate::workflow::params::Params;
use crate::workflow::spec::{ActionSpec, FactSpec, FactType, ParamSpec, ParamType};

/// The facts both actions write (the `thread.*` facts are refreshed too, as
/// `load_thread` declared them); `fire_timer` adds the last.
const LIFECYCLE_FACTS: &[FactSpec] = &[
    FactSpec {
        name: "transition.from",
        ty: FactType::Enum(STATUSES),
        doc: "The status before.",
    },
    FactSpec {
        name: "transition.changed",
        ty: FactType::Bool,
        doc: "Whether the status changed.",
    },
    FactSpec {
        name: "transition.due_at",
        ty: FactType::Any,
        doc: "When the armed timer falls due (RFC 3339), or null.",
    },
    FactSpec {
        name: "reminder.template",
        ty: FactType::Any,
        doc: "The template of the reminder sent, or null for a silent step.",
    },
];
const TRANSITION_FACTS: &[FactSpec] = LIFECYCLE_FACTS.split_at(3).0;

/// Applies `change` to the loaded thread: cancels its timers, sets status and step (audited
/// when the status changes), arms the next timer; refreshes the thread and transition facts.
async fn apply(
    ctx: &mut StepContext<'_>,
    change: Option<Change>,
    who: &Value,
    reason: Option<&str>,
) -> Result<(), JobError> {
    let before = ctx.thread()?.clone();
    let Some(change) = change else {
        transition_facts(ctx.facts, before.status, before.status, None);
        return Ok(());
    };
    let now = ctx.now;
    let db = ctx.db().await?;
    timers::cancel_for_thread(db, before.id).await?;
    let after = threads::set_status(
        db,
        &before,
        change.to.status,
        change.to.step,
        who,
        reason,
        now,
    )
    .await?;
    if let Some(arm) = &change.arm {
        timers::schedule(db, &after, arm.step, arm.due_at, now).await?;
    }
    transition_facts(
        ctx.facts,
        before.status,
        after.status,
        change.arm.map(|a| a.due_at),
    );
    ctx.set_thread(after);
    Ok(())
}

/// The facts a transition from `from` to `to` leaves for the steps after it, in its
/// one-job and set forms: `transition.from`, `transition.changed` and `transition.due_at`
/// (null: no timer armed).
pub(super) fn transition_facts(
    facts: &mut Facts,
    from: ThreadStatus,
    to: ThreadStatus,
    due_at: Option<DateTime<Utc>>,
) {
    facts.set("transition.from", json!(status_name(from)));
    facts.set("transition.changed", Value::Bool(to != from));
    facts.set(
        "transition.due_at",
        due_at.map_or(Value::Null, |d| json!(d.to_rfc3339())),
    );
}

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
    /// each (see [`super::threads_batch::transitions`]).
    fn form(&self) -> Form {
        Form::Set
    }

    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        params: &Params,
    ) -> Result<Flows, JobError> {
        super::threads_batch::transitions(batch, items, params).await
    }
}

/// What a job asks `transition` for: a status or an event, who asks and why.
pub(super) struct Asked {
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

/// `fire_timer`.
pub struct FireTimer;

static FIRE_TIMER: ActionSpec = ActionSpec {
    name: "fire_timer",
    summary: "Fires a ladder timer: if the thread is still in the status and at the step the \
              timer expects (and the timer was not cancelled), writes the step's reminder as \
              an `outbound-message` job (`kind: reminder`) to the outbox, moves the thread to \
              the step's status and arms the next step. Otherwise the timer is stale: it is \
              marked so and the workflow stops, successfully, having changed nothing else.",
    params: &[ParamSpec {
        name: "timer",
        ty: ParamType::Fact,
        default: Some("job.timer_id"),
        doc: "The fact holding the timer id.",
    }],
    reads: &["thread.id"],
    writes: LIFECYCLE_FACTS,
};

#[async_trait::async_trait]
impl Action for FireTimer {
    fn spec(&self) -> &'static ActionSpec {
        &FIRE_TIMER
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let fact = params.str("timer")?;
        let raw = ctx.facts.str(fact).unwrap_or_default().to_owned();
        let id = Uuid::parse_str(&raw)
            .map_err(|_| JobError::permanent(format!("`{fact}` is not a timer id: {raw:?}")))?;
        let timer = timers::get(ctx.db().await?, id)
            .await?
            .ok_or_else(|| JobError::permanent(format!("unknown timer {id}")))?;
        let thread = ctx.thread()?.clone();
        if timer.thread_id != thread.id {
            return Err(JobError::permanent(format!(
                "timer {id} belongs to thread {}, not {}",
                timer.thread_id, thread.id
            )));
        }
        let why_stale = match timer.state {
            TimerState::Cancelled => Some("it was cancelled".to_owned()),
            TimerState::Fired | TimerState::Stale => Some("it already ran".to_owned()),
            _ if status_name(thread.status) != timer.expected_status
                || thread.lifecycle_step != Some(timer.step) =>
            {
                Some(format!(
                    "the thread is {} at step {:?}, the timer expected {} at step {}",
                    status_name(thread.status),
                    thread.lifecycle_step,
                    timer.expected_status,
                    timer.step
                ))
            }
            _ => None,
        };
        let now = ctx.now;
        if let Some(why) = why_stale {
            if matches!(timer.state, TimerState::Pending | TimerState::Claimed) {
                timers::finish(ctx.db().await?, id, TimerState::Stale, now).await?;
            }
            ctx.count_on_commit(|m| m.timers_fired.with_label_values(&["stale"]).inc());
            return Ok(Flow::Stop(format!("stale timer {id}: {why}")));
        }

        let lifecycle = ctx.lifecycle()?;
        let fired = lifecycle
            .fire(timer.step, timer.due_at)
            .map_err(|e| JobError::permanent(format!("timer {id}: {e}")))?;
        if let Some(template) = &fired.template {
            queue_reminder(ctx, &thread, template, timer.step, id, now).await?;
        }
        ctx.facts.set("reminder.template", json!(fired.template));
        timers::finish(ctx.db().await?, id, TimerState::Fired, now).await?;
        let system = json!({"kind": "system", "id": "gochat", "name": "Go!Chat"});
        let reason = match &fired.template {
            Some(t) => format!("reminder step {} ({t})", timer.step),
            None => format!("ladder step {}: no reply", timer.step),
        };
        apply(ctx, Some(fired.change), &system, Some(&reason)).await?;
        ctx.count_on_commit(|m| m.timers_fired.with_label_values(&["fired"]).inc());
        Ok(Flow::Continue)
    }
}

/// Writes the reminder as an `outbound-message` job in the outbox, to the thread's latest
/// customer-side contact; the outbound worker renders the template in their language.
/// Without a contact there is no one to remind: the audit says so and the ladder goes on.
async fn queue_reminder(
    ctx: &mut StepContext<'_>,
    thread: &gochat_entities::threads::Model,
    template: &str,
    step: i32,
    timer_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    let system = super::notify::system_author();
    let db = ctx.db().await?;
    let Some(contact) = thread.contact_id else {
        threads::record_event(
            db,
            thread.id,
            "reminder_skipped",
            &system,
            None,
            Some(json!({"template": template, "step": step, "reason": "the thread has no customer contact"})),
            now,
        )
        .await?;
        return Ok(());
    };
    super::notify::queue_outbound(
        ctx,
        thread.id,
        contact,
        "reminder",
        template,
        json!({"step": step}),
        &format!("reminder-{timer_id}"),
    );
    Ok(())
}
