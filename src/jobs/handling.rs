//! The contract between a queue consumer and what runs its jobs: [`Handler`]. The queue
//! side (`crate::queue::consumer`) delivers, acks and retries; the workflow side
//! (`crate::workflow::handler`) runs and commits. Defined here, below both, so neither
//! imports the other.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tracing::Instrument;

use super::{Job, JobError};

/// What a handler did with a job it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Its effects are committed.
    Applied,
    /// Its message id was already processed: nothing was done again.
    Duplicate,
}

/// Runs jobs to completion (committed) or to a classified failure.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, job: &Job) -> impl Future<Output = Result<Handled, JobError>> + Send;

    /// Runs several jobs of one kind, one result each in order. The default runs them one by
    /// one ([`handle_each`]); a handler may commit them together, as long as each job's
    /// result is what it would have been alone, and a panic leaves no effect behind (the
    /// consumer then runs the jobs again one by one).
    fn handle_batch(
        &self,
        jobs: &[Job],
    ) -> impl Future<Output = Vec<Result<Handled, JobError>>> + Send
    where
        Self: Sized,
    {
        handle_each(self, jobs)
    }

    /// Told once a job was moved to the dead letters (the move confirmed), so the handler
    /// can record it where readers of the database see it (the API's `?wait=`). Best
    /// effort: the dead-letter queue stays the record a job is replayed from.
    fn dead_lettered(&self, _job: &Job, _reason: &str) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Runs each job alone, in order, each in its own span; a panic fails only its own job.
pub async fn handle_each<H: Handler>(handler: &H, jobs: &[Job]) -> Vec<Result<Handled, JobError>> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let span = tracing::info_span!("job", kind = %job.kind, job_id = %job.message_id, attempt = job.attempt);
        out.push(
            AssertUnwindSafe(handler.handle(job))
                .catch_unwind()
                .instrument(span)
                .await
                .unwrap_or_else(|panic| {
                    Err(JobError::permanent(format!(
                        "the job's handler panicked: {}",
                        panic_message(panic.as_ref())
                    )))
                }),
        );
    }
    out
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}
