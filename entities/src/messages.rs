//! A customer-visible message, inbound or outbound, by email or chat.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub thread_id: Uuid,
    pub direction: MessageDirection,
    pub channel: Channel,
    /// The customer-side contact (sender of inbound, recipient of outbound).
    pub contact_id: Option<Uuid>,
    /// RFC 5322 Message-ID without angle brackets; replies are threaded on it.
    pub message_id_header: Option<String>,
    pub in_reply_to: Option<String>,
    /// Message-IDs of the References header (JSON array).
    pub references: Json,
    pub from_address: String,
    pub from_name: Option<String>,
    pub to_addresses: Json,
    pub cc_addresses: Json,
    #[sea_orm(column_type = "Text")]
    pub subject: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub text_body: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub html_body: Option<String>,
    /// Inbound: what the mail was recognised as.
    pub classification: Option<Classification>,
    /// Outbound: why it is sent.
    pub kind: Option<OutboundKind>,
    /// Outbound delivery state.
    pub state: Option<OutboundState>,
    /// Why delivery failed (or the bounce's diagnostic).
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    /// The SMTP server's last reply.
    #[sea_orm(column_type = "Text", nullable)]
    pub smtp_reply: Option<String>,
    pub attempts: i32,
    /// `{"kind", "id", "name"}` of who wrote it (outbound).
    pub author: Option<Json>,
    pub raw_mail_id: Option<Uuid>,
    /// The AMQP message id of the job that created it.
    pub job_message_id: Option<String>,
    /// Sender + mailbox + Message-ID (or a content hash): one mail is one message.
    #[sea_orm(unique)]
    pub dedupe_key: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum MessageDirection {
    #[sea_orm(string_value = "inbound")]
    Inbound,
    #[sea_orm(string_value = "outbound")]
    Outbound,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    #[sea_orm(string_value = "email")]
    Email,
    #[sea_orm(string_value = "chat")]
    Chat,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    #[sea_orm(string_value = "new")]
    New,
    #[sea_orm(string_value = "reply")]
    Reply,
    #[sea_orm(string_value = "auto_reply")]
    AutoReply,
    #[sea_orm(string_value = "bounce")]
    Bounce,
    #[sea_orm(string_value = "loop")]
    Loop,
    #[sea_orm(string_value = "feedback_report")]
    FeedbackReport,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum OutboundKind {
    #[sea_orm(string_value = "reply")]
    Reply,
    #[sea_orm(string_value = "reminder")]
    Reminder,
    #[sea_orm(string_value = "notification")]
    Notification,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum OutboundState {
    #[sea_orm(string_value = "draft")]
    Draft,
    #[sea_orm(string_value = "queued")]
    Queued,
    #[sea_orm(string_value = "sending")]
    Sending,
    #[sea_orm(string_value = "sent")]
    Sent,
    #[sea_orm(string_value = "failed")]
    Failed,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::threads::Entity",
        from = "Column::ThreadId",
        to = "super::threads::Column::Id",
        on_delete = "Cascade"
    )]
    Thread,
    #[sea_orm(
        belongs_to = "super::contacts::Entity",
        from = "Column::ContactId",
        to = "super::contacts::Column::Id",
        on_delete = "SetNull"
    )]
    Contact,
    #[sea_orm(
        belongs_to = "super::raw_mails::Entity",
        from = "Column::RawMailId",
        to = "super::raw_mails::Column::Id",
        on_delete = "SetNull"
    )]
    RawMail,
    #[sea_orm(has_many = "super::attachments::Entity")]
    Attachments,
}

impl Related<super::threads::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Thread.def()
    }
}

impl Related<super::attachments::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Attachments.def()
    }
}

impl Related<super::raw_mails::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::RawMail.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
