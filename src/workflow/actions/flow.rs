//! Control flow: ending a workflow early.

use crate::workflow::actions::prelude::*;

/// `stop`: ends the workflow successfully (used with `when:`).
pub struct Stop;

static STOP: ActionSpec = ActionSpec {
    name: "stop",
    summary: "Ends the workflow here; the job counts as done. Use with `when:`.",
    params: &[ParamSpec {
        name: "reason",
        ty: ParamType::Str,
        default: None,
        doc: "Why, for the logs.",
    }],
    reads: &[],
    writes: &[],
};

#[async_trait::async_trait]
impl Action for Stop {
    fn spec(&self) -> &'static ActionSpec {
        &STOP
    }

    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, _ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        Ok(Flow::Stop(params.str("reason")?.to_owned()))
    }
}
