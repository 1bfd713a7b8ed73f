//! A person or company, known across Algoreg by its external id.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The id other Algoreg tools know this customer by.
    #[sea_orm(unique)]
    pub external_id: String,
    pub name: String,
    /// Free-form attributes that lifecycle selectors can match on.
    pub attributes: Json,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::customer_contacts::Entity")]
    CustomerContacts,
    #[sea_orm(has_many = "super::thread_customers::Entity")]
    ThreadCustomers,
}

impl Related<super::contacts::Entity> for Entity {
    fn to() -> RelationDef {
        super::customer_contacts::Relation::Contact.def()
    }
    fn via() -> Option<RelationDef> {
        Some(super::customer_contacts::Relation::Customer.def().rev())
    }
}

impl Related<super::threads::Entity> for Entity {
    fn to() -> RelationDef {
        super::thread_customers::Relation::Thread.def()
    }
    fn via() -> Option<RelationDef> {
        Some(super::thread_customers::Relation::Customer.def().rev())
    }
}

impl ActiveModelBehavior for ActiveModel {}
