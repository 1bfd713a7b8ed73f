//! Messages on a thread's feed: the `messages` rows, their attachments and keyword-index
//! documents, and the inbox card they update (last message time, item count, snippet,
//! latest contact). [`add_messages`] stores a whole batch in a few statements; the
//! one-message functions are that batch of one.

use chrono::{DateTime, Utc};
use gochat_entities::{messages, thread_events, threads};
use sea_orm::{ConnectionTrait, IntoActiveModel};
use serde_json::{Value, json};
use uuid::Uuid;

use super::attachments::{NewAttachment, store_attachments};
use super::card::bump;
use super::open::{PreparedThread, insert_opened};
use crate::store::StoreError;
use crate::store::search::Doc;

/// Longest snippet kept on the inbox card, in characters.
const SNIPPET_CHARS: usize = 160;

/// A message to add to a thread's feed.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub direction: messages::MessageDirection,
    pub channel: messages::Channel,
    pub contact_id: Option<Uuid>,
    pub message_id_header: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub from_address: String,
    pub from_name: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub classification: Option<messages::Classification>,
    pub kind: Option<messages::OutboundKind>,
    pub state: Option<messages::OutboundState>,
    pub author: Option<Value>,
    pub raw_mail_id: Option<Uuid>,
    pub job_message_id: Option<String>,
    pub dedupe_key: Option<String>,
    pub attachments: Vec<NewAttachment>,
    /// Whether the card shows it as the latest word (snippet, contact): not for a
    /// stranger's mail, which must not take the card over from the customer.
    pub on_card: bool,
}

impl NewMessage {
    /// A message with only the required parts set; callers fill in the rest.
    pub fn new(
        direction: messages::MessageDirection,
        channel: messages::Channel,
        from: impl Into<String>,
        subject: impl Into<String>,
    ) -> NewMessage {
        NewMessage {
            direction,
            channel,
            contact_id: None,
            message_id_header: None,
            in_reply_to: None,
            references: Vec::new(),
            from_address: from.into(),
            from_name: None,
            to: Vec::new(),
            cc: Vec::new(),
            subject: subject.into(),
            text_body: None,
            html_body: None,
            classification: None,
            kind: None,
            state: None,
            author: None,
            raw_mail_id: None,
            job_message_id: None,
            dedupe_key: None,
            attachments: Vec::new(),
            on_card: true,
        }
    }
}

/// Writes a prepared thread together with its first message: the thread row goes in with
/// the inbox card already showing the message (and the version the message's change gives
/// it), instead of an insert and an update right after. Returns the card and the message;
/// the `created` event is added to `events` as by [`insert_prepared`](super::insert_prepared).
pub async fn create_with_message(
    db: &impl ConnectionTrait,
    p: &PreparedThread,
    msg: NewMessage,
    now: DateTime<Utc>,
    events: &mut Vec<thread_events::Model>,
) -> Result<(threads::Model, messages::Model), StoreError> {
    add_one(db, Target::Open(p.clone()), msg, now, events).await
}

/// [`add_messages`] for one message.
async fn add_one(
    db: &impl ConnectionTrait,
    target: Target,
    msg: NewMessage,
    now: DateTime<Utc>,
    events: &mut Vec<thread_events::Model>,
) -> Result<(threads::Model, messages::Model), StoreError> {
    add_messages(db, vec![(target, msg)], now, events)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Invalid("storing one message returned none".into()))
}

/// Where [`add_messages`] puts a message.
#[derive(Debug, Clone)]
pub enum Target {
    /// A thread prepared and not written yet: it goes in with its first messages.
    Open(PreparedThread),
    /// A stored thread, as read (its version is checked when its card is saved).
    Existing(threads::Model),
}

impl Target {
    pub fn thread_id(&self) -> Uuid {
        match self {
            Target::Open(p) => p.thread.id,
            Target::Existing(t) => t.id,
        }
    }
}

/// A thread of [`add_messages`]: as it was, and its card with the batch's messages on it.
struct Card {
    before: Target,
    after: threads::Model,
}

/// Stores several messages, each on its thread, in a few statements whatever their number:
/// the new threads with their cards already filled, their customers, the messages, the
/// attachments, then the stored threads' cards (version-checked, one statement). Messages on one thread
/// go on its card in the order given. Returns, for each message, its thread's card once all
/// of them are on it, and the message; the new threads' `created` events are added to
/// `events`. A thread given twice as [`Target::Existing`] must be the same version each time.
pub async fn add_messages(
    db: &impl ConnectionTrait,
    batch: Vec<(Target, NewMessage)>,
    now: DateTime<Utc>,
    events: &mut Vec<thread_events::Model>,
) -> Result<Vec<(threads::Model, messages::Model)>, StoreError> {
    let mut cards: Vec<Card> = Vec::new();
    let mut rows = Vec::with_capacity(batch.len());
    let mut of_card = Vec::with_capacity(batch.len());
    let mut files: Vec<(Uuid, Vec<NewAttachment>)> = Vec::new();
    for (target, msg) in batch {
        let id = target.thread_id();
        let on_card = msg.on_card;
        let (row, attachments) = message_row(id, msg, now);
        let at = match cards.iter().position(|c| c.after.id == id) {
            Some(at) => at,
            None => {
                let after = match &target {
                    Target::Open(p) => p.thread.clone(),
                    Target::Existing(t) => t.clone(),
                };
                cards.push(Card {
                    before: target,
                    after,
                });
                cards.len() - 1
            }
        };
        cards[at].after = with_message(&cards[at].after, &row, &attachments, on_card, now);
        of_card.push(at);
        if !attachments.is_empty() {
            files.push((row.id, attachments));
        }
        rows.push(row);
    }
    let mut opened = Vec::new();
    for card in &mut cards {
        if let Target::Open(p) = &card.before {
            card.after.version = p.thread.version + 1;
            card.after.updated_at = now;
            opened.push((p, &card.after));
        }
    }
    insert_opened(db, &opened, events).await?;
    let models: Vec<messages::ActiveModel> =
        rows.iter().map(|r| r.clone().into_active_model()).collect();
    crate::store::insert_in_chunks(db, models, MESSAGE_CHUNK).await?;
    index_for_search(db, &rows, &cards).await?;
    store_attachments(db, &files, now).await?;
    let mut writes = Vec::new();
    for card in &mut cards {
        if let Target::Existing(before) = &card.before {
            card.after = bump(before, card.after.clone(), now);
            writes.push(crate::store::cards::CardWrite {
                base: before.version,
                card: card.after.clone(),
            });
        }
    }
    crate::store::cards::save_many(db, &writes).await?;
    Ok(rows
        .into_iter()
        .zip(of_card)
        .map(|(row, at)| (cards[at].after.clone(), row))
        .collect())
}

/// The keyword index's documents of a batch (see [`crate::store::search`]): each message's, and
/// each new thread's subject where its first message does not carry it. Written with the
/// messages, so the index never holds what the transaction did not keep.
async fn index_for_search(
    db: &impl ConnectionTrait,
    rows: &[messages::Model],
    cards: &[Card],
) -> Result<(), StoreError> {
    let mut docs: Vec<Doc> = rows
        .iter()
        .map(|r| Doc::message(r.id, r.thread_id, &r.subject, r.text_body.as_deref()))
        .collect();
    for card in cards {
        if let Target::Open(p) = &card.before {
            let first = rows
                .iter()
                .find(|r| r.thread_id == p.thread.id)
                .map(|r| r.subject.as_str());
            docs.extend(Doc::thread_subject(p.thread.id, &p.thread.subject, first));
        }
    }
    crate::store::search::index_docs(db, &docs).await
}

/// Messages a statement: 28 columns each, under SQLite's 32,766 parameters.
const MESSAGE_CHUNK: usize = 1000;

/// Appends a message (with its attachments) and updates the inbox card.
pub async fn add_message(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    msg: NewMessage,
    now: DateTime<Utc>,
) -> Result<(threads::Model, messages::Model), StoreError> {
    let mut no_events = Vec::new();
    add_one(
        db,
        Target::Existing(thread.clone()),
        msg,
        now,
        &mut no_events,
    )
    .await
}

/// The `messages` row for `msg` on thread `thread_id`, and its attachments.
fn message_row(
    thread_id: Uuid,
    msg: NewMessage,
    now: DateTime<Utc>,
) -> (messages::Model, Vec<NewAttachment>) {
    let row = messages::Model {
        id: Uuid::now_v7(),
        thread_id,
        direction: msg.direction,
        channel: msg.channel,
        contact_id: msg.contact_id,
        message_id_header: msg.message_id_header,
        in_reply_to: msg.in_reply_to,
        references: json!(msg.references),
        from_address: msg.from_address,
        from_name: msg.from_name,
        to_addresses: json!(msg.to),
        cc_addresses: json!(msg.cc),
        subject: msg.subject,
        text_body: msg.text_body,
        html_body: msg.html_body,
        classification: msg.classification,
        kind: msg.kind,
        state: msg.state,
        error: None,
        smtp_reply: None,
        attempts: 0,
        author: msg.author,
        raw_mail_id: msg.raw_mail_id,
        job_message_id: msg.job_message_id,
        dedupe_key: msg.dedupe_key,
        created_at: now,
        updated_at: now,
        sent_at: None,
    };
    (row, msg.attachments)
}

/// The thread's inbox card once `row` is on it (last message time, item count, snippet and
/// latest contact when `on_card`, attachments), not yet saved.
fn with_message(
    thread: &threads::Model,
    row: &messages::Model,
    attachments: &[NewAttachment],
    on_card: bool,
    now: DateTime<Utc>,
) -> threads::Model {
    let names: Vec<String> = attachments
        .iter()
        .filter(|a| !a.inline)
        .map(|a| a.name.clone())
        .collect();
    let mut card = thread.clone();
    card.last_message_at = Some(now);
    card.item_count += 1 + names.len() as i32;
    if let Some(text) = row.text_body.as_deref().filter(|_| on_card) {
        card.snippet = Some(snippet(text));
    }
    if row.contact_id.is_some() && on_card {
        card.contact_id = row.contact_id;
    }
    if !names.is_empty() {
        card.has_attachments = true;
        let mut all: Vec<Value> = card
            .attachment_names
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.extend(names.into_iter().map(Value::String));
        card.attachment_names = Value::Array(all);
    }
    card
}

/// The first `SNIPPET_CHARS` characters of `text`, whitespace collapsed.
fn snippet(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(SNIPPET_CHARS) {
        Some((i, _)) => format!("{}…", &collapsed[..i]),
        None => collapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_collapse_whitespace_and_stop_at_the_limit() {
        assert_eq!(snippet("  Hello\n\n  world  "), "Hello world");
        let long = "é".repeat(SNIPPET_CHARS + 5);
        let s = snippet(&long);
        assert_eq!(s.chars().count(), SNIPPET_CHARS + 1);
        assert!(s.ends_with('…'));
    }
}
