//! Running a workflow for a batch of jobs (a single job is a batch of one): its steps in
//! order, each in its own tracing span and timed, skipping those whose condition is false,
//! stopping a job at its first failure (classed transient or permanent by the action) or
//! at a step that ends its workflow.
//!
//! When every step allows it ([`Workflow::set_based`]), a [`Form::Set`] step runs once for
//! all the jobs whose condition holds, and each run of consecutive other steps runs job by
//! job, so within it a job sees what the jobs before it did (as it would run alone after
//! them). Otherwise each job runs its whole workflow in turn. Either way each job's result
//! is the one it would have alone after the jobs before it; `tests/thread_batches.rs`
//! holds the engine to that.

use std::time::{Duration, Instant};

use tracing::Instrument;

use super::action::{Flow, Form};
use super::context::{Batch, JobState, set_thread_facts};
use super::{Step, Workflow};
use crate::jobs::JobError;

/// How long a batched job (after the first) may wait for a row lock before the batch is
/// cut there. Short: a lock held by another replica's batch lasts a whole batch. A batch
/// that waits for a thread another replica holds while holding threads of its own is how
/// two replicas deadlock; the job that would wait runs alone instead, holding nothing
/// else, and may wait as long as it needs.
pub const BATCH_LOCK_WAIT: Duration = Duration::from_millis(50);

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
    /// A step failed the job for now: what was done stays, the job is retried later.
    Retry {
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

/// How a batch run failed; either way nothing of it may be committed.
#[derive(Debug)]
pub enum Failure {
    /// The job at this index failed; the others may be fine.
    Job(usize, StepFailure),
    /// A step failed for all of them (say, its statement).
    Step(StepFailure),
}

impl Failure {
    /// The failure as the error of a batch of one.
    pub fn into_job_error(self) -> JobError {
        match self {
            Failure::Job(_, f) | Failure::Step(f) => f.into_job_error(),
        }
    }
}

/// Runs `workflow` for `jobs` in `batch.tx`: one outcome per job, in order, and each job's
/// deferred metric updates left in its state.
pub async fn run(
    workflow: &Workflow,
    batch: &mut Batch<'_>,
    jobs: &mut [JobState<'_>],
) -> Result<Vec<Outcome>, Failure> {
    let together = jobs.len() > 1 && workflow.set_based();
    if together {
        // One statement locks rows of every job: bound the waits from the start.
        bound_lock_waits(batch).await?;
    }
    let mut ended: Vec<Option<Outcome>> = vec![None; jobs.len()];
    let mut rest = workflow.steps.as_slice();
    while let Some(step) = rest.first() {
        if together && step.action.form() == Form::Set {
            set_step(step, batch, jobs, &mut ended).await?;
            rest = &rest[1..];
            continue;
        }
        let len = if together {
            rest.iter()
                .position(|s| s.action.form() == Form::Set)
                .unwrap_or(rest.len())
        } else {
            rest.len()
        };
        let (segment, after) = rest.split_at(len);
        if together && let [step] = segment {
            read_ahead(step, batch, jobs, &ended).await?;
        }
        for (i, state) in jobs.iter_mut().enumerate() {
            if ended[i].is_some() {
                continue;
            }
            if i > 0 && batch.tx.lock_wait().is_none() {
                // The first job holds its locks now; bound the waits of the ones after it.
                bound_lock_waits(batch).await?;
            }
            if let Some(newer) = state
                .thread
                .as_ref()
                .and_then(|t| batch.memo.newer_thread(t))
            {
                // Another job of the batch changed the thread since this one's copy was made.
                let newer = newer.clone();
                state.set_thread(newer);
            }
            let span = tracing::info_span!("job", job_id = %state.job.message_id);
            let result = run_steps(segment, batch, state).instrument(span).await;
            ended[i] = result.map_err(|f| Failure::Job(i, f))?;
            if !together {
                // Its whole workflow ran: what it opened is written before the next job.
                let last = workflow.steps.last();
                write_opened(batch, &mut [state], last).await?;
            }
        }
        batch.memo.end_read_ahead();
        rest = after;
    }
    let mut all: Vec<&mut JobState<'_>> = jobs.iter_mut().collect();
    write_opened(batch, &mut all, workflow.steps.last()).await?;
    Ok(ended
        .into_iter()
        .map(|outcome| outcome.unwrap_or(Outcome::Completed))
        .collect())
}

async fn bound_lock_waits(batch: &mut Batch<'_>) -> Result<(), Failure> {
    batch
        .tx
        .bound_lock_waits(BATCH_LOCK_WAIT)
        .await
        .map_err(|e| {
            Failure::Step(StepFailure {
                step: String::new(),
                action: "",
                error: e.into(),
            })
        })
}

/// Runs `steps` for one job; `Some` when a step ended its workflow.
async fn run_steps(
    steps: &[Step],
    batch: &mut Batch<'_>,
    state: &mut JobState<'_>,
) -> Result<Option<Outcome>, StepFailure> {
    for step in steps {
        let spec = step.action.spec();
        let fail = |error| StepFailure {
            step: step.name.clone(),
            action: spec.name,
            error,
        };
        // A thread that may have changed is read again for a condition that reads it, else
        // only once the step is sure to run: a skipped step costs nothing.
        if step.condition_reads_thread() {
            refresh(batch, &mut [&mut *state]).await.map_err(fail)?;
        }
        if let Some(cond) = &step.when
            && !cond.eval(&state.facts)
        {
            tracing::debug!(step = %step.name, "skipped: condition is false");
            continue;
        }
        if step.reads_thread {
            refresh(batch, &mut [&mut *state]).await.map_err(fail)?;
        }
        let mut items = [&mut *state];
        if step.action.form() == Form::Set && !step.action.takes_opened_threads() {
            write_opened(batch, &mut items, Some(step))
                .await
                .map_err(|f| match f {
                    Failure::Job(_, f) | Failure::Step(f) => f,
                })?;
        }
        let span = tracing::info_span!("step", step = %step.name, action = spec.name);
        let started = Instant::now();
        let flows = step
            .action
            .run(batch, &mut items, &step.params)
            .instrument(span)
            .await;
        batch
            .services
            .metrics
            .step_duration
            .with_label_values(&[spec.name])
            .observe(started.elapsed().as_secs_f64());
        let flow = flows.and_then(|mut flows| {
            flows.pop().unwrap_or_else(|| {
                Err(JobError::permanent(format!(
                    "action `{}` returned no result",
                    spec.name
                )))
            })
        });
        match flow {
            Ok(flow) => {
                if let Some(end) = ending(&step.name, flow) {
                    return Ok(Some(end));
                }
            }
            Err(error) => return Err(fail(error)),
        }
    }
    Ok(None)
}

/// How a step's flow ends the workflow, if it does.
fn ending(step: &str, flow: Flow) -> Option<Outcome> {
    match flow {
        Flow::Continue => None,
        Flow::Stop(reason) => {
            tracing::info!(step, %reason, "workflow stopped");
            Some(Outcome::Stopped {
                step: step.to_owned(),
                reason,
            })
        }
        Flow::Refuse(reason) => Some(Outcome::Refused {
            step: step.to_owned(),
            reason,
        }),
        Flow::Retry(reason) => Some(Outcome::Retry {
            step: step.to_owned(),
            reason,
        }),
    }
}

/// Writes the threads the jobs opened that no step wrote yet, all in one go (before `step`,
/// which would not see them otherwise, or at the end of the run).
async fn write_opened(
    batch: &mut Batch<'_>,
    items: &mut [&mut JobState<'_>],
    step: Option<&Step>,
) -> Result<(), Failure> {
    let opened: Vec<Box<crate::store::threads::PreparedThread>> =
        items.iter_mut().filter_map(|s| s.opened.take()).collect();
    if opened.is_empty() {
        return Ok(());
    }
    let fail = |error: JobError| {
        Failure::Step(StepFailure {
            step: step.map(|s| s.name.clone()).unwrap_or_default(),
            action: step.map_or("", |s| s.action.spec().name),
            error,
        })
    };
    let refs: Vec<&crate::store::threads::PreparedThread> = opened.iter().map(|p| &**p).collect();
    let mut events = Vec::new();
    let db = batch.tx.get().await.map_err(|e| fail(e.into()))?;
    crate::store::threads::insert_prepared_many(db, &refs, &mut events)
        .await
        .map_err(|e| fail(e.into()))?;
    batch.tx.defer_events(&mut events);
    Ok(())
}

/// The jobs not ended whose condition for `step` holds: their indexes and states.
fn members<'s, 'j>(
    step: &Step,
    jobs: &'s mut [JobState<'j>],
    ended: &[Option<Outcome>],
) -> (Vec<usize>, Vec<&'s mut JobState<'j>>) {
    let mut members = Vec::new();
    let items = jobs
        .iter_mut()
        .enumerate()
        .filter(|(i, state)| {
            ended[*i].is_none() && step.when.as_ref().is_none_or(|c| c.eval(&state.facts))
        })
        .map(|(i, state)| {
            members.push(i);
            state
        })
        .collect();
    (members, items)
}

/// Lets a step that runs job by job between two set steps read ahead for all of them (see
/// [`super::Action::read_ahead`]).
async fn read_ahead(
    step: &Step,
    batch: &mut Batch<'_>,
    jobs: &mut [JobState<'_>],
    ended: &[Option<Outcome>],
) -> Result<(), Failure> {
    let (members, mut items) = members(step, jobs, ended);
    if members.len() < 2 {
        return Ok(());
    }
    step.action
        .read_ahead(batch, &mut items, &step.params)
        .await
        .map_err(|error| {
            Failure::Step(StepFailure {
                step: step.name.clone(),
                action: step.action.spec().name,
                error,
            })
        })
}

/// One set step for the jobs not ended whose condition holds.
async fn set_step(
    step: &Step,
    batch: &mut Batch<'_>,
    jobs: &mut [JobState<'_>],
    ended: &mut [Option<Outcome>],
) -> Result<(), Failure> {
    let spec = step.action.spec();
    let fail = |error| StepFailure {
        step: step.name.clone(),
        action: spec.name,
        error,
    };
    if step.reads_thread {
        let mut live: Vec<&mut JobState<'_>> = jobs
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| ended[*i].is_none())
            .map(|(_, s)| s)
            .collect();
        refresh(batch, &mut live)
            .await
            .map_err(|e| Failure::Step(fail(e)))?;
    }
    let (members, mut items) = members(step, jobs, ended);
    if members.is_empty() {
        return Ok(());
    }
    if !step.action.takes_opened_threads() {
        write_opened(batch, &mut items, Some(step)).await?;
    }
    let span =
        tracing::info_span!("step", step = %step.name, action = spec.name, jobs = members.len());
    let started = Instant::now();
    let flows = step
        .action
        .run(batch, &mut items, &step.params)
        .instrument(span)
        .await
        .map_err(|e| Failure::Step(fail(e)))?;
    let cut_short = flows.len() < members.len() && flows.last().is_some_and(Result::is_err);
    if flows.len() != members.len() && !cut_short {
        return Err(Failure::Step(fail(JobError::permanent(format!(
            "action `{}` returned {} results for {} jobs",
            spec.name,
            flows.len(),
            members.len()
        )))));
    }
    // Timed per job, amortised, so the histogram counts job steps either way.
    let each = started.elapsed().as_secs_f64() / members.len() as f64;
    let histogram = batch
        .services
        .metrics
        .step_duration
        .with_label_values(&[spec.name]);
    for (&i, flow) in members.iter().zip(flows) {
        histogram.observe(each);
        match flow {
            Ok(flow) => ended[i] = ending(&step.name, flow),
            Err(error) => return Err(Failure::Job(i, fail(error))),
        }
    }
    Ok(())
}

/// Reads the threads that may have changed since the jobs loaded them (see
/// [`super::StepContext::thread_may_have_changed`]) again, locked, in one statement.
async fn refresh(batch: &mut Batch<'_>, items: &mut [&mut JobState<'_>]) -> Result<(), JobError> {
    let stale: Vec<(usize, uuid::Uuid)> = items
        .iter()
        .enumerate()
        .filter(|(_, s)| s.thread_stale)
        .filter_map(|(i, s)| s.thread.as_ref().map(|t| (i, t.id)))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = stale.iter().map(|(_, id)| *id).collect();
    let fresh = crate::store::cards::get_many_for_update(batch.tx.get().await?, &ids).await?;
    for (i, id) in stale {
        let t = fresh.get(&id).ok_or_else(|| {
            JobError::transient(format!("thread {id} vanished while its job ran"))
        })?;
        batch.memo.note_thread(t);
        let state = &mut *items[i];
        set_thread_facts(&mut state.facts, t);
        state.thread = Some(t.clone());
        state.thread_stale = false;
    }
    Ok(())
}
