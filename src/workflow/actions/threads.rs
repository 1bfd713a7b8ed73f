//! Threads: loading one, and changing its status, assignee, tags, customers and comments.
//! Every change goes through the store's versioned compare-and-set and leaves an audit event.

use gochat_entities::threads::ThreadStatus;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::contract::STATUSES;
use crate::jobs::JobError;
use crate::store::threads;
use crate::workflow::Facts;
use crate::workflow::action::{Action, Flow, Flows, Form};
use crate::workflow::context::{Batch, JobState, StepContext};
use crate::workflow::params::Params;
use crate::workflow::spec::{ActionSpec, FactSpec, FactType, ParamSpec, ParamType};

/// Facts describing the current thread, written by every action that loads or changes it.
pub(super) const THREAD_FACTS: &[FactSpec] = &[
    FactSpec {
        name: "thread.id",
        ty: FactType::Uuid,
        doc: "The thread's id.",
    },
    FactSpec {
        name: "thread.status",
        ty: FactType::Enum(STATUSES),
        doc: "Its status now.",
    },
    FactSpec {
        name: "thread.version",
        ty: FactType::Int,
        doc: "Its version now.",
    },
    FactSpec {
        name: "thread.assignee",
        ty: FactType::Any,
        doc: "The assigned agent, or null.",
    },
    FactSpec {
        name: "thread.lifecycle",
        ty: FactType::Str,
        doc: "Its lifecycle workflow's name.",
    },
    FactSpec {
        name: "thread.lifecycle_step",
        ty: FactType::Any,
        doc: "Its reminder step, or null.",
    },
];

/// The actor of a change: the fact named by parameter `actor`, or the system.
pub(super) fn actor(ctx: &StepContext<'_>, params: &Params) -> Value {
    actor_in(ctx.facts, params)
}

/// [`actor`] from a job's facts (a set-based step has no [`StepContext`]).
pub(super) fn actor_in(facts: &Facts, params: &Params) -> Value {
    params
        .str("actor")
        .ok()
        .and_then(|f| facts.get(f).cloned())
        .unwrap_or_else(|| json!({"kind": "system", "id": "gochat", "name": "Go!Chat"}))
}

pub(super) const ACTOR: ParamSpec = ParamSpec {
    name: "actor",
    ty: ParamType::Fact,
    default: Some("job.actor"),
    doc: "The fact holding who makes the change (`{kind, id, name}`), recorded in the audit.",
};

/// `load_thread`.
pub struct LoadThread;

static LOAD_THREAD: ActionSpec = ActionSpec {
    name: "load_thread",
    summary: "Loads the thread the job names. An unknown thread is a permanent failure; so is a \
              version other than the job's `expected_version`, unless `on_stale: stop`.",
    params: &[
        ParamSpec {
            name: "id",
            ty: ParamType::Fact,
            default: Some("job.thread_id"),
            doc: "The fact holding the thread id.",
        },
        ParamSpec {
            name: "expected_version",
            ty: ParamType::Fact,
            default: Some("~"),
            doc: "The fact holding the version the job expects (optional).",
        },
        ParamSpec {
            name: "on_stale",
            ty: ParamType::Enum(&["fail", "stop"]),
            default: Some("fail"),
            doc: "`fail`: dead-letter a stale job; `stop`: end the workflow as done.",
        },
    ],
    reads: &[],
    writes: THREAD_FACTS,
};

#[async_trait::async_trait]
impl Action for LoadThread {
    fn spec(&self) -> &'static ActionSpec {
        &LOAD_THREAD
    }

    /// The batch's threads read and locked in one statement (see
    /// [`super::threads_batch::load_threads`]).
    fn form(&self) -> Form {
        Form::Set
    }

    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        params: &Params,
    ) -> Result<Flows, JobError> {
        super::threads_batch::load_threads(batch, items, params).await
    }
}

/// The id of the thread `load_thread` loads, from the fact its `id` parameter names.
pub(super) fn thread_id(facts: &Facts, params: &Params) -> Result<Uuid, JobError> {
    let fact = params.str("id")?;
    let raw = facts.str(fact).unwrap_or_default();
    Uuid::parse_str(raw)
        .map_err(|_| JobError::permanent(format!("`{fact}` is not a thread id: {raw:?}")))
}

pub(super) fn unknown_thread(id: Uuid) -> JobError {
    JobError::permanent(format!("unknown thread {id}"))
}

/// How `load_thread` goes on with thread `id` at `version`: on, or, when the job expected
/// another version, stopped or failed as `on_stale` says.
pub(super) fn expected_version(
    facts: &Facts,
    params: &Params,
    id: Uuid,
    version: i64,
) -> Result<Flow, JobError> {
    let expected = if params.is_set("expected_version") {
        facts
            .get(params.str("expected_version")?)
            .and_then(Value::as_i64)
    } else {
        None
    };
    match expected {
        Some(want) if want != version => {
            let why = format!("thread {id} is at version {version}, the job expected {want}");
            if params.str("on_stale")? == "stop" {
                Ok(Flow::Stop(why))
            } else {
                Err(JobError::permanent(why))
            }
        }
        _ => Ok(Flow::Continue),
    }
}

/// `set_status`.
pub struct SetStatus;

static SET_STATUS: ActionSpec = ActionSpec {
    name: "set_status",
    summary: "Sets the thread's status (off the reminder ladder, its timers cancelled), from the literal `status` or the fact `status_fact`, without consulting the lifecycle (`transition` does).",
    params: &[
        ParamSpec {
            name: "status",
            ty: ParamType::Enum(STATUSES),
            default: Some("~"),
            doc: "The new status.",
        },
        ParamSpec {
            name: "status_fact",
            ty: ParamType::Fact,
            default: Some("~"),
            doc: "Or: the fact holding it (e.g. `job.to`).",
        },
        ParamSpec {
            name: "reason",
            ty: ParamType::Fact,
            default: Some("~"),
            doc: "The fact holding why (kept in the audit).",
        },
        ACTOR,
    ],
    reads: &["thread.id"],
    writes: THREAD_FACTS,
};

#[async_trait::async_trait]
impl Action for SetStatus {
    fn spec(&self) -> &'static ActionSpec {
        &SET_STATUS
    }

    /// Changes only its own job's thread (locked by `load_thread`) and that thread's rows.
    fn form(&self) -> Form {
        Form::Interleaved
    }

    fn validate(&self, params: &Params) -> Result<(), String> {
        match (params.is_set("status"), params.is_set("status_fact")) {
            (true, false) | (false, true) => Ok(()),
            _ => Err("set exactly one of `status` and `status_fact`".into()),
        }
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let wanted = if params.is_set("status") {
            params.str("status")?.to_owned()
        } else {
            let f = params.str("status_fact")?;
            ctx.facts.str(f).unwrap_or_default().to_owned()
        };
        let status: ThreadStatus =
            serde_json::from_value(Value::String(wanted.clone())).map_err(|_| {
                JobError::permanent(format!(
                    "{wanted:?} is not a status ({})",
                    STATUSES.join(", ")
                ))
            })?;
        let reason = if params.is_set("reason") {
            ctx.facts.str(params.str("reason")?).map(str::to_owned)
        } else {
            None
        };
        let who = actor(ctx, params);
        let current = ctx.thread()?.clone();
        let now = ctx.now;
        // Off the ladder: whatever was scheduled for the old status is moot.
        crate::store::timers::cancel_for_thread(ctx.db().await?, current.id).await?;
        let saved = threads::set_status(
            ctx.db().await?,
            &current,
            status,
            None,
            &who,
            reason.as_deref(),
            now,
        )
        .await?;
        ctx.set_thread(saved);
        Ok(Flow::Continue)
    }
}

/// `set_assignee`.
pub struct SetAssignee;

static SET_ASSIGNEE: ActionSpec = ActionSpec {
    name: "set_assignee",
    summary: "Assigns the thread to the agent in fact `assignee` (null unassigns).",
    params: &[
        ParamSpec {
            name: "assignee",
            ty: ParamType::Fact,
            default: Some("job.assignee"),
            doc: "The fact holding the agent id or null.",
        },
        ACTOR,
    ],
    reads: &["thread.id"],
    writes: THREAD_FACTS,
};

#[async_trait::async_trait]
impl Action for SetAssignee {
    fn spec(&self) -> &'static ActionSpec {
        &SET_ASSIGNEE
    }

    /// Changes only its own job's thread (locked by `load_thread`) and that thread's rows.
    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let assignee = match ctx.facts.get(params.str("assignee")?) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(Value::Null) | None => None,
            Some(other) => {
                return Err(JobError::permanent(format!(
                    "assignee must be an agent id or null, found {other}"
                )));
            }
        };
        let who = actor(ctx, params);
        let current = ctx.thread()?.clone();
        let now = ctx.now;
        let saved = threads::set_assignee(ctx.db().await?, &current, assignee, &who, now).await?;
        ctx.set_thread(saved);
        Ok(Flow::Continue)
    }
}

/// `change_tags`.
pub struct ChangeTags;

static CHANGE_TAGS: ActionSpec = ActionSpec {
    name: "change_tags",
    summary: "Adds the tags in fact `add` and removes those in fact `remove` (absent facts change nothing).",
    params: &[
        ParamSpec {
            name: "add",
            ty: ParamType::Fact,
            default: Some("job.tags_add"),
            doc: "The fact holding tags to add.",
        },
        ParamSpec {
            name: "remove",
            ty: ParamType::Fact,
            default: Some("job.tags_remove"),
            doc: "The fact holding tags to remove.",
        },
        ACTOR,
    ],
    reads: &["thread.id"],
    writes: THREAD_FACTS,
};

#[async_trait::async_trait]
impl Action for ChangeTags {
    fn spec(&self) -> &'static ActionSpec {
        &CHANGE_TAGS
    }

    /// Changes only its own job's thread (locked by `load_thread`) and that thread's rows.
    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let add = ctx.facts.strings(params.str("add")?);
        let remove = ctx.facts.strings(params.str("remove")?);
        let who = actor(ctx, params);
        let current = ctx.thread()?.clone();
        let now = ctx.now;
        let saved =
            threads::change_tags(ctx.db().await?, &current, &add, &remove, &who, now).await?;
        ctx.set_thread(saved);
        Ok(Flow::Continue)
    }
}

/// `set_customers`.
pub struct SetCustomers;

static SET_CUSTOMERS: ActionSpec = ActionSpec {
    name: "set_customers",
    summary: "Replaces the thread's customers by those whose external ids are in fact `customers`. \
              An unknown customer is a permanent failure.",
    params: &[
        ParamSpec {
            name: "customers",
            ty: ParamType::Fact,
            default: Some("job.customers_set"),
            doc: "The fact holding external ids.",
        },
        ACTOR,
    ],
    reads: &["thread.id"],
    writes: THREAD_FACTS,
};

#[async_trait::async_trait]
impl Action for SetCustomers {
    fn spec(&self) -> &'static ActionSpec {
        &SET_CUSTOMERS
    }

    /// Changes only its own job's thread (locked by `load_thread`) and that thread's rows.
    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let ids = ctx.facts.strings(params.str("customers")?);
        let who = actor(ctx, params);
        let current = ctx.thread()?.clone();
        let now = ctx.now;
        let saved = threads::set_customers(ctx.db().await?, &current, &ids, &who, now).await?;
        ctx.set_thread(saved);
        Ok(Flow::Continue)
    }
}

/// `add_comment`.
pub struct AddComment;

static ADD_COMMENT: ActionSpec = ActionSpec {
    name: "add_comment",
    summary: "Adds an internal comment (agents only, never sent to the customer).",
    params: &[
        ParamSpec {
            name: "body",
            ty: ParamType::Fact,
            default: Some("job.comment"),
            doc: "The fact holding the text.",
        },
        ParamSpec {
            name: "author",
            ty: ParamType::Fact,
            default: Some("job.actor"),
            doc: "The fact holding the author.",
        },
    ],
    reads: &["thread.id"],
    writes: THREAD_FACTS,
};

#[async_trait::async_trait]
impl Action for AddComment {
    fn spec(&self) -> &'static ActionSpec {
        &ADD_COMMENT
    }

    /// The batch's comments in one statement and their threads' cards in another (see
    /// [`super::threads_batch::add_comments`]).
    fn form(&self) -> Form {
        Form::Set
    }

    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        params: &Params,
    ) -> Result<Flows, JobError> {
        super::threads_batch::add_comments(batch, items, params).await
    }
}

/// The comment `add_comment` adds (trimmed; an empty one is refused) and its author.
pub(super) fn comment(facts: &Facts, params: &Params) -> Result<(String, Value), JobError> {
    let body = facts
        .str(params.str("body")?)
        .unwrap_or_default()
        .trim()
        .to_owned();
    if body.is_empty() {
        return Err(JobError::permanent("the comment is empty"));
    }
    let author = facts
        .get(params.str("author")?)
        .cloned()
        .unwrap_or(Value::Null);
    Ok((body, author))
}
