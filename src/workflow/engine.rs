//! Running a workflow: its steps in order, each in its own tracing span and timed, skipping
//! those whose condition is false, stopping at the first failure (classed transient or
//! permanent by the action) or at a step that ends the workflow.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::action::{Carried, Flow, MetricUpdate, SetContext, SetItem, StepContext};
use super::{Facts, Step, Workflow};
use crate::jobs::{Job, JobError};
use crate::lifecycle::Lifecycles;
use crate::mail::Templates;
use crate::services::Services;
use crate::store::Tx;

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

pub async fn run(workflow: &Workflow, ctx: &mut StepContext<'_>) -> Result<Outcome, StepFailure> {
    let ended = run_steps(&workflow.steps, ctx).await?;
    // What the run left unwritten is written before its results are handed on.
    ctx.flush().await.map_err(|error| StepFailure {
        step: workflow
            .steps
            .last()
            .map(|s| s.name.clone())
            .unwrap_or_default(),
        action: workflow.steps.last().map_or("", |s| s.action.spec().name),
        error,
    })?;
    Ok(ended.unwrap_or(Outcome::Completed))
}

/// Runs `steps` for one job; `Some` when a step ended the workflow.
async fn run_steps(
    steps: &[Step],
    ctx: &mut StepContext<'_>,
) -> Result<Option<Outcome>, StepFailure> {
    for step in steps {
        let spec = step.action.spec();
        // A thread that may have changed is read again for a condition that reads it, else
        // only once the step is sure to run: a skipped step costs nothing.
        if step.condition_reads_thread() {
            fresh_thread(step, ctx).await?;
        }
        if let Some(cond) = &step.when
            && !cond.eval(ctx.facts)
        {
            tracing::debug!(step = %step.name, "skipped: condition is false");
            continue;
        }
        if step.reads_thread {
            fresh_thread(step, ctx).await?;
        }
        let span = tracing::info_span!("step", step = %step.name, action = spec.name);
        let started = Instant::now();
        let result = step.action.run(ctx, &step.params).instrument(span).await;
        ctx.services
            .metrics
            .step_duration
            .with_label_values(&[spec.name])
            .observe(started.elapsed().as_secs_f64());
        let fail = |error| StepFailure {
            step: step.name.clone(),
            action: spec.name,
            error,
        };
        match result {
            Ok(flow) => {
                if let Some(end) = ending(&step.name, flow) {
                    ctx.flush().await.map_err(fail)?;
                    return Ok(Some(end));
                }
            }
            Err(error) => return Err(fail(error)),
        }
    }
    Ok(None)
}

/// Reads the loaded thread again if it may have changed (see
/// [`StepContext::thread_may_have_changed`]).
async fn fresh_thread(step: &Step, ctx: &mut StepContext<'_>) -> Result<(), StepFailure> {
    ctx.refresh_stale_thread()
        .await
        .map_err(|error| StepFailure {
            step: step.name.clone(),
            action: step.action.spec().name,
            error,
        })
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

/// One job of a set run (see [`run_set`]) once it ended: how, and the metric updates its
/// steps deferred to the commit.
pub struct SetRun {
    pub outcome: Outcome,
    pub counted: Vec<MetricUpdate>,
}

/// How a set run failed; either way nothing of it may be committed.
#[derive(Debug)]
pub enum SetFailure {
    /// The job at this index (of the slice given) failed; the others may be fine.
    Job(usize, StepFailure),
    /// A step failed for all of them (say, its statement).
    Step(StepFailure),
}

/// Runs `workflow` (one that [`Workflow::set_based`] allows) for several jobs in `tx`: a
/// set-based step once for all the jobs whose condition holds; each run of consecutive
/// other steps job by job, so within it a job sees what the jobs before it did (as it
/// would run alone after them). All are stamped with one clock reading, as they commit
/// together. Returns one result per job, in order.
pub async fn run_set(
    workflow: &Workflow,
    services: &Services,
    lifecycles: Arc<Lifecycles>,
    templates: Arc<Templates>,
    tx: &mut Tx,
    jobs: &[&Job],
) -> Result<Vec<SetRun>, SetFailure> {
    let now = services.clock.now();
    let mut facts: Vec<Facts> = jobs.iter().map(|j| Facts::for_job(j)).collect();
    let mut carried: Vec<Carried> = jobs.iter().map(|_| Carried::default()).collect();
    let mut ended: Vec<Option<Outcome>> = vec![None; jobs.len()];
    let mut rest = workflow.steps.as_slice();
    while let Some(step) = rest.first() {
        if step.action.set_based() {
            if !step.action.writes_opened_threads() {
                write_opened(tx, &mut carried, step).await?;
            }
            let mut set = SetContext {
                services,
                tx,
                lifecycles: &lifecycles,
                now,
            };
            set_step(step, &mut set, jobs, &mut facts, &mut carried, &mut ended).await?;
            rest = &rest[1..];
            continue;
        }
        let run = rest
            .iter()
            .position(|s| s.action.set_based())
            .unwrap_or(rest.len());
        let (segment, after) = rest.split_at(run);
        if let [step] = segment
            && step.action.reads_ahead()
        {
            read_ahead(step, tx, jobs, &mut facts, &mut carried, &ended).await?;
        }
        for i in 0..jobs.len() {
            if ended[i].is_some() {
                continue;
            }
            let mut ctx = StepContext::new(
                services,
                lifecycles.clone(),
                templates.clone(),
                jobs[i],
                &mut facts[i],
                tx,
            );
            ctx.now = now;
            ctx.resume(&mut carried[i]);
            let result = run_steps(segment, &mut ctx).await;
            ctx.suspend(&mut carried[i]);
            ended[i] = result.map_err(|f| SetFailure::Job(i, f))?;
        }
        tx.end_read_ahead();
        rest = after;
    }
    if let Some(last) = workflow.steps.last() {
        write_opened(tx, &mut carried, last).await?;
    }
    Ok(ended
        .into_iter()
        .zip(carried)
        .map(|(outcome, carried)| SetRun {
            outcome: outcome.unwrap_or(Outcome::Completed),
            counted: carried.on_commit,
        })
        .collect())
}

/// Writes the threads the jobs opened that no step wrote yet, all in one go (before `step`,
/// which would not see them otherwise, or at the end of the run).
async fn write_opened(tx: &mut Tx, carried: &mut [Carried], step: &Step) -> Result<(), SetFailure> {
    let opened: Vec<Box<crate::store::threads::PreparedThread>> =
        carried.iter_mut().filter_map(|c| c.opened.take()).collect();
    if opened.is_empty() {
        return Ok(());
    }
    let fail = |error: JobError| {
        SetFailure::Step(StepFailure {
            step: step.name.clone(),
            action: step.action.spec().name,
            error,
        })
    };
    let refs: Vec<&crate::store::threads::PreparedThread> = opened.iter().map(|p| &**p).collect();
    let mut events = Vec::new();
    let db = tx.get().await.map_err(|e| fail(e.into()))?;
    crate::store::threads::insert_prepared_many(db, &refs, &mut events)
        .await
        .map_err(|e| fail(e.into()))?;
    tx.defer_events(&mut events);
    Ok(())
}

/// The jobs not ended whose condition for `step` holds, as set items.
fn members<'a>(
    step: &Step,
    jobs: &[&'a Job],
    facts: &'a mut [Facts],
    carried: &'a mut [Carried],
    ended: &[Option<Outcome>],
) -> (Vec<usize>, Vec<SetItem<'a>>) {
    let mut members = Vec::new();
    let items = facts
        .iter_mut()
        .zip(carried.iter_mut())
        .enumerate()
        .filter(|(i, (facts, _))| {
            ended[*i].is_none() && step.when.as_ref().is_none_or(|c| c.eval(facts))
        })
        .map(|(i, (facts, carried))| {
            members.push(i);
            SetItem {
                job: jobs[i],
                facts,
                carried,
            }
        })
        .collect();
    (members, items)
}

/// Lets a step that runs alone, job by job, read ahead for all of them (see
/// [`crate::workflow::Action::read_ahead`]).
async fn read_ahead(
    step: &Step,
    tx: &mut Tx,
    jobs: &[&Job],
    facts: &mut [Facts],
    carried: &mut [Carried],
    ended: &[Option<Outcome>],
) -> Result<(), SetFailure> {
    let (members, mut items) = members(step, jobs, facts, carried, ended);
    if members.len() < 2 {
        return Ok(());
    }
    step.action
        .read_ahead(tx, &mut items, &step.params)
        .await
        .map_err(|error| {
            SetFailure::Step(StepFailure {
                step: step.name.clone(),
                action: step.action.spec().name,
                error,
            })
        })
}

/// One set-based step for the jobs not ended whose condition holds.
async fn set_step(
    step: &Step,
    set: &mut SetContext<'_>,
    jobs: &[&Job],
    facts: &mut [Facts],
    carried: &mut [Carried],
    ended: &mut [Option<Outcome>],
) -> Result<(), SetFailure> {
    let spec = step.action.spec();
    let fail = |error| StepFailure {
        step: step.name.clone(),
        action: spec.name,
        error,
    };
    if step.reads_thread {
        fresh_threads(set.tx, facts, carried, ended)
            .await
            .map_err(|e| SetFailure::Step(fail(e)))?;
    }
    let (members, mut items) = members(step, jobs, facts, carried, ended);
    if members.is_empty() {
        return Ok(());
    }
    let span =
        tracing::info_span!("step", step = %step.name, action = spec.name, jobs = members.len());
    let started = Instant::now();
    let flows = step
        .action
        .run_set(set, &mut items, &step.params)
        .instrument(span)
        .await
        .map_err(|e| SetFailure::Step(fail(e)))?;
    let cut_short = flows.len() < members.len() && flows.last().is_some_and(Result::is_err);
    if flows.len() != members.len() && !cut_short {
        return Err(SetFailure::Step(fail(JobError::permanent(format!(
            "action `{}` returned {} results for {} jobs",
            spec.name,
            flows.len(),
            members.len()
        )))));
    }
    // Timed per job, amortised, so the histogram counts job steps either way.
    let each = started.elapsed().as_secs_f64() / members.len() as f64;
    let histogram = set
        .services
        .metrics
        .step_duration
        .with_label_values(&[spec.name]);
    for (&i, flow) in members.iter().zip(flows) {
        histogram.observe(each);
        match flow {
            Ok(flow) => ended[i] = ending(&step.name, flow),
            Err(error) => return Err(SetFailure::Job(i, fail(error))),
        }
    }
    Ok(())
}

/// Reads the threads that may have changed since the jobs loaded them (see
/// [`StepContext::thread_may_have_changed`]) again, locked, in one statement: what
/// [`StepContext::refresh_stale_thread`] does for one job before a step that reads it.
async fn fresh_threads(
    tx: &mut Tx,
    facts: &mut [Facts],
    carried: &mut [Carried],
    ended: &[Option<Outcome>],
) -> Result<(), JobError> {
    let stale: Vec<(usize, uuid::Uuid)> = carried
        .iter()
        .enumerate()
        .filter(|(i, c)| ended[*i].is_none() && c.thread_stale)
        .filter_map(|(i, c)| c.thread.as_ref().map(|t| (i, t.id)))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = stale.iter().map(|(_, id)| *id).collect();
    let fresh = crate::store::cards::get_many_for_update(tx.get().await?, &ids).await?;
    for (i, id) in stale {
        let t = fresh.get(&id).ok_or_else(|| {
            JobError::transient(format!("thread {id} vanished while its job ran"))
        })?;
        tx.note_thread(t);
        super::action::set_thread_facts(&mut facts[i], t);
        carried[i].thread = Some(t.clone());
        carried[i].thread_stale = false;
    }
    Ok(())
}
