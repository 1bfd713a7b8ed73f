//! The ticket: subject, status, assignee, lifecycle position, and the inbox card's fields.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "threads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub subject: String,
    pub status: ThreadStatus,
    /// The agent working the thread.
    pub assignee: Option<String>,
    /// Name of the lifecycle workflow that governs the thread.
    pub lifecycle: String,
    /// Position on the reminder ladder (1-based); `None` when not on it.
    pub lifecycle_step: Option<i32>,
    /// Routes replies back (`support+<token>@...`, `[#<token>]`); unique.
    #[sea_orm(unique)]
    pub reply_token: String,
    /// The address the thread came in on (lifecycle selectors match it).
    pub mailbox: Option<String>,
    /// A reply to a closed thread opens a new one linked to the old.
    pub linked_thread_id: Option<Uuid>,
    /// Optimistic concurrency: bumped on every change; jobs may demand a version.
    pub version: i64,
    /// Markers such as `unknown_sender` (JSON array of strings).
    pub flags: Json,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_message_at: Option<DateTimeUtc>,
    /// Card: start of the latest message.
    #[sea_orm(column_type = "Text", nullable)]
    pub snippet: Option<String>,
    pub has_attachments: bool,
    /// Card: names of every attachment on the thread (JSON array of strings).
    pub attachment_names: Json,
    /// Card: messages, comments and attachments on the thread.
    pub item_count: i32,
    /// Card: the latest customer-side contact.
    pub contact_id: Option<Uuid>,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum ThreadStatus {
    /// Waiting for an agent.
    #[sea_orm(string_value = "open")]
    Open,
    /// Waiting for the customer.
    #[sea_orm(string_value = "waiting")]
    Waiting,
    /// Waiting for the customer; a reminder will be sent.
    #[sea_orm(string_value = "reminder")]
    Reminder,
    /// Cannot be replied to.
    #[sea_orm(string_value = "closed")]
    Closed,
}

impl ThreadStatus {
    /// The status's name, as stored and as workflows, lifecycles and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadStatus::Open => "open",
            ThreadStatus::Waiting => "waiting",
            ThreadStatus::Reminder => "reminder",
            ThreadStatus::Closed => "closed",
        }
    }

    /// The status named `name` (see [`ThreadStatus::as_str`]), if any.
    pub fn from_name(name: &str) -> Option<ThreadStatus> {
        match name {
            "open" => Some(ThreadStatus::Open),
            "waiting" => Some(ThreadStatus::Waiting),
            "reminder" => Some(ThreadStatus::Reminder),
            "closed" => Some(ThreadStatus::Closed),
            _ => None,
        }
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::messages::Entity")]
    Messages,
    #[sea_orm(has_many = "super::comments::Entity")]
    Comments,
    #[sea_orm(has_many = "super::thread_events::Entity")]
    ThreadEvents,
    #[sea_orm(has_many = "super::thread_tags::Entity")]
    ThreadTags,
    #[sea_orm(has_many = "super::thread_customers::Entity")]
    ThreadCustomers,
    #[sea_orm(has_many = "super::timers::Entity")]
    Timers,
    #[sea_orm(
        belongs_to = "super::contacts::Entity",
        from = "Column::ContactId",
        to = "super::contacts::Column::Id",
        on_delete = "SetNull"
    )]
    Contact,
}

impl Related<super::messages::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Messages.def()
    }
}

impl Related<super::comments::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Comments.def()
    }
}

impl Related<super::thread_events::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ThreadEvents.def()
    }
}

impl Related<super::thread_tags::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ThreadTags.def()
    }
}

impl Related<super::timers::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Timers.def()
    }
}

impl Related<super::customers::Entity> for Entity {
    fn to() -> RelationDef {
        super::thread_customers::Relation::Customer.def()
    }
    fn via() -> Option<RelationDef> {
        Some(super::thread_customers::Relation::Thread.def().rev())
    }
}

impl ActiveModelBehavior for ActiveModel {}
