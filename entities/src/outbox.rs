//! Follow-up jobs and events, written in the job's transaction and published after commit.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// UUID v7: ordered by creation, so rows publish in order.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kind: OutboxKind,
    pub exchange: String,
    pub routing_key: String,
    /// The AMQP message id to publish with (job idempotency key or event id).
    #[sea_orm(unique)]
    pub message_id: String,
    /// The exact JSON body.
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    pub headers: Option<Json>,
    pub created_at: DateTimeUtc,
    /// Not before: a claimed row is leased until then, a failed one backs off.
    pub available_at: DateTimeUtc,
    pub attempts: i32,
    pub published_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum OutboxKind {
    #[sea_orm(string_value = "job")]
    Job,
    #[sea_orm(string_value = "event")]
    Event,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
