//! Running a workflow: its steps in order, each in its own tracing span and timed, skipping
//! those whose condition is false, stopping at the first failure (classed transient or
//! permanent by the action) or at a step that ends the workflow.

use std::time::Instant;

use tracing::Instrument;

use super::Workflow;
use super::action::{Flow, StepContext};
use crate::jobs::JobError;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// A step ended the workflow early (e.g. a duplicate mail); still a success.
    Stopped {
        step: String,
        reason: String,
    },
    /// A step refused the job: what was done stays, the job goes to the dead letters.
    Refused {
        step: String,
        reason: String,
    },
}

/// A failed step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("step `{step}` ({action}): {error}")]
pub struct StepFailure {
    pub step: String,
    pub action: &'static str,
    pub error: JobError,
}

impl StepFailure {
    /// The job's error, keeping its class and naming the step in the reason.
    pub fn into_job_error(self) -> JobError {
        let reason = self.to_string();
        match self.error {
            JobError::Transient(_) => JobError::Transient(reason),
            JobError::Permanent(_) => JobError::Permanent(reason),
        }
    }
}

pub async fn run(workflow: &Workflow, ctx: &mut StepContext<'_>) -> Result<Outcome, StepFailure> {
    for step in &workflow.steps {
        let spec = step.action.spec();
        if let Some(cond) = &step.when
            && !cond.eval(ctx.facts)
        {
            tracing::debug!(step = %step.name, "skipped: condition is false");
            continue;
        }
        let span = tracing::info_span!("step", step = %step.name, action = spec.name);
        let started = Instant::now();
        let result = step.action.run(ctx, &step.params).instrument(span).await;
        ctx.services
            .metrics
            .step_duration
            .with_label_values(&[spec.name])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop(reason)) => {
                tracing::info!(step = %step.name, %reason, "workflow stopped");
                return Ok(Outcome::Stopped {
                    step: step.name.clone(),
                    reason,
                });
            }
            Ok(Flow::Refuse(reason)) => {
                return Ok(Outcome::Refused {
                    step: step.name.clone(),
                    reason,
                });
            }
            Err(error) => {
                return Err(StepFailure {
                    step: step.name.clone(),
                    action: spec.name,
                    error,
                });
            }
        }
    }
    Ok(Outcome::Completed)
}
