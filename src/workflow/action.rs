//! The contract between the engine and a built-in action: what it gets (the step's checked
//! parameters and the run's context) and what it returns (go on, or stop the workflow).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gochat_entities::threads;
use sea_orm::DatabaseTransaction;
use serde_json::Value;

use super::facts::Facts;
use super::spec::ActionSpec;
use crate::jobs::{Job, JobError};
use crate::lifecycle::{Lifecycle, Lifecycles};
use crate::queue::Names;
use crate::services::Services;
use crate::store::Tx;

/// A built-in action. Implementations are stateless; everything a run needs is in the context.
#[async_trait::async_trait]
pub trait Action: Send + Sync + 'static {
    fn spec(&self) -> &'static ActionSpec;

    /// Checks that go beyond each parameter's type (e.g. "exactly one of"), at load time.
    fn validate(&self, _params: &Params) -> Result<(), String> {
        Ok(())
    }

    /// True for an action that commits the job's transaction midway (outbound delivery
    /// commits `sending` before it talks to the mail server). A workflow using one batches
    /// only as a set with that action set-based, so every job of the batch stands at it when
    /// it commits; otherwise each job runs in its own transaction, as a midway commit inside
    /// a batch would commit the other jobs' half-done work.
    fn commits_midway(&self) -> bool {
        false
    }

    async fn run(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError>;

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

    /// True for an action with a set-based form ([`Action::run_set`]): one step over all the
    /// jobs of a batch, with multi-row statements. A small job's cost is its round trips to
    /// the database, so a batch of 32 that costs 3 statements instead of 96 is most of the
    /// way to the broker's own rate.
    fn set_based(&self) -> bool {
        false
    }

    /// True when the step may run for one job between the set-based steps of other jobs of
    /// the same batch: it reads and writes only rows of its own job, or rows any
    /// conflict on which is caught (a thread's version check). A workflow runs as a set
    /// only when each of its steps is set-based or interleaves; otherwise job by job.
    /// Consecutive interleaving steps run job by job between the set-based ones, so a job
    /// sees what the batch's earlier jobs did in them (a reply finds the message an earlier
    /// mail of the batch stored).
    fn interleaves(&self) -> bool {
        self.set_based()
    }

    /// True for a set-based action that writes the threads its jobs opened and nobody wrote
    /// yet (the [`Carried::opened`] ones), as `store_message` writes each with its first
    /// message. Before any other set-based step the engine writes them itself, all in one go.
    fn writes_opened_threads(&self) -> bool {
        false
    }

    /// Whether [`Action::read_ahead`] reads anything: the engine gathers a batch's items
    /// for it only then.
    fn reads_ahead(&self) -> bool {
        false
    }

    /// Before a step that runs job by job alone between two set-based steps of a set run:
    /// may read, for all `items` at once, what each job's [`Action::run`] would look up,
    /// and leave it in `tx` (see [`Tx::set_read_ahead`]); the engine drops it after the
    /// step. Only this step's runs come between, so what was read stays what each job
    /// would read, as long as `run` takes its own changes into account. An error fails the
    /// whole batch (its jobs then run alone).
    async fn read_ahead(
        &self,
        _tx: &mut Tx,
        _items: &mut [SetItem<'_>],
        _params: &Params,
    ) -> Result<(), JobError> {
        Ok(())
    }

    /// The step for several jobs at once, all in `set.tx` and stamped `set.now`: one result
    /// per item, in order, or fewer that end with an error. An item's error cuts the batch
    /// there: the engine rolls everything
    /// back, commits the jobs before it again and runs that job alone (through
    /// [`Action::run`]), so on an item error the action need not write anything for the
    /// others. An error of the whole (a failed statement) runs every job alone.
    async fn run_set(
        &self,
        _set: &mut SetContext<'_>,
        _items: &mut [SetItem<'_>],
        _params: &Params,
    ) -> Result<Vec<Result<Flow, JobError>>, JobError> {
        Err(JobError::permanent(format!(
            "action `{}` has no set-based form",
            self.spec().name
        )))
    }
}

/// What a set-based step runs with besides its jobs: the batch's [`StepContext`].
pub struct SetContext<'a> {
    pub services: &'a Services,
    /// The batch's transaction.
    pub tx: &'a mut Tx,
    /// The lifecycles of the workflow set the batch runs on.
    pub lifecycles: &'a Lifecycles,
    /// One clock reading for the whole batch, as its jobs commit together.
    pub now: DateTime<Utc>,
}

/// One job's share of a set-based step.
pub struct SetItem<'a> {
    pub job: &'a Job,
    pub facts: &'a mut Facts,
    /// The job's working state, handed from step to step across the set run.
    pub carried: &'a mut Carried,
}

impl SetItem<'_> {
    /// Counts an effect once the batch's transaction has committed.
    pub fn count_on_commit(
        &mut self,
        update: impl FnOnce(&crate::metrics::Metrics) + Send + 'static,
    ) {
        self.carried.on_commit.push(Box::new(update));
    }
}

/// A set-based step's results when the batch is cut at item `k`: the items before it fine
/// so far, `k` failed with `error` (the engine commits those before it, then runs `k` alone).
pub fn cut_at(k: usize, error: JobError) -> Vec<Result<Flow, JobError>> {
    let mut out: Vec<_> = (0..k).map(|_| Ok(Flow::Continue)).collect();
    out.push(Err(error));
    out
}

/// What a job's steps hand to the steps after them besides facts (the loaded thread, the
/// inbound mail being worked on, deferred metric updates). A single run keeps it in its
/// [`StepContext`]; a set run keeps one per job between steps.
#[derive(Default)]
pub struct Carried {
    pub thread: Option<threads::Model>,
    /// A thread the job opened and nobody wrote yet (see [`StepContext::open_thread`]).
    pub opened: Option<Box<crate::store::threads::PreparedThread>>,
    pub inbound: Option<Box<crate::mail::inbound::InboundMail>>,
    /// The outbound message composed (see [`StepContext::outbound`]).
    pub outbound: Option<Box<gochat_entities::messages::Model>>,
    /// The thread may have changed since it was read (see
    /// [`StepContext::thread_may_have_changed`]).
    pub thread_stale: bool,
    pub on_commit: Vec<MetricUpdate>,
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
    /// (a set-based step's temporary failure of one job, say the mail server's 4xx for one
    /// message, that must not undo what the step committed for the others).
    Retry(String),
}

/// Everything one workflow run works with.
pub struct StepContext<'a> {
    pub services: &'a Services,
    pub job: &'a Job,
    pub facts: &'a mut Facts,
    /// The job's transaction, begun on first use.
    pub tx: &'a mut Tx,
    /// The thread the job is about, once a step loaded or created it.
    pub thread: Option<threads::Model>,
    /// An inbound mail's working state (raw bytes, parsed mail, sender), once stored.
    pub inbound: Option<Box<crate::mail::inbound::InboundMail>>,
    /// The outbound message a step composed or found, for the steps after it to use as it
    /// is instead of reading it back.
    pub outbound: Option<Box<gochat_entities::messages::Model>>,
    pub names: Names,
    /// The lifecycles of the workflow set this job runs on.
    pub lifecycles: Arc<Lifecycles>,
    /// Its message templates.
    pub templates: Arc<crate::mail::Templates>,
    /// One clock reading per job, so every row it writes carries the same time.
    pub now: DateTime<Utc>,
    /// Metric updates that count committed effects, applied only once the job's transaction
    /// commits: a batch that is rolled back and run again must not count twice.
    pub on_commit: Vec<MetricUpdate>,
    /// A thread opened by this run and not yet written (see [`StepContext::open_thread`]).
    pending_thread: Option<Box<crate::store::threads::PreparedThread>>,
    /// The loaded thread may have changed since it was read (see
    /// [`StepContext::thread_may_have_changed`]).
    thread_stale: bool,
}

/// A deferred metric update (see [`StepContext::on_commit`]).
pub type MetricUpdate = Box<dyn FnOnce(&crate::metrics::Metrics) + Send>;

impl<'a> StepContext<'a> {
    pub fn new(
        services: &'a Services,
        lifecycles: Arc<Lifecycles>,
        templates: Arc<crate::mail::Templates>,
        job: &'a Job,
        facts: &'a mut Facts,
        tx: &'a mut Tx,
    ) -> Self {
        StepContext {
            lifecycles,
            templates,
            names: Names::new(&services.config.amqp.prefix),
            now: services.clock.now(),
            services,
            job,
            facts,
            tx,
            thread: None,
            inbound: None,
            outbound: None,
            on_commit: Vec::new(),
            pending_thread: None,
            thread_stale: false,
        }
    }

    /// Makes `prepared` the job's thread without writing it yet: a step that stores the
    /// first message takes it ([`StepContext::take_pending_thread`]) and writes the thread
    /// with its inbox card already filled, one insert instead of an insert and an update.
    /// Any other use of the database writes it first, as does the end of the run.
    pub fn open_thread(&mut self, prepared: crate::store::threads::PreparedThread) {
        self.set_thread(prepared.thread.clone());
        self.pending_thread = Some(Box::new(prepared));
    }

    /// The thread opened by [`StepContext::open_thread`] and not written yet, to write now.
    pub fn take_pending_thread(&mut self) -> Option<crate::store::threads::PreparedThread> {
        self.pending_thread.take().map(|p| *p)
    }

    /// Writes a thread opened and not written yet (see [`StepContext::open_thread`]).
    pub async fn flush(&mut self) -> Result<(), JobError> {
        if let Some(p) = self.pending_thread.take() {
            let mut events = Vec::new();
            crate::store::threads::insert_prepared(self.tx.get().await?, &p, &mut events).await?;
            self.tx.defer_events(&mut events);
        }
        Ok(())
    }

    /// Thread audit events to write with the job's commit (see [`crate::store::Tx::defer_events`]).
    pub fn defer_events(&mut self, events: &mut Vec<gochat_entities::thread_events::Model>) {
        self.tx.defer_events(events);
    }

    /// Takes over a job's state from earlier steps of a set run.
    pub fn resume(&mut self, carried: &mut Carried) {
        self.thread = carried.thread.take();
        if let Some(newer) = self.thread.as_ref().and_then(|t| self.tx.newer_thread(t)) {
            // Another job of the batch changed the thread since this one's copy was made.
            let newer = newer.clone();
            self.set_thread(newer);
        }
        self.pending_thread = carried.opened.take();
        self.inbound = carried.inbound.take();
        self.outbound = carried.outbound.take();
        self.thread_stale = std::mem::take(&mut carried.thread_stale) && self.thread.is_some();
        self.on_commit.append(&mut carried.on_commit);
    }

    /// Hands the job's state back for the set run's next steps.
    pub fn suspend(&mut self, carried: &mut Carried) {
        carried.thread = self.thread.take();
        carried.opened = self.pending_thread.take();
        carried.inbound = self.inbound.take();
        carried.outbound = self.outbound.take();
        carried.thread_stale = std::mem::take(&mut self.thread_stale);
        carried.on_commit.append(&mut self.on_commit);
    }

    /// Counts an effect once the job's transaction has committed.
    pub fn count_on_commit(
        &mut self,
        update: impl FnOnce(&crate::metrics::Metrics) + Send + 'static,
    ) {
        self.on_commit.push(Box::new(update));
    }

    /// The job's transaction (a thread opened by this run is written first, so every
    /// statement sees it).
    pub async fn db(&mut self) -> Result<&DatabaseTransaction, JobError> {
        self.flush().await?;
        Ok(self.tx.get().await?)
    }

    /// The loaded thread; the loader guarantees a step that needs it runs after one that
    /// provides it, so its absence is a bug in a conditional workflow, reported as such.
    pub fn thread(&self) -> Result<&threads::Model, JobError> {
        if self.thread_stale {
            // The engine reads it again before a step that declares it reads `thread.*`.
            return Err(JobError::permanent(
                "the thread may have changed since it was loaded, and this step's action does not declare that it reads `thread.*` facts, so the engine did not read it again (a bug in the action's declaration)",
            ));
        }
        self.thread.as_ref().ok_or_else(|| {
            JobError::permanent(
                "no thread is loaded at this step (a `load_thread` or `create_thread` step was skipped by its condition)",
            )
        })
    }

    /// The loaded thread's lifecycle (the default one if its own was removed).
    pub fn lifecycle(&self) -> Result<Arc<Lifecycle>, JobError> {
        lifecycle_of(&self.lifecycles, self.thread()?)
    }

    /// Says the loaded thread may have changed since it was read: a midway commit
    /// (`send_mail`) ended the lock `load_thread` took, and another job may have changed
    /// it since. It is not read again here: the engine does that, locked, before the next
    /// step that reads the thread ([`super::Step::reads_thread`]). An acknowledgement's
    /// later steps only announce what was sent, so they never pay for the read.
    pub fn thread_may_have_changed(&mut self) {
        self.thread_stale = self.thread.is_some();
    }

    /// Reads a thread that may have changed again, locked, in the current transaction (see
    /// [`StepContext::thread_may_have_changed`]); nothing when it has not.
    pub async fn refresh_stale_thread(&mut self) -> Result<(), JobError> {
        let Some(id) = self
            .thread
            .as_ref()
            .filter(|_| self.thread_stale)
            .map(|t| t.id)
        else {
            return Ok(());
        };
        let fresh = crate::store::threads::get_for_update(self.db().await?, id).await?;
        self.thread_stale = false;
        self.set_thread(fresh);
        Ok(())
    }

    /// Replaces the current thread and refreshes the `thread.*` facts.
    pub fn set_thread(&mut self, t: threads::Model) {
        set_thread_facts(self.facts, &t);
        self.tx.note_thread(&t);
        self.thread = Some(t);
        self.thread_stale = false;
    }

    /// The thread this run opened and nobody wrote yet (see [`StepContext::open_thread`]).
    pub fn opened_thread(&self) -> Option<&crate::store::threads::PreparedThread> {
        self.pending_thread.as_deref()
    }
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

impl SetItem<'_> {
    /// Replaces the job's current thread and refreshes the `thread.*` facts.
    pub fn set_thread(&mut self, t: threads::Model) {
        set_thread_facts(self.facts, &t);
        self.carried.thread = Some(t);
        self.carried.thread_stale = false;
    }
}

/// A step's parameters after checking, with defaults filled in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    values: BTreeMap<String, Value>,
}

impl Params {
    pub(super) fn new(values: BTreeMap<String, Value>) -> Self {
        Params { values }
    }

    /// The parameter's value, if set.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    fn get(&self, name: &str) -> Result<&Value, JobError> {
        self.value(name)
            .ok_or_else(|| JobError::permanent(format!("parameter `{name}` is not set")))
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| !v.is_null())
    }

    pub fn str(&self, name: &str) -> Result<&str, JobError> {
        self.get(name)?
            .as_str()
            .ok_or_else(|| JobError::permanent(format!("parameter `{name}` is not a string")))
    }

    pub fn bool(&self, name: &str) -> Result<bool, JobError> {
        self.get(name)?
            .as_bool()
            .ok_or_else(|| JobError::permanent(format!("parameter `{name}` is not a boolean")))
    }

    pub fn int(&self, name: &str) -> Result<i64, JobError> {
        self.get(name)?
            .as_i64()
            .ok_or_else(|| JobError::permanent(format!("parameter `{name}` is not an integer")))
    }

    pub fn duration(&self, name: &str) -> Result<Duration, JobError> {
        humantime::parse_duration(self.str(name)?)
            .map_err(|e| JobError::permanent(format!("parameter `{name}`: {e}")))
    }

    pub fn strings(&self, name: &str) -> Result<Vec<String>, JobError> {
        let v = self.get(name)?;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .ok_or_else(|| JobError::permanent(format!("parameter `{name}` is not a list")))
    }
}
