//! `set_status`: a status set without consulting the lifecycle (`transition` does).

use gochat_entities::threads::ThreadStatus;

use crate::contract::STATUSES;
use crate::store::threads;
use crate::workflow::actions::prelude::*;
use crate::workflow::actions::threads::{ACTOR, THREAD_FACTS, actor};

/// `set_status`.
pub struct SetStatus;

static SET_STATUS: ActionSpec = ActionSpec {
    name: "set_status",
    summary: "Sets the thread's status (off the reminder ladder, its timers cancelled), from the literal `status` or the fact `status_fact`, without consulting the lifecycle (`transition` does).",
    params: &[
        ParamSpec {
            name: "status",
            ty: ParamType::Enum(STATUSES),
            default: Some("~"),
            doc: "The new status.",
        },
        ParamSpec {
            name: "status_fact",
            ty: ParamType::Fact,
            default: Some("~"),
            doc: "Or: the fact holding it (e.g. `job.to`).",
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
    writes: THREAD_FACTS,
};

#[async_trait::async_trait]
impl Action for SetStatus {
    fn spec(&self) -> &'static ActionSpec {
        &SET_STATUS
    }

    /// Changes only its own job's thread (locked by `load_thread`) and that thread's rows.
    fn form(&self) -> Form {
        Form::Interleaved
    }

    fn validate(&self, params: &Params) -> Result<(), String> {
        match (params.is_set("status"), params.is_set("status_fact")) {
            (true, false) | (false, true) => Ok(()),
            _ => Err("set exactly one of `status` and `status_fact`".into()),
        }
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let wanted = if params.is_set("status") {
            params.str("status")?.to_owned()
        } else {
            let f = params.str("status_fact")?;
            ctx.facts.str(f).unwrap_or_default().to_owned()
        };
        let status: ThreadStatus =
            serde_json::from_value(Value::String(wanted.clone())).map_err(|_| {
                JobError::permanent(format!(
                    "{wanted:?} is not a status ({})",
                    STATUSES.join(", ")
                ))
            })?;
        let reason = if params.is_set("reason") {
            ctx.facts.str(params.str("reason")?).map(str::to_owned)
        } else {
            None
        };
        let who = actor(ctx, params);
        let current = ctx.thread()?.clone();
        let now = ctx.now;
        // Off the ladder: whatever was scheduled for the old status is moot.
        crate::store::timers::cancel_for_thread(ctx.db().await?, current.id).await?;
        let saved = threads::set_status(
            ctx.db().await?,
            &current,
            status,
            None,
            &who,
            reason.as_deref(),
            now,
        )
        .await?;
        ctx.set_thread(saved);
        Ok(Flow::Continue)
    }
}
