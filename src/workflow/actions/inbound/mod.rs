//! Inbound mail, one action per file in the order a mail meets them: `store_raw_mail` (the
//! bytes first, so nothing is ever lost), `parse_mail` (parse and classify),
//! `dedupe_mail`, `check_loop`, `match_bounce` (a bounce marks the message it is about
//! failed), `discard_mail`, `upsert_sender` (the sending contact and, for a new sender, a
//! customer), `match_thread` (which thread it answers, or a new one) and `store_message`.
//!
//! The set steps have one statement for the whole batch where one mail alone would have
//! one. Each gives every mail what it would get running alone after the batch's earlier
//! mails; where that depends on what an earlier mail of the batch does later in its
//! workflow (the same dedupe key twice, a sender near the loop limit twice), the mail is
//! cut off to run after them.

mod check_loop;
mod dedupe;
mod discard;
mod match_bounce;
mod match_thread;
mod parse_mail;
mod store_message;
mod store_raw;
mod upsert_sender;

pub use check_loop::CheckLoop;
pub use dedupe::DedupeMail;
pub use discard::DiscardMail;
pub use match_bounce::MatchBounce;
pub use match_thread::MatchThread;
pub use parse_mail::ParseMail;
pub use store_message::StoreMessage;
pub use store_raw::StoreRawMail;
pub use upsert_sender::UpsertSender;

use gochat_entities::raw_mails::RawMailStatus;

use crate::mail::classify::MailClass;
use crate::mail::inbound::{InboundMail, Sender};
use crate::mail::parse;
use crate::store::inbound as store;
use crate::workflow::actions::prelude::*;

pub(in crate::workflow::actions) const CLASSES: &[&str] =
    &["normal", "auto_reply", "bounce", "feedback_report"];

/// The mail's working state; the loader guarantees `store_raw_mail` ran first, so its
/// absence is a workflow whose first step was skipped by a condition.
pub(in crate::workflow::actions) fn mail<'c>(
    ctx: &'c StepContext<'_>,
) -> Result<&'c InboundMail, JobError> {
    working_mail(ctx.inbound.as_deref())
}

/// [`mail`] of a job's state, for a set step.
pub(in crate::workflow::actions) fn mail_of<'i>(
    item: &'i JobState<'_>,
) -> Result<&'i InboundMail, JobError> {
    working_mail(item.inbound.as_deref())
}

fn working_mail(inbound: Option<&InboundMail>) -> Result<&InboundMail, JobError> {
    inbound.ok_or_else(|| JobError::permanent(NO_MAIL))
}

/// Why a step finds no mail to work on.
pub(in crate::workflow::actions) const NO_MAIL: &str =
    "no inbound mail at this step (`store_raw_mail` did not run)";

pub(in crate::workflow::actions) fn parsed<'c>(
    ctx: &'c StepContext<'_>,
) -> Result<&'c parse::ParsedMail, JobError> {
    mail(ctx)?.parsed.as_ref().ok_or_else(|| {
        JobError::permanent("the mail is not parsed at this step (`parse_mail` did not run)")
    })
}

/// Counts an inbound mail once the job commits (`gochat_inbound_mails_total{classification}`).
pub(in crate::workflow::actions) fn count(ctx: &mut StepContext<'_>, label: &'static str) {
    ctx.count_on_commit(counted(label));
}

/// [`count`] for one job of a set step.
pub(in crate::workflow::actions) fn count_item(item: &mut JobState<'_>, label: &'static str) {
    item.count_on_commit(counted(label));
}

fn counted(label: &'static str) -> impl FnOnce(&crate::metrics::Metrics) + Send + 'static {
    move |m| m.inbound_mails.with_label_values(&[label]).inc()
}

/// The mark and the reason of a mail refused after its raw row was written: the row says
/// `failed` with the reason, and the reason names the row (`gochat mail reprocess <id>`).
pub(in crate::workflow::actions) fn refused(
    raw_id: uuid::Uuid,
    why: &str,
) -> (store::RawMark, String) {
    let reason = format!("{why} (kept as raw mail {raw_id})");
    let mark = store::RawMark {
        id: raw_id,
        state: store::RawState {
            status: RawMailStatus::Failed,
            error: Some(reason.clone()),
            classification: None,
        },
    };
    (mark, reason)
}

/// The sender as the actor of the changes its mail makes.
pub(in crate::workflow::actions) fn sender_actor(s: &Sender) -> Value {
    json!({"kind": "contact", "id": s.contact_id, "name": s.name.clone().unwrap_or_else(|| s.address.clone())})
}

pub(in crate::workflow::actions) fn is_normal(ctx: &StepContext<'_>) -> bool {
    ctx.inbound.as_deref().is_some_and(is_normal_mail)
}

/// A customer's own mail: not automatic, not part of a loop.
pub(in crate::workflow::actions) fn is_normal_mail(m: &InboundMail) -> bool {
    matches!(m.class, Some(MailClass::Normal)) && !m.looping
}
