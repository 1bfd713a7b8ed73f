//! The one place every job kind passes through (apalis-style: cross-cutting behaviour wraps
//! the job instead of being repeated in it): the idempotency check, the workflow run inside
//! the job's transaction, the idempotency record in that same transaction, the commit, the
//! metrics that count committed effects, and waking the outbox relay. A job kind's own
//! behaviour is only its YAML workflow.
//!
//! Batches: under load the consumer hands over several jobs at once, and they commit in one
//! transaction (one commit, one idempotency insert, one relay wake for all), which is where
//! most of a small job's cost goes; a single job is a batch of one, on the same path. The
//! batch is optimistic: when job *k* fails, the transaction is rolled back, the jobs before
//! *k* are committed together again, *k* runs alone (so its result, applied or failed, is
//! the one it has on its own), and batching goes on after it. If a batch fails as a whole
//! (the commit, the idempotency insert racing another worker), its jobs run one by one. A
//! bad job never takes its neighbours with it.
//!
//! From a batch's second job on, lock waits are bounded ([`engine::BATCH_LOCK_WAIT`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;
use tracing::Instrument;

use super::context::MetricUpdate;
use super::{Batch, JobState, Workflow, WorkflowSet, engine};
use crate::jobs::{Handled, Handler, Job, JobError, handle_each};
use crate::queue::relay::RelayWaker;
use crate::services::Services;
use crate::store::{Tx, processed};

pub struct WorkflowHandler {
    services: Arc<Services>,
    /// Swapped whole on reload (SIGHUP), so a job runs on one consistent set.
    workflows: Arc<RwLock<Arc<WorkflowSet>>>,
    relay: RelayWaker,
    /// Per job kind whose `db_concurrency` is below its `concurrency`: the permits its
    /// transactions begin with (see [`Tx::gate`]).
    gates: HashMap<String, Arc<Semaphore>>,
}

impl WorkflowHandler {
    pub fn new(
        services: Arc<Services>,
        workflows: Arc<RwLock<Arc<WorkflowSet>>>,
        relay: RelayWaker,
    ) -> Self {
        let gates = crate::contract::JOB_KINDS
            .iter()
            .filter_map(|kind| {
                let c = services.config.amqp.consumer(kind);
                (c.db_concurrency < c.concurrency)
                    .then(|| (kind.to_string(), Arc::new(Semaphore::new(c.db_concurrency))))
            })
            .collect();
        Self {
            services,
            workflows,
            relay,
            gates,
        }
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// The workflow set jobs run on now.
    pub fn current(&self) -> Arc<WorkflowSet> {
        match self.workflows.read() {
            Ok(w) => w.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The thread a job is about, for its span.
fn thread_of(job: &Job) -> &str {
    job.payload
        .get("thread_id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
}

fn workflow_for<'a>(set: &'a WorkflowSet, kind: &str) -> Result<&'a Arc<Workflow>, JobError> {
    set.get(kind).ok_or_else(|| {
        JobError::permanent(format!(
            "no workflow for job kind {kind:?} in workflows/jobs/"
        ))
    })
}

impl Handler for WorkflowHandler {
    async fn dead_lettered(&self, job: &Job, reason: &str) {
        let now = self.services.clock.now();
        let db = self.services.store.conn();
        if let Err(e) =
            crate::store::processed::record_dead(db, &job.message_id, &job.kind, reason, now).await
        {
            tracing::warn!(error = %e, "could not record the dead letter in the database (it is in the dead-letter queue)");
        }
    }

    async fn handle(&self, job: &Job) -> Result<Handled, JobError> {
        // Inside the consumer's `job` span (kind, id, attempt); this adds the thread.
        let span = tracing::info_span!("workflow", thread_id = %thread_of(job));
        let set = self.current();
        match self
            .attempt(&set, std::slice::from_ref(job))
            .instrument(span)
            .await
        {
            Attempt::Committed(mut results) => results
                .pop()
                .unwrap_or_else(|| Err(JobError::transient("job was not run"))),
            Attempt::JobFailed(_, error) | Attempt::Failed(error) => Err(error),
        }
    }

    async fn handle_batch(&self, jobs: &[Job]) -> Vec<Result<Handled, JobError>> {
        let set = self.current();
        let batchable = jobs.len() > 1
            && jobs.iter().all(|j| j.kind == jobs[0].kind)
            && set.get(&jobs[0].kind).is_some_and(|w| w.batchable());
        if !batchable {
            return handle_each(self, jobs).await;
        }
        let mut out = Vec::with_capacity(jobs.len());
        let mut rest = jobs;
        let counter = |outcome: &str| {
            self.services
                .metrics
                .job_batches
                .with_label_values(&[jobs[0].kind.as_str(), outcome])
                .inc()
        };
        while !rest.is_empty() {
            let attempt = self.attempt(&set, rest).await;
            counter(match &attempt {
                Attempt::Committed(_) => "committed",
                Attempt::JobFailed(..) => "cut",
                Attempt::Failed(_) => "failed",
            });
            match attempt {
                Attempt::Committed(mut results) => {
                    out.append(&mut results);
                    break;
                }
                Attempt::JobFailed(k, _) => {
                    tracing::debug!(
                        size = rest.len(),
                        failed = k,
                        "batch rolled back at a failing job"
                    );
                    // The jobs before it succeeded in the rolled-back attempt: commit them.
                    if k > 0 {
                        match self.attempt(&set, &rest[..k]).await {
                            Attempt::Committed(mut results) => out.append(&mut results),
                            _ => out.append(&mut handle_each(self, &rest[..k]).await),
                        }
                    }
                    out.append(&mut handle_each(self, &rest[k..=k]).await);
                    rest = &rest[k + 1..];
                }
                Attempt::Failed(why) => {
                    tracing::debug!(size = rest.len(), %why, "batch failed; running its jobs one by one");
                    out.append(&mut handle_each(self, rest).await);
                    break;
                }
            }
        }
        out
    }
}

/// The error of a run that ended without applying its job (refused, or to be retried).
fn unapplied(outcome: engine::Outcome) -> Option<JobError> {
    match outcome {
        engine::Outcome::Refused { step, reason } => {
            Some(JobError::Permanent(format!("step `{step}`: {reason}")))
        }
        engine::Outcome::Retry { step, reason } => {
            Some(JobError::Transient(format!("step `{step}`: {reason}")))
        }
        _ => None,
    }
}

/// How an attempt to commit jobs together ended.
enum Attempt {
    /// All committed; one result per job.
    Committed(Vec<Result<Handled, JobError>>),
    /// Job `k`'s workflow failed with this error; nothing was committed.
    JobFailed(usize, JobError),
    /// The batch as a whole failed (database, commit, a concurrent duplicate); nothing was
    /// committed.
    Failed(JobError),
}

impl WorkflowHandler {
    /// Jobs of one kind in one transaction (a single job is a batch of one).
    async fn attempt(&self, set: &WorkflowSet, jobs: &[Job]) -> Attempt {
        let db = self.services.store.conn();
        let ids: Vec<&str> = jobs.iter().map(|j| j.message_id.as_str()).collect();
        let done = match processed::which_processed(db, &ids).await {
            Ok(done) => done,
            Err(e) => return Attempt::Failed(e.into()),
        };
        // A message id met before (committed, or earlier in this batch) is a duplicate.
        let mut seen = HashSet::new();
        let mut results: Vec<Option<Result<Handled, JobError>>> = Vec::with_capacity(jobs.len());
        let mut fresh = Vec::with_capacity(jobs.len());
        for (k, job) in jobs.iter().enumerate() {
            if done.contains(&job.message_id) || !seen.insert(job.message_id.as_str()) {
                results.push(Some(Ok(Handled::Duplicate)));
            } else {
                results.push(None);
                fresh.push(k);
            }
        }
        let Some(&first) = fresh.first() else {
            return Attempt::Committed(results.into_iter().flatten().collect());
        };
        let workflow = match workflow_for(set, &jobs[first].kind) {
            Ok(w) => w,
            Err(e) => return Attempt::JobFailed(first, e),
        };
        let mut tx = self.tx(&jobs[first].kind);
        let mut states: Vec<JobState<'_>> =
            fresh.iter().map(|&k| JobState::new(&jobs[k])).collect();
        let mut batch = Batch::new(
            &self.services,
            &mut tx,
            set.lifecycles.clone(),
            set.templates.clone(),
        );
        let span = tracing::info_span!("jobs", kind = %workflow.kind, jobs = states.len());
        let run = engine::run(workflow, &mut batch, &mut states)
            .instrument(span)
            .await;
        drop(batch);
        let outcomes = match run {
            Ok(outcomes) => outcomes,
            Err(failure) => {
                let _ = tx.rollback().await;
                // A step that committed midway (outbound delivery) committed rows too.
                self.relay.hand_over(tx.take_committed());
                return match failure {
                    engine::Failure::Job(i, f) if jobs.len() > 1 => {
                        Attempt::JobFailed(fresh[i], f.into_job_error())
                    }
                    failure if jobs.len() > 1 => Attempt::Failed(failure.into_job_error()),
                    failure => {
                        let error = failure.into_job_error();
                        Attempt::Failed(self.keep_on_failure(workflow, &jobs[0], error).await)
                    }
                };
            }
        };
        let mut applied = Vec::with_capacity(fresh.len());
        let mut counted: Vec<MetricUpdate> = Vec::new();
        for ((&k, state), outcome) in fresh.iter().zip(&mut states).zip(outcomes) {
            counted.append(&mut state.on_commit);
            results[k] = Some(match unapplied(outcome) {
                // What it did stays (committed, not recorded as processed); the job goes
                // to the dead letters, or is retried.
                Some(error) => Err(error),
                None => {
                    applied.push((jobs[k].message_id.as_str(), jobs[k].kind.as_str()));
                    Ok(Handled::Applied)
                }
            });
        }
        drop(states);
        // Stamped now, just before commit: `processed_at` is when the jobs' effects landed.
        let now = self.services.clock.now();
        let recorded = async {
            let db = tx.get().await?;
            if let [(id, kind)] = applied.as_slice()
                && jobs.len() == 1
            {
                // Another worker applied the same job meanwhile: its effects stand, ours go.
                if !processed::record(db, id, kind, now).await? {
                    return Ok(false);
                }
            } else {
                processed::record_many(db, &applied, now).await?;
            }
            tx.checkpoint().await?;
            Ok::<_, crate::store::StoreError>(true)
        }
        .await;
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                let _ = tx.rollback().await;
                return Attempt::Committed(vec![Ok(Handled::Duplicate)]);
            }
            Err(e) => {
                let _ = tx.rollback().await;
                self.relay.hand_over(tx.take_committed());
                return Attempt::Failed(e.into());
            }
        }
        self.committed(counted, &mut tx);
        Attempt::Committed(
            results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(JobError::transient("job was not run"))))
                .collect(),
        )
    }

    /// After `job` failed and was rolled back: what its steps keep all the same (see
    /// [`crate::workflow::Action::keep_on_failure`]), noted in its error.
    async fn keep_on_failure(&self, workflow: &Workflow, job: &Job, error: JobError) -> JobError {
        let why = error.to_string();
        let mut notes = Vec::new();
        for step in &workflow.steps {
            if let Some(note) = step.action.keep_on_failure(&self.services, job, &why).await {
                notes.push(note);
            }
        }
        if notes.is_empty() {
            return error;
        }
        let with = format!("{why} ({})", notes.join("; "));
        match error {
            JobError::Transient(_) => JobError::Transient(with),
            JobError::Permanent(_) => JobError::Permanent(with),
        }
    }

    /// A job's unit of work; its outbox rows go straight to the relay after commit when a
    /// relay is running to take them (see [`Tx::hand_over`]).
    fn tx(&self, kind: &str) -> Tx {
        let mut tx = Tx::new(self.services.store.conn().clone());
        if self.relay.takes_hand_overs() {
            tx.hand_over(crate::queue::relay::hand_over_lease());
        }
        if let Some(gate) = self.gates.get(kind) {
            tx.gate(gate.clone());
        }
        tx
    }

    /// After a commit: count what was committed, and give the relay its outbox rows (or, if
    /// it takes no hand-overs, wake it to sweep them).
    fn committed(&self, counted: Vec<MetricUpdate>, tx: &mut Tx) {
        for update in counted {
            update(&self.services.metrics);
        }
        if tx.hands_over() {
            self.relay.hand_over(tx.take_committed());
        } else {
            self.relay.wake();
        }
    }
}
