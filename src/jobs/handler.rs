//! The one place every job kind passes through (apalis-style: cross-cutting behaviour wraps
//! the job instead of being repeated in it): the idempotency check, the workflow run inside
//! the job's transaction, the idempotency record in that same transaction, the commit, the
//! metrics that count committed effects, and waking the outbox relay. A job kind's own
//! behaviour is only its YAML workflow.
//!
//! Batches: under load the consumer hands over several jobs at once, and they commit in one
//! transaction (one commit, one idempotency insert, one relay wake for all), which is where
//! most of a small job's cost goes. The batch is optimistic: when job *k* fails, the
//! transaction is rolled back, the jobs before *k* are committed together again, *k* runs
//! alone (so its result, applied or failed, is the one it has on its own), and batching goes
//! on after it. If a batch fails as a whole (the commit, the idempotency insert racing
//! another worker), its jobs run one by one. A bad job never takes its neighbours with it.
//!
//! From a batch's second job on, lock waits are bounded ([`BATCH_LOCK_WAIT`]): a batch that
//! waits for a thread another replica holds while holding threads of its own is how two
//! replicas deadlock. The job that would wait is treated as failing job *k* above, so it
//! runs alone, holding nothing else, and may wait as long as it needs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::jobs::{Job, JobError};
use crate::queue::relay::RelayWaker;
use crate::queue::{Handled, Handler};
use crate::services::Services;
use crate::store::{Tx, processed};
use crate::workflow::action::MetricUpdate;
use crate::workflow::{Facts, StepContext, Workflow, WorkflowSet, engine};

/// How long a batched job (after the first) may wait for a row lock before the batch is
/// cut there. Short: a lock held by another replica's batch lasts a whole batch.
pub const BATCH_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

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
        self.apply(job).instrument(span).await
    }

    async fn handle_batch(&self, jobs: &[Job]) -> Vec<Result<Handled, JobError>> {
        let set = self.current();
        let batchable = jobs.len() > 1
            && jobs
                .first()
                .and_then(|j| set.get(&j.kind))
                .is_some_and(|w| w.batchable());
        if !batchable {
            return crate::queue::consumer::handle_each(self, jobs).await;
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
            let attempt = self.apply_batch(&set, rest).await;
            counter(match &attempt {
                Batch::Committed(_) => "committed",
                Batch::JobFailed(_) => "cut",
                Batch::Failed(_) => "failed",
            });
            match attempt {
                Batch::Committed(mut results) => {
                    out.append(&mut results);
                    break;
                }
                Batch::JobFailed(k) => {
                    tracing::debug!(
                        size = rest.len(),
                        failed = k,
                        "batch rolled back at a failing job"
                    );
                    // The jobs before it succeeded in the rolled-back attempt: commit them.
                    if k > 0 {
                        match self.apply_batch(&set, &rest[..k]).await {
                            Batch::Committed(mut results) => out.append(&mut results),
                            _ => out.append(
                                &mut crate::queue::consumer::handle_each(self, &rest[..k]).await,
                            ),
                        }
                    }
                    out.append(&mut crate::queue::consumer::handle_each(self, &rest[k..=k]).await);
                    rest = &rest[k + 1..];
                }
                Batch::Failed(why) => {
                    tracing::debug!(size = rest.len(), %why, "batch failed; running its jobs one by one");
                    out.append(&mut crate::queue::consumer::handle_each(self, rest).await);
                    break;
                }
            }
        }
        out
    }
}

/// A workflow run that did not fail.
struct Ran {
    /// Metric updates to apply once committed.
    counted: Vec<MetricUpdate>,
    /// The job ended without being applied: keep its effects, and dead-letter it
    /// (permanent: refused) or retry it later (transient) with this error.
    unapplied: Option<JobError>,
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
enum Batch {
    /// All committed; one result per job.
    Committed(Vec<Result<Handled, JobError>>),
    /// Job `k`'s workflow failed; nothing was committed.
    JobFailed(usize),
    /// The batch as a whole failed (database, commit, a concurrent duplicate); nothing was
    /// committed.
    Failed(JobError),
}

impl WorkflowHandler {
    /// One job in its own transaction.
    async fn apply(&self, job: &Job) -> Result<Handled, JobError> {
        let db = self.services.store.conn();
        if processed::is_processed(db, &job.message_id).await? {
            return Ok(Handled::Duplicate);
        }
        let set = self.current();
        let workflow = workflow_for(&set, &job.kind)?;
        let mut tx = self.tx(&job.kind);
        let ran = match self.run_workflow(&set, workflow, job, &mut tx).await {
            Ok(ran) => ran,
            Err(e) => {
                let _ = tx.rollback().await;
                // A step that committed midway (outbound delivery) committed rows too.
                self.relay.hand_over(tx.take_committed());
                return Err(self.keep_on_failure(workflow, job, e).await);
            }
        };
        if let Some(error) = ran.unapplied {
            // What it did stays (committed, not recorded as processed); the job goes to the
            // dead letters, or is retried.
            tx.checkpoint().await?;
            self.committed(ran.counted, &mut tx);
            return Err(error);
        }
        // Stamped now, just before commit: `processed_at` is when the job's effects landed.
        let now = self.services.clock.now();
        let recorded = processed::record(tx.get().await?, &job.message_id, &job.kind, now).await?;
        if !recorded {
            // Another worker applied the same job meanwhile: its effects stand, ours go.
            let _ = tx.rollback().await;
            return Ok(Handled::Duplicate);
        }
        tx.checkpoint().await?;
        self.committed(ran.counted, &mut tx);
        Ok(Handled::Applied)
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

    /// Several jobs of one kind in one transaction.
    async fn apply_batch(&self, set: &WorkflowSet, jobs: &[Job]) -> Batch {
        let db = self.services.store.conn();
        let ids: Vec<&str> = jobs.iter().map(|j| j.message_id.as_str()).collect();
        let done = match processed::which_processed(db, &ids).await {
            Ok(done) => done,
            Err(e) => return Batch::Failed(e.into()),
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
        let mut tx = self.tx(&jobs[0].kind);
        let set_based = set
            .get(&jobs[0].kind)
            .filter(|w| w.set_based() && jobs.iter().all(|j| j.kind == jobs[0].kind));
        let ran = match set_based {
            Some(workflow) if fresh.len() > 1 => {
                self.run_set(set, workflow, jobs, &fresh, &mut tx).await
            }
            _ => self.run_each(set, jobs, &fresh, &mut tx).await,
        };
        let ran = match ran {
            Ok(ran) => ran,
            Err(batch) => {
                let _ = tx.rollback().await;
                // A set-based step that committed midway (outbound delivery) committed rows.
                self.relay.hand_over(tx.take_committed());
                return batch;
            }
        };
        let mut applied = Vec::with_capacity(ran.len());
        let mut counted = Vec::new();
        for (k, mut ran) in ran {
            counted.append(&mut ran.counted);
            results[k] = Some(match ran.unapplied {
                Some(error) => Err(error),
                None => {
                    applied.push((jobs[k].message_id.as_str(), jobs[k].kind.as_str()));
                    Ok(Handled::Applied)
                }
            });
        }
        let now = self.services.clock.now();
        let recorded = async {
            processed::record_many(tx.get().await?, &applied, now).await?;
            tx.checkpoint().await
        }
        .await;
        if let Err(e) = recorded {
            let _ = tx.rollback().await;
            self.relay.hand_over(tx.take_committed());
            return Batch::Failed(e.into());
        }
        self.committed(counted, &mut tx);
        Batch::Committed(
            results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(JobError::transient("job was not run"))))
                .collect(),
        )
    }

    /// The `fresh` jobs of a batch one after the other, each its whole workflow, in `tx`.
    async fn run_each(
        &self,
        set: &WorkflowSet,
        jobs: &[Job],
        fresh: &[usize],
        tx: &mut Tx,
    ) -> Result<Vec<(usize, Ran)>, Batch> {
        let mut out = Vec::with_capacity(fresh.len());
        for &k in fresh {
            let job = &jobs[k];
            let workflow = workflow_for(set, &job.kind).map_err(|_| Batch::JobFailed(k))?;
            if out.len() == 1 {
                // The first job holds its locks now; bound the waits of the ones after it.
                tx.bound_lock_waits(BATCH_LOCK_WAIT)
                    .await
                    .map_err(|e| Batch::Failed(e.into()))?;
            }
            let span = tracing::info_span!("job", kind = %job.kind, job_id = %job.message_id, attempt = job.attempt, thread_id = %thread_of(job));
            let ran = self
                .run_workflow(set, workflow, job, tx)
                .instrument(span)
                .await
                .map_err(|_| Batch::JobFailed(k))?;
            out.push((k, ran));
        }
        Ok(out)
    }

    /// The `fresh` jobs of a batch step by step across them (see
    /// [`Workflow::set_based`]). Lock waits are bounded from the start: one statement locks
    /// rows of every job in the batch.
    async fn run_set(
        &self,
        set: &WorkflowSet,
        workflow: &Workflow,
        jobs: &[Job],
        fresh: &[usize],
        tx: &mut Tx,
    ) -> Result<Vec<(usize, Ran)>, Batch> {
        tx.bound_lock_waits(BATCH_LOCK_WAIT)
            .await
            .map_err(|e| Batch::Failed(e.into()))?;
        let members: Vec<&Job> = fresh.iter().map(|&k| &jobs[k]).collect();
        let span = tracing::info_span!("jobs", kind = %workflow.kind, jobs = members.len());
        let runs = engine::run_set(
            workflow,
            &self.services,
            set.lifecycles.clone(),
            set.templates.clone(),
            tx,
            &members,
        )
        .instrument(span)
        .await
        .map_err(|f| match f {
            engine::SetFailure::Job(i, _) => Batch::JobFailed(fresh[i]),
            engine::SetFailure::Step(f) => Batch::Failed(f.into_job_error()),
        })?;
        Ok(fresh
            .iter()
            .zip(runs)
            .map(|(&k, run)| {
                let ran = Ran {
                    counted: run.counted,
                    unapplied: unapplied(run.outcome),
                };
                (k, ran)
            })
            .collect())
    }

    /// Runs one job's workflow inside `tx`.
    async fn run_workflow(
        &self,
        set: &WorkflowSet,
        workflow: &Workflow,
        job: &Job,
        tx: &mut Tx,
    ) -> Result<Ran, JobError> {
        let mut facts = Facts::for_job(job);
        let mut ctx = StepContext::new(
            &self.services,
            set.lifecycles.clone(),
            set.templates.clone(),
            job,
            &mut facts,
            tx,
        );
        let outcome = engine::run(workflow, &mut ctx).await;
        let counted = std::mem::take(&mut ctx.on_commit);
        let unapplied = unapplied(outcome.map_err(|f| f.into_job_error())?);
        Ok(Ran { counted, unapplied })
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
