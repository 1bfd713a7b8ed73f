//! Opening threads: a new thread is built in memory first ([`prepare`]) and written later,
//! alone or with its first messages, so a batch of new threads costs one statement per
//! table. Writes the `threads` rows, their customers and their `created` events.

use chrono::{DateTime, Utc};
use gochat_entities::{thread_events, threads};
use sea_orm::{ConnectionTrait, IntoActiveModel};
use serde_json::{Value, json};
use uuid::Uuid;

use super::customers::link_customers;
use super::events::{event_row, insert_events};
use crate::store::StoreError;
use crate::store::search::Doc;

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

/// A URL-safe token that routes replies back to the thread (`support+<token>@...`).
fn reply_token() -> String {
    let mut bytes = [0u8; 10];
    rand::fill(&mut bytes);
    hex::encode(bytes)
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
/// [`insert_prepared`] and [`create_with_message`](super::create_with_message)).
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
    crate::store::search::index_docs(db, &subjects).await
}

/// Threads a statement: 21 columns each.
const THREAD_CHUNK: usize = 1000;

/// Writes new threads (`row` is what goes in: the prepared thread, or its card with its
/// first messages), their customers and `created` events (added to `events`).
pub(super) async fn insert_opened(
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
    crate::store::insert_in_chunks(db, rows, THREAD_CHUNK).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_tokens_are_20_hex_chars_and_differ() {
        let (a, b) = (reply_token(), reply_token());
        assert_eq!(a.len(), 20);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
