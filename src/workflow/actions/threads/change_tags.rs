//! `change_tags`.

use crate::store::threads;
use crate::workflow::actions::prelude::*;
use crate::workflow::actions::threads::{ACTOR, THREAD_FACTS, actor};

/// `change_tags`.
pub struct ChangeTags;

static CHANGE_TAGS: ActionSpec = ActionSpec {
    name: "change_tags",
    summary: "Adds the tags in fact `add` and removes those in fact `remove` (absent facts change nothing).",
    params: &[
        ParamSpec {
            name: "add",
            ty: ParamType::Fact,
            default: Some("job.tags_add"),
            doc: "The fact holding tags to add.",
        },
        ParamSpec {
            name: "remove",
            ty: ParamType::Fact,
            default: Some("job.tags_remove"),
            doc: "The fact holding tags to remove.",
        },
        ACTOR,
    ],
    reads: &["thread.id"],
    writes: THREAD_FACTS,
};

#[async_trait::async_trait]
impl Action for ChangeTags {
    fn spec(&self) -> &'static ActionSpec {
        &CHANGE_TAGS
    }

    /// Changes only its own job's thread (locked by `load_thread`) and that thread's rows.
    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let add = ctx.facts.strings(params.str("add")?);
        let remove = ctx.facts.strings(params.str("remove")?);
        let who = actor(ctx, params);
        let current = ctx.thread()?.clone();
        let now = ctx.now;
        let saved =
            threads::change_tags(ctx.db().await?, &current, &add, &remove, &who, now).await?;
        ctx.set_thread(saved);
        Ok(Flow::Continue)
    }
}
