//! `load_thread`: the batch's threads read and locked in one statement, in id order.

use std::collections::HashSet;

use uuid::Uuid;

use crate::store::cards;
use crate::workflow::actions::prelude::*;
use crate::workflow::actions::set::SET_LOCK_WAIT;
use crate::workflow::actions::threads::THREAD_FACTS;

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
    /// [`for_batch`]).
    fn form(&self) -> Form {
        Form::Set
    }

    /// The batch's threads read and locked in one statement, in id order.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        params: &Params,
    ) -> Result<Flows, JobError> {
        let mut ids = Vec::with_capacity(items.len());
        let mut seen = HashSet::with_capacity(items.len());
        for (k, item) in items.iter().enumerate() {
            let id = match thread_id(&item.facts, params) {
                Ok(id) => id,
                Err(e) => return Ok(cut_at(k, e)),
            };
            if !seen.insert(id) {
                return Ok(cut_at(
                    k,
                    JobError::transient(format!(
                        "an earlier job of its batch is on thread {id}: runs after it"
                    )),
                ));
            }
            ids.push(id);
        }
        // Nothing is locked yet, and the rows go in sorted: waiting for another batch's
        // threads cannot deadlock, and failing at once would run the batch one job at a time.
        let bound = batch.tx.lock_wait();
        if bound.is_some() {
            batch.tx.bound_lock_waits(SET_LOCK_WAIT).await?;
        }
        let found = cards::get_many_for_update(batch.tx.get().await?, &ids).await?;
        if let Some(bound) = bound {
            batch.tx.bound_lock_waits(bound).await?;
        }
        let mut flows = Vec::with_capacity(items.len());
        for (k, (item, id)) in items.iter_mut().zip(ids).enumerate() {
            let Some(stored) = found.get(&id) else {
                return Ok(cut_at(k, unknown_thread(id)));
            };
            let thread = batch.memo.newer_thread(stored).unwrap_or(stored).clone();
            let version = thread.version;
            batch.memo.note_thread(&thread);
            item.set_thread(thread);
            match expected_version(&item.facts, params, id, version) {
                Ok(flow) => flows.push(Ok(flow)),
                Err(e) => return Ok(cut_at(k, e)),
            }
        }
        Ok(flows)
    }
}

/// The id of the thread `load_thread` loads, from the fact its `id` parameter names.
pub(in crate::workflow::actions) fn thread_id(
    facts: &Facts,
    params: &Params,
) -> Result<Uuid, JobError> {
    let fact = params.str("id")?;
    let raw = facts.str(fact).unwrap_or_default();
    Uuid::parse_str(raw)
        .map_err(|_| JobError::permanent(format!("`{fact}` is not a thread id: {raw:?}")))
}

pub(in crate::workflow::actions) fn unknown_thread(id: Uuid) -> JobError {
    JobError::permanent(format!("unknown thread {id}"))
}

/// How `load_thread` goes on with thread `id` at `version`: on, or, when the job expected
/// another version, stopped or failed as `on_stale` says.
pub(in crate::workflow::actions) fn expected_version(
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
