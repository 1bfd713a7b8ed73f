//! What a step runs with: the [`Batch`] (its transaction, clock reading, workflow set and
//! memo, shared by its jobs) and each job's [`JobState`] (facts, thread, the mail being
//! worked on), handed from step to step. [`StepContext`] is one job's view of both, for
//! actions that work job by job.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use gochat_entities::{messages, thread_events, threads};
use sea_orm::DatabaseTransaction;
use serde_json::Value;

use super::facts::Facts;
use super::memo::Memo;
use crate::jobs::{Job, JobError};
use crate::lifecycle::{Lifecycle, Lifecycles};
use crate::mail::Templates;
use crate::mail::inbound::InboundMail;
use crate::queue::Names;
use crate::services::Services;
use crate::store::Tx;
use crate::store::threads::PreparedThread;

/// A deferred metric update (see [`JobState::count_on_commit`]).
pub type MetricUpdate = Box<dyn FnOnce(&crate::metrics::Metrics) + Send>;

/// The jobs of one transaction, and what their steps share.
pub struct Batch<'a> {
    pub services: &'a Services,
    /// The batch's transaction, begun on first use.
    pub tx: &'a mut Tx,
    /// The lifecycles and templates of the workflow set the batch runs on.
    pub lifecycles: Arc<Lifecycles>,
    pub templates: Arc<Templates>,
    pub names: Names,
    /// One clock reading for the whole batch, as its jobs commit together.
    pub now: DateTime<Utc>,
    /// What the jobs learn from each other before they commit.
    pub memo: Memo,
}

impl<'a> Batch<'a> {
    pub fn new(
        services: &'a Services,
        tx: &'a mut Tx,
        lifecycles: Arc<Lifecycles>,
        templates: Arc<Templates>,
    ) -> Self {
        Batch {
            names: Names::new(&services.config.amqp.prefix),
            now: services.clock.now(),
            services,
            tx,
            lifecycles,
            templates,
            memo: Memo::default(),
        }
    }

    /// One job's view of the batch, for a step that works job by job.
    pub fn job<'s>(&'s mut self, state: &'s mut JobState<'_>) -> StepContext<'s> {
        let JobState {
            job,
            facts,
            thread,
            opened,
            inbound,
            outbound,
            thread_stale,
            on_commit,
        } = state;
        StepContext {
            services: self.services,
            job,
            facts,
            tx: self.tx,
            memo: &mut self.memo,
            lifecycles: &self.lifecycles,
            templates: &self.templates,
            names: &self.names,
            now: self.now,
            thread,
            inbound,
            outbound,
            opened,
            thread_stale,
            on_commit,
        }
    }
}

/// One job's working state, handed from step to step.
pub struct JobState<'j> {
    pub job: &'j Job,
    pub facts: Facts,
    /// The thread the job is about, once a step loaded or opened it.
    pub thread: Option<threads::Model>,
    /// A thread the job opened and nobody wrote yet (see [`StepContext::open_thread`]).
    pub opened: Option<Box<PreparedThread>>,
    /// An inbound mail's working state (raw bytes, parsed mail, sender), once stored.
    pub inbound: Option<Box<InboundMail>>,
    /// The outbound message a step composed or found, for the steps after it to use as it
    /// is instead of reading it back.
    pub outbound: Option<Box<messages::Model>>,
    /// The thread may have changed since it was read (see
    /// [`StepContext::thread_may_have_changed`]).
    pub thread_stale: bool,
    /// Metric updates that count committed effects, applied only once the batch commits: a
    /// batch that is rolled back and run again must not count twice.
    pub on_commit: Vec<MetricUpdate>,
}

impl<'j> JobState<'j> {
    pub fn new(job: &'j Job) -> Self {
        JobState {
            job,
            facts: Facts::for_job(job),
            thread: None,
            opened: None,
            inbound: None,
            outbound: None,
            thread_stale: false,
            on_commit: Vec::new(),
        }
    }

    /// Replaces the job's current thread and refreshes the `thread.*` facts.
    pub fn set_thread(&mut self, t: threads::Model) {
        set_thread_facts(&mut self.facts, &t);
        self.thread = Some(t);
        self.thread_stale = false;
    }

    /// Counts an effect once the batch's transaction has committed.
    pub fn count_on_commit(
        &mut self,
        update: impl FnOnce(&crate::metrics::Metrics) + Send + 'static,
    ) {
        self.on_commit.push(Box::new(update));
    }
}

/// One job's view of its batch (see [`Batch::job`]).
pub struct StepContext<'a> {
    pub services: &'a Services,
    pub job: &'a Job,
    pub facts: &'a mut Facts,
    /// The batch's transaction, begun on first use.
    pub tx: &'a mut Tx,
    pub memo: &'a mut Memo,
    pub lifecycles: &'a Arc<Lifecycles>,
    pub templates: &'a Arc<Templates>,
    pub names: &'a Names,
    pub now: DateTime<Utc>,
    thread: &'a mut Option<threads::Model>,
    pub inbound: &'a mut Option<Box<InboundMail>>,
    pub outbound: &'a mut Option<Box<messages::Model>>,
    opened: &'a mut Option<Box<PreparedThread>>,
    thread_stale: &'a mut bool,
    on_commit: &'a mut Vec<MetricUpdate>,
}

impl StepContext<'_> {
    /// Makes `prepared` the job's thread without writing it yet: a step that stores the
    /// first message takes it and writes the thread with its inbox card already filled,
    /// one insert instead of an insert and an update. Any other use of the database writes
    /// it first, as does the end of the run.
    pub fn open_thread(&mut self, prepared: PreparedThread) {
        self.set_thread(prepared.thread.clone());
        *self.opened = Some(Box::new(prepared));
    }

    /// Writes a thread opened and not written yet (see [`StepContext::open_thread`]).
    pub async fn flush(&mut self) -> Result<(), JobError> {
        if let Some(p) = self.opened.take() {
            let mut events = Vec::new();
            crate::store::threads::insert_prepared(self.tx.get().await?, &p, &mut events).await?;
            self.tx.defer_events(&mut events);
        }
        Ok(())
    }

    /// Thread audit events to write with the batch's commit (see [`Tx::defer_events`]).
    pub fn defer_events(&mut self, events: &mut Vec<thread_events::Model>) {
        self.tx.defer_events(events);
    }

    /// Counts an effect once the batch's transaction has committed.
    pub fn count_on_commit(
        &mut self,
        update: impl FnOnce(&crate::metrics::Metrics) + Send + 'static,
    ) {
        self.on_commit.push(Box::new(update));
    }

    /// The batch's transaction (a thread opened by this job is written first, so every
    /// statement sees it).
    pub async fn db(&mut self) -> Result<&DatabaseTransaction, JobError> {
        self.flush().await?;
        Ok(self.tx.get().await?)
    }

    /// The loaded thread; the loader guarantees a step that needs it runs after one that
    /// provides it, so its absence is a bug in a conditional workflow, reported as such.
    pub fn thread(&self) -> Result<&threads::Model, JobError> {
        current_thread(self.thread.as_ref(), *self.thread_stale)
    }

    /// The loaded thread's lifecycle (the default one if its own was removed).
    pub fn lifecycle(&self) -> Result<Arc<Lifecycle>, JobError> {
        lifecycle_of(self.lifecycles, self.thread()?)
    }

    /// Says the loaded thread may have changed since it was read: a midway commit
    /// (`send_mail`) ended the lock `load_thread` took, and another job may have changed
    /// it since. It is not read again here: the engine does that, locked, before the next
    /// step that reads the thread ([`super::Step::reads_thread`]). An acknowledgement's
    /// later steps only announce what was sent, so they never pay for the read.
    pub fn thread_may_have_changed(&mut self) {
        *self.thread_stale = self.thread.is_some();
    }

    /// Replaces the current thread, refreshes the `thread.*` facts, and keeps it as the
    /// thread's newest card in the batch.
    pub fn set_thread(&mut self, t: threads::Model) {
        set_thread_facts(self.facts, &t);
        self.memo.note_thread(&t);
        *self.thread = Some(t);
        *self.thread_stale = false;
    }

    /// The thread this job opened and nobody wrote yet (see [`StepContext::open_thread`]).
    pub fn opened_thread(&self) -> Option<&PreparedThread> {
        self.opened.as_deref()
    }
}

/// A job's loaded thread, or why a step cannot have it.
pub fn current_thread(
    thread: Option<&threads::Model>,
    stale: bool,
) -> Result<&threads::Model, JobError> {
    if stale {
        // The engine reads it again before a step that declares it reads `thread.*`.
        return Err(JobError::permanent(
            "the thread may have changed since it was loaded, and this step's action does not declare that it reads `thread.*` facts, so the engine did not read it again (a bug in the action's declaration)",
        ));
    }
    thread.ok_or_else(|| {
        JobError::permanent(
            "no thread is loaded at this step (a `load_thread` or `create_thread` step was skipped by its condition)",
        )
    })
}

/// The lifecycle of thread `t` (the default one if its own was removed).
pub fn lifecycle_of(
    lifecycles: &Lifecycles,
    t: &threads::Model,
) -> Result<Arc<Lifecycle>, JobError> {
    lifecycles.for_thread(&t.lifecycle).cloned().ok_or_else(|| {
        JobError::permanent(format!(
            "thread's lifecycle `{}` is not in workflows/lifecycles/ and there is no default lifecycle",
            t.lifecycle
        ))
    })
}

/// The `thread.*` facts of `t`.
pub fn set_thread_facts(facts: &mut Facts, t: &threads::Model) {
    facts.set("thread.id", Value::String(t.id.to_string()));
    facts.set("thread.status", serde_json::json!(t.status));
    facts.set("thread.version", Value::from(t.version));
    facts.set("thread.assignee", serde_json::json!(t.assignee));
    facts.set("thread.lifecycle", Value::String(t.lifecycle.clone()));
    facts.set("thread.lifecycle_step", serde_json::json!(t.lifecycle_step));
}
