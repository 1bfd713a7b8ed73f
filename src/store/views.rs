//! The JSON views of the public contract (`gochat threads --json`, `gochat thread --json`,
//! later the inbox API). Field names are part of the contract: add, never rename.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A thread as the inbox card shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ThreadCard {
    pub id: Uuid,
    pub subject: String,
    pub status: String,
    /// The status's inbox colour from the thread's lifecycle (`#rrggbb`); the store does
    /// not read lifecycle files, so the commands fill it in.
    pub status_colour: Option<String>,
    pub lifecycle: String,
    pub lifecycle_step: Option<i32>,
    pub customers: Vec<CustomerRef>,
    /// The latest customer-side contact.
    pub contact: Option<ContactRef>,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
    pub item_count: i32,
    pub has_attachments: bool,
    pub attachment_names: Vec<String>,
    pub last_message_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub snippet: Option<String>,
    pub flags: Vec<String>,
    pub linked_thread_id: Option<Uuid>,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CustomerRef {
    pub id: Uuid,
    pub external_id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ContactRef {
    pub name: Option<String>,
    pub address: String,
    /// External id of the thread's customer this contact belongs to, if any.
    pub external_id: Option<String>,
}

/// `{"thread": card, "feed": [...]}`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ThreadView {
    pub thread: ThreadCard,
    pub feed: Vec<FeedItem>,
}

/// One entry of a thread's feed, in time order.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedItem {
    Message(Box<MessageItem>),
    Comment(CommentItem),
    Event(EventItem),
}

impl FeedItem {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            FeedItem::Message(m) => m.at,
            FeedItem::Comment(c) => c.at,
            FeedItem::Event(e) => e.at,
        }
    }

    pub fn id(&self) -> Uuid {
        match self {
            FeedItem::Message(m) => m.id,
            FeedItem::Comment(c) => c.id,
            FeedItem::Event(e) => e.id,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct MessageItem {
    pub at: DateTime<Utc>,
    pub id: Uuid,
    pub direction: String,
    pub channel: String,
    /// The Message-ID header without angle brackets.
    pub message_id: Option<String>,
    pub from: String,
    pub from_name: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    /// The HTML body as stored: sanitised on arrival (no scripts, no event handlers, remote
    /// images blocked).
    pub html: Option<String>,
    /// Outbound only: draft, queued, sending, sent, failed.
    pub state: Option<String>,
    pub error: Option<String>,
    /// Inbound only: new, reply, auto_reply, bounce, ...
    pub classification: Option<String>,
    pub kind: Option<String>,
    pub attachments: Vec<AttachmentItem>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AttachmentItem {
    /// For `/api/v1/messages/{message}/attachments/{id}`.
    pub id: Uuid,
    pub name: String,
    pub content_type: String,
    pub size: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CommentItem {
    pub at: DateTime<Utc>,
    pub id: Uuid,
    #[schema(value_type = Object)]
    pub author: serde_json::Value,
    pub body: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct EventItem {
    pub at: DateTime<Utc>,
    pub id: Uuid,
    pub kind: String,
    #[schema(value_type = Object)]
    pub actor: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

/// A thread's customer with every contact it has (the thread page's side panel).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CustomerDetail {
    pub id: Uuid,
    pub external_id: String,
    pub name: String,
    pub contacts: Vec<ContactItem>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ContactItem {
    pub id: Uuid,
    /// `email` or `chat`.
    pub kind: String,
    pub address: String,
    pub name: Option<String>,
    pub language: Option<String>,
}
