//! Events for other tools, through the outbox (published after commit).

use serde_json::Map;

use crate::events;
use crate::workflow::actions::prelude::*;

/// `emit_event`: a CloudEvent on `<prefix>gochat.events`.
pub struct EmitEvent;

static EMIT_EVENT: ActionSpec = ActionSpec {
    name: "emit_event",
    summary: "Queues a CloudEvents 1.0 event `com.algoreg.gochat.<name>` (routing key `<name>`) \
              for publishing once the job commits. Its `data` holds the facts listed in `include`.",
    params: &[
        ParamSpec {
            name: "name",
            ty: ParamType::Str,
            default: None,
            doc: "Event name, e.g. `thread.updated`.",
        },
        ParamSpec {
            name: "subject",
            ty: ParamType::Fact,
            default: Some("thread.id"),
            doc: "The fact whose value is the event's `subject`.",
        },
        ParamSpec {
            name: "include",
            ty: ParamType::FactList,
            default: Some("[]"),
            doc: "Facts copied into `data` (absent ones are left out).",
        },
    ],
    reads: &[],
    writes: &[],
};

#[async_trait::async_trait]
impl Action for EmitEvent {
    fn spec(&self) -> &'static ActionSpec {
        &EMIT_EVENT
    }

    /// Only its own job's facts and a deferred outbox row.
    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let name = params.str("name")?;
        let subject_fact = params.str("subject")?;
        let subject = match ctx.facts.get(subject_fact) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => {
                return Err(JobError::permanent(format!(
                    "event subject fact `{subject_fact}` is not set"
                )));
            }
        };
        let mut data = Map::new();
        for fact in params.strings("include")? {
            if let Some(v) = ctx.facts.get(&fact) {
                data.insert(fact, v.clone());
            }
        }
        let (names, now) = (ctx.names.clone(), ctx.now);
        events::emit(ctx.tx, &names, name, &subject, Value::Object(data), now);
        Ok(Flow::Continue)
    }
}
