//! The workflow engine: each job kind is a YAML file of named steps calling built-in actions
//! (`workflows/jobs/<kind>.yaml`). Ops change behaviour by editing YAML; the loader checks
//! every file against the actions' declarations before anything runs.
//!
//! - [`spec`]: what an action declares (parameters, facts read and written)
//! - [`load`]: YAML → checked [`Workflow`], errors with file:line:column and hints
//! - [`condition`]: the `when:` matchers
//! - [`engine`]: running the steps for a batch of jobs (a single job is a batch of one)
//! - [`context`]: what a step runs with: the batch and each job's state
//! - [`memo`]: what a batch's jobs learn from each other before they commit
//! - [`handler`]: a batch of jobs in one transaction: idempotency, the run, the commit
//! - [`actions`]: the built-in actions, grouped by what they touch
//! - [`docs`]: the action reference, generated from the declarations

pub mod action;
pub mod actions;
pub mod condition;
pub mod context;
pub mod docs;
pub mod engine;
pub mod facts;
pub mod handler;
pub mod job_facts;
pub mod load;
pub mod memo;
pub mod params;
pub mod registry;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use action::{Action, Flow, Form};
pub use context::{Batch, JobState, StepContext};
pub use facts::Facts;
pub use load::{LoadError, Problem};
pub use params::Params;
pub use registry::Registry;

use crate::lifecycle::Lifecycles;

/// A checked workflow for one job kind.
pub struct Workflow {
    pub kind: String,
    pub file: PathBuf,
    pub steps: Vec<Step>,
}

impl Workflow {
    /// Whether several jobs of this workflow may share one transaction: when no step
    /// commits midway (see [`Action::commits_midway`]), or when the batch runs as a set, so
    /// that every job stands at the committing step when it commits.
    pub fn batchable(&self) -> bool {
        !self.steps.iter().any(|s| s.action.commits_midway()) || self.set_based()
    }

    /// Whether a batch of this workflow runs step by step across its jobs (see [`Form`]):
    /// only when some step gains by it ([`Form::Set`]), no step must run [`Form::Alone`],
    /// and every step that commits midway is a set step (run once for all the jobs).
    pub fn set_based(&self) -> bool {
        let set = |s: &Step| s.action.form() == Form::Set;
        self.steps.iter().any(set)
            && self.steps.iter().all(|s| s.action.form() != Form::Alone)
            && self
                .steps
                .iter()
                .all(|s| !s.action.commits_midway() || set(s))
    }
}

pub struct Step {
    pub name: String,
    pub action: Arc<dyn Action>,
    pub params: Params,
    pub when: Option<condition::Condition>,
    /// Whether the step reads the loaded thread: its action declares a `thread.*` fact, or
    /// its condition or parameters name one that can change (any but `thread.id`). Before
    /// such a step the engine reads a thread that may have changed again (see
    /// [`StepContext::thread_may_have_changed`]).
    pub reads_thread: bool,
    /// Whether its condition reads a thread fact that can change (worked out at load time,
    /// not on every run).
    condition_reads_thread: bool,
}

impl Step {
    /// A checked step; what it reads of the thread is worked out here, once, from its
    /// action's declaration, its parameters and its condition.
    pub fn new(
        name: String,
        action: Arc<dyn Action>,
        params: Params,
        when: Option<condition::Condition>,
    ) -> Step {
        let spec = action.spec();
        let condition_reads_thread = when
            .as_ref()
            .is_some_and(|c| c.facts().into_iter().any(thread_fact_may_change));
        let named_in_params = spec
            .params
            .iter()
            .any(|p| match (p.ty, params.value(p.name)) {
                (spec::ParamType::Fact, Some(serde_json::Value::String(f))) => {
                    thread_fact_may_change(f)
                }
                (spec::ParamType::FactList, Some(serde_json::Value::Array(items))) => items
                    .iter()
                    .filter_map(serde_json::Value::as_str)
                    .any(thread_fact_may_change),
                _ => false,
            });
        let reads_thread = spec.reads.iter().any(|f| f.starts_with("thread."))
            || named_in_params
            || condition_reads_thread;
        Step {
            name,
            action,
            params,
            when,
            reads_thread,
            condition_reads_thread,
        }
    }

    /// Whether its condition reads a thread fact that can change.
    pub fn condition_reads_thread(&self) -> bool {
        self.condition_reads_thread
    }
}

/// A `thread.*` fact a midway commit may have made stale: any but `thread.id`, which cannot
/// change (an event that only names its thread needs no fresh copy).
pub fn thread_fact_may_change(fact: &str) -> bool {
    fact.starts_with("thread.") && fact != "thread.id"
}

/// The job workflows and lifecycles in force. Swapped whole on reload, so a job runs on
/// one consistent set.
#[derive(Default)]
pub struct WorkflowSet {
    workflows: BTreeMap<String, Arc<Workflow>>,
    pub lifecycles: Arc<Lifecycles>,
    pub templates: Arc<crate::mail::Templates>,
}

impl WorkflowSet {
    /// Loads and checks `<dir>/jobs/*.yaml` with the built-in actions,
    /// `<dir>/lifecycles/*.yaml` against `<dir>/templates/`, and compiles the templates;
    /// every problem of all three.
    pub fn load(dir: &Path) -> Result<WorkflowSet, LoadError> {
        let templates = crate::mail::Templates::load(&dir.join("templates"));
        let registry = match &templates {
            Ok(t) => Registry::builtin().with_templates(t.names()),
            Err(_) => Registry::builtin(),
        };
        let jobs = load::load_dir(dir, &registry);
        let lifecycles = crate::lifecycle::load::load_dir(dir);
        let mut problems = Vec::new();
        let mut set = jobs.unwrap_or_else(|mut e| {
            problems.append(&mut e.problems);
            WorkflowSet::default()
        });
        match lifecycles {
            Ok(l) => set.lifecycles = Arc::new(l),
            Err(mut p) => problems.append(&mut p),
        }
        match templates {
            Ok(t) => set.templates = Arc::new(t),
            Err(mut p) => problems.append(&mut p),
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(LoadError { problems })
        }
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<Workflow>> {
        self.workflows.get(kind)
    }

    /// The job kinds that have a workflow.
    pub fn kinds(&self) -> Vec<&str> {
        self.workflows.keys().map(String::as_str).collect()
    }
}
