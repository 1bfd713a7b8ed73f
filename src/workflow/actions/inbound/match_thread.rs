//! `match_thread`: which thread a mail answers, or a new one.
//!
//! Threading rules, in order: In-Reply-To / References against every stored Message-ID (ours
//! and theirs) match from any sender, since only a real participant knows them; a reply token
//! in a recipient address (`support+<token>@`) or the subject (`[#<token>]`) can be guessed
//! or forwarded, so it matches only when the sender is a contact of the thread's customers.
//! A sender who is not (a colleague in Cc answering) is stored on the thread and flagged,
//! never added to its customers. Why a thread matched is recorded in its feed.

use gochat_entities::threads as thread_entity;
use gochat_entities::threads::ThreadStatus;
use uuid::Uuid;

use crate::lifecycle::{ClosedReply, ThreadTraits};
use crate::mail::inbound::{self, Sender};
use crate::store::read_ahead::MatchReadAhead;
use crate::store::{inbound as store, threads};
use crate::workflow::actions::inbound::{count, is_normal, mail, parsed, sender_actor};
use crate::workflow::actions::prelude::*;
use crate::workflow::actions::set::SET_LOCK_WAIT;
use crate::workflow::actions::threads::THREAD_FACTS;
use crate::workflow::memo::UnstoredMail;

/// `match_thread`.
pub struct MatchThread;

const MATCHED_BY: &[&str] = &[
    "in_reply_to",
    "references",
    "address_token",
    "subject_token",
    "earlier_reply",
    "new_thread",
];

static MATCH_THREAD: ActionSpec = ActionSpec {
    name: "match_thread",
    summary: "Finds the thread the mail answers: In-Reply-To / References against stored \
              Message-IDs (any sender; a sender not among the thread's customers' contacts \
              flags the thread `unknown_sender`), else a reply token in a recipient address or \
              the subject (only from a contact of the thread's customers), else a stored \
              reply to it that came first (its In-Reply-To names this mail). A reply to a closed \
              thread follows its lifecycle's `closed_reply` (a new thread linked to it, or \
              reopen). Otherwise a new thread for the sender's customers, on the lifecycle \
              whose selector matches. An auto-reply or a loop never opens or reopens a thread: \
              matching none, it ends the workflow kept as raw mail. Why it matched is recorded \
              in the thread's feed.",
    params: &[],
    reads: &["inbound.contact_id", "inbound.loop"],
    writes: &[
        THREAD_FACTS[0],
        THREAD_FACTS[1],
        THREAD_FACTS[2],
        THREAD_FACTS[3],
        THREAD_FACTS[4],
        THREAD_FACTS[5],
        FactSpec {
            name: "thread.created",
            ty: FactType::Bool,
            doc: "The mail opened a new thread.",
        },
        FactSpec {
            name: "inbound.matched_by",
            ty: FactType::Enum(MATCHED_BY),
            doc: "How the thread was found (`new_thread` for a new one).",
        },
        FactSpec {
            name: "thread.linked_to",
            ty: FactType::Any,
            doc: "The closed thread a new thread continues, or null.",
        },
        FactSpec {
            name: "inbound.stranger",
            ty: FactType::Bool,
            doc: "The mail answers a thread by its headers but its sender is not a contact of \
                  the thread's customers: stored there and flagged `unknown_sender`, it \
                  reopens, relinks and acknowledges nothing.",
        },
    ],
};

/// A thread found for the mail, and why.
struct Found {
    thread: thread_entity::Model,
    by: &'static str,
    /// The Message-ID or token that matched.
    key: String,
    /// Whether the sender is a contact of the thread's customers, when already known.
    member: Option<bool>,
}

#[async_trait::async_trait]
impl Action for MatchThread {
    fn spec(&self) -> &'static ActionSpec {
        &MATCH_THREAD
    }

    fn form(&self) -> Form {
        Form::Interleaved
    }

    /// The messages the batch's mails answer, their threads (locked) and whether each
    /// sender is a contact of them, in three statements (see [`MatchReadAhead`]).
    async fn read_ahead(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<(), JobError> {
        let mut ids = Vec::new();
        let mut own = Vec::new();
        let mut contacts = Vec::new();
        for m in items.iter().filter_map(|i| i.inbound.as_deref()) {
            if let Some(p) = &m.parsed {
                ids.extend(threading_ids(p));
                own.extend(p.message_id.clone());
                own.extend(p.in_reply_to.first().cloned());
            }
            contacts.extend(m.sender.as_ref().map(|s| s.contact_id));
        }
        ids.sort();
        ids.dedup();
        own.sort();
        own.dedup();
        if ids.is_empty() && own.is_empty() {
            return Ok(());
        }
        contacts.sort();
        contacts.dedup();
        // Other batches hold some of these threads until they commit; see `upsert_sender`.
        let tx = &mut *batch.tx;
        let bound = tx.lock_wait();
        if bound.is_some() {
            tx.bound_lock_waits(SET_LOCK_WAIT).await?;
        }
        let read = MatchReadAhead::read(tx.get().await?, &ids, &own, &contacts).await?;
        if let Some(bound) = bound {
            tx.bound_lock_waits(bound).await?;
        }
        batch.memo.set_read_ahead(read);
        Ok(())
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, _params: &Params) -> Result<Flow, JobError> {
        // What threading reads of the mail, taken out (not the whole parsed mail copied) so
        // the context can be borrowed again.
        let p = parsed(ctx)?;
        let ids = threading_ids(p);
        let in_reply_to = p.in_reply_to.clone();
        let (subject, message_id) = (p.subject.clone(), p.message_id.clone());
        let m = mail(ctx)?;
        let sender = m.sender.clone().ok_or_else(|| {
            JobError::permanent("no sender at this step (`upsert_sender` did not run)")
        })?;
        let (recipients, mailbox) = (m.recipients.clone(), m.mailbox.clone());
        let normal = is_normal(ctx);
        let pattern = ctx.services.config.mail.subject_token.clone();
        let now = ctx.now;
        let actor = sender_actor(&sender);

        let mut found = None;
        // 1. The headers: In-Reply-To first, then References newest first.
        let header = |mid: &str| {
            if in_reply_to.iter().any(|i| i == mid) {
                "in_reply_to"
            } else {
                "references"
            }
        };
        // A mail of this batch not stored yet is newer than any stored one.
        let unstored = ctx
            .memo
            .unstored_mail(&ids)
            .map(|(mid, m)| (mid.to_owned(), m.clone()));
        let mut opens = None;
        if let Some((mid, unstored)) = unstored {
            let by = header(&mid);
            let (f, o) = found_unstored(ctx, unstored, &sender, by, mid).await?;
            (found, opens) = (Some(f), o);
        } else {
            // Read ahead for the batch, or read now.
            let ahead = ctx.memo.read_ahead();
            let hit = match ahead.and_then(|a| a.by_message_ids(&ids)) {
                Some(hit) => hit,
                None => store::by_message_ids(ctx.db().await?, &ids).await?,
            };
            if let Some((mid, thread_id)) = hit {
                let by = header(&mid);
                found = Some(found_stored(ctx, thread_id, &sender, by, mid).await?);
            }
        }
        // 2. Tokens, only for the thread's own customers' contacts.
        let mut ignored_token = None;
        let spoofed = mail(ctx)?.spoofed;
        if found.is_none() {
            let p = parsed(ctx)?;
            let to_and_cc = p.to.iter().chain(&p.cc).map(|a| a.address.as_str());
            let mut tokens: Vec<(String, &'static str)> = recipients
                .iter()
                .map(String::as_str)
                .chain(to_and_cc)
                .filter_map(inbound::token_in_address)
                .map(|t| (t, "address_token"))
                .collect();
            if let Some(t) = inbound::token_in_subject(&subject, &pattern) {
                tokens.push((t, "subject_token"));
            }
            let db = ctx.db().await?;
            for (token, by) in tokens {
                let Some(t) = store::by_token(db, &token).await? else {
                    continue;
                };
                if !spoofed && store::is_contact_of_thread(db, sender.contact_id, t.id).await? {
                    found = Some(Found {
                        thread: threads::get_for_update(db, t.id).await?,
                        by,
                        key: token,
                        member: Some(true),
                    });
                    break;
                }
                ignored_token = Some(json!({"thread": t.id, "token": token, "by": by}));
            }
        }

        // 3. Mail that came out of order (greylisting, retries, a backlog drained by several
        // batches at once): a stored reply to this mail, else a stored reply to the mail this
        // one answers (a sibling that also came before their parent), has the thread.
        if found.is_none() {
            let keys = message_id.iter().chain(in_reply_to.first());
            for key in keys {
                if let Some((f, o)) = answered_by_earlier_reply(ctx, key, &sender).await? {
                    (found, opens) = (Some(f), o);
                    break;
                }
            }
        }

        ctx.facts.set("thread.linked_to", Value::Null);
        ctx.facts.set("inbound.stranger", json!(false));
        let flow = if let Some(f) = found {
            matched(ctx, f, &sender, &actor, normal, &subject, mailbox, &pattern).await?
        } else if !normal {
            count(ctx, if m_looping(ctx) { "loop" } else { "auto_reply" });
            return Ok(Flow::Stop(
                "an automatic mail (auto-reply or loop) answering no thread: kept as raw mail only"
                    .into(),
            ));
        } else {
            let subject = inbound::strip_subject_tokens(&subject, &pattern);
            let detail = json!({"by": "new_thread", "ignored_token": ignored_token, "message_id": message_id});
            new_thread(ctx, &sender, &actor, subject, mailbox, None, detail, now).await?
        };
        // Until it is stored, a later mail of its batch answering it finds it here.
        if let (Flow::Continue, Some(own)) = (&flow, &message_id) {
            let opens = match ctx.opened_thread() {
                Some(new) => Some((new.thread.clone(), new.customers().to_vec())),
                None => opens,
            };
            let thread = ctx.thread()?.id;
            ctx.memo.note_unstored_mail(
                own,
                in_reply_to.first().map(String::as_str),
                UnstoredMail { thread, opens },
            );
        }
        Ok(flow)
    }
}

/// A thread the batch opens, with its customers (known here only until it is written).
type Opens = Option<(thread_entity::Model, Vec<Uuid>)>;

/// The thread of a mail of this batch not stored yet, found under `key`; and, when the batch
/// opens that thread, the thread and its customers (for the mails after this one).
async fn found_unstored(
    ctx: &mut StepContext<'_>,
    unstored: UnstoredMail,
    sender: &Sender,
    by: &'static str,
    key: String,
) -> Result<(Found, Opens), JobError> {
    match unstored.opens {
        Some((thread, customers)) => {
            // A thread the batch opens: who its customers are is known here only.
            if !sender.customers.iter().any(|(c, _)| customers.contains(c)) {
                return Err(JobError::transient(
                    "a mail of its batch not stored yet threads with it, from outside that thread's customers: runs after it",
                ));
            }
            let found = Found {
                thread: thread.clone(),
                by,
                key,
                member: Some(true),
            };
            Ok((found, Some((thread, customers))))
        }
        None => {
            let thread = threads::get_for_update(ctx.db().await?, unstored.thread).await?;
            let found = Found {
                thread,
                by,
                key,
                member: None,
            };
            Ok((found, None))
        }
    }
}

/// A stored thread found under `key`: as read ahead for the batch (the newer card if an
/// earlier mail of the batch changed it since), else read and locked now.
async fn found_stored(
    ctx: &mut StepContext<'_>,
    thread_id: Uuid,
    sender: &Sender,
    by: &'static str,
    key: String,
) -> Result<Found, JobError> {
    let ahead = ctx.memo.read_ahead().and_then(|a| {
        let t = a.thread(thread_id)?;
        let t = ctx.memo.newer_thread(t).unwrap_or(t).clone();
        Some((t, a.is_member(sender.contact_id, thread_id)))
    });
    let (thread, member) = match ahead {
        Some(read) => read,
        None => (
            threads::get_for_update(ctx.db().await?, thread_id).await?,
            None,
        ),
    };
    Ok(Found {
        thread,
        by,
        key,
        member,
    })
}

/// The thread of a mail (of this batch, or stored) that answers `key` by its In-Reply-To.
async fn answered_by_earlier_reply(
    ctx: &mut StepContext<'_>,
    key: &str,
    sender: &Sender,
) -> Result<Option<(Found, Opens)>, JobError> {
    const BY: &str = "earlier_reply";
    if let Some((_, reply)) = ctx.memo.unstored_reply_to(key) {
        let reply = reply.clone();
        return found_unstored(ctx, reply, sender, BY, key.to_owned())
            .await
            .map(Some);
    }
    let thread_id = match ctx.memo.read_ahead().and_then(|a| a.answering(key)) {
        Some(hit) => hit,
        None => store::threads_answering(ctx.db().await?, &[key.to_owned()])
            .await?
            .remove(key)
            .map(|(_, t)| t),
    };
    match thread_id {
        Some(id) => Ok(Some((
            found_stored(ctx, id, sender, BY, key.to_owned()).await?,
            None,
        ))),
        None => Ok(None),
    }
}

/// The Message-IDs a mail answers, in the order threading tries them: In-Reply-To first,
/// then References newest first.
fn threading_ids(p: &crate::mail::parse::ParsedMail) -> Vec<String> {
    let mut ids: Vec<String> = p.in_reply_to.clone();
    ids.extend(p.references.iter().rev().cloned());
    ids.dedup();
    ids
}

fn m_looping(ctx: &StepContext<'_>) -> bool {
    ctx.inbound.as_deref().is_some_and(|m| m.looping)
}

/// The mail answers `f.thread`: closed-thread policy, the unknown-sender flag, the audit.
#[allow(clippy::too_many_arguments)] // the match and what the mail brings to it
async fn matched(
    ctx: &mut StepContext<'_>,
    f: Found,
    sender: &Sender,
    actor: &Value,
    normal: bool,
    subject: &str,
    mailbox: Option<String>,
    pattern: &str,
) -> Result<Flow, JobError> {
    let now = ctx.now;
    let mut thread = f.thread;
    let detail =
        json!({"by": f.by, "key": f.key, "contact": sender.contact_id, "address": sender.address});
    let spoofed = ctx.inbound.as_deref().is_some_and(|m| m.spoofed);
    let member = !spoofed
        && match f.member {
            Some(known) => known,
            None => {
                store::is_contact_of_thread(ctx.db().await?, sender.contact_id, thread.id).await?
            }
        };
    // A stranger (anyone who knows a Message-ID) is never treated as the customer: their
    // mail is stored on the thread, flagged, and changes nothing else: no reopening, no
    // new linked thread on the customer's behalf, no acknowledgement, and the card keeps
    // showing the customer's side.
    ctx.facts.set("inbound.stranger", json!(!member));
    if let Some(m) = ctx.inbound.as_deref_mut() {
        m.stranger = !member;
    }
    if thread.status == ThreadStatus::Closed && normal && member {
        let policy = ctx
            .lifecycles
            .for_thread(&thread.lifecycle)
            .map_or(ClosedReply::NewThread, |l| l.closed_reply);
        match policy {
            ClosedReply::NewThread => {
                let subject = inbound::strip_subject_tokens(subject, pattern);
                let closed = thread.id;
                ctx.facts.set("thread.linked_to", json!(closed));
                return new_thread(
                    ctx,
                    sender,
                    actor,
                    subject,
                    mailbox,
                    Some(closed),
                    detail,
                    now,
                )
                .await;
            }
            ClosedReply::Reopen => {
                let db = ctx.db().await?;
                thread = threads::set_status(
                    db,
                    &thread,
                    ThreadStatus::Open,
                    None,
                    actor,
                    Some("the customer replied to the closed thread (closed_reply: reopen)"),
                    now,
                )
                .await?;
            }
        }
    }
    if !member {
        let db = ctx.db().await?;
        thread =
            threads::add_flag(db, &thread, "unknown_sender", detail.clone(), actor, now).await?;
    }
    ctx.defer_events(&mut vec![threads::event_with_detail(
        thread.id,
        "mail_matched",
        actor,
        detail,
        now,
    )]);
    ctx.facts.set("thread.created", json!(false));
    ctx.facts.set("inbound.matched_by", json!(f.by));
    ctx.set_thread(thread);
    Ok(Flow::Continue)
}

/// Opens a thread for the sender's customers.
#[allow(clippy::too_many_arguments)] // a new thread's parts
pub(in crate::workflow::actions) async fn new_thread(
    ctx: &mut StepContext<'_>,
    sender: &Sender,
    actor: &Value,
    subject: String,
    mailbox: Option<String>,
    linked: Option<Uuid>,
    detail: Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Flow, JobError> {
    let lifecycles = ctx.lifecycles.clone();
    let db = ctx.db().await?;
    // A reply to a closed thread continues that conversation: same customers.
    let customers: Vec<(Uuid, Value)> = match linked {
        Some(old) => store::customers_of_thread(db, old)
            .await?
            .into_iter()
            .map(|c| (c.id, c.attributes))
            .collect(),
        None => sender.customers.clone(),
    };
    if customers.is_empty() {
        return Err(JobError::permanent(format!(
            "the sender {} belongs to no customer, so no thread can be opened for them",
            sender.address
        )));
    }
    let attributes: Vec<Value> = customers.iter().map(|(_, a)| a.clone()).collect();
    let lifecycle = lifecycles
        .select(&ThreadTraits {
            tags: &[],
            mailbox: mailbox.as_deref(),
            customer_attributes: &attributes,
        })
        .map(|l| l.name.clone())
        .ok_or_else(|| {
            JobError::permanent("there is no default lifecycle in workflows/lifecycles/")
        })?;
    let subject = if subject.trim().is_empty() {
        "(no subject)".to_owned()
    } else {
        subject
    };
    let prepared = threads::prepare(
        threads::NewThread {
            subject,
            status: ThreadStatus::Open,
            lifecycle,
            mailbox,
            customers: customers.iter().map(|(id, _)| *id).collect(),
            linked_thread_id: linked,
            // A forged From opens a thread all the same (the mail may matter), marked.
            flags: if ctx.inbound.as_deref().is_some_and(|m| m.spoofed) {
                vec!["unauthenticated_sender".to_owned()]
            } else {
                Vec::new()
            },
            detail: Some(detail),
        },
        actor,
        now,
    );
    ctx.open_thread(prepared);
    ctx.facts.set("thread.created", json!(true));
    ctx.facts.set("inbound.matched_by", json!("new_thread"));
    Ok(Flow::Continue)
}
