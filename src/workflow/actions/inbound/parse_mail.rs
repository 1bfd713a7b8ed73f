//! `parse_mail`: takes the parse `store_raw_mail` made and sets the mail's facts.

use gochat_entities::raw_mails::RawMailStatus;

use crate::mail::classify::{ListFacts, MailClass};
use crate::mail::inbound::{self, InboundMail, Parsed};
use crate::store::inbound as store;
use crate::workflow::actions::inbound::{CLASSES, NO_MAIL, count_item};
use crate::workflow::actions::prelude::*;

/// `parse_mail`.
pub struct ParseMail;

static PARSE: ActionSpec = ActionSpec {
    name: "parse_mail",
    summary: "Parses the stored mail (headers, text and sanitised HTML bodies, attachments, any \
              charset) and classifies it: a normal mail, an auto-reply (RFC 3834 and the \
              usual vacation and list markers), a bounce (RFC 3464 reports and the common \
              non-standard ones) or an abuse feedback report. A mail that cannot be parsed at \
              all keeps its raw row, marked failed, and the job is refused to the dead letters. \
              Takes the parse `store_raw_mail` made, and marks the raw row only if it does not \
              say so yet (a reprocessed mail's row).",
    params: &[],
    reads: &["inbound.raw_id"],
    writes: &[
        FactSpec {
            name: "inbound.message_id",
            ty: FactType::Any,
            doc: "Its Message-ID (without angle brackets), or null.",
        },
        FactSpec {
            name: "inbound.from",
            ty: FactType::Any,
            doc: "The From address, or null.",
        },
        FactSpec {
            name: "inbound.subject",
            ty: FactType::Str,
            doc: "The decoded subject.",
        },
        FactSpec {
            name: "inbound.class",
            ty: FactType::Enum(CLASSES),
            doc: "What the mail is.",
        },
        FactSpec {
            name: "inbound.class_reason",
            ty: FactType::Any,
            doc: "Which rule classified it (null for normal mail).",
        },
        FactSpec {
            name: "inbound.attachments",
            ty: FactType::Int,
            doc: "How many attachments it has (inline images apart).",
        },
        FactSpec {
            name: "inbound.list",
            ty: FactType::Any,
            doc: "The mailing list or group it came through (its `List-Id`, or `unnamed` when \
                  only `List-Unsubscribe`/`List-Post` say so), or null for direct mail.",
        },
        FactSpec {
            name: "inbound.precedence",
            ty: FactType::Any,
            doc: "`bulk`, `junk` or `list` from its `Precedence` header, or null.",
        },
        FactSpec {
            name: "inbound.may_auto_answer",
            ty: FactType::Bool,
            doc: "An automatic answer may go to its sender: it is neither list nor bulk mail \
                  (RFC 3834 §2).",
        },
    ],
};

#[async_trait::async_trait]
impl Action for ParseMail {
    fn spec(&self) -> &'static ActionSpec {
        &PARSE
    }

    fn form(&self) -> Form {
        Form::Set
    }

    /// Takes each mail's parse (made by `store_raw_mail`); marks, in one
    /// statement per distinct outcome, only the rows that do not say it yet.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        let now = batch.now;
        let tx = &mut *batch.tx;
        let mut outcomes = Vec::with_capacity(items.len());
        let mut marks = Vec::new();
        for item in items.iter_mut() {
            let m = item
                .inbound
                .as_deref_mut()
                .ok_or_else(|| JobError::permanent(NO_MAIL))?;
            let (outcome, mark) = take_parse(m);
            marks.extend(mark);
            outcomes.push(outcome);
        }
        if !marks.is_empty() {
            store::mark_raw_many(tx.get().await?, &marks, now).await?;
        }
        let mut flows = Vec::with_capacity(items.len());
        for (item, outcome) in items.iter_mut().zip(outcomes) {
            let (flow, label) = apply_parse(outcome, &mut item.facts, item.inbound.as_deref_mut());
            if let Some(label) = label {
                count_item(item, label);
            }
            flows.push(Ok(flow));
        }
        Ok(flows)
    }
}

/// The mail's parse: what `store_raw_mail` found before writing the row, else parsed now;
/// and the mark its row still needs (`None`: the row already says so).
pub(in crate::workflow::actions) fn take_parse(
    m: &mut InboundMail,
) -> (Parsed, Option<store::RawMark>) {
    let (outcome, on_row) = match m.early.take() {
        Some(early) => (early.outcome, early.on_row),
        None => (
            inbound::parse_and_classify(&m.raw, m.envelope_from.as_deref(), &m.recipients),
            false,
        ),
    };
    let mark = (!on_row).then(|| store::RawMark {
        id: m.raw_id,
        state: raw_state(&outcome),
    });
    (outcome, mark)
}

/// How a raw row is marked for what parsing it gave.
pub(in crate::workflow::actions) fn raw_state(outcome: &Parsed) -> store::RawState {
    match outcome {
        Parsed::Mail { class, defects, .. } => store::RawState {
            status: RawMailStatus::Parsed,
            error: defects.clone(),
            classification: Some(inbound::class_name(class)),
        },
        Parsed::Unparseable(why) => store::RawState {
            status: RawMailStatus::Failed,
            error: Some(why.clone()),
            classification: None,
        },
    }
}

/// Sets the facts and the mail's parsed state from its parse; the flow, and the
/// classification to count when the job ends here.
pub(in crate::workflow::actions) fn apply_parse(
    outcome: Parsed,
    facts: &mut Facts,
    mail: Option<&mut InboundMail>,
) -> (Flow, Option<&'static str>) {
    let (parsed, class) = match outcome {
        Parsed::Unparseable(why) => {
            let raw = mail.map(|m| m.raw_id.to_string()).unwrap_or_default();
            return (
                Flow::Refuse(format!("{why} (kept as raw mail {raw})")),
                Some("refused"),
            );
        }
        Parsed::Mail { parsed, class, .. } => (parsed, class),
    };
    let reason = match &class {
        MailClass::Normal => Value::Null,
        MailClass::AutoReply { reason } | MailClass::FeedbackReport { reason } => {
            json!(reason)
        }
        MailClass::Bounce(b) => json!(b.reason),
    };
    facts.set("inbound.message_id", json!(parsed.message_id));
    facts.set(
        "inbound.from",
        json!(parsed.from.as_ref().map(|f| f.address.clone())),
    );
    facts.set("inbound.subject", json!(parsed.subject));
    facts.set("inbound.class", json!(inbound::class_name(&class)));
    facts.set("inbound.class_reason", reason);
    let list = ListFacts::of(&parsed);
    facts.set("inbound.may_auto_answer", json!(list.may_auto_answer()));
    facts.set("inbound.list", json!(list.list));
    facts.set("inbound.precedence", json!(list.precedence));
    facts.set(
        "inbound.attachments",
        json!(parsed.attachments.iter().filter(|a| !a.inline).count()),
    );
    if let Some(m) = mail {
        m.parsed = Some(*parsed);
        m.class = Some(class);
    }
    (Flow::Continue, None)
}
