//! Write side of threads: create a thread, add messages and comments, change status,
//! assignee, tags and customers. Every change bumps the thread's `version` with a
//! compare-and-set, so two writers racing on one thread never both win: the loser gets
//! [`StoreError::Conflict`] (transient: its job is retried against the new state).
//!
//! Each change also writes a `thread_events` row (the audit shown in the feed); the caller
//! passes the actor. All functions take a connection or a transaction: the job handler runs
//! them inside the job's transaction.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use gochat_entities::{
    attachments, blobs, comments, customers, messages, thread_customers, thread_events,
    thread_tags, threads,
};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    QueryFilter, QuerySelect,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::StoreError;
use super::search::Doc;

/// Longest snippet kept on the inbox card, in characters.
const SNIPPET_CHARS: usize = 160;

/// What a new thread starts with.
#[derive(Debug, Clone)]
pub struct NewThread {
    pub subject: String,
    pub status: threads::ThreadStatus,
    pub lifecycle: String,
    pub mailbox: Option<String>,
    pub customers: Vec<Uuid>,
    pub linked_thread_id: Option<Uuid>,
    pub flags: Vec<String>,
    /// Why it was opened (kept in its `created` event), e.g. how an inbound mail matched.
    pub detail: Option<Value>,
}

impl NewThread {
    /// A thread on the `default` lifecycle, without mailbox, link, flags or detail; callers
    /// set the rest with struct update syntax.
    pub fn new(
        subject: impl Into<String>,
        status: threads::ThreadStatus,
        customers: Vec<Uuid>,
    ) -> Self {
        NewThread {
            subject: subject.into(),
            status,
            lifecycle: "default".into(),
            mailbox: None,
            customers,
            linked_thread_id: None,
            flags: Vec::new(),
            detail: None,
        }
    }
}

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

/// A file attached to a message. Its bytes go to the content-addressed `blobs` table.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
    pub inline: bool,
    pub content_id: Option<String>,
}

/// A URL-safe token that routes replies back to the thread (`support+<token>@...`).
fn reply_token() -> String {
    let mut bytes = [0u8; 10];
    rand::fill(&mut bytes);
    crate::hex::lower(&bytes)
}

/// The thread, or `NotFound`.
pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<threads::Model, StoreError> {
    threads::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound {
            what: "thread",
            id: id.to_string(),
        })
}

/// The thread, locked for the rest of the transaction (PostgreSQL `FOR UPDATE`), so jobs on
/// one thread queue up instead of failing each other's version check. SQLite needs no lock:
/// its write transactions are serialised already (see `Tx`).
pub async fn get_for_update(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<threads::Model, StoreError> {
    let mut q = threads::Entity::find_by_id(id);
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        q = q.lock_exclusive();
    }
    q.one(db).await?.ok_or(StoreError::NotFound {
        what: "thread",
        id: id.to_string(),
    })
}

/// The thread whose reply token is `token`, if any.
pub async fn by_reply_token(
    db: &impl ConnectionTrait,
    token: &str,
) -> Result<Option<threads::Model>, StoreError> {
    Ok(threads::Entity::find()
        .filter(threads::Column::ReplyToken.eq(token))
        .one(db)
        .await?)
}

/// The thread holding a message whose Message-ID header is one of `ids` (the newest match).
pub async fn by_message_ids(
    db: &impl ConnectionTrait,
    ids: &[String],
) -> Result<Option<threads::Model>, StoreError> {
    if ids.is_empty() {
        return Ok(None);
    }
    let found = messages::Entity::find()
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            messages::Column::MessageIdHeader,
            ids.iter().map(String::as_str),
        ))
        .all(db)
        .await?;
    let Some(newest) = found.into_iter().max_by_key(|m| m.created_at) else {
        return Ok(None);
    };
    Ok(Some(get(db, newest.thread_id).await?))
}

/// Creates a thread with its customers and a `created` event.
pub async fn create(
    db: &impl ConnectionTrait,
    new: NewThread,
    actor: &Value,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    let prepared = prepare(new, actor, now);
    let mut events = Vec::new();
    insert_prepared(db, &prepared, &mut events).await?;
    insert_events(db, events).await?;
    Ok(prepared.thread)
}

/// A new thread, its customers and its `created` event, built but not yet written (see
/// [`insert_prepared`] and [`create_with_message`]).
#[derive(Debug, Clone)]
pub struct PreparedThread {
    pub thread: threads::Model,
    customers: Vec<Uuid>,
    actor: Value,
    detail: Option<Value>,
}

impl PreparedThread {
    /// The customers it is opened for.
    pub fn customers(&self) -> &[Uuid] {
        &self.customers
    }
}

/// Builds a new thread (id, reply token, version 1) without writing it.
pub fn prepare(new: NewThread, actor: &Value, now: DateTime<Utc>) -> PreparedThread {
    PreparedThread {
        thread: threads::Model {
            id: Uuid::now_v7(),
            subject: new.subject,
            status: new.status,
            assignee: None,
            lifecycle: new.lifecycle,
            lifecycle_step: None,
            reply_token: reply_token(),
            mailbox: new.mailbox,
            linked_thread_id: new.linked_thread_id,
            version: 1,
            flags: json!(new.flags),
            created_at: now,
            updated_at: now,
            last_message_at: None,
            snippet: None,
            has_attachments: false,
            attachment_names: json!([]),
            item_count: 0,
            contact_id: None,
        },
        customers: new.customers,
        actor: actor.clone(),
        detail: new.detail,
    }
}

/// Writes a prepared thread as it is. Its `created` event is added to `events`, for the
/// caller to write with [`insert_events`] (a job's go in with its batch's commit, see
/// [`crate::store::Tx::defer_events`]).
pub async fn insert_prepared(
    db: &impl ConnectionTrait,
    p: &PreparedThread,
    events: &mut Vec<thread_events::Model>,
) -> Result<(), StoreError> {
    insert_prepared_many(db, &[p], events).await
}

/// [`insert_prepared`] for several threads, in one statement per table.
pub async fn insert_prepared_many(
    db: &impl ConnectionTrait,
    prepared: &[&PreparedThread],
    events: &mut Vec<thread_events::Model>,
) -> Result<(), StoreError> {
    let opened: Vec<(&PreparedThread, &threads::Model)> =
        prepared.iter().map(|p| (*p, &p.thread)).collect();
    insert_opened(db, &opened, events).await?;
    let subjects: Vec<Doc> = prepared
        .iter()
        .filter_map(|p| Doc::thread_subject(p.thread.id, &p.thread.subject, None))
        .collect();
    super::search::index_docs(db, &subjects).await
}

/// Writes a prepared thread together with its first message: the thread row goes in with
/// the inbox card already showing the message (and the version the message's change gives
/// it), instead of an insert and an update right after. Returns the card and the message;
/// the `created` event is added to `events` as by [`insert_prepared`].
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
    super::insert_in_chunks(db, models, MESSAGE_CHUNK).await?;
    index_for_search(db, &rows, &cards).await?;
    store_attachments(db, &files, now).await?;
    let mut writes = Vec::new();
    for card in &mut cards {
        if let Target::Existing(before) = &card.before {
            card.after = bump(before, card.after.clone(), now);
            writes.push(super::cards::CardWrite {
                base: before.version,
                card: card.after.clone(),
            });
        }
    }
    super::cards::save_many(db, &writes).await?;
    Ok(rows
        .into_iter()
        .zip(of_card)
        .map(|(row, at)| (cards[at].after.clone(), row))
        .collect())
}

/// The keyword index's documents of a batch (see [`super::search`]): each message's, and
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
    super::search::index_docs(db, &docs).await
}

/// Messages a statement: 28 columns each, under SQLite's 32,766 parameters.
const MESSAGE_CHUNK: usize = 1000;

/// Attachments a statement: 9 columns each.
const ATTACHMENT_CHUNK: usize = 1000;

/// Threads a statement: 21 columns each.
const THREAD_CHUNK: usize = 1000;

/// Writes new threads (`row` is what goes in: the prepared thread, or its card with its
/// first messages), their customers and `created` events (added to `events`).
async fn insert_opened(
    db: &impl ConnectionTrait,
    opened: &[(&PreparedThread, &threads::Model)],
    events: &mut Vec<thread_events::Model>,
) -> Result<(), StoreError> {
    if opened.is_empty() {
        return Ok(());
    }
    let rows: Vec<threads::ActiveModel> = opened
        .iter()
        .map(|(_, row)| (*row).clone().into_active_model())
        .collect();
    super::insert_in_chunks(db, rows, THREAD_CHUNK).await?;
    let links: Vec<(Uuid, &[Uuid], DateTime<Utc>)> = opened
        .iter()
        .map(|(p, row)| (row.id, p.customers.as_slice(), p.thread.created_at))
        .collect();
    link_customers(db, &links).await?;
    for (p, row) in opened {
        events.push(event_row(
            row.id,
            "created",
            &p.actor,
            None,
            Some(json!({"status": p.thread.status})),
            p.detail.clone(),
            p.thread.created_at,
        ));
    }
    Ok(())
}

/// Saves `changed` (a modified copy of `current`) if nobody changed the thread since
/// `current` was read; bumps the version and `updated_at`.
async fn save(
    db: &impl ConnectionTrait,
    current: &threads::Model,
    changed: threads::Model,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    let changed = bump(current, changed, now);
    let am = changed.clone().into_active_model().reset_all();
    let res = threads::Entity::update_many()
        .set(am)
        .filter(threads::Column::Id.eq(current.id))
        .filter(threads::Column::Version.eq(current.version))
        .exec(db)
        .await?;
    if res.rows_affected == 0 {
        return Err(StoreError::Conflict {
            thread_id: current.id,
            version: current.version,
        });
    }
    Ok(changed)
}

/// `changed` (a modified copy of `current`) as one change further: the next version,
/// stamped `now`. What [`save`] writes, and what a set-based step keeps in memory until
/// it writes a batch's cards together ([`super::cards::save_many`]).
pub fn bump(
    current: &threads::Model,
    mut changed: threads::Model,
    now: DateTime<Utc>,
) -> threads::Model {
    changed.version = current.version + 1;
    changed.updated_at = now;
    changed
}

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

/// Messages' attachments: the blobs not stored yet, then the attachment rows, in at most
/// three statements per thousand. The stored blobs are asked for first because the same
/// files come again and again (signature logos, a document quoted back in every reply): an
/// insert that meets an existing blob would still ship its bytes to the server.
async fn store_attachments(
    db: &impl ConnectionTrait,
    messages: &[(Uuid, Vec<NewAttachment>)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let all: Vec<(Uuid, &NewAttachment)> = messages
        .iter()
        .flat_map(|(id, list)| list.iter().map(move |a| (*id, a)))
        .collect();
    // Nine columns a row stays under SQLite's 32,766 bind variables.
    for chunk in all.chunks(1000) {
        store_attachment_rows(db, chunk, now).await?;
    }
    Ok(())
}

async fn store_attachment_rows(
    db: &impl ConnectionTrait,
    list: &[(Uuid, &NewAttachment)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let shas: Vec<String> = list
        .iter()
        .map(|(_, a)| crate::hex::lower(&Sha256::digest(&a.data)))
        .collect();
    let stored: HashSet<String> = blobs::Entity::find()
        .select_only()
        .column(blobs::Column::Sha256)
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            blobs::Column::Sha256,
            shas.iter().map(String::as_str),
        ))
        .into_tuple::<String>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let mut new = HashSet::new();
    let missing: Vec<blobs::ActiveModel> = list
        .iter()
        .zip(&shas)
        .filter(|(_, sha)| !stored.contains(*sha) && new.insert(sha.as_str()))
        .map(|((_, a), sha)| blobs::ActiveModel {
            sha256: Set(sha.clone()),
            size: Set(a.data.len() as i64),
            data: Set(a.data.clone()),
            created_at: Set(now),
        })
        .collect();
    if !missing.is_empty() {
        // A concurrent job may store the same blob meanwhile: theirs is as good as ours.
        let mut insert = super::bulk::insert_statement(db.get_database_backend(), missing)?;
        insert.on_conflict(
            OnConflict::column(blobs::Column::Sha256)
                .do_nothing()
                .to_owned(),
        );
        db.execute(&insert).await?;
    }
    let rows = list
        .iter()
        .zip(shas)
        .map(|((message_id, a), sha)| attachments::ActiveModel {
            id: Set(Uuid::now_v7()),
            message_id: Set(*message_id),
            name: Set(a.name.clone()),
            content_type: Set(a.content_type.clone()),
            size: Set(a.data.len() as i64),
            sha256: Set(sha),
            inline: Set(a.inline),
            content_id: Set(a.content_id.clone()),
            created_at: Set(now),
        });
    super::insert_in_chunks(db, rows.collect(), ATTACHMENT_CHUNK).await
}

/// Adds an internal comment (never shown to the customer).
pub async fn add_comment(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    author: &Value,
    body: &str,
    now: DateTime<Utc>,
) -> Result<(threads::Model, comments::Model), StoreError> {
    let row = comment_row(thread.id, author, body, now);
    comments::Entity::insert(row.clone().into_active_model())
        .exec_without_returning(db)
        .await?;
    let card = save(db, thread, with_comment(thread), now).await?;
    Ok((card, row))
}

/// The `comments` row of a new internal comment.
pub fn comment_row(
    thread_id: Uuid,
    author: &Value,
    body: &str,
    now: DateTime<Utc>,
) -> comments::Model {
    comments::Model {
        id: Uuid::now_v7(),
        thread_id,
        author: author.clone(),
        body: body.to_owned(),
        created_at: now,
    }
}

/// The thread's card with one more comment counted, not yet saved.
pub fn with_comment(thread: &threads::Model) -> threads::Model {
    let mut card = thread.clone();
    card.item_count += 1;
    card
}

/// Writes comments, several rows a statement.
pub async fn insert_comments(
    db: &impl ConnectionTrait,
    rows: Vec<comments::Model>,
) -> Result<(), StoreError> {
    let rows = rows
        .into_iter()
        .map(IntoActiveModel::into_active_model)
        .collect();
    super::insert_in_chunks::<comments::ActiveModel>(db, rows, EVENT_CHUNK).await
}

/// Sets the status (and the lifecycle step, `None` off the reminder ladder); records a
/// `status` event when it changes. Returns the thread unchanged if nothing changes.
pub async fn set_status(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    status: threads::ThreadStatus,
    step: Option<i32>,
    actor: &Value,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    let Some((changed, event)) = status_change(thread, status, step, actor, reason, now) else {
        return Ok(thread.clone());
    };
    let saved = save(db, thread, changed, now).await?;
    if let Some(event) = event {
        insert_event(db, event).await?;
    }
    Ok(saved)
}

/// What [`set_status`] changes, not yet saved: the card with its new status and step, and
/// the `status` event when the status itself changes. `None` when nothing changes.
pub fn status_change(
    thread: &threads::Model,
    status: threads::ThreadStatus,
    step: Option<i32>,
    actor: &Value,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Option<(threads::Model, Option<thread_events::Model>)> {
    if thread.status == status && thread.lifecycle_step == step {
        return None;
    }
    let mut changed = thread.clone();
    changed.status = status;
    changed.lifecycle_step = step;
    let event = (thread.status != status).then(|| {
        event_row(
            thread.id,
            "status",
            actor,
            Some(json!({"status": thread.status})),
            Some(json!({"status": status})),
            reason.map(|r| json!({"reason": r})),
            now,
        )
    });
    Some((changed, event))
}

/// Assigns the thread to an agent (`None` unassigns).
pub async fn set_assignee(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    assignee: Option<String>,
    actor: &Value,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    if thread.assignee == assignee {
        return Ok(thread.clone());
    }
    let mut changed = thread.clone();
    changed.assignee = assignee.clone();
    let saved = save(db, thread, changed, now).await?;
    insert_event(
        db,
        event_row(
            thread.id,
            "assignee",
            actor,
            Some(json!({"assignee": thread.assignee})),
            Some(json!({"assignee": assignee})),
            None,
            now,
        ),
    )
    .await?;
    Ok(saved)
}

/// The thread's tags, sorted.
pub async fn tags(db: &impl ConnectionTrait, thread_id: Uuid) -> Result<Vec<String>, StoreError> {
    let mut tags: Vec<String> = thread_tags::Entity::find()
        .filter(thread_tags::Column::ThreadId.eq(thread_id))
        .all(db)
        .await?
        .into_iter()
        .map(|t| t.tag)
        .collect();
    tags.sort();
    Ok(tags)
}

/// Adds and removes tags; records a `tags` event with the sets before and after.
pub async fn change_tags(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    add: &[String],
    remove: &[String],
    actor: &Value,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    let before = tags(db, thread.id).await?;
    let mut after = before.clone();
    after.retain(|t| !remove.contains(t));
    for t in add {
        let t = t.trim();
        if t.is_empty() {
            return Err(StoreError::Invalid("a tag cannot be empty".into()));
        }
        if !after.iter().any(|x| x == t) {
            after.push(t.to_owned());
        }
    }
    after.sort();
    if after == before {
        return Ok(thread.clone());
    }
    thread_tags::Entity::delete_many()
        .filter(thread_tags::Column::ThreadId.eq(thread.id))
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            thread_tags::Column::Tag,
            remove.iter().map(String::as_str),
        ))
        .exec(db)
        .await?;
    let new: Vec<thread_tags::ActiveModel> = after
        .iter()
        .filter(|t| !before.contains(t))
        .map(|t| thread_tags::ActiveModel {
            thread_id: Set(thread.id),
            tag: Set(t.clone()),
        })
        .collect();
    if !new.is_empty() {
        thread_tags::Entity::insert_many(new)
            .on_conflict(
                OnConflict::columns([thread_tags::Column::ThreadId, thread_tags::Column::Tag])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    let saved = save(db, thread, thread.clone(), now).await?;
    insert_event(
        db,
        event_row(
            thread.id,
            "tags",
            actor,
            Some(json!({"tags": before})),
            Some(json!({"tags": after})),
            None,
            now,
        ),
    )
    .await?;
    Ok(saved)
}

/// The external ids of the thread's customers, in the order they were added.
pub async fn customer_ids(
    db: &impl ConnectionTrait,
    thread_id: Uuid,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    let mut links = thread_customers::Entity::find()
        .filter(thread_customers::Column::ThreadId.eq(thread_id))
        .find_also_related(customers::Entity)
        .all(db)
        .await?;
    links.sort_by_key(|(l, _)| (l.added_at, l.customer_id));
    Ok(links
        .into_iter()
        .filter_map(|(_, c)| c.map(|c| (c.id, c.external_id)))
        .collect())
}

/// The thread's customer ids, as a subquery: a membership test then costs one statement.
pub(crate) fn customer_ids_query(thread: Uuid) -> sea_orm::sea_query::SelectStatement {
    sea_orm::sea_query::Query::select()
        .column(thread_customers::Column::CustomerId)
        .from(thread_customers::Entity)
        .and_where(thread_customers::Column::ThreadId.eq(thread))
        .to_owned()
}

/// Replaces the thread's customers by those with `external_ids` (all must exist).
pub async fn set_customers(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    external_ids: &[String],
    actor: &Value,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    if external_ids.is_empty() {
        return Err(StoreError::Invalid(
            "a thread keeps at least one customer".into(),
        ));
    }
    let found = customers::Entity::find()
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            customers::Column::ExternalId,
            external_ids.iter().map(String::as_str),
        ))
        .all(db)
        .await?;
    if let Some(missing) = external_ids
        .iter()
        .find(|e| !found.iter().any(|c| &&c.external_id == e))
    {
        return Err(StoreError::NotFound {
            what: "customer",
            id: missing.clone(),
        });
    }
    let before: Vec<String> = customer_ids(db, thread.id)
        .await?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let mut after: Vec<String> = external_ids.to_vec();
    after.dedup();
    if before == after {
        return Ok(thread.clone());
    }
    thread_customers::Entity::delete_many()
        .filter(thread_customers::Column::ThreadId.eq(thread.id))
        .exec(db)
        .await?;
    let ordered: Vec<Uuid> = after
        .iter()
        .filter_map(|e| found.iter().find(|c| &c.external_id == e).map(|c| c.id))
        .collect();
    link_customers(db, &[(thread.id, &ordered, now)]).await?;
    let saved = save(db, thread, thread.clone(), now).await?;
    insert_event(
        db,
        event_row(
            thread.id,
            "customers",
            actor,
            Some(json!({"customers": before})),
            Some(json!({"customers": after})),
            None,
            now,
        ),
    )
    .await?;
    Ok(saved)
}

/// Links threads to customers: for each, the thread, its customers in order and when.
async fn link_customers(
    db: &impl ConnectionTrait,
    links: &[(Uuid, &[Uuid], DateTime<Utc>)],
) -> Result<(), StoreError> {
    // Distinct `added_at` keep the order customers were given in.
    let rows: Vec<thread_customers::ActiveModel> = links
        .iter()
        .flat_map(|(thread_id, customers, at)| {
            customers
                .iter()
                .enumerate()
                .map(move |(i, c)| thread_customers::ActiveModel {
                    thread_id: Set(*thread_id),
                    customer_id: Set(*c),
                    added_at: Set(*at + chrono::Duration::microseconds(i as i64)),
                })
        })
        .collect();
    // Three columns a row.
    super::insert_links_in_chunks(
        db,
        rows,
        5000,
        [
            thread_customers::Column::ThreadId,
            thread_customers::Column::CustomerId,
        ],
    )
    .await
}

/// Adds `flag` (e.g. `unknown_sender`) to the thread, audited with `detail`; a flag already
/// set is left as it is.
pub async fn add_flag(
    db: &impl ConnectionTrait,
    thread: &threads::Model,
    flag: &str,
    detail: Value,
    actor: &Value,
    now: DateTime<Utc>,
) -> Result<threads::Model, StoreError> {
    let mut flags = super::json_strings(&thread.flags);
    if flags.iter().any(|f| f == flag) {
        return Ok(thread.clone());
    }
    flags.push(flag.to_owned());
    let mut changed = thread.clone();
    changed.flags = json!(flags);
    let saved = save(db, thread, changed, now).await?;
    insert_event(
        db,
        event_row(
            thread.id,
            "flagged",
            actor,
            None,
            Some(json!({ "flag": flag })),
            Some(detail),
            now,
        ),
    )
    .await?;
    Ok(saved)
}

/// An audit event with a `detail` (why a mail joined a thread, ...), built for
/// [`insert_events`].
pub fn event_with_detail(
    thread_id: Uuid,
    kind: &str,
    actor: &Value,
    detail: Value,
    now: DateTime<Utc>,
) -> thread_events::Model {
    event_row(thread_id, kind, actor, None, None, Some(detail), now)
}

/// Writes audit events, several rows a statement.
pub async fn insert_events(
    db: &impl ConnectionTrait,
    events: Vec<thread_events::Model>,
) -> Result<(), StoreError> {
    let rows = events
        .into_iter()
        .map(IntoActiveModel::into_active_model)
        .collect();
    super::insert_in_chunks::<thread_events::ActiveModel>(db, rows, EVENT_CHUNK).await
}

/// Events a statement: eight columns each, well under SQLite's 32,766 parameters.
const EVENT_CHUNK: usize = 500;

/// Records an audit event in the feed (with only a `before`/`after` where they matter).
pub async fn record_event(
    db: &impl ConnectionTrait,
    thread_id: Uuid,
    kind: &str,
    actor: &Value,
    before: Option<Value>,
    after: Option<Value>,
    now: DateTime<Utc>,
) -> Result<thread_events::Model, StoreError> {
    insert_event(
        db,
        event_row(thread_id, kind, actor, before, after, None, now),
    )
    .await
}

async fn insert_event(
    db: &impl ConnectionTrait,
    event: thread_events::Model,
) -> Result<thread_events::Model, StoreError> {
    thread_events::Entity::insert(event.clone().into_active_model())
        .exec_without_returning(db)
        .await?;
    Ok(event)
}

#[allow(clippy::too_many_arguments)] // one row's columns; a struct would only rename them
fn event_row(
    thread_id: Uuid,
    kind: &str,
    actor: &Value,
    before: Option<Value>,
    after: Option<Value>,
    detail: Option<Value>,
    now: DateTime<Utc>,
) -> thread_events::Model {
    thread_events::Model {
        id: Uuid::now_v7(),
        thread_id,
        kind: kind.to_owned(),
        actor: actor.clone(),
        before,
        after,
        detail,
        at: now,
    }
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

    #[test]
    fn reply_tokens_are_20_hex_chars_and_differ() {
        let (a, b) = (reply_token(), reply_token());
        assert_eq!(a.len(), 20);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
