//! The contract between the engine and a built-in action: what it gets (the step's checked
//! parameters, the batch and its jobs) and what it returns for each job (go on, or end the
//! workflow).
//!
//! A batch is the only way a step runs: a single job is a batch of one. An action that
//! gains from seeing the whole batch (one statement instead of one per job) implements
//! [`Action::run`]; one with nothing to share implements [`Action::run_job`] and gets the
//! loop from `run`'s default.

use super::context::{Batch, JobState, StepContext};
use super::params::Params;
use super::spec::ActionSpec;
use crate::jobs::{Job, JobError};
use crate::services::Services;

/// What a step returns: one result per job given, in order, or fewer that end with an
/// error (the batch is cut there, see [`Action::run`]).
pub type Flows = Vec<Result<Flow, JobError>>;

/// How a step shares a batch with the other jobs' steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Job by job, and each job must have run its whole workflow before the next starts
    /// (it reads what the earlier jobs did in their later steps): a batch whose workflow
    /// has such a step runs job after job.
    Alone,
    /// Job by job, between the set steps of the other jobs: it reads and writes only rows
    /// of its own job, or rows any conflict on which is caught (a thread's version check).
    /// Consecutive such steps run job by job, so a job sees what the batch's earlier jobs
    /// did in them (a reply finds the message an earlier mail of the batch stored).
    Interleaved,
    /// Once for all the jobs of the batch, with multi-row statements: a small job's cost is
    /// its round trips to the database, so a batch of 32 that costs 3 statements instead
    /// of 96 is most of the way to the broker's own rate.
    Set,
}

/// A built-in action. Implementations are stateless; everything a run needs is in the batch
/// and its jobs' states.
#[async_trait::async_trait]
pub trait Action: Send + Sync + 'static {
    fn spec(&self) -> &'static ActionSpec;

    /// Checks that go beyond each parameter's type (e.g. "exactly one of"), at load time.
    fn validate(&self, _params: &Params) -> Result<(), String> {
        Ok(())
    }

    fn form(&self) -> Form {
        Form::Alone
    }

    /// True for an action that commits the batch's transaction midway (outbound delivery
    /// commits `sending` before it talks to the mail server). A workflow using one batches
    /// only when the action is [`Form::Set`], so every job of the batch stands at it when it
    /// commits; otherwise a midway commit would commit the other jobs' half-done work.
    fn commits_midway(&self) -> bool {
        false
    }

    /// True for an action that writes the threads its jobs opened and nobody wrote yet
    /// ([`JobState::opened`]), as `store_message` writes each with its first message.
    /// Before any other set step the engine writes them itself, all in one go.
    fn takes_opened_threads(&self) -> bool {
        false
    }

    /// After the job failed and its transaction was rolled back: keeps, in a commit of its
    /// own, what must survive any failure (an inbound mail's raw bytes), and returns a note
    /// for the job's error (where it was kept). Best effort: with the database down there
    /// is nothing to keep it in, and the job's retry finds it again anyway.
    async fn keep_on_failure(
        &self,
        _services: &Services,
        _job: &Job,
        _why: &str,
    ) -> Option<String> {
        None
    }

    /// Before an [`Form::Interleaved`] step that runs job by job between two set steps:
    /// may read, for all `items` at once, what each job's run would look up, and leave it
    /// in the batch's memo; the engine drops it after the step. Only this step's runs come
    /// between, so what was read stays what each job would read, as long as the run takes
    /// its own changes into account. An error fails the whole batch (its jobs then run
    /// alone).
    async fn read_ahead(
        &self,
        _batch: &mut Batch<'_>,
        _items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<(), JobError> {
        Ok(())
    }

    /// The step for `items`, all in `batch.tx` and stamped `batch.now`: one result per
    /// item, in order, or fewer that end with an error. An item's error cuts the batch
    /// there: the engine rolls everything back, commits the jobs before it again and runs
    /// that job alone, so on an item error the action need not write anything for the
    /// others. An error of the whole (a failed statement) runs every job alone.
    ///
    /// The default runs [`Action::run_job`] for each item in turn, so each sees what the
    /// ones before it did.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        params: &Params,
    ) -> Result<Flows, JobError> {
        let mut flows = Vec::with_capacity(items.len());
        for item in items.iter_mut() {
            let flow = self.run_job(&mut batch.job(item), params).await;
            let failed = flow.is_err();
            flows.push(flow);
            if failed {
                break;
            }
        }
        Ok(flows)
    }

    /// The step for one job (see [`Action::run`]).
    async fn run_job(
        &self,
        _ctx: &mut StepContext<'_>,
        _params: &Params,
    ) -> Result<Flow, JobError> {
        Err(JobError::permanent(format!(
            "action `{}` implements neither `run` nor `run_job`",
            self.spec().name
        )))
    }
}

/// A step's results when the batch is cut at item `k`: the items before it fine so far,
/// `k` failed with `error` (the engine commits those before it, then runs `k` alone).
pub fn cut_at(k: usize, error: JobError) -> Flows {
    let mut out: Vec<_> = (0..k).map(|_| Ok(Flow::Continue)).collect();
    out.push(Err(error));
    out
}

/// What happens after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// End the workflow successfully here (the job is still recorded as processed).
    Stop(String),
    /// End the workflow here, keep what it did (say, the raw mail stored and marked
    /// unparseable), and send the job to the dead letters with this reason. The job is not
    /// recorded as processed, so once the cause is fixed a replay of the dead letter runs it
    /// again.
    Refuse(String),
    /// End the workflow here, keep what it did, and retry the job later with this reason
    /// (a set step's temporary failure of one job, say the mail server's 4xx for one
    /// message, that must not undo what the step committed for the others).
    Retry(String),
}
