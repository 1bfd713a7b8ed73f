//! `set_assignee`.

use crate::store::threads;
use crate::workflow::actions::prelude::*;
use crate::workflow::actions::threads::{ACTOR, THREAD_FACTS, actor};

/// `set_assignee`.
pub struct SetAssignee;

static SET_ASSIGNEE: ActionSpec = ActionSpec {
    name: "set_assignee",
    summary: "Assigns the thread to the agent in fact `assignee` (null unassigns).",
    params: &[
        ParamSpec {
            name: "assignee",
            ty: ParamType::Fact,
            default: Some("job.assignee"),
            doc: "The fact holding the agent id or null.",
        },
        ACTOR,
    ],
    reads: &["thread.id"],
    writes: THREAD_FACTS,
};

#[async_trait::async_trait]
impl Action for SetAssignee {
    fn spec(&self) -> &'static ActionSpec {
        &SET_ASSIGNEE
    }

    /// Changes only its own job's thread (locked by `load_thread`) and that thread's rows.
    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let assignee = match ctx.facts.get(params.str("assignee")?) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(Value::Null) | None => None,
            Some(other) => {
                return Err(JobError::permanent(format!(
                    "assignee must be an agent id or null, found {other}"
                )));
            }
        };
        let who = actor(ctx, params);
        let current = ctx.thread()?.clone();
        let now = ctx.now;
        let saved = threads::set_assignee(ctx.db().await?, &current, assignee, &who, now).await?;
        ctx.set_thread(saved);
        Ok(Flow::Continue)
    }
}
