//! The audit feed: every change to a thread (status, assignee, tags, customers, ...), with
//! who made it, the value before and after, and when.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "thread_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub thread_id: Uuid,
    /// `created`, `status`, `assignee`, `tags`, `customers`, `matched`, `bounce`, ...: a plain
    /// string because new kinds appear as features land.
    pub kind: String,
    pub actor: Json,
    pub before: Option<Json>,
    pub after: Option<Json>,
    /// Context, e.g. which header or token matched a mail to the thread.
    pub detail: Option<Json>,
    pub at: DateTimeUtc,
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
