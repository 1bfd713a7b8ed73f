//! `fire_timer`: a reminder-ladder step falling due.

use chrono::{DateTime, Utc};
use gochat_entities::timers::TimerState;
use uuid::Uuid;

use crate::lifecycle::{Change, status_name};
use crate::store::{threads, timers};
use crate::workflow::actions::lifecycle::{LIFECYCLE_FACTS, transition_facts};
use crate::workflow::actions::prelude::*;

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
    let system = crate::workflow::actions::notify::system_author();
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
    crate::workflow::actions::notify::queue_outbound(
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
