//! Inbound mail, up to knowing what it is: `store_raw_mail` (the bytes first, so nothing is
//! ever lost), `parse_mail` (parse and classify), `dedupe_mail`, `check_loop`,
//! `match_bounce` (a bounce marks the message it is about failed) and `discard_mail`.
//! Threading and storing the message are in `threading`.

use base64::Engine;
use chrono::{DateTime, Utc};
use gochat_entities::raw_mails::RawMailStatus;
use serde_json::{Value, json};

use super::threads::THREAD_FACTS;
use crate::jobs::Job;
use crate::jobs::JobError;
use crate::mail::classify::{ListFacts, MailClass};
use crate::mail::inbound::{self, EarlyParse, InboundMail, Parsed};
use crate::mail::parse;
use crate::services::Services;
use crate::store::{StoreError, inbound as store, threads};
use crate::workflow::Facts;
use crate::workflow::action::{Action, Flow, Flows, Form};
use crate::workflow::context::{Batch, JobState, StepContext};
use crate::workflow::params::Params;
use crate::workflow::spec::{ActionSpec, FactSpec, FactType, ParamSpec, ParamType};

pub(super) const CLASSES: &[&str] = &["normal", "auto_reply", "bounce", "feedback_report"];

/// The mail's working state; the loader guarantees `store_raw_mail` ran first, so its
/// absence is a workflow whose first step was skipped by a condition.
pub(super) fn mail<'c>(ctx: &'c StepContext<'_>) -> Result<&'c InboundMail, JobError> {
    ctx.inbound
        .as_deref()
        .ok_or_else(|| JobError::permanent(NO_MAIL))
}

/// Why a step finds no mail to work on.
pub(super) const NO_MAIL: &str = "no inbound mail at this step (`store_raw_mail` did not run)";

pub(super) fn parsed<'c>(ctx: &'c StepContext<'_>) -> Result<&'c parse::ParsedMail, JobError> {
    mail(ctx)?.parsed.as_ref().ok_or_else(|| {
        JobError::permanent("the mail is not parsed at this step (`parse_mail` did not run)")
    })
}

/// Counts an inbound mail once the job commits (`gochat_inbound_mails_total{classification}`).
pub(super) fn count(ctx: &mut StepContext<'_>, label: &'static str) {
    ctx.count_on_commit(move |m| m.inbound_mails.with_label_values(&[label]).inc());
}

/// [`count`] for one job of a set-based step.
pub(super) fn count_item(item: &mut &mut JobState<'_>, label: &'static str) {
    item.count_on_commit(move |m| m.inbound_mails.with_label_values(&[label]).inc());
}

/// `store_raw_mail`.
pub struct StoreRawMail;

static STORE_RAW: ActionSpec = ActionSpec {
    name: "store_raw_mail",
    summary: "Decodes `job.raw_base64` and stores the bytes with the envelope before anything \
              else, once per job (a retried or replayed job finds its row). The mail is parsed \
              and classified first, so the row goes in saying what it is; `parse_mail` takes \
              that parse. A mail over `mail.max_size` or not in base64 is refused to the dead \
              letters (it is in the dead letter's body), stored nowhere else.",
    params: &[],
    reads: &["job.raw_base64", "job.recipients"],
    writes: &[
        FactSpec {
            name: "inbound.raw_id",
            ty: FactType::Uuid,
            doc: "The `raw_mails` row (`gochat mail reprocess <id>` runs it again).",
        },
        FactSpec {
            name: "inbound.size",
            ty: FactType::Int,
            doc: "Its size in bytes.",
        },
        FactSpec {
            name: "inbound.mailbox",
            ty: FactType::Any,
            doc: "The address it came in on: `job.mailbox`, else the first recipient (no `+token`).",
        },
    ],
};

#[async_trait::async_trait]
impl Action for StoreRawMail {
    fn spec(&self) -> &'static ActionSpec {
        &STORE_RAW
    }

    /// The raw bytes in a commit of their own, marked failed with the reason: a mail the
    /// MTA was told is delivered is never only in a dead letter.
    async fn keep_on_failure(&self, services: &Services, job: &Job, why: &str) -> Option<String> {
        let now = services.clock.now();
        let input = RawInput::of(job, services.config.mail.max_size, now).ok()?;
        if input.reprocess.is_some() {
            return None;
        }
        let state = store::RawState {
            status: RawMailStatus::Failed,
            error: Some(crate::text::escape_controls(why).into_owned()),
            classification: None,
        };
        let row = input.row(&job.message_id, Some((&state, now)));
        match store::store_raw(services.store.conn(), &row).await {
            Ok(stored) => Some(format!("kept as raw mail {}", stored.id)),
            Err(e) => {
                tracing::warn!(error = %e, "could not keep the failed mail's raw bytes");
                None
            }
        }
    }

    fn form(&self) -> Form {
        Form::Set
    }

    /// The batch's raw mails in one multi-row insert.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        super::inbound_batch::store_raw(batch, items).await
    }
}

/// An inbound-mail job's mail, decoded and checked, before it is stored.
pub(super) struct RawInput {
    pub raw: Vec<u8>,
    pub sha: String,
    pub recipients: Vec<String>,
    pub envelope_from: Option<String>,
    pub mailbox: Option<String>,
    pub received_at: DateTime<Utc>,
    /// `gochat mail reprocess` names the stored row: run it again, do not store it twice.
    pub reprocess: Option<uuid::Uuid>,
}

impl RawInput {
    /// Decodes the job's `raw_base64`; `Err` is why the job is refused (not base64, over
    /// `mail.max_size`).
    pub fn of(job: &Job, max_size: u64, now: DateTime<Utc>) -> Result<RawInput, String> {
        let job = &job.payload;
        let raw = decode_raw(job["raw_base64"].as_str().unwrap_or_default())?;
        if raw.len() as u64 > max_size {
            return Err(format!(
                "the mail is {} bytes, over mail.max_size ({max_size} bytes)",
                raw.len()
            ));
        }
        let recipients: Vec<String> = crate::store::json_strings(&job["recipients"]);
        let envelope_from = job["envelope_from"]
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "<>")
            .map(str::to_owned);
        let mailbox = inbound::mailbox(job["mailbox"].as_str(), &recipients);
        let received_at = job["received_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now);
        Ok(RawInput {
            sha: parse::sha256_hex(&raw),
            raw,
            recipients,
            envelope_from,
            mailbox,
            received_at,
            reprocess: job["raw_mail_id"]
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok()),
        })
    }

    /// Parses and classifies it (before it is stored, so its row goes in marked): the
    /// outcome, and how its row is marked for it. CPU-bound: see [`parse_off_runtime`].
    pub fn parse(&self) -> (Parsed, store::RawState) {
        let outcome =
            inbound::parse_and_classify(&self.raw, self.envelope_from.as_deref(), &self.recipients);
        let state = raw_state(&outcome);
        (outcome, state)
    }

    /// The `raw_mails` row to insert for job `job_id`, marked with `known` if given.
    pub fn row<'a>(
        &'a self,
        job_id: &'a str,
        known: Option<(&'a store::RawState, DateTime<Utc>)>,
    ) -> store::NewRawMail<'a> {
        store::NewRawMail {
            job_message_id: job_id,
            envelope_from: self.envelope_from.as_deref(),
            recipients: &self.recipients,
            mailbox: self.mailbox.as_deref(),
            data: &self.raw,
            sha256: &self.sha,
            received_at: self.received_at,
            known,
        }
    }

    /// The mail's working state once stored as `raw_id`, its facts set.
    pub fn stored(
        self,
        raw_id: uuid::Uuid,
        early: Option<EarlyParse>,
        facts: &mut Facts,
    ) -> Box<InboundMail> {
        facts.set("inbound.raw_id", json!(raw_id));
        facts.set("inbound.size", json!(self.raw.len()));
        facts.set("inbound.mailbox", json!(self.mailbox));
        Box::new(InboundMail {
            raw_id,
            raw: self.raw,
            envelope_from: self.envelope_from,
            recipients: self.recipients,
            mailbox: self.mailbox,
            parsed: None,
            class: None,
            sender: None,
            dedupe_key: None,
            looping: false,
            stranger: false,
            spoofed: false,
            early,
        })
    }
}

/// What [`parse_off_runtime`] gives for each input: the input back, with its parse and
/// row state when it is a new mail to store (not refused, not a reprocess).
pub(super) type ParsedInput = (Result<RawInput, String>, Option<(Parsed, store::RawState)>);

/// Parses and classifies the new mails among `inputs` on a blocking thread: a large or
/// crafted mail costs up to a few hundred milliseconds of CPU (within the HTML limits of
/// [`crate::mail::html`]), and on the async runtime that would stall every other job and
/// the broker's heartbeats with it.
pub(super) async fn parse_off_runtime(
    inputs: Vec<Result<RawInput, String>>,
) -> Result<Vec<ParsedInput>, JobError> {
    tokio::task::spawn_blocking(move || {
        inputs
            .into_iter()
            .map(|input| {
                let parsed = match &input {
                    Ok(i) if i.reprocess.is_none() => Some(i.parse()),
                    _ => None,
                };
                (input, parsed)
            })
            .collect()
    })
    .await
    .map_err(|e| JobError::permanent(format!("parsing the mail failed: {e}")))
}

/// What the mails' conversations are known by, for [`store::lock_conversations`]: each
/// one's own Message-ID and the one its `In-Reply-To` names. A mail and its reply share a
/// key, so two batches holding them commit one after the other and the second threads by
/// what the first stored.
pub(super) fn conversation_keys<'a>(outcomes: impl Iterator<Item = &'a Parsed>) -> Vec<String> {
    let mut keys = Vec::new();
    for outcome in outcomes {
        if let Parsed::Mail { parsed, .. } = outcome {
            keys.extend(parsed.message_id.iter().cloned());
            keys.extend(parsed.in_reply_to.first().cloned());
        }
    }
    keys
}

/// The id of a stored raw mail a reprocess job names.
pub(super) async fn stored_raw(
    db: &impl sea_orm::ConnectionTrait,
    id: uuid::Uuid,
) -> Result<uuid::Uuid, JobError> {
    store::raw(db, id).await.map(|r| r.id).map_err(|e| match e {
        StoreError::NotFound { .. } => {
            JobError::permanent(format!("raw mail {id} (raw_mail_id) is not stored"))
        }
        other => other.into(),
    })
}

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

    /// Parsed mail by mail; the raw rows marked in one statement per distinct outcome.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        super::inbound_batch::parse(batch, items).await
    }
}

/// The mail's parse: what `store_raw_mail` found before writing the row, else parsed now;
/// and the mark its row still needs (`None`: the row already says so).
pub(super) fn take_parse(m: &mut InboundMail) -> (Parsed, Option<store::RawMark>) {
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
fn raw_state(outcome: &Parsed) -> store::RawState {
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
pub(super) fn apply_parse(
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

/// `dedupe_mail`.
pub struct DedupeMail;

static DEDUPE: ActionSpec = ActionSpec {
    name: "dedupe_mail",
    summary: "Recognises a mail already stored: the same Message-ID from the same sender, \
              whatever mailbox it came in on (a mail without a Message-ID by its content). \
              A duplicate's raw row (with the mailbox it reached) is marked so and linked to \
              the message, and its workflow ends, done.",
    params: &[],
    reads: &["inbound.class"],
    writes: &[FactSpec {
        name: "inbound.duplicate_of",
        ty: FactType::Any,
        doc: "The message it repeats, or null.",
    }],
};

#[async_trait::async_trait]
impl Action for DedupeMail {
    fn spec(&self) -> &'static ActionSpec {
        &DEDUPE
    }

    fn form(&self) -> Form {
        Form::Set
    }

    /// One lookup for the batch's keys. A mail whose key an earlier mail of the batch has
    /// is cut off to run after it: whether it is a duplicate depends on what that one
    /// stores.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        super::inbound_batch::dedupe(batch, items).await
    }
}

/// The key that makes two deliveries one mail.
pub(super) fn dedupe_key_of(m: &InboundMail) -> Result<String, JobError> {
    let p = m.parsed.as_ref().ok_or_else(|| {
        JobError::permanent("the mail is not parsed at this step (`parse_mail` did not run)")
    })?;
    let sender = p
        .from
        .as_ref()
        .map(|f| f.address.clone())
        .or_else(|| m.envelope_from.clone())
        .unwrap_or_default();
    Ok(inbound::dedupe_key(
        p.message_id.as_deref(),
        &sender,
        &m.raw,
    ))
}

/// The mark and the reason of a mail refused after its raw row was written: the row says
/// `failed` with the reason, and the reason names the row (`gochat mail reprocess <id>`).
pub(super) fn refused(raw_id: uuid::Uuid, why: &str) -> (store::RawMark, String) {
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

/// How a duplicate's raw row is marked.
pub(super) fn duplicate_mark(raw_id: uuid::Uuid) -> store::RawMark {
    store::RawMark {
        id: raw_id,
        state: store::RawState {
            status: RawMailStatus::Duplicate,
            error: None,
            classification: None,
        },
    }
}

/// Ends the workflow of a mail that repeats `existing`.
pub(super) fn duplicate(facts: &mut Facts, existing: &gochat_entities::messages::Model) -> Flow {
    facts.set("inbound.duplicate_of", json!(existing.id));
    Flow::Stop(format!(
        "a duplicate of message {} (thread {})",
        existing.id, existing.thread_id
    ))
}

/// `check_loop`.
pub struct CheckLoop;

static CHECK_LOOP: ActionSpec = ActionSpec {
    name: "check_loop",
    summary: "Counts the sender's mail within `mail.loop_window`: beyond `mail.loop_limit` the \
              mail is part of a loop (two robots answering each other), stored but never \
              answered, never opening or reopening a thread.",
    params: &[],
    reads: &["inbound.class"],
    writes: &[FactSpec {
        name: "inbound.loop",
        ty: FactType::Bool,
        doc: "The sender is over the loop limit.",
    }],
};

#[async_trait::async_trait]
impl Action for CheckLoop {
    fn spec(&self) -> &'static ActionSpec {
        &CHECK_LOOP
    }

    fn form(&self) -> Form {
        Form::Set
    }

    /// One grouped count for the batch's senders.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        super::inbound_batch::check_loop(batch, items).await
    }
}

/// Whose mail the loop check counts: the From address, else the envelope sender.
pub(super) fn loop_sender(m: &InboundMail) -> Option<String> {
    m.parsed
        .as_ref()
        .and_then(|p| p.from.as_ref())
        .map(|f| f.address.to_ascii_lowercase())
        .or_else(|| m.envelope_from.clone())
}

/// `mail.loop_limit` and the start of `mail.loop_window` before `now`.
pub(super) fn loop_window(services: &Services, now: DateTime<Utc>) -> (u64, DateTime<Utc>) {
    let cfg = &services.config.mail;
    let since = now - chrono::Duration::from_std(cfg.loop_window).unwrap_or_default();
    (u64::from(cfg.loop_limit), since)
}

/// Records whether `sender`, with `recent` mails in the window, is over `limit`; true when
/// it is (its raw row is then classified `loop`).
pub(super) fn set_loop(
    facts: &mut Facts,
    mail: Option<&mut InboundMail>,
    sender: &str,
    recent: u64,
    limit: u64,
) -> bool {
    let looping = recent >= limit;
    if looping {
        tracing::warn!(%sender, recent, limit, "mail loop: the sender is over mail.loop_limit");
    }
    if let Some(m) = mail {
        m.looping = looping;
    }
    facts.set("inbound.loop", json!(looping));
    looping
}

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

/// The job's `raw_base64`, decoded. Line breaks and spaces (base64 wrapped at 76 columns)
/// are skipped; the text is copied without them only when it has some.
fn decode_raw(text: &str) -> Result<Vec<u8>, String> {
    use std::borrow::Cow;
    let compact: Cow<'_, [u8]> = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        Cow::Owned(text.bytes().filter(|b| !b.is_ascii_whitespace()).collect())
    } else {
        Cow::Borrowed(text.as_bytes())
    };
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| format!("raw_base64 is not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::decode_raw;

    #[test]
    fn raw_base64_may_be_wrapped_and_must_be_base64() {
        let raw = b"From: a@example.org\r\n\r\nHello\r\n".repeat(5);
        let flat = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert_eq!(decode_raw(&flat).unwrap(), raw);
        let wrapped: String = flat
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
            .collect();
        assert_eq!(decode_raw(&format!(" {wrapped}\t")).unwrap(), raw);
        let bad = decode_raw("not base64!").unwrap_err();
        assert!(bad.starts_with("raw_base64 is not base64"), "{bad}");
        assert!(decode_raw("Zm9v\u{e9}").is_err());
    }
}
