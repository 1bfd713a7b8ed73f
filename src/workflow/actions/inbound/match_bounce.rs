//! `match_bounce`: a bounce marks the outbound message it is about failed.

use crate::mail::classify::MailClass;
use crate::store::{StoreError, inbound as store, threads};
use crate::workflow::actions::inbound::{count, mail};
use crate::workflow::actions::prelude::*;
use crate::workflow::actions::threads::THREAD_FACTS;

/// `match_bounce`.
pub struct MatchBounce;

static MATCH_BOUNCE: ActionSpec = ActionSpec {
    name: "match_bounce",
    summary: "Finds the outbound message a bounce is about (by the VERP envelope recipient, \
              else the Message-ID the report quotes) and loads its thread; a permanent \
              failure marks the message failed with the diagnostic (status code, recipient). \
              A bounce about no message of ours ends the workflow, kept as raw mail.",
    params: &[],
    reads: &["inbound.class"],
    writes: &[
        FactSpec {
            name: "bounce.message",
            ty: FactType::Uuid,
            doc: "The bounced message.",
        },
        FactSpec {
            name: "bounce.failed",
            ty: FactType::Bool,
            doc: "The bounce marked it failed now (a permanent failure not recorded before).",
        },
        FactSpec {
            name: "bounce.status",
            ty: FactType::Any,
            doc: "The enhanced status code (e.g. `5.1.1`), or null.",
        },
        FactSpec {
            name: "bounce.recipients",
            ty: FactType::List,
            doc: "The recipients that failed.",
        },
        FactSpec {
            name: "bounce.diagnostic",
            ty: FactType::Str,
            doc: "What is recorded as the message's error.",
        },
        THREAD_FACTS[0],
        THREAD_FACTS[1],
        THREAD_FACTS[2],
        THREAD_FACTS[3],
        THREAD_FACTS[4],
        THREAD_FACTS[5],
    ],
};

#[async_trait::async_trait]
impl Action for MatchBounce {
    fn spec(&self) -> &'static ActionSpec {
        &MATCH_BOUNCE
    }

    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, _params: &Params) -> Result<Flow, JobError> {
        let Some(MailClass::Bounce(b)) = mail(ctx)?.class.clone() else {
            return Err(JobError::permanent(
                "`match_bounce` runs on bounces only (add `when: {fact: inbound.class, equals: bounce}`)",
            ));
        };
        let now = ctx.now;
        let db = ctx.db().await?;
        let Some(original) =
            store::bounced_message(db, b.verp_message, b.original_message_id.as_deref()).await?
        else {
            count(ctx, "bounce");
            return Ok(Flow::Stop(
                "a bounce about no message of ours: kept as raw mail only".into(),
            ));
        };
        let diagnostic = format!(
            "bounced{}{}{}",
            b.status
                .as_deref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default(),
            if b.recipients.is_empty() {
                String::new()
            } else {
                format!(" for {}", b.recipients.join(", "))
            },
            b.diagnostic
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
        let failed = b.permanent && store::mark_bounced(db, original.id, &diagnostic, now).await?;
        let thread = match threads::get_for_update(db, original.thread_id).await {
            Err(StoreError::NotFound { .. }) => {
                return Ok(Flow::Stop(format!(
                    "the bounced message {}'s thread is gone",
                    original.id
                )));
            }
            other => other?,
        };
        ctx.set_thread(thread);
        ctx.facts.set("bounce.message", json!(original.id));
        ctx.facts.set("bounce.failed", json!(failed));
        ctx.facts.set("bounce.status", json!(b.status));
        ctx.facts.set("bounce.recipients", json!(b.recipients));
        ctx.facts.set("bounce.diagnostic", json!(diagnostic));
        if failed {
            ctx.count_on_commit(|m| m.outbound_messages.with_label_values(&["failed"]).inc());
        }
        Ok(Flow::Continue)
    }
}
