//! The one place every job kind passes through (apalis-style: cross-cutting behaviour wraps
//! the job instead of being repeated in it): the idempotency check, the workflow run inside
//! the job's transaction, the idempotency record in that same transaction, the commit, and
//! waking the outbox relay. A job kind's own behaviour is only its YAML workflow.

use std::sync::{Arc, RwLock};

use tracing::Instrument;

use crate::jobs::{Job, JobError};
use crate::queue::relay::RelayWaker;
use crate::queue::{Handled, Handler};
use crate::services::Services;
use crate::store::{Tx, processed};
use crate::workflow::{Facts, StepContext, WorkflowSet, engine};

pub struct WorkflowHandler {
    pub services: Arc<Services>,
    /// Swapped whole on reload (SIGHUP), so a job runs on one consistent set.
    pub workflows: Arc<RwLock<Arc<WorkflowSet>>>,
    pub relay: RelayWaker,
}

impl WorkflowHandler {
    fn current(&self) -> Arc<WorkflowSet> {
        match self.workflows.read() {
            Ok(w) => w.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Handler for WorkflowHandler {
    async fn handle(&self, job: Job) -> Result<Handled, JobError> {
        let thread_id = job
            .payload
            .get("thread_id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        // Inside the consumer's `job` span (kind, id, attempt); this adds the thread.
        let span = tracing::info_span!("workflow", thread_id = %thread_id);
        self.apply(&job).instrument(span).await
    }
}

impl WorkflowHandler {
    async fn apply(&self, job: &Job) -> Result<Handled, JobError> {
        let db = self.services.store.conn();
        if processed::is_processed(db, &job.message_id).await? {
            return Ok(Handled::Duplicate);
        }
        let set = self.current();
        let workflow = set.get(&job.kind).ok_or_else(|| {
            JobError::permanent(format!(
                "no workflow for job kind {:?} in workflows/jobs/",
                job.kind
            ))
        })?;
        let mut tx = Tx::new(db.clone());
        let mut facts = Facts::for_job(job);
        let mut ctx = StepContext::new(
            &self.services,
            set.lifecycles.clone(),
            set.templates.clone(),
            job,
            &mut facts,
            &mut tx,
        );
        let outcome = engine::run(workflow, &mut ctx).await;
        drop(ctx);
        if let Err(failure) = outcome {
            let _ = tx.rollback().await;
            return Err(failure.into_job_error());
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
        self.relay.wake();
        Ok(Handled::Applied)
    }
}
