//! `discard_mail`: ends the workflow keeping the mail as raw mail only.

use crate::mail::classify::MailClass;
use crate::workflow::actions::inbound::{count, mail};
use crate::workflow::actions::prelude::*;

/// `discard_mail`.
pub struct DiscardMail;

static DISCARD: ActionSpec = ActionSpec {
    name: "discard_mail",
    summary: "Ends the workflow keeping the mail as raw mail only (e.g. abuse feedback reports: \
              not customer mail), counted by its class.",
    params: &[ParamSpec {
        name: "reason",
        ty: ParamType::Str,
        default: None,
        doc: "Why, for the logs.",
    }],
    reads: &["inbound.class"],
    writes: &[],
};

#[async_trait::async_trait]
impl Action for DiscardMail {
    fn spec(&self) -> &'static ActionSpec {
        &DISCARD
    }

    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let label = match mail(ctx)?.class {
            Some(MailClass::FeedbackReport { .. }) => "feedback_report",
            Some(MailClass::AutoReply { .. }) => "auto_reply",
            Some(MailClass::Bounce(_)) => "bounce",
            _ => "refused",
        };
        count(ctx, label);
        Ok(Flow::Stop(params.str("reason")?.to_owned()))
    }
}
