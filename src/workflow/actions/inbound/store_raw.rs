//! `store_raw_mail`: the mail's bytes stored before anything can fail, parsed first (off
//! the runtime) so the row goes in saying what it is.

use base64::Engine;
use chrono::{DateTime, Utc};
use gochat_entities::raw_mails::RawMailStatus;

use crate::mail::inbound::{self, EarlyParse, InboundMail, Parsed};
use crate::mail::parse;
use crate::services::Services;
use crate::store::{StoreError, inbound as store};
use crate::workflow::actions::inbound::count_item;
use crate::workflow::actions::inbound::parse_mail::raw_state;
use crate::workflow::actions::prelude::*;
use crate::workflow::actions::set::SET_LOCK_WAIT;

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

    /// Each mail parsed, then one multi-row insert of the rows marked with
    /// what they are (a reprocessed mail finds its stored row).
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        let (services, now) = (batch.services, batch.now);
        let tx = &mut *batch.tx;
        let max = services.config.mail.max_size;
        let inputs: Vec<Result<RawInput, String>> = items
            .iter()
            .map(|item| RawInput::of(item.job, max, now))
            .collect();
        // Parsed here, before the transaction begins, so each row goes in once, marked (a
        // reprocessed mail is parsed by `parse_mail`, which marks its stored row).
        let (inputs, outcomes): (Vec<_>, Vec<_>) =
            parse_off_runtime(inputs).await?.into_iter().unzip();
        // First, before any row lock: a batch holding a mail's reply commits first.
        let keys = conversation_keys(outcomes.iter().flatten().map(|(o, _)| o));
        crate::jobs::turn::in_turn(async {
            let bound = tx.lock_wait();
            if bound.is_some() {
                tx.bound_lock_waits(SET_LOCK_WAIT).await?;
            }
            store::lock_conversations(tx.get().await?, &keys).await?;
            if let Some(bound) = bound {
                tx.bound_lock_waits(bound).await?;
            }
            Ok::<_, JobError>(())
        })
        .await?;
        let db = tx.get().await?;
        let new: Vec<store::NewRawMail<'_>> = items
            .iter()
            .zip(&inputs)
            .zip(&outcomes)
            .filter_map(|((item, input), outcome)| match (input, outcome) {
                (Ok(i), Some((_, state))) => Some(i.row(&item.job.message_id, Some((state, now)))),
                _ => None,
            })
            .collect();
        let mut rows = store::store_raw_many(db, &new).await?.into_iter();
        drop(new);
        let mut flows = Vec::with_capacity(items.len());
        for ((item, input), outcome) in items.iter_mut().zip(inputs).zip(outcomes) {
            let input = match input {
                Ok(input) => input,
                Err(why) => {
                    count_item(item, "refused");
                    flows.push(Ok(Flow::Refuse(why)));
                    continue;
                }
            };
            let (raw_id, early) = match (input.reprocess, outcome) {
                (Some(id), _) => (stored_raw(db, id).await?, None),
                (None, Some((outcome, _))) => {
                    let row = rows.next().ok_or_else(|| {
                        JobError::permanent("the raw mail insert returned fewer rows than mails")
                    })?;
                    let on_row = row.written;
                    (row.id, Some(EarlyParse { outcome, on_row }))
                }
                (None, None) => {
                    return Err(JobError::permanent(
                        "a new raw mail was not parsed before it was stored",
                    ));
                }
            };
            item.inbound = Some(input.stored(raw_id, early, &mut item.facts));
            flows.push(Ok(Flow::Continue));
        }
        Ok(flows)
    }
}

/// An inbound-mail job's mail, decoded and checked, before it is stored.
pub(in crate::workflow::actions) struct RawInput {
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
pub(in crate::workflow::actions) type ParsedInput =
    (Result<RawInput, String>, Option<(Parsed, store::RawState)>);

/// Parses and classifies the new mails among `inputs` on a blocking thread: a large or
/// crafted mail costs up to a few hundred milliseconds of CPU (within the HTML limits of
/// [`crate::mail::html`]), and on the async runtime that would stall every other job and
/// the broker's heartbeats with it.
pub(in crate::workflow::actions) async fn parse_off_runtime(
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
pub(in crate::workflow::actions) fn conversation_keys<'a>(
    outcomes: impl Iterator<Item = &'a Parsed>,
) -> Vec<String> {
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
pub(in crate::workflow::actions) async fn stored_raw(
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
