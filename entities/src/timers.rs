//! Durable reminder timers: in the database rather than the broker so they survive broker
//! loss, and claimable by exactly one of several workers.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "timers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub thread_id: Uuid,
    pub lifecycle: String,
    /// The reminder-ladder step this timer fires.
    pub step: i32,
    pub due_at: DateTimeUtc,
    /// The timer applies only if the thread is still in this status and version: a reply or
    /// an agent's change in between makes it stale instead of sending a reminder.
    pub expected_status: String,
    pub expected_version: i64,
    pub state: TimerState,
    /// The worker instance that claimed it.
    pub claimed_by: Option<String>,
    pub claimed_at: Option<DateTimeUtc>,
    pub fired_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum TimerState {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "claimed")]
    Claimed,
    #[sea_orm(string_value = "fired")]
    Fired,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
    #[sea_orm(string_value = "stale")]
    Stale,
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
}

impl Related<super::threads::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Thread.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
