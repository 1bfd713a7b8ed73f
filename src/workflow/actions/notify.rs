//! `queue_message`: a templated message to a thread's contact, as an `outbound-message` job
//! in the outbox (so it is sent only if the job commits, by the outbound workflow, which
//! checks the recipient rule again at sending time).

use crate::workflow::actions::prelude::*;
use uuid::Uuid;

/// Who automatic messages come from.
pub(super) fn system_author() -> Value {
    json!({"kind": "system", "id": "gochat", "name": "Go!Chat"})
}

/// Writes an `outbound-message` job (template `template`, kind `kind`, to `contact`) for
/// `thread` to the outbox, with `message_id` as its idempotency key.
pub(super) fn queue_outbound(
    ctx: &mut StepContext<'_>,
    thread: Uuid,
    contact: Uuid,
    kind: &str,
    template: &str,
    variables: Value,
    message_id: &str,
) {
    let payload = json!({
        "schema": "outbound-message/v1",
        "thread_id": thread,
        "author": system_author(),
        "to": [contact],
        "kind": kind,
        "template": template,
        "variables": variables,
    });
    let (names, now) = (ctx.names.clone(), ctx.now);
    crate::events::follow_up_job(
        ctx.tx,
        &names,
        "outbound-message",
        message_id,
        &payload,
        now,
    );
}

/// `queue_message`.
pub struct QueueMessage;

static QUEUE_MESSAGE: ActionSpec = ActionSpec {
    name: "queue_message",
    summary: "Queues a message from template `template` to the contact in fact `to` on the \
              loaded thread (an `outbound-message` job written to the outbox, sent after \
              commit), e.g. the acknowledgement of a new thread. Its id is derived from the \
              job's, so the same job never queues it twice.",
    params: &[
        ParamSpec {
            name: "template",
            ty: ParamType::Template,
            default: None,
            doc: "The template (`workflows/templates/<name>/`).",
        },
        ParamSpec {
            name: "kind",
            ty: ParamType::Enum(&["reply", "reminder", "notification"]),
            default: Some("notification"),
            doc: "`notification` and `reminder` are marked automatic (`Auto-Submitted`).",
        },
        ParamSpec {
            name: "to",
            ty: ParamType::Fact,
            default: Some("inbound.contact_id"),
            doc: "The fact holding the recipient contact's id.",
        },
    ],
    reads: &["thread.id"],
    writes: &[FactSpec {
        name: "queued.message_job",
        ty: FactType::Str,
        doc: "The queued outbound-message job's message id.",
    }],
};

#[async_trait::async_trait]
impl Action for QueueMessage {
    fn spec(&self) -> &'static ActionSpec {
        &QUEUE_MESSAGE
    }

    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let template = params.str("template")?.to_owned();
        let kind = params.str("kind")?.to_owned();
        let fact = params.str("to")?;
        let contact = ctx
            .facts
            .str(fact)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| JobError::permanent(format!("`{fact}` holds no contact id")))?;
        let thread = ctx.thread()?.id;
        let id = format!("{}:{template}", ctx.job.message_id);
        queue_outbound(ctx, thread, contact, &kind, &template, json!({}), &id);
        ctx.facts.set("queued.message_job", json!(id));
        Ok(Flow::Continue)
    }
}
